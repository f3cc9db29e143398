"""Market-1501 multi-query pooling against a loop over queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sag.evaluation import multi_query_features


def reference_pooling(q_feats, q_pids, q_camids, mq_feats, mq_pids, mq_camids, pooling):
    """For each query: normalise the gt_bbox features of its (person, camera), pool them, normalise again."""
    out = []
    for feat, pid, cam in zip(q_feats, q_pids, q_camids, strict=True):
        group = mq_feats[(mq_pids == pid) & (mq_camids == cam)]
        if len(group) == 0:
            out.append(feat / np.linalg.norm(feat))
            continue
        group = group / np.linalg.norm(group, axis=1, keepdims=True)
        pooled = group.mean(0) if pooling == "mean" else group.max(0)
        out.append(pooled / np.linalg.norm(pooled))
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_matches_reference(pooling):
    rng = np.random.default_rng(0)
    mq_pids, mq_camids = rng.integers(0, 5, 80), rng.integers(0, 3, 80)
    mq_feats = rng.standard_normal((80, 16)) * rng.uniform(0.5, 3, (80, 1))  # unnormalised on purpose
    q_pids, q_camids = rng.integers(0, 7, 30), rng.integers(0, 4, 30)  # some (pid, camid) have no gt_bbox image
    q_feats = rng.standard_normal((30, 16))
    ours = multi_query_features(q_feats, q_pids, q_camids, mq_feats, mq_pids, mq_camids, pooling=pooling)
    expected = reference_pooling(q_feats, q_pids, q_camids, mq_feats, mq_pids, mq_camids, pooling)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    assert ours.dtype == torch.float64  # float64 in, float64 out


def test_same_person_and_camera_only(device):
    # query 0 (person 1, camera 0) pools gt_bbox rows 0 and 1; rows 2 (other camera) and 3 (other person) do not count
    mq = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [-1.0, 0.0]], device=device)
    out = multi_query_features(
        torch.tensor([[3.0, 4.0]], device=device), [1], [0], mq, [1, 1, 1, 2], [0, 0, 1, 0], pooling="mean"
    )
    torch.testing.assert_close(out.cpu(), torch.tensor([[0.5**0.5, 0.5**0.5]]))
    out = multi_query_features(torch.tensor([[3.0, 4.0]]), [3], [0], mq.cpu(), [1, 1, 1, 2], [0, 0, 1, 0])
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8]]))  # no gt_bbox image: its own feature, normalised


def test_bad_inputs():
    q, mq = np.ones((2, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        multi_query_features(q, [0, 1], [0, 0], mq, [0, 0, 1], [0, 1, 0], pooling="median")
    with pytest.raises(ValueError, match="same feature size"):
        multi_query_features(q, [0, 1], [0, 0], np.ones((3, 5)), [0, 0, 1], [0, 1, 0])
    with pytest.raises(ValueError, match="mq_camids has 2 entries, expected 3"):
        multi_query_features(q, [0, 1], [0, 0], mq, [0, 0, 1], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        multi_query_features(q, [0, 1], [0, 0], np.full((3, 4), np.nan), [0, 0, 1], [0, 1, 0])
