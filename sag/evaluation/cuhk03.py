"""CUHK03 classic protocol: single-gallery-shot CMC, repeated with a fixed seed, averaged over the 20 splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sag.evaluation import _checks

_CHUNK_ELEMENTS = 1 << 22  # (query, sampled gallery image) distances compared at once


def evaluate_cuhk03_classic(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Single-gallery-shot CMC of the CUHK03 classic protocol (Li et al. 2014), averaged over ``repeats`` draws.

    For a query seen by camera c, each draw builds a gallery of one image per person, picked at random among
    that person's images from the other camera(s) (camid != c), and ranks it by ``distmat`` (Q, G); the query is
    matched when its own person's image is at rank k or better. Ties are broken stably by gallery index. The
    draws use ``torch.Generator().manual_seed(seed)``, so the result depends only on the inputs and the seed.
    Queries whose person has no image in another camera are skipped and counted.

    Returns ``cmc`` (numpy, ``cmc[k-1]`` = rank-k accuracy, averaged over queries and draws), ``rank1`` /
    ``rank5`` / ``rank10`` (those <= ``max_rank``), ``num_valid_queries``, ``num_skipped_queries`` and
    ``repeats``. In the classic protocol query and gallery are the same images; average the 20 splits with
    ``average_splits``.
    """
    dist = _checks.float_matrix(distmat, "distmat", rows="query")
    num_q, num_g = dist.shape
    dev = dist.device
    q_pids = _checks.labels(q_pids, "q_pids", dev, num_q, "distmat row")
    q_camids = _checks.labels(q_camids, "q_camids", dev, num_q, "distmat row")
    g_pids = _checks.labels(g_pids, "g_pids", dev, num_g, "distmat column")
    g_camids = _checks.labels(g_camids, "g_camids", dev, num_g, "distmat column")
    max_rank = _checks.positive_int(max_rank, "max_rank")
    repeats = _checks.positive_int(repeats, "repeats")
    _checks.check_finite(dist, "distmat")
    if dist.dtype in (torch.float16, torch.bfloat16):
        dist = dist.float()

    ids, g_group = torch.unique(g_pids, return_inverse=True)  # (P,), (G,)
    q_group = torch.searchsorted(ids, q_pids).clamp_(max=ids.numel() - 1)
    q_group = torch.where(ids[q_group] == q_pids, q_group, -1)  # -1: the query's person is not in the gallery
    generator = torch.Generator().manual_seed(int(seed))
    hist = torch.zeros(max_rank + 1, dtype=torch.int64, device=dev)
    valid = torch.zeros(num_q, dtype=torch.bool, device=dev)
    for _ in range(repeats):
        priority = torch.randperm(num_g, generator=generator).to(dev)  # (G,) a random order of the gallery
        for cam in torch.unique(q_camids).tolist():
            # one image per person among the other cameras: the first in the random order
            eligible = g_camids != cam
            key = torch.where(eligible, priority, num_g)
            first = torch.full((ids.numel(),), num_g, dtype=torch.int64, device=dev)
            first.scatter_reduce_(0, g_group, key, "amin")
            chosen = (eligible & (key == first[g_group])).nonzero().squeeze(1)  # (S,) ascending gallery index
            slot = torch.full((ids.numel(),), -1, dtype=torch.int64, device=dev)
            slot[g_group[chosen]] = torch.arange(chosen.numel(), device=dev)
            queries = (q_camids == cam).nonzero().squeeze(1)
            target = torch.where(q_group[queries] >= 0, slot[q_group[queries]], -1)  # the true match's slot
            keep = target >= 0
            queries, target = queries[keep], target[keep]
            valid[queries] = True
            slots = torch.arange(chosen.numel(), device=dev)
            step = max(1, _CHUNK_ELEMENTS // max(1, chosen.numel()))
            for a in range(0, queries.numel(), step):
                d = dist[queries[a : a + step, None], chosen[None, :]]  # (b, S)
                t = target[a : a + step, None]
                d_true = d.gather(1, t)
                ahead = (d < d_true) | ((d == d_true) & (slots[None, :] < t))  # ties: smaller gallery index first
                hist += torch.bincount(ahead.sum(1).clamp_(max=max_rank), minlength=max_rank + 1)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"none of the {num_q} queries has an image of its person in another camera: check the ids and camera ids"
        )
    cmc = (torch.cumsum(hist[:max_rank], 0).double() / (num_valid * repeats)).cpu().numpy()
    out: dict[str, Any] = {"cmc": cmc}
    for k in (1, 5, 10):
        if k <= max_rank:
            out[f"rank{k}"] = float(cmc[k - 1])
    out.update(num_valid_queries=num_valid, num_skipped_queries=num_q - num_valid, repeats=repeats)
    return out


def average_splits(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average per-split results (e.g. CUHK03's 20 splits): the ``cmc`` curve and every number; adds ``num_splits``.

    Other entries, such as per-query arrays, differ in length between splits and are left out.
    """
    if not results:
        raise ValueError("no results to average: pass one result dict per split")
    out: dict[str, Any] = {}
    for key, first in results[0].items():
        if any(key not in r for r in results):
            raise ValueError(f"cannot average {key!r}: some splits lack it")
        values = [r[key] for r in results]
        if key == "cmc":
            lengths = sorted({len(v) for v in values})
            if len(lengths) != 1:
                raise ValueError(f"cannot average the CMC curves: the splits give lengths {lengths} (same max_rank?)")
            out[key] = np.mean(np.stack([np.asarray(v, dtype=np.float64) for v in values]), axis=0)
        elif isinstance(first, (int, float, np.number)) and not isinstance(first, bool):
            out[key] = float(np.mean(values))
    out["num_splits"] = len(results)
    return out
