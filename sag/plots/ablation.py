"""The ablation bar chart: ours (mean ± std over seeds, seeds as dots) beside the paper's Table 1 values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sag import paper
from sag.plots.style import COLORS, new_figure, styled

_NAMES = {"rank1": "rank-1", "rank5": "rank-5", "rank10": "rank-10", "mAP": "mAP", "mINP": "mINP"}


@styled
def plot_ablation(
    results: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("rank1", "mAP"),
    paper_dataset: str | None = "market1501",
    show_gain: bool = True,
    title: str | None = None,
    ours_label: str = "ours",
) -> Figure:
    """Bars per Table 1 row: ours (results rows {row, seed, metric...} in percent) and the paper's.

    Top row: absolute values. Bottom row (``show_gain``): change against the baseline, ours paired by seed
    (row minus baseline of the same seed, mean ± std) and the paper's row minus its baseline, which compares
    the *shape* of the ablation when the absolute levels differ (e.g. synthetic data vs Market-1501).
    """
    from sag.ablation import summarize

    if not results:
        raise ValueError("no results to plot; run the ablation first (python -m sag ablate ...)")
    summary = summarize(results, metrics)
    rows = [s["row"] for s in summary]
    table = paper.TABLE1.get(paper_dataset, {}) if paper_dataset else {}
    has_paper = any(r in table for r in rows)
    gain_rows = [s for s in summary if s["row"] != "baseline" and f"{metrics[0]}_gain" in s]
    show_gain = show_gain and bool(gain_rows)
    nrows = 2 if show_gain else 1
    fig, axes = new_figure(nrows, len(metrics), figsize=(max(4.0, 0.75 * len(rows) + 1.5) * len(metrics), 3.4 * nrows))
    width = 0.38 if has_paper else 0.6
    x = np.arange(len(rows))
    for j, m in enumerate(metrics):
        ax = axes[0, j]
        means = [s[f"{m}_mean"] for s in summary]
        stds = [s[f"{m}_std"] for s in summary]
        offset = -width / 2 if has_paper else 0.0
        ax.bar(x + offset, means, width, yerr=stds, capsize=3, color=COLORS["ours"], label=f"{ours_label} (mean ± std)")
        for i, row in enumerate(rows):  # every seed as a dot
            seeds = [float(r[m]) for r in results if r["row"] == row]
            ax.scatter(np.full(len(seeds), x[i] + offset), seeds, s=10, color="black", zorder=3, linewidths=0)
        if has_paper:
            values = [table.get(r, {}).get(m, np.nan) for r in rows]
            ax.bar(x + width / 2, values, width, color=COLORS["paper"], hatch="//", edgecolor="white",
                   label=f"paper ({paper_dataset})")  # fmt: skip
        ax.set_title(_NAMES.get(m, m))
        ax.set_ylabel("%")
        _row_ticks(ax, x, rows)
        if show_gain:
            ax = axes[1, j]
            gx = np.arange(len(gain_rows))
            gains = [s.get(f"{m}_gain", np.nan) for s in gain_rows]
            errs = [s.get(f"{m}_gain_std", 0.0) for s in gain_rows]
            ax.bar(gx + offset, gains, width, yerr=errs, capsize=3, color=COLORS["ours"], label=ours_label)
            if has_paper and "baseline" in table:
                pg = [table.get(s["row"], {}).get(m, np.nan) - table["baseline"][m] for s in gain_rows]
                ax.bar(gx + width / 2, pg, width, color=COLORS["paper"], hatch="//", edgecolor="white", label="paper")
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_title(f"{_NAMES.get(m, m)}: change vs baseline")
            ax.set_ylabel("percentage points")
            _row_ticks(ax, gx, [s["row"] for s in gain_rows])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="medium", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _row_ticks(ax: Any, x: np.ndarray, labels: Sequence[str]) -> None:
    """Row names under the bars, slanted so D1,2,3,4 fits."""
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.grid(axis="x", visible=False)
