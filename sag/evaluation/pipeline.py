"""One call from a model and a dataset to rank-k / mAP / mINP, with optional re-ranking and multi-query."""

from __future__ import annotations

from typing import Any

import torch

from sag.evaluation import _checks
from sag.evaluation.cuhk03 import evaluate_cuhk03_classic
from sag.evaluation.distance import squared_distances
from sag.evaluation.features import extract_features
from sag.evaluation.multi_query import multi_query_features
from sag.evaluation.protocol import get_protocol
from sag.evaluation.ranking import RankingAccumulator, evaluate_ranking
from sag.evaluation.rerank import re_ranking

_DISTANCE_ELEMENTS = 1 << 24  # query-gallery distances computed per matrix product (64 MiB in float32)


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    rerank: bool = False,
    multi_query: bool = False,
    batch_size: int = 128,
    flip: bool | None = None,
    device: torch.device | str | None = None,
    preset: str | None = "paper",
    max_rank: int = 50,
    ap: str | None = None,
    pooling: str = "mean",
    workers: int = 0,
    size: tuple[int, int] | None = None,
    average: str | None = None,
    transforms: Any = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on a ``sag.data.ReIDDataset``'s query and gallery under the dataset's protocol.

    The test protocol is ``preset``'s (``sag.evaluation.protocol.PROTOCOLS``) unless ``flip`` (mean with the
    mirror image, then L2), ``ap`` ("standard" | "trapezoid") or ``average`` ("valid" | "all") are given; the
    result records it under ``protocol``. Extracts L2-normalised embeddings (``extract_features``; test transforms
    of ``preset``), ranks the gallery by squared Euclidean distance (2 - 2 cos) and returns ``evaluate_features``'s
    dict: ``rank1``, ``rank5``,
    ``rank10``, ``mAP``, ``mINP`` (fractions), ``cmc`` and, with ``rerank``, the same keys prefixed ``rerank_``
    for k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3). ``multi_query`` pools each query with the
    ``dataset.multi_query`` images (Market-1501's gt_bbox) of its person and camera (``pooling`` mean or max).
    A CUHK03 classic dataset (``dataset.protocol == "classic"``) gets single-gallery-shot CMC. ``workers``:
    DataLoader processes decoding the images; ``size``: (H, W) the images are resized to (default: the
    model's own ``input_size``, the size it was built and trained at, else the data pipeline's 160 x 64);
    ``transforms``: an AugmentConfig (or preset name) for the test images instead of ``preset``'s.
    """
    from sag.data import make_eval_loader  # here, so that sag.evaluation imports without the data stack

    preset = "paper" if preset is None else preset
    protocol = get_protocol(preset, flip=flip, ap=ap, average=average)
    device = torch.device(device) if device is not None else None
    size = size if size is not None else getattr(model, "input_size", None)

    def features(records: list, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not records:
            raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r} has no {what} images")
        options = {} if size is None else {"size": tuple(size)}
        loader = make_eval_loader(
            records, preset=transforms or preset, batch_size=batch_size, workers=workers, **options
        )
        return extract_features(model, loader, flip=protocol.flip, device=device, desc=what)

    q_feats, q_pids, q_camids = features(dataset.query, "query")
    if dataset.gallery is dataset.query or list(dataset.gallery) == list(dataset.query):
        g_feats, g_pids, g_camids = q_feats, q_pids, q_camids
    else:
        g_feats, g_pids, g_camids = features(dataset.gallery, "gallery")
    if multi_query:
        if not getattr(dataset, "multi_query", None):
            raise ValueError(
                f"dataset {getattr(dataset, 'name', '?')!r} has no multi-query images; multi-query is defined for "
                "Market-1501 (its gt_bbox folder)"
            )
        mq_feats, mq_pids, mq_camids = features(dataset.multi_query, "multi-query")
        q_feats = multi_query_features(q_feats, q_pids, q_camids, mq_feats, mq_pids, mq_camids, pooling=pooling)
    out = evaluate_features(
        q_feats,
        g_feats,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        rerank=rerank,
        single_gallery_shot=getattr(dataset, "protocol", None) == "classic",
        max_rank=max_rank,
        ap=protocol.ap,
        average=protocol.average,
    )
    return out | {"protocol": protocol.to_dict()}


def evaluate_features(
    q_feats: Any,
    g_feats: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    rerank: bool = False,
    single_gallery_shot: bool = False,
    max_rank: int = 50,
    ap: str = "standard",
    average: str = "valid",
) -> dict[str, Any]:
    """Rank-k / mAP / mINP from query and gallery features, ranked by squared Euclidean distance.

    ``ap`` is the AP rule ("standard" | "trapezoid"); ``average="all"`` divides every metric by all queries (a query
    without a good match counts 0, as the official ``evaluation.m``), ``"valid"`` by the queries with one.

    The distances are computed and ranked a block of queries at a time, so the (Q, G) matrix is never held
    (except with ``rerank``, whose result is that matrix). With ``single_gallery_shot`` (CUHK03 classic) the
    CMC and rank-k come from ``evaluate_cuhk03_classic`` and mAP / mINP from the full gallery, as torchreid
    reports them (the classic protocol defines only CMC). Returns ``rank1``, ``rank5``, ``rank10``, ``mAP``,
    ``mINP``, ``cmc``, ``num_valid_queries``, ``num_skipped_queries`` and, with ``rerank``, each of these
    prefixed ``rerank_`` for the k-reciprocal re-ranked distances.
    """
    q = _checks.float_matrix(q_feats, "q_feats", rows="query")
    g = _checks.float_matrix(g_feats, "g_feats", q.device, rows="gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"q_feats and g_feats must have the same feature size, got {q.shape[1]} and {g.shape[1]}")
    dtype = torch.promote_types(torch.promote_types(q.dtype, g.dtype), torch.float32)
    q, g = q.to(dtype), g.to(dtype)
    _checks.check_finite(q, "q_feats")
    _checks.check_finite(g, "g_feats")
    labels = (q_pids, g_pids, q_camids, g_camids)

    if single_gallery_shot:
        out = _single_gallery_shot(squared_distances(q, g), *labels, max_rank=max_rank, ap=ap, average=average)
    else:
        accumulator = RankingAccumulator(g_pids, g_camids, max_rank=max_rank, ap=ap, device=q.device, average=average)
        if accumulator.num_gallery != g.shape[0]:
            num = accumulator.num_gallery
            raise ValueError(f"g_pids has {num} entries, expected {g.shape[0]} (one per row of g_feats)")
        q_pids_t = _checks.labels(q_pids, "q_pids", q.device, q.shape[0], "row of q_feats")
        q_camids_t = _checks.labels(q_camids, "q_camids", q.device, q.shape[0], "row of q_feats")
        g_sq = (g * g).sum(1)
        # distances for many queries per matrix product (a thin product re-reads the gallery from memory each
        # time), ranked in the accumulator's smaller blocks
        rows, step = max(accumulator.block_rows, _DISTANCE_ELEMENTS // g.shape[0]), accumulator.block_rows
        for start in range(0, q.shape[0], rows):
            block = squared_distances(q[start : start + rows], g, None, g_sq)  # (b, G)
            for a in range(0, block.shape[0], step):
                r = slice(start + a, start + min(a + step, block.shape[0]))
                accumulator.add(block[a : a + step], q_pids_t[r], q_camids_t[r])
        out = accumulator.result()
        out.pop("AP")
    if rerank:
        distmat = re_ranking(q, g)
        if single_gallery_shot:
            reranked = _single_gallery_shot(distmat, *labels, max_rank=max_rank, ap=ap, average=average)
        else:
            reranked = evaluate_ranking(distmat, *labels, max_rank=max_rank, ap=ap, average=average)
            reranked.pop("AP")
        out.update({f"rerank_{key}": value for key, value in reranked.items()})
    return out


def _single_gallery_shot(
    distmat: torch.Tensor, *labels: Any, max_rank: int, ap: str, average: str = "valid"
) -> dict[str, Any]:
    """CUHK03 classic: single-gallery-shot CMC, and mAP / mINP over the full gallery."""
    out = evaluate_cuhk03_classic(distmat, *labels, max_rank=max_rank)
    full = evaluate_ranking(distmat, *labels, max_rank=max_rank, ap=ap, average=average)
    out.update(mAP=full["mAP"], mINP=full["mINP"])
    return out
