"""re_ranking against a dense transcription of the authors' reference code (person-re-ranking, python-version)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import sag.evaluation.rerank as rerank
from sag.evaluation import evaluate_ranking, re_ranking


def dense_re_ranking(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3):
    """re_ranking_ranklist.py with dense N x N arrays, fed the squared Euclidean distances of the features.

    Two deliberate differences, both about exact ties: ``np.argsort`` is stable here (the reference's default
    sort leaves tie order unspecified), and the self-distances are exactly 0.
    """
    feats = np.concatenate([q_feats, g_feats]).astype(np.float32)
    sq = (feats * feats).sum(1)
    original_dist = np.maximum(sq[:, None] + sq[None, :] - 2 * feats @ feats.T, 0).astype(np.float32)
    np.fill_diagonal(original_dist, 0)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)  # noqa: N806 (the reference's names)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_feats.shape[0]
    all_num = original_dist.shape[0]
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for candidate in k_reciprocal_index:
            candidate_forward_k_neigh_index = initial_rank[candidate, :half]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :half]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            overlap = len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index))
            if overlap > 2.0 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)  # noqa: N806
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe  # noqa: N806
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        ind_non_zero = np.where(V[i, :] != 0)[0]
        ind_images = [inv_index[ind] for ind in ind_non_zero]
        for j in range(len(ind_non_zero)):
            temp_min[0, ind_images[j]] += np.minimum(V[i, ind_non_zero[j]], V[ind_images[j], ind_non_zero[j]])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def random_features(rng, num, dim, kind):
    """Continuous features, or small integers (exact distances, many ties), or continuous with duplicates."""
    if kind == "integer":
        return rng.integers(-2, 3, size=(num, dim)).astype(np.float32)
    feats = rng.standard_normal((num, dim)).astype(np.float32)
    if kind == "duplicates":
        feats[rng.integers(0, num, size=num // 3)] = feats[rng.integers(0, num, size=num // 3)]
    return feats


def compare(q, g, k1, k2, lam, labels=None):
    expected = dense_re_ranking(q, g, k1, k2, lam)
    ours = re_ranking(torch.from_numpy(q), torch.from_numpy(g), k1=k1, k2=k2, lambda_value=lam)
    assert ours.shape == (len(q), len(g)) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-5)
    if labels is not None:
        for ap in ("standard", "trapezoid"):
            a = evaluate_ranking(ours, *labels, max_rank=10, ap=ap)
            b = evaluate_ranking(expected, *labels, max_rank=10, ap=ap)
            np.testing.assert_array_equal(a["cmc"], b["cmc"])
            assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-12)


@pytest.mark.parametrize("kind", ["continuous", "integer", "duplicates"])
def test_matches_dense_reference(kind):
    rng = np.random.default_rng({"continuous": 0, "integer": 1, "duplicates": 2}[kind])
    for num_q, num_g, dim, k1, k2 in [(5, 40, 8, 20, 6), (12, 90, 4, 6, 3), (1, 30, 3, 3, 1), (20, 15, 6, 25, 9)]:
        feats = random_features(rng, num_q + num_g, dim, kind)
        lam = float(rng.random())
        labels = (rng.integers(0, 5, num_q), rng.integers(0, 5, num_g), np.zeros(num_q, int), np.ones(num_g, int))
        compare(feats[:num_q], feats[num_q:], k1, k2, lam, labels)


@pytest.mark.parametrize("kind", ["continuous", "integer"])
def test_matches_dense_reference_across_blocks(kind, monkeypatch):
    # tiny blocks and budgets: many distance blocks, filtered updates, chunked neighbour sets and Jaccard pairs
    monkeypatch.setattr(rerank, "_BLOCK", 16)
    monkeypatch.setattr(rerank, "_ROWS", 7)
    monkeypatch.setattr(rerank, "_PAIR_BUDGET", 64)
    monkeypatch.setattr(rerank, "_GATHER_BUDGET", 40)
    rng = np.random.default_rng(3)
    for num_q, num_g, dim, k1, k2 in [(23, 110, 6, 20, 6), (40, 60, 3, 5, 2)]:
        feats = random_features(rng, num_q + num_g, dim, kind)
        compare(feats[:num_q], feats[num_q:], k1, k2, 0.3)


def test_default_parameters_and_lambda_extremes():
    rng = np.random.default_rng(4)
    q, g = rng.standard_normal((10, 16)).astype(np.float32), rng.standard_normal((50, 16)).astype(np.float32)
    np.testing.assert_allclose(re_ranking(q, g).numpy(), dense_re_ranking(q, g), atol=1e-5)  # k1=20 k2=6 lambda=0.3
    # lambda = 1: the original distance, squared and divided by its row maximum over all N images
    feats = np.concatenate([q, g])
    sq = ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
    original = sq[:10, 10:] / sq[:10].max(1, keepdims=True)
    np.testing.assert_allclose(re_ranking(q, g, lambda_value=1).numpy(), original, atol=1e-5)
    jaccard_only = re_ranking(q, g, lambda_value=0.0).numpy()
    assert (jaccard_only >= 0).all() and (jaccard_only <= 1).all()


def test_float64_and_device(device):
    rng = np.random.default_rng(5)
    q, g = rng.standard_normal((6, 5)), rng.standard_normal((30, 5))
    out = re_ranking(torch.from_numpy(q).to(device), torch.from_numpy(g), k1=5, k2=3)
    assert out.dtype == torch.float64 and out.device.type == torch.device(device).type
    np.testing.assert_allclose(out.cpu().numpy(), dense_re_ranking(q, g, 5, 3), atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc (Linux)")
def test_memory_stays_far_below_one_n_by_n_matrix():
    # in a fresh process (its own peak RSS): N = 16,000 images, one dense N x N float32 matrix would be 977 MiB
    script = textwrap.dedent(
        """
        import torch
        import sag.evaluation.rerank as rerank

        def mib(field):  # VmRSS / VmHWM (peak, reset below) of this process
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024

        torch.set_num_threads(1)
        torch.manual_seed(0)
        feats = torch.nn.functional.normalize(torch.randn(16000, 16), dim=1)
        rerank.re_ranking(feats[:10], feats[10:20])  # warm-up: libraries and thread pools
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # restart the peak from the current RSS
        before = mib("VmRSS")
        out = rerank.re_ranking(feats[:50], feats[50:])
        print(mib("VmHWM") - before)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    extra_mib = float(done.stdout.split()[-1])
    assert extra_mib < 977 / 4, f"re_ranking used {extra_mib:.0f} MiB above its inputs"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q_feats": np.zeros((0, 4))}, "query set is empty"),
        ({"g_feats": np.ones((5, 3))}, "same feature size"),
        ({"q_feats": np.full((2, 4), np.nan)}, "NaN"),
        ({"q_feats": np.zeros((2, 4), dtype=np.int64)}, "floating-point"),
        ({"k1": 0}, "k1 must be an integer >= 1"),
        ({"k2": 2.5}, "k2 must be an integer >= 1"),
        ({"lambda_value": 1.5}, r"lambda_value must be a number in \[0, 1\]"),
        ({"q_feats": np.ones((2, 4)), "g_feats": np.ones((5, 4))}, "all features are identical"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    rng = np.random.default_rng(7)
    args = {"q_feats": rng.standard_normal((2, 4)), "g_feats": rng.standard_normal((5, 4))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        re_ranking(**args)
