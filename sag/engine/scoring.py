"""Score a model on a dataset's query/gallery at the input size it was trained at."""

from __future__ import annotations

from typing import Any

import torch


def score(
    model: torch.nn.Module,
    dataset: Any,
    preset: str,
    size: tuple[int, int],
    device: torch.device | str | None = None,
    batch_size: int = 128,
    flip: bool = False,
    rerank: bool = False,
    multi_query: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """``sag.evaluation.evaluate`` with the eval images resized to ``size`` (H, W), the model's training size."""
    from sag.evaluation import evaluate

    return evaluate(
        model,
        dataset,
        rerank=rerank,
        multi_query=multi_query,
        batch_size=batch_size,
        flip=flip,
        device=device,
        preset=preset,
        workers=workers,
        size=size,
    )
