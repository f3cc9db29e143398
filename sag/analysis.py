"""Attention mass: how much of a grid (or a baseline's activation map) falls on known identity, person, background."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REGIONS = ("background", "person", "identity")  # mask labels 0, 1, 2 of sag.data.synthetic.load_mask


def mask_to_grid(mask: np.ndarray, grid_size: tuple[int, int], num_labels: int = len(REGIONS)) -> np.ndarray:
    """Area fraction of each label in each grid cell: mask (H, W) ints -> (num_labels, h, w), cells sum to 1.

    Exact for any H, W, h, w: a pixel straddling two cells is split between them by overlap length.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) label image, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() >= num_labels):
        raise ValueError(f"mask labels must lie in 0..{num_labels - 1}, got {mask.min()}..{mask.max()}")
    h, w = grid_size
    rows = _overlap(mask.shape[0], h)  # (h, H)
    cols = _overlap(mask.shape[1], w)  # (w, W)
    onehot = (mask[None] == np.arange(num_labels)[:, None, None]).astype(np.float64)  # (L, H, W)
    return np.einsum("ip,lpq,jq->lij", rows, onehot, cols)  # (L, h, w)


def region_mass(weights: np.ndarray | torch.Tensor, fractions: np.ndarray) -> np.ndarray:
    """Mass of a non-negative map on each label: weights (h, w) (normalised here) x fractions (L, h, w) -> (L,)."""
    weights = _as_numpy(weights).astype(np.float64)
    if weights.ndim == 3 and weights.shape[0] == 1:
        weights = weights[0]  # a (1, h, w) grid
    if weights.shape != fractions.shape[1:]:
        raise ValueError(f"map of shape {weights.shape} does not match the mask grid {fractions.shape[1:]}")
    if np.any(weights < 0):
        raise ValueError("attention weights must be non-negative (use activation_map for raw features)")
    total = weights.sum()
    if total <= 0:
        return fractions.mean(axis=(1, 2))  # an all-zero map carries no preference: the uniform expectation
    return np.einsum("ij,lij->l", weights / total, fractions)


def uniform_mass(fractions: np.ndarray) -> np.ndarray:
    """What a uniform grid puts on each label: the labels' area fractions (L,)."""
    return fractions.mean(axis=(1, 2))


def activation_map(features: torch.Tensor) -> torch.Tensor:
    """Baseline "attention": channel mean, clamped >= 0, normalised to sum 1: (N, C, h, w) -> (N, h, w)."""
    act = features.float().mean(dim=1).clamp_min(0)  # (N, h, w)
    total = act.flatten(1).sum(dim=1).clamp_min(torch.finfo(act.dtype).tiny)  # (N,)
    return act / total[:, None, None]


@torch.no_grad()
def model_maps(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every map to analyse: {"D<i>": grid (N, h, w) for each SAG depth, "activation": (N, h4, w4)}."""
    was_training = model.training
    model.eval()
    try:
        features, grids = model.backbone_features(images)  # (N, C4, h4, w4), {depth: (N, 1, h, w)}
    finally:
        model.train(was_training)
    maps = {f"D{depth}": grid[:, 0].float() for depth, grid in sorted(grids.items())}
    maps["activation"] = activation_map(features)
    return maps


def grid_spread(grids: torch.Tensor) -> dict[str, float]:
    """Is a depth's grid attention or a fixed mask? grids (N, h, w), each summing to 1 -> three numbers.

    ``peak``: the mean over images of the largest cell weight, in units of the uniform weight 1 / (h w) (1 = flat,
    h w = all mass on one cell). ``image_spread``: the mean over cells of the standard deviation over images of the
    cell's weight, in the same units (0 = every image gets the same grid: a learned constant mask, not attention
    that depends on the image). ``cells``: h w.
    """
    flat = grids.detach().float().flatten(1)  # (N, h*w)
    cells = flat.shape[1]
    spread = flat.std(dim=0, unbiased=False).mean() if flat.shape[0] > 1 else flat.new_zeros(())
    return {
        "cells": float(cells),
        "peak": float(flat.max(dim=1).values.mean() * cells),
        "image_spread": float(spread * cells),
    }


def attention_mass_rows(
    maps: dict[str, torch.Tensor], masks: Sequence[np.ndarray], names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per image and map: mass and area fraction of each region, as tidy dicts.

    ``maps``: {source: (N, h, w)}; ``masks``: N label images (H, W). Each row has ``source``, ``grid`` ("hxw"),
    ``image``, ``<region>`` (mass on it) and ``<region>_area`` (the uniform expectation).
    """
    rows = []
    cache: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
    for source, batch in maps.items():
        batch = _as_numpy(batch)
        if len(batch) != len(masks):
            raise ValueError(f"{source}: {len(batch)} maps for {len(masks)} masks; give one mask per image")
        grid = tuple(batch.shape[1:])
        for i, (weights, mask) in enumerate(zip(batch, masks, strict=True)):
            key = (i, grid)
            if key not in cache:
                cache[key] = mask_to_grid(mask, grid)
            fractions = cache[key]
            mass, area = region_mass(weights, fractions), uniform_mass(fractions)
            row: dict[str, Any] = {"source": source, "grid": f"{grid[0]}x{grid[1]}", "image": names[i] if names else i}
            row |= {r: float(m) for r, m in zip(REGIONS, mass, strict=True)}
            row |= {f"{r}_area": float(a) for r, a in zip(REGIONS, area, strict=True)}
            rows.append(row)
    return rows


