"""Where the attention goes: grid mass on background / person / identity detail, as shares or as lift over uniform."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sag.analysis import REGIONS
from sag.plots.style import new_figure, styled

REGION_COLORS = {"background": "#bdbdbd", "person": "#8da0cb", "identity": "#e78ac3"}
KINDS = ("share", "lift")


@styled
def plot_attention_mass(
    summary: Sequence[Mapping[str, Any]],
    label_keys: Sequence[str] = ("source",),
    title: str | None = None,
    kind: str = "share",
) -> Figure:
    """Attention mass per map, e.g. the rows of ``sag.analysis.summarize_mass``.

    ``kind="share"``: one 100% bar per map split into background / person / identity detail (identity share
    printed), plus "uniform" bars with the regions' area fractions, what a map that ignores the image scores.
    ``kind="lift"``: per map and region, share / area (1 = no preference; > 1 = attended), horizontal bars with
    ``<region>_lift_std`` error bars when present (e.g. over seeds).
    """
    if not summary:
        raise ValueError("no attention-mass rows to plot; run sag.analysis.summarize_mass first")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    labels = [" ".join(str(s[k]) for k in label_keys) + f" ({s.get('grid', '')})" for s in summary]
    if kind == "lift":
        return _lift(summary, labels, title)
    bars = [
        (label.replace(" (", "\n("), {r: float(s[r]) for r in REGIONS})
        for label, s in zip(labels, summary, strict=True)
    ]
    for grid, areas in _uniform_references(summary):
        bars.append((f"uniform\n({grid})", areas))
    fig, axes = new_figure(figsize=(max(4.5, 0.9 * len(bars) + 1.5), 3.8))
    ax = axes[0, 0]
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for region in REGIONS:
        values = np.array([b[1][region] for b in bars]) * 100
        ax.bar(x, values, 0.65, bottom=bottom, color=REGION_COLORS[region], label=region, edgecolor="white")
        bottom += values
    for i, (label, masses) in enumerate(bars):
        ax.text(i, 100 - 100 * masses["identity"] / 2, f"{100 * masses['identity']:.0f}%", ha="center", va="center",
                fontsize=7, color="black")  # fmt: skip
        if label.startswith("uniform"):
            for k in range(len(REGIONS)):  # every segment of the reference bar
                ax.patches[i + k * len(bars)].set_hatch("..")
    ax.set_xticks(x)
    ax.set_xticklabels([b[0] for b in bars], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("share of the map's mass (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="x", visible=False)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="region", title_fontsize=7)
    ax.set_title(title or "Attention mass by region (identity share printed)")
    return fig


def _uniform_references(summary: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """One (grid label, area fractions) per distinct set of area fractions (they rarely depend on the grid)."""
    refs: list[tuple[list[str], dict[str, float]]] = []
    for s in summary:
        if not all(f"{r}_area" in s for r in REGIONS):
            continue
        areas = {r: float(s[f"{r}_area"]) for r in REGIONS}
        grid = str(s.get("grid", ""))
        for grids, known in refs:
            if all(abs(known[r] - areas[r]) < 5e-3 for r in REGIONS):
                if grid not in grids:
                    grids.append(grid)
                break
        else:
            refs.append(([grid], areas))
    return [(", ".join(grids) if len(grids) <= 2 else "area", areas) for grids, areas in refs]


def _lift(summary: Sequence[Mapping[str, Any]], labels: Sequence[str], title: str | None) -> Figure:
    """Horizontal grouped bars of share / area per region, a line at 1 (uniform)."""
    n = len(summary)
    fig, axes = new_figure(figsize=(6.5, 0.42 * n + 1.4))
    ax = axes[0, 0]
    y = np.arange(n)[::-1]  # first map on top
    height = 0.26
    for k, region in enumerate(REGIONS[::-1]):  # identity on top within each group
        lifts = []
        for s in summary:
            if f"{region}_lift" in s:
                lifts.append(float(s[f"{region}_lift"]))
            else:
                area = float(s[f"{region}_area"])
                lifts.append(float(s[region]) / area if area > 0 else np.nan)
        errs = [float(s.get(f"{region}_lift_std", 0.0)) for s in summary]
        ax.barh(y + (k - 1) * height, lifts, height, xerr=errs, color=REGION_COLORS[region], label=region,
                error_kw={"elinewidth": 0.8, "capsize": 1.5})  # fmt: skip
    ax.axvline(1.0, color="black", linestyle="--", linewidth=0.9)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("lift = share of the map's mass / share of the image's area (1 = uniform)")
    ax.grid(axis="y", visible=False)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="region",
              title_fontsize=7)  # fmt: skip
    ax.set_title(title or "Attention lift over a uniform map, by region")
    return fig
