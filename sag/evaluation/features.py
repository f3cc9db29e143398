"""Embeddings of a whole dataset split: batched, without autograd, optionally averaged with the mirror image."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm


def extract_features(
    model: torch.nn.Module,
    loader: Iterable,
    flip: bool = False,
    device: torch.device | str | None = None,
    normalize: bool = True,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed every batch of ``loader`` (yielding images (B, 3, H, W), pids (B,), camids (B,))) with ``model``.

    Runs ``model`` in eval mode under ``torch.inference_mode`` on ``device`` (default: where the model's
    parameters are; the model is moved there), restoring its train/eval mode afterwards. With ``flip`` the
    embedding is the mean of the image's and its horizontal mirror's. With ``normalize`` each embedding is
    L2-normalised (the released code's test features). Returns ``(feats (N, D) float on device, pids (N,)
    int64, camids (N,) int64)``, the labels on the CPU, in loader order.
    """
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    model.eval()
    feats, pids, camids = [], [], []
    bad = torch.zeros(2, dtype=torch.bool, device=device)  # any inf, any NaN in the raw embeddings (no sync)
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=desc, disable=None, leave=False):
                if not isinstance(batch, (tuple, list)) or len(batch) != 3:
                    raise ValueError("the loader must yield (images, pids, camids) batches")
                images, pid, camid = batch
                images = images.to(device, non_blocking=True)
                out = _embed(model, images)
                if flip:
                    out = (out + _embed(model, images.flip(3))) / 2
                bad |= torch.stack((torch.isinf(out).any(), torch.isnan(out).any()))
                feats.append(torch.nn.functional.normalize(out, dim=1) if normalize else out)
                pids.append(torch.as_tensor(pid, dtype=torch.int64).reshape(-1).cpu())
                camids.append(torch.as_tensor(camid, dtype=torch.int64).reshape(-1).cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no batches: is the split empty?")
    has_inf, has_nan = bad.tolist()
    if has_inf or has_nan:
        kind = "values that overflowed to inf" if has_inf else "NaN"
        raise FloatingPointError(
            f"the model's {desc} embeddings hold {kind} (before normalisation); check the checkpoint's weights, "
            "or evaluate in fp32"
        )
    return torch.cat(feats), torch.cat(pids), torch.cat(camids)


def _embed(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's (B, D) embedding as float32 (or float64), with a clear error for other outputs."""
    out = model(images)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return (batch, dim) embeddings in eval mode, got {shape}")
    return out if out.dtype == torch.float64 else out.float()