def summarize_mass(rows: Sequence[dict[str, Any]], keys: Sequence[str] = ("source",)) -> list[dict[str, Any]]:
    """Mean mass and area per group of ``keys``, plus the lift (mass / area: 1 = no better than uniform)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        summary: dict[str, Any] = dict(zip(keys, key, strict=True))
        summary |= {"grid": members[0]["grid"], "images": len(members)}
        for region in REGIONS:
            mass = np.array([m[region] for m in members])
            area = np.array([m[f"{region}_area"] for m in members])
            summary[region] = float(mass.mean())
            summary[f"{region}_std"] = float(mass.std())
            summary[f"{region}_area"] = float(area.mean())
            summary[f"{region}_lift"] = float(mass.mean() / area.mean()) if area.mean() > 0 else float("nan")
        out.append(summary)
    return out


def measure_model(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """attention_mass_rows for a model on preprocessed images (N, 3, H, W) and their N masks, in batches."""
    rows: list[dict[str, Any]] = []
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        maps = model_maps(model, images[start:stop].to(device))
        batch_names = list(names[start:stop]) if names is not None else list(range(start, min(stop, len(images))))
        rows += attention_mass_rows({k: v.cpu() for k, v in maps.items()}, masks[start:stop], batch_names)
        if progress is not None:
            progress(len(maps["activation"]))
    return rows


def measure_checkpoint(
    checkpoint: str | os.PathLike,
    num_images: int = 200,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    data_root: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """attention_mass_rows of a trained synthetic-data run on ``num_images`` test images (query + gallery, no
    distractors or junk), spread evenly; the masks come from ``sag.data.synthetic.load_mask``."""
    from sag.data import load_dataset, make_eval_loader
    from sag.data.synthetic import load_mask
    from sag.engine import load_checkpoint

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_checkpoint(checkpoint, device=device)
    if config.dataset != "synthetic":
        raise ValueError(f"{checkpoint} was trained on {config.dataset}: region masks exist only for synthetic data")
    dataset = load_dataset("synthetic", data_root or config.data_root, **dict(config.dataset_options))
    people = [r for r in [*dataset.query, *dataset.gallery] if r.pid > 0]
    if num_images < 1 or not people:
        raise ValueError(f"need at least one test image to measure, got num_images={num_images}")
    picked = [people[int(i)] for i in np.unique(np.linspace(0, len(people) - 1, min(num_images, len(people))).round())]
    loader = make_eval_loader(picked, preset=config.transforms, batch_size=batch_size, size=tuple(config.input_size))
    images = torch.cat([batch[0] for batch in loader])  # (n, 3, H, W)
    masks = [load_mask(r.path) for r in picked]
    return measure_model(model, images, masks, [Path(r.path).name for r in picked], batch_size=batch_size)


def _overlap(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): fraction of output cell j covered by input pixel p (rows sum to 1)."""
    edges_in = np.arange(n_in + 1) / n_in  # pixel edges in [0, 1]
    edges_out = np.arange(n_out + 1) / n_out  # cell edges in [0, 1]
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0, None) * n_out


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A detached CPU numpy view of a tensor or array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
