"""Market-1501 multi-query: pool the features of every hand-drawn box of the query's person in its camera."""

from __future__ import annotations

from typing import Any

import torch

from sag.evaluation import _checks

POOLINGS = ("mean", "max")


def multi_query_features(
    q_feats: Any,
    q_pids: Any,
    q_camids: Any,
    mq_feats: Any,
    mq_pids: Any,
    mq_camids: Any,
    pooling: str = "mean",
) -> torch.Tensor:
    """Multi-query features (Q, D): pool the L2-normalised ``mq_feats`` with each query's id and camera.

    Market-1501's multi-query protocol: a query is represented by all images of ``gt_bbox`` (the hand-drawn
    boxes, ``mq_*``) that show the same person in the same camera; their L2-normalised features are averaged
    (``pooling="mean"``) or max-pooled per dimension (``"max"``) and the result is L2-normalised again. A query
    with no such image keeps its own (L2-normalised) feature. Runs on ``q_feats``' device.
    """
    pooling = _checks.choice(pooling, "pooling", POOLINGS)
    q = _checks.float_matrix(q_feats, "q_feats", rows="query")
    mq = _checks.float_matrix(mq_feats, "mq_feats", q.device, rows="multi-query")
    if q.shape[1] != mq.shape[1]:
        raise ValueError(f"q_feats and mq_feats must have the same feature size, got {q.shape[1]} and {mq.shape[1]}")
    q_pids = _checks.labels(q_pids, "q_pids", q.device, q.shape[0], "row of q_feats")
    q_camids = _checks.labels(q_camids, "q_camids", q.device, q.shape[0], "row of q_feats")
    mq_pids = _checks.labels(mq_pids, "mq_pids", q.device, mq.shape[0], "row of mq_feats")
    mq_camids = _checks.labels(mq_camids, "mq_camids", q.device, mq.shape[0], "row of mq_feats")
    _checks.check_finite(mq, "mq_feats")

    # one group per (person id, camera) over the multi-query images and the queries together
    keys = torch.stack([torch.cat([mq_pids, q_pids]), torch.cat([mq_camids, q_camids])], 1)  # (M + Q, 2)
    group = torch.unique(keys, dim=0, return_inverse=True)[1]
    mq_group, q_group = group[: mq.shape[0]], group[mq.shape[0] :]
    num_groups = int(group.max()) + 1
    mq = torch.nn.functional.normalize(mq.to(torch.promote_types(mq.dtype, torch.float32)), dim=1)  # (M, D)
    if pooling == "mean":
        pooled = torch.zeros(num_groups, mq.shape[1], dtype=mq.dtype, device=mq.device).index_add_(0, mq_group, mq)
    else:
        pooled = torch.full((num_groups, mq.shape[1]), -torch.inf, dtype=mq.dtype, device=mq.device)
        pooled.scatter_reduce_(0, mq_group[:, None].expand_as(mq), mq, "amax")
    has_images = torch.bincount(mq_group, minlength=num_groups)[q_group] > 0  # (Q,)
    pooled = torch.nn.functional.normalize(pooled[q_group], dim=1)  # a sum, normalised, is the normalised mean
    own = torch.nn.functional.normalize(q.to(mq.dtype), dim=1)
    return torch.where(has_images[:, None], pooled, own)
