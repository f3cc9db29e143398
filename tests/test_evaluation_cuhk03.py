"""CUHK03 classic single-gallery-shot CMC against a loop over draws, cameras and queries; averaging splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sag.evaluation.cuhk03 as cuhk03
from sag.evaluation import average_splits, evaluate_cuhk03_classic


def reference_single_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10, repeats=10, seed=0):
    """Each draw: one random order of the gallery; per query camera, each person's first image from another camera."""
    gen = torch.Generator().manual_seed(seed)
    total, count, valid = np.zeros(max_rank), 0, set()
    for _ in range(repeats):
        priority = torch.randperm(len(g_pids), generator=gen).tolist()
        for cam in sorted(set(q_camids.tolist())):
            chosen = {}  # person -> its drawn gallery image
            for j in range(len(g_pids)):
                pid = g_pids[j]
                if g_camids[j] != cam and (pid not in chosen or priority[j] < priority[chosen[pid]]):
                    chosen[pid] = j
            gallery = sorted(chosen.values())
            for i in np.flatnonzero(q_camids == cam):
                if q_pids[i] not in chosen:
                    continue
                valid.add(i)
                ranked = sorted(gallery, key=lambda j, i=i: (distmat[i, j], j))  # ties: smaller index first
                rank = ranked.index(chosen[q_pids[i]])
                cmc = np.zeros(max_rank)
                cmc[min(rank, max_rank) :] = 1
                total += cmc
                count += 1
    return total / count, len(valid)


def classic_split(rng, num_ids=12, per_view=(1, 3)):
    """Query == gallery: every image of the test ids, cameras 0 and 1 (the two views of a CUHK03 pair)."""
    pids, cams = [], []
    for pid in range(num_ids):
        for cam in (0, 1):
            n = int(rng.integers(per_view[0], per_view[1] + 1))
            pids += [pid] * n
            cams += [cam] * n
    return np.array(pids), np.array(cams)


@pytest.mark.parametrize("integer", [True, False], ids=["ties", "continuous"])
def test_matches_reference_loop(integer):
    rng = np.random.default_rng(0)
    pids, cams = classic_split(rng)
    pids = np.concatenate([pids, [99, 99, 99]])  # a person seen by camera 0 only: no valid match, skipped
    cams = np.concatenate([cams, [0, 0, 0]])
    n = len(pids)
    distmat = rng.integers(0, 3, (n, n)).astype(np.float32) if integer else rng.random((n, n)).astype(np.float32)
    result = evaluate_cuhk03_classic(distmat, pids, pids, cams, cams, max_rank=10, repeats=4, seed=7)
    cmc, valid = reference_single_shot(distmat, pids, pids, cams, cams, max_rank=10, repeats=4, seed=7)
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-12)
    assert result["num_valid_queries"] == valid == n - 3
    assert result["num_skipped_queries"] == 3 and result["repeats"] == 4
    assert result["rank1"] == pytest.approx(cmc[0])


def test_chunked_comparison_matches(monkeypatch):
    monkeypatch.setattr(cuhk03, "_CHUNK_ELEMENTS", 10)  # one or two queries at a time
    rng = np.random.default_rng(1)
    pids, cams = classic_split(rng, num_ids=8)
    distmat = rng.random((len(pids), len(pids)))
    result = evaluate_cuhk03_classic(distmat, pids, pids, cams, cams, max_rank=5, repeats=3)
    cmc, _ = reference_single_shot(distmat, pids, pids, cams, cams, max_rank=5, repeats=3)
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-12)


def test_one_image_per_person_per_camera_is_deterministic():
    # person p: image 2p in camera 0, 2p + 1 in camera 1; each query has exactly one candidate per person
    pids, cams = np.repeat(np.arange(3), 2), np.tile([0, 1], 3)
    distmat = np.array(
        [
            [0, 0.5, 9, 0.2, 9, 0.9],  # query 0 (person 0, cam 0): candidates 1 (0.5), 3 (0.2), 5 (0.9) -> rank 2
            [9, 0, 0.1, 9, 0.3, 9],  # query 1 (person 0, cam 1): candidates 0 (9), 2 (0.1), 4 (0.3) -> rank 3
            [9, 9, 0, 0.1, 9, 0.2],  # query 2 (person 1, cam 0): 1 (9), 3 (0.1), 5 (0.2) -> rank 1
            [9, 9, 9, 0, 9, 9],  # query 3 (person 1, cam 1): 0, 2, 4 all at 9: tie, index 2 is second -> rank 2
            [9, 0.1, 9, 9, 0, 0.2],  # query 4 (person 2, cam 0): 1 (0.1), 3 (9), 5 (0.2) -> rank 2
            [9, 9, 9, 9, 0.4, 0],  # query 5 (person 2, cam 1): 0 (9), 2 (9), 4 (0.4) -> rank 1
        ]
    )
    for seed in (0, 1):
        result = evaluate_cuhk03_classic(distmat, pids, pids, cams, cams, max_rank=3, repeats=2, seed=seed)
        np.testing.assert_allclose(result["cmc"], [2 / 6, 5 / 6, 1.0])


def test_seed_fixes_the_draws():
    rng = np.random.default_rng(2)
    pids, cams = classic_split(rng, num_ids=30, per_view=(3, 5))
    distmat = rng.random((len(pids), len(pids)))
    args = (distmat, pids, pids, cams, cams)
    first = evaluate_cuhk03_classic(*args, repeats=2, seed=3)
    np.testing.assert_array_equal(first["cmc"], evaluate_cuhk03_classic(*args, repeats=2, seed=3)["cmc"])
    assert not np.array_equal(first["cmc"], evaluate_cuhk03_classic(*args, repeats=2, seed=4)["cmc"])
    on_tensors = evaluate_cuhk03_classic(*(torch.from_numpy(a) for a in args), repeats=2, seed=3)
    np.testing.assert_array_equal(first["cmc"], on_tensors["cmc"])


def test_bad_inputs():
    pids, cams = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        evaluate_cuhk03_classic(np.zeros((4, 4)), pids, pids, cams, cams, repeats=0)
    with pytest.raises(ValueError, match="g_camids has 3 entries, expected 4"):
        evaluate_cuhk03_classic(np.zeros((4, 4)), pids, pids, cams, cams[:3])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_cuhk03_classic(np.full((4, 4), np.nan), pids, pids, cams, cams)
    with pytest.raises(ValueError, match="none of the 4 queries"):
        evaluate_cuhk03_classic(np.zeros((4, 4)), pids, pids, cams * 0, cams * 0)  # one camera only


def test_average_splits():
    a = {"cmc": np.array([0.5, 1.0]), "rank1": 0.5, "mAP": 0.4, "AP": np.zeros(3), "num_valid_queries": 3}
    b = {"cmc": np.array([0.7, 0.9]), "rank1": 0.7, "mAP": 0.6, "AP": np.zeros(5), "num_valid_queries": 5}
    out = average_splits([a, b])
    np.testing.assert_allclose(out["cmc"], [0.6, 0.95])
    assert out["rank1"] == pytest.approx(0.6) and out["mAP"] == pytest.approx(0.5)
    assert out["num_valid_queries"] == 4.0 and out["num_splits"] == 2
    assert "AP" not in out  # per-query arrays differ in length between splits
    with pytest.raises(ValueError, match="no results"):
        average_splits([])
    with pytest.raises(ValueError, match="lengths"):
        average_splits([a, {**b, "cmc": np.ones(3)}])
    with pytest.raises(ValueError, match="some splits lack it"):
        average_splits([a, {k: v for k, v in b.items() if k != "mAP"}])
