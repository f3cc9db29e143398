"""evaluate_ranking against a per-query loop written from the Market-1501 protocol, plus hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sag.evaluation.ranking as ranking
from sag.evaluation import RankingAccumulator, evaluate_ranking


def reference_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ap="standard"):
    """One query at a time: stable sort, drop junk, then CMC / AP (both rules) / INP from the match list."""
    cmcs, aps, inps = [], [], []
    per_query = np.full(len(q_pids), np.nan)
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")  # ties: smaller gallery index first
        pids, cams = g_pids[order], g_camids[order]
        junk = ((pids == q_pids[i]) & (cams == q_camids[i])) | (pids == -1)
        good = (pids == q_pids[i]) & (cams != q_camids[i]) & (pids != -1)
        matches = good[~junk]
        n_good = int(matches.sum())
        if n_good == 0:
            continue
        hit_ranks = np.flatnonzero(matches) + 1  # 1-based ranks of the good images
        cmc = np.zeros(max_rank)
        cmc[min(hit_ranks[0], max_rank + 1) - 1 :] = 1
        cmcs.append(cmc)
        if ap == "standard":
            value = np.mean(np.arange(1, n_good + 1) / hit_ranks)
        else:  # compute_AP.m of the Market-1501 evaluation code, line by line
            old_recall, old_precision, value, found = 0.0, 1.0, 0.0, 0
            for j, is_good in enumerate(matches):
                found += int(is_good)
                recall, precision = found / n_good, found / (j + 1)
                value += (recall - old_recall) * ((old_precision + precision) / 2)
                old_recall, old_precision = recall, precision
                if found == n_good:
                    break
        aps.append(value)
        per_query[i] = value
        inps.append(n_good / hit_ranks[-1])
    if not aps:
        return None, None, None, 0, per_query
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps), per_query


def random_protocol(rng, num_q, num_g, num_ids=6, num_cams=3, integer=True):
    """Random labels with junk (-1), distractors (0), unmatched queries; integer distances give many ties."""
    g_pids = rng.integers(-1, num_ids, size=num_g)
    g_camids = rng.integers(0, num_cams, size=num_g)
    q_pids = rng.integers(1, num_ids + 2, size=num_q)  # ids above num_ids - 1 never appear in the gallery
    q_camids = rng.integers(0, num_cams, size=num_q)
    if integer:
        distmat = rng.integers(0, 4, size=(num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.standard_normal((num_q, num_g)).astype(np.float32)  # negative values too
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_matches_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10, ap="standard"):
    ours = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, ap=ap)
    cmc, mean_ap, minp, valid, per_query = reference_ranking(
        np.asarray(distmat, dtype=np.float64), q_pids, g_pids, q_camids, g_camids, max_rank, ap
    )
    np.testing.assert_allclose(ours["cmc"], cmc, rtol=0, atol=1e-12)
    assert ours["mAP"] == pytest.approx(mean_ap, abs=1e-12)
    assert ours["mINP"] == pytest.approx(minp, abs=1e-12)
    assert ours["num_valid_queries"] == valid
    assert ours["num_skipped_queries"] == len(q_pids) - valid
    np.testing.assert_allclose(ours["AP"], per_query, rtol=0, atol=1e-12)  # NaN where skipped, on both sides
    return ours


@pytest.mark.parametrize("ap", ["standard", "trapezoid"])
@pytest.mark.parametrize("integer", [True, False], ids=["ties", "continuous"])
def test_matches_reference_on_random_inputs(ap, integer):
    rng = np.random.default_rng(0 if integer else 1)
    for _ in range(12):
        num_q, num_g = int(rng.integers(1, 30)), int(rng.integers(1, 120))
        inputs = random_protocol(rng, num_q, num_g, integer=integer)
        if reference_ranking(*inputs)[3] == 0:
            continue  # no valid query at all: tested separately
        assert_matches_reference(*inputs, ap=ap)


@pytest.mark.parametrize("ap", ["standard", "trapezoid"])
def test_matches_reference_with_many_queries_per_block(ap, monkeypatch):
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 50)  # a few queries per block: exercises the chunk loop
    rng = np.random.default_rng(2)
    inputs = random_protocol(rng, 40, 25, num_ids=4, num_cams=2)
    assert_matches_reference(*inputs, max_rank=30, ap=ap)


def test_hand_computed_example():
    # one query (id 1, camera 0); after removing junk the ranking is: id 2, good, distractor, good
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.05]], dtype=np.float32)
    g_pids = np.array([1, 2, 1, 0, 1, -1])
    g_camids = np.array([0, 1, 1, 2, 2, 1])
    args = (distmat, np.array([1]), g_pids, np.array([0]), g_camids)
    standard = evaluate_ranking(*args, max_rank=5)
    np.testing.assert_array_equal(standard["cmc"], [0, 1, 1, 1, 1])
    assert (standard["rank1"], standard["rank5"]) == (0.0, 1.0)
    assert "rank10" not in standard  # beyond max_rank
    assert standard["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert standard["mINP"] == pytest.approx(2 / 4)
    # trapezoid: (0/1 + 1/2)/2 * 1/2 for the first good, (1/3 + 2/4)/2 * 1/2 for the second
    trapezoid = evaluate_ranking(*args, max_rank=5, ap="trapezoid")
    assert trapezoid["mAP"] == pytest.approx(0.125 + 5 / 24)
    np.testing.assert_array_equal(trapezoid["cmc"], standard["cmc"])


def test_trapezoid_starts_from_precision_one():
    # a single good image at rank 1: the trapezoid between precision 1 (before) and 1 (at rank 1) gives AP 1
    result = evaluate_ranking([[0.0, 1.0]], [5], [5, 6], [0], [1, 1], ap="trapezoid")
    assert result["mAP"] == 1.0 and result["rank1"] == 1.0
    # good image at rank 2 of 2: standard AP 1/2, trapezoid (0 + 1/2) / 2 = 1/4
    args = ([[1.0, 0.0]], [5], [5, 6], [0], [1, 1])
    assert evaluate_ranking(*args)["mAP"] == 0.5
    assert evaluate_ranking(*args, ap="trapezoid")["mAP"] == 0.25


def test_ties_are_broken_by_gallery_index():
    # the good image (id 7) and a wrong one (id 8) are at the same distance: the smaller gallery index ranks first
    q = ([7], [0])
    good_first = evaluate_ranking([[0.5, 0.5, 0.9]], q[0], [7, 8, 9], q[1], [1, 1, 1])
    good_second = evaluate_ranking([[0.5, 0.5, 0.9]], q[0], [8, 7, 9], q[1], [1, 1, 1])
    assert good_first["rank1"] == 1.0 and good_first["mAP"] == 1.0
    assert good_second["rank1"] == 0.0 and good_second["mAP"] == 0.5
    # -0.0 and 0.0 are the same distance
    assert evaluate_ranking([[0.0, -0.0]], [7], [8, 7], [0], [1, 1])["rank1"] == 0.0


def test_queries_without_valid_match_are_skipped_and_counted():
    g_pids = np.array([1, 1, 2, 3, 0])
    g_camids = np.array([0, 1, 0, 0, 1])
    q_pids = np.array([1, 2, 4, 3])  # id 2 and 3: only in the query's camera (all junk); id 4: not in the gallery
    q_camids = np.array([0, 0, 0, 0])
    distmat = np.random.default_rng(3).random((4, 5)).astype(np.float32)
    result = assert_matches_reference(distmat, q_pids, g_pids, q_camids, g_camids)
    assert result["num_valid_queries"] == 1 and result["num_skipped_queries"] == 3
    assert np.isnan(result["AP"][1:]).all() and not np.isnan(result["AP"][0])


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="none of the 2 queries has a valid match"):
        evaluate_ranking(np.zeros((2, 3)), [1, 2], [1, 2, 0], [0, 0], [0, 0, 0])  # single-camera gallery


def test_single_camera_gallery_with_queries_from_another_camera():
    rng = np.random.default_rng(4)
    g_pids, g_camids = rng.integers(0, 5, size=60), np.zeros(60, dtype=np.int64)
    q_pids, q_camids = rng.integers(1, 5, size=15), np.ones(15, dtype=np.int64)
    distmat = rng.integers(0, 3, size=(15, 60)).astype(np.float64)
    result = assert_matches_reference(distmat, q_pids, g_pids, q_camids, g_camids, ap="trapezoid")
    assert result["num_skipped_queries"] == 0


def test_distractors_and_junk_ids():
    # distractors (id 0) are wrong matches; id -1 images are removed, even for a query of id -1
    distmat = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    g_pids, g_camids = np.array([0, -1, 5]), np.array([1, 1, 1])
    result = evaluate_ranking(distmat, [5, -1], g_pids, [0, 0], g_camids)
    assert result["rank1"] == 0.0 and result["cmc"][1] == 1.0  # rank 2: the id -1 image does not count
    assert result["num_skipped_queries"] == 1  # the id -1 query has no good image


def test_accumulator_streams_blocks_like_the_full_matrix():
    rng = np.random.default_rng(5)
    distmat, q_pids, g_pids, q_camids, g_camids = random_protocol(rng, 25, 70)
    full = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, ap="trapezoid")
    acc = RankingAccumulator(g_pids, g_camids, ap="trapezoid")
    for rows in (slice(0, 7), slice(7, 8), slice(8, 25)):
        acc.add(torch.from_numpy(distmat[rows]), torch.from_numpy(q_pids[rows]), q_camids[rows])  # tensors or arrays
    with pytest.raises(ValueError, match="distmat has 3 columns, expected 70"):
        acc.add(np.zeros((1, 3)), [1], [0])
    streamed = acc.result()
    np.testing.assert_array_equal(streamed["cmc"], full["cmc"])
    assert (streamed["mAP"], streamed["mINP"]) == (full["mAP"], full["mINP"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_tensor_inputs_and_dtypes(dtype, device):
    rng = np.random.default_rng(6)
    distmat, q_pids, g_pids, q_camids, g_camids = random_protocol(rng, 20, 50)  # small integers: exact in any dtype
    expected = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids)
    ours = evaluate_ranking(
        torch.from_numpy(distmat).to(device, dtype),
        torch.from_numpy(q_pids).int(),
        torch.from_numpy(g_pids),
        torch.from_numpy(q_camids).to(torch.int16),
        list(g_camids),
    )
    np.testing.assert_array_equal(ours["cmc"], expected["cmc"])
    assert ours["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert isinstance(ours["cmc"], np.ndarray) and isinstance(ours["mAP"], float)


def test_infinite_distances_rank_last_or_first():
    # +inf: never retrieved before a finite distance; -inf: always first; NaN alone is rejected
    distmat = np.array([[np.inf, 0.5, -np.inf, np.inf]])
    result = evaluate_ranking(distmat, [1], [1, 2, 3, 1], [0], [1, 1, 1, 1], max_rank=4)
    np.testing.assert_array_equal(result["cmc"], [0, 0, 1, 1])  # goods at ranks 3 and 4 (tie: index order)
    assert result["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_nan_in_a_junk_entry_or_a_later_block_is_reported(monkeypatch):
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 8)  # two queries per block
    distmat = np.zeros((5, 4))
    distmat[3, 0] = np.nan  # query 3, gallery 0: same id and camera, a junk entry
    with pytest.raises(ValueError, match=r"NaN \(first at index \(3, 0\)\)"):
        evaluate_ranking(distmat, [1, 1, 1, 1, 1], [1, 1, 2, 2], [0] * 5, [0, 1, 1, 1])


def test_cmc_is_cumulative_beyond_the_gallery_size():
    result = evaluate_ranking([[0.1, 0.2, 0.3]], [1], [2, 3, 1], [0], [1, 1, 1], max_rank=50)  # good at rank 3
    assert result["cmc"].shape == (50,)
    assert result["cmc"][2] == 1.0 and result["cmc"][-1] == 1.0 and result["cmc"][1] == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"distmat": np.zeros((0, 4))}, "query set is empty"),
        ({"distmat": np.zeros(4)}, "must be 2-D"),
        ({"distmat": np.zeros((2, 4), dtype=np.int64)}, "floating-point"),
        ({"distmat": np.array([[0, np.nan, 0, 0], [0, 0, 0, 0]])}, r"NaN \(first at index \(0, 1\)\)"),
        ({"distmat": np.array([[0, 0, 0, 0], [0, 0, 0, np.nan]])}, r"NaN \(first at index \(1, 3\)\)"),
        ({"distmat": np.array([[0, 0, 0, 0], [np.nan, 0, 0, 0]]), "g_pids": [2, 2, 1, 2]}, r"NaN .*\(1, 0\)"),
        ({"q_pids": [1, 2, 3]}, "q_pids has 3 entries, expected 2"),
        ({"q_camids": [0.0, 1.0]}, "q_camids must hold integers"),
        ({"g_pids": [1, 2, 3]}, "g_pids has 3 entries, expected 4"),
        ({"g_camids": [0, 1, 2]}, "g_camids has 3 entries, expected 4"),
        ({"g_pids": np.array([True, False, True, True])}, "g_pids must hold integers"),
        ({"q_pids": np.array(["a", "b"])}, "q_pids must be a numeric array"),
        ({"max_rank": 0}, "max_rank must be an integer >= 1"),
        ({"ap": "interpolated"}, "unknown ap 'interpolated'"),
    ],
)
def test_bad_input_raises_value_error(change, message):
    args = {
        "distmat": np.zeros((2, 4)),
        "q_pids": [1, 2],
        "g_pids": [1, 2, 1, 2],
        "q_camids": [0, 0],
        "g_camids": [1, 1, 1, 1],
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        evaluate_ranking(**args)


@pytest.fixture(params=["dense", "sparse"])
def ranking_path(request, monkeypatch):
    """Force one of the two ways a block is binned: the whole block, or only entries up to the farthest good."""
    monkeypatch.setattr(ranking, "_DENSE_FRACTION", -1.0 if request.param == "dense" else 2.0)
    return request.param


@pytest.mark.parametrize("ap", ["standard", "trapezoid"])
@pytest.mark.parametrize("kind", ["ties", "continuous", "clustered", "all-equal", "infinite", "huge"])
def test_both_paths_match_reference_on_hard_distances(kind, ap, ranking_path):
    rng = np.random.default_rng(7)
    for _ in range(4):
        num_q, num_g = int(rng.integers(1, 25)), int(rng.integers(2, 150))
        distmat, q_pids, g_pids, q_camids, g_camids = random_protocol(rng, num_q, num_g, integer=kind == "ties")
        if kind == "clustered":  # many distances within a few ulps: most images share a bin with a good one
            distmat = (1.0 + np.float32(1e-7) * rng.integers(0, 5, size=distmat.shape)).astype(np.float32)
        elif kind == "all-equal":
            distmat = np.full_like(distmat, 0.25)
        elif kind == "infinite":  # +-inf on good, junk and wrong images alike
            distmat[rng.random(distmat.shape) < 0.3] = np.inf
            distmat[rng.random(distmat.shape) < 0.2] = -np.inf
        elif kind == "huge":  # a span that overflows float32: the bins fall back to a unit scale
            distmat = (np.clip(distmat, -1, 1) * np.float32(3.4e38)).astype(np.float32)
        if reference_ranking(distmat, q_pids, g_pids, q_camids, g_camids)[3] == 0:
            continue
        assert_matches_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20, ap=ap)


def test_both_paths_match_reference_on_a_market_like_block(ranking_path):
    # many gallery images, a few good ones per query, junk of both kinds: the bins do the work here
    rng = np.random.default_rng(8)
    num_q, num_g = 40, 3000
    g_pids = rng.integers(0, 60, size=num_g)
    g_pids[rng.random(num_g) < 0.1] = -1
    g_camids, q_pids, q_camids = rng.integers(0, 6, size=num_g), rng.integers(1, 60, size=num_q), np.zeros(num_q)
    distmat = rng.random((num_q, num_g)).astype(np.float64)
    distmat[:, :50] = np.round(distmat[:, :50], 2)  # exact ties between good, junk and wrong images
    assert_matches_reference(distmat, q_pids, g_pids, q_camids.astype(np.int64), g_camids, max_rank=50)


def test_query_without_good_image_in_a_block_of_its_own(ranking_path):
    # a block where no query has a good image: every query is skipped and the next block still counts
    distmat = np.array([[0.3, 0.1, 0.2], [0.3, 0.1, 0.2]])
    acc = RankingAccumulator([1, 2, 1], [0, 0, 1])
    acc.add(distmat[:1], [3], [0])  # id 3 is not in the gallery
    acc.add(distmat[1:], [1], [0])  # good image at index 2 (camera 1): rank 2 behind the wrong id-2 image
    result = acc.result()
    assert result["num_skipped_queries"] == 1 and result["rank1"] == 0.0 and result["cmc"][1] == 1.0
    assert np.isnan(result["AP"][0]) and result["AP"][1] == 0.5


def test_nan_is_reported_on_both_paths(ranking_path):
    distmat = np.zeros((3, 4))
    distmat[2, 3] = np.nan  # a wrong image, nearer than nothing: caught whichever way the block is binned
    with pytest.raises(ValueError, match=r"NaN \(first at index \(2, 3\)\)"):
        evaluate_ranking(distmat, [1, 1, 1], [1, 1, 2, 2], [0] * 3, [0, 1, 1, 1])
