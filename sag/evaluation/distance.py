"""Pairwise distances between feature sets."""

from __future__ import annotations

from typing import Any

import torch

from sag.evaluation import _checks

METRICS = ("sqeuclidean", "euclidean", "cosine")


def pairwise_distance(x: Any, y: Any, metric: str = "sqeuclidean") -> torch.Tensor:
    """Distances (len(x), len(y)) between the rows of ``x`` and ``y``, on ``x``'s device.

    ``sqeuclidean`` is ||x - y||^2 (2 - 2 cos for L2-normalised features, the ranking distance used here),
    ``euclidean`` its square root, ``cosine`` 1 - cos. Computed as ||x||^2 + ||y||^2 - 2 x.y, clamped at 0.
    """
    metric = _checks.choice(metric, "metric", METRICS)
    x = _checks.float_matrix(x, "x")
    y = _checks.float_matrix(y, "y", x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {x.shape[1]} and {y.shape[1]}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
        y = torch.nn.functional.normalize(y, dim=1)
        return 1 - x @ y.T
    dist = squared_distances(x, y)
    return dist.sqrt_() if metric == "euclidean" else dist


def squared_distances(
    x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor | None = None, y_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """||x_i - y_j||^2 = ||x_i||^2 + ||y_j||^2 - 2 x_i . y_j clamped at 0, (len(x), len(y)); norms may be given."""
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    y_sq = (y * y).sum(1) if y_sq is None else y_sq
    return torch.addmm(x_sq[:, None] + y_sq[None, :], x, y.T, alpha=-2).clamp_(min=0)
