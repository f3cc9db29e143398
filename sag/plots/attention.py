"""Figure 4: attention grids over the input image, one column per depth (or per model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from sag.plots.style import new_figure, styled, to_display_image


def grid_title(key: Any, grid_shape: Sequence[int]) -> str:
    """Column title: ``4`` with a 5x2 grid -> "D4 (h=5, w=2)"; other keys are used as given."""
    h, w = grid_shape[-2:]
    name = f"D{key}" if isinstance(key, (int, np.integer)) else str(key)
    return f"{name} (h={h}, w={w})"


def upsample_grid(grid: torch.Tensor | np.ndarray, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """One grid (h, w) or (1, h, w) -> (H, W) numpy, by ``mode`` ("nearest" keeps the cells visible, or "bilinear")."""
    g = torch.as_tensor(np.asarray(grid) if not isinstance(grid, torch.Tensor) else grid).detach().float().cpu()
    g = g.reshape(1, 1, *g.shape[-2:])  # (1, 1, h, w)
    extra = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(g, size=size, mode=mode, **extra)[0, 0].numpy()


@styled
def plot_attention_grids(
    images: Sequence[Any] | torch.Tensor,
    grids: Mapping[Any, torch.Tensor | np.ndarray],
    normalization: str | None = "[-1, 1]",
    mode: str = "nearest",
    alpha: float = 0.5,
    cmap: str = "jet",
    titles: Sequence[str] | None = None,
    panel_size: tuple[float, float] = (1.3, 2.6),
    scale: str = "own",
) -> Figure:
    """Rows = images, columns = the original then one overlay per grid (Figure 4).

    ``images``: N images (model inputs (N, 3, H, W) normalised as ``normalization`` says, arrays or paths);
    ``grids``: {column key: (N, 1, h, w) or (N, h, w)}, e.g. ``model.attention_grids(x)`` (int keys = depths,
    shown in the given order) or grids of different models keyed by name. The corner text gives the peak weight
    relative to a uniform grid (1/(h*w)).

    ``scale="own"``: each overlay is scaled to its own maximum. ``scale="uniform"``: every weight is drawn in units of
    the uniform weight (G * h*w, so 1 = uniform) on one colour scale per column, from 0 to max(2, the column's
    largest value), with a colour bar: a flat grid looks flat (one colour, that of 1), whatever its shape.
    """
    if scale not in ("own", "uniform"):
        raise ValueError(f"scale must be 'own' or 'uniform', got {scale!r}")
    shown = [to_display_image(img, normalization) for img in images]
    if not shown:
        raise ValueError("no images to show; give at least one image")
    columns = list(grids.items())
    for key, g in columns:
        if len(g) != len(shown):
            raise ValueError(f"grid {key!r} has {len(g)} maps for {len(shown)} images; give one per image")
    n, m = len(shown), len(columns) + 1
    fig, axes = new_figure(n, m, figsize=(panel_size[0] * m, panel_size[1] * n))
    top = {}  # scale="uniform": the colour scale's top per column, in units of the uniform weight
    for key, batch in columns:
        values = np.stack([_as_grid(batch[i]) for i in range(n)])  # (N, h, w)
        units = values * values[0].size / np.maximum(values.sum(axis=(1, 2), keepdims=True), 1e-12)
        top[key] = max(2.0, float(units.max()))
    for i, image in enumerate(shown):
        axes[i, 0].imshow(image)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
        for j, (key, batch) in enumerate(columns, start=1):
            grid = _as_grid(batch[i])  # (h, w)
            heat = upsample_grid(grid, image.shape[:2], mode)  # (H, W)
            ax = axes[i, j]
            ax.imshow(image)
            if scale == "uniform":
                units = heat * grid.size / max(grid.sum(), 1e-12)  # 1 = the uniform weight
                overlay = ax.imshow(units, cmap=cmap, alpha=alpha, vmin=0.0, vmax=top[key])
                if i == n - 1:
                    bar = fig.colorbar(overlay, ax=axes[:, j].tolist(), location="bottom", shrink=0.9, pad=0.02)
                    bar.set_label("x uniform", fontsize=7)
                    bar.ax.tick_params(labelsize=6)
            else:
                ax.imshow(heat / max(heat.max(), 1e-12), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
            ratio = grid.max() * grid.size / max(grid.sum(), 1e-12)  # peak vs a uniform grid
            ax.text(
                0.03, 0.02, f"peak x{ratio:.1f}", transform=ax.transAxes, fontsize=7, color="white",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
            )  # fmt: skip
            if i == 0:
                ax.set_title(grid_title(key, grid.shape), fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return fig


def _as_grid(item: Any) -> np.ndarray:
    """One image's grid as a float (h, w) array, from (1, h, w) / (h, w) tensors or arrays."""
    grid = np.asarray(item.detach().cpu().float() if isinstance(item, torch.Tensor) else item, dtype=float)
    return grid.reshape(grid.shape[-2:])


@torch.no_grad()
def plot_model_attention(
    model: torch.nn.Module,
    images: torch.Tensor,
    normalization: str | None = "[-1, 1]",
    depths_order: Sequence[int] | None = None,
    display: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Figure:
    """Compute ``model.attention_grids`` in eval mode for images (N, 3, H, W) and plot them (deepest first).

    ``display``: what to draw under the grids instead of the model inputs, e.g. the paths of the
    full-resolution originals (any size: the grids are stretched over the image).
    """
    if not getattr(model, "depths", ()):
        raise ValueError("this model has no SAG module (the baseline): there is no attention grid to show")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        grids = model.attention_grids(images.to(device))  # {depth: (N, 1, h, w)}
    finally:
        model.train(was_training)
    order = depths_order if depths_order is not None else sorted(grids, reverse=True)  # the paper's order
    shown = images.cpu() if display is None else display
    return plot_attention_grids(shown, {d: grids[d].cpu() for d in order}, normalization, **kwargs)
