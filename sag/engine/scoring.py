"""Score a model on a dataset's query/gallery at the input size it was trained at (sag.evaluation's blocks)."""

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
    """``sag.evaluation.evaluate`` with the eval images resized to ``size`` (H, W), the model's training size.

    Returns ``evaluate_features``'s dict: rank1, rank5, rank10, mAP, mINP, cmc (and rerank_* with ``rerank``).
    """
    from sag.data import make_eval_loader
    from sag.evaluation import evaluate_features, extract_features, multi_query_features

    def features(records: list, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not records:
            raise ValueError(f"dataset {dataset.name!r} has no {what} images")
        loader = make_eval_loader(records, preset=preset, batch_size=batch_size, workers=workers, size=size)
        return extract_features(model, loader, flip=flip, device=device, desc=what)

    q_feats, q_pids, q_camids = features(dataset.query, "query")  # (Q, D), (Q,), (Q,)
    if list(dataset.gallery) == list(dataset.query):  # CUHK03 classic: query == gallery
        g_feats, g_pids, g_camids = q_feats, q_pids, q_camids
    else:
        g_feats, g_pids, g_camids = features(dataset.gallery, "gallery")  # (G, D), (G,), (G,)
    if multi_query:
        if not dataset.multi_query:
            raise ValueError(f"--multi-query needs Market-1501's gt_bbox images; {dataset.name} has none")
        mq_feats, mq_pids, mq_camids = features(dataset.multi_query, "multi-query")
        q_feats = multi_query_features(q_feats, q_pids, q_camids, mq_feats, mq_pids, mq_camids)
    return evaluate_features(
        q_feats,
        g_feats,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        rerank=rerank,
        single_gallery_shot=getattr(dataset, "protocol", None) == "classic",
    )
