"""CMC curves of several runs (with the paper's points) and training curves from a run's metrics.jsonl."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sag.plots.style import COLORS, new_figure, styled


def load_metrics(source: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per epoch from a run dir or a metrics.jsonl file."""
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; give a run dir of `python -m sag train` or its metrics.jsonl")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def load_cmc(run_dir: str | os.PathLike) -> np.ndarray:
    """The test CMC (fractions, cmc[k-1] = rank-k) from a finished run's summary.json."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the run has not finished (summary.json is written at the end)")
    return np.asarray(json.loads(path.read_text())["test"]["cmc"], dtype=float)


@styled
def plot_cmc(
    curves: Mapping[str, Sequence[float]],
    paper_points: Mapping[str, Mapping[int, float]] | None = None,
    max_rank: int = 20,
    scale: float = 100.0,
    title: str | None = None,
) -> Figure:
    """CMC curves: {label: cmc} with cmc[k-1] = rank-k as fractions (sag.evaluation), drawn in percent.

    ``paper_points``: {label: {rank: percent}}, e.g. ``{"paper D4": {1: 90.17, 5: 96.38, 10: 97.48}}``
    (see ``sag.paper.cmc_points``), drawn as open markers.
    """
    if not curves and not paper_points:
        raise ValueError("nothing to plot: give at least one CMC curve or paper point set")
    fig, axes = new_figure(figsize=(6, 4))
    ax = axes[0, 0]
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=float)[:max_rank] * scale
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker="o", markersize=3, label=label)
    for label, points in (paper_points or {}).items():
        ranks = sorted(r for r in points if r <= max_rank)
        ax.plot(ranks, [points[r] for r in ranks], linestyle="none", marker="D", markerfacecolor="none",
                markersize=7, markeredgewidth=1.5, label=label)  # fmt: skip
    ax.set_xlabel("rank k")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_xticks([1, *range(5, max_rank + 1, 5)])
    ax.set_title(title or "Cumulative matching characteristic")
    ax.legend(fontsize=8, loc="lower right")
    return fig


@styled
def plot_training_curves(
    runs: Mapping[str, str | os.PathLike | Sequence[Mapping[str, Any]]] | str | os.PathLike,
    val_metrics: Sequence[str] = ("mAP", "rank1", "accuracy"),
) -> Figure:
    """Loss, training accuracy and validation metrics vs epoch for one run (dir / metrics.jsonl) or {label: run}.

    Validation on held-out ids logs mAP / rank-1; validation on one image per id logs accuracy (and loss)."""
    if isinstance(runs, (str, os.PathLike)):
        runs = {Path(runs).name if Path(runs).is_dir() else Path(runs).parent.name: runs}
    histories = {
        label: load_metrics(run) if isinstance(run, (str, os.PathLike)) else list(run) for label, run in runs.items()
    }
    if not any(histories.values()):
        raise ValueError("the runs have no epoch in their metrics; train at least one epoch first")
    fig, axes = new_figure(1, 3, figsize=(12, 3.4))
    loss_ax, acc_ax, val_ax = axes[0]
    palette = _palette(len(histories))
    for (label, history), color in zip(histories.items(), palette, strict=True):
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h.get("loss", np.nan) for h in history], color=color, label=label)
        acc = np.array([h.get("accuracy", np.nan) for h in history], dtype=float)
        acc_ax.plot(epochs, acc * (100 if np.nanmax(acc, initial=0) <= 1 else 1), color=color, label=label)
        val = [(h["epoch"], h["val"]) for h in history if h.get("val")]
        for metric, style in zip(val_metrics, ("-", "--", ":", "-."), strict=False):
            points = [(e, v[metric] * 100) for e, v in val if metric in v]
            if points:
                x, y = zip(*points, strict=True)
                val_ax.plot(x, y, linestyle=style, marker="o", markersize=4, color=color, label=f"{label} {metric}")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="training accuracy", xlabel="epoch", ylabel="accuracy (%)")
    val_ax.set(title="validation", xlabel="epoch", ylabel="%")
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines and (len(histories) > 1 or ax is val_ax):
            ax.legend(fontsize=7)
    if len(histories) == 1:
        fig.suptitle(next(iter(histories)), fontsize=9)
    if not val_ax.lines:
        val_ax.text(0.5, 0.5, "no validation epochs", ha="center", va="center", transform=val_ax.transAxes)
    return fig


def _palette(n: int) -> list:
    """n distinct colours, starting with the 'ours' blue."""
    import seaborn as sns

    return [COLORS["ours"], *sns.color_palette("deep", max(n, 1))[1:]][:n] if n <= 10 else sns.color_palette("husl", n)
