"""Figures: attention grids (Figure 4), ranked lists, CMC and training curves, ablation bars, attention mass.

Every function returns a ``matplotlib.figure.Figure`` that is not registered with pyplot (a notebook shows it
once; a script saves it with ``save_figure``). ``show_identities`` comes from ``sag.plots.identities``.
"""

from __future__ import annotations

import importlib
from typing import Any

from sag.plots.ablation import plot_ablation
from sag.plots.attention import grid_title, plot_attention_grids, plot_model_attention, upsample_grid
from sag.plots.curves import load_cmc, load_metrics, plot_cmc, plot_training_curves
from sag.plots.mass import plot_attention_mass
from sag.plots.ranking import plot_ranked_lists, rank_gallery
from sag.plots.style import COLORS, light_style, new_figure, save_figure, to_display_image

__all__ = [
    "COLORS",
    "grid_title",
    "light_style",
    "load_cmc",
    "load_metrics",
    "new_figure",
    "plot_ablation",
    "plot_attention_grids",
    "plot_attention_mass",
    "plot_cmc",
    "plot_model_attention",
    "plot_ranked_lists",
    "plot_training_curves",
    "rank_gallery",
    "save_figure",
    "show_identities",
    "to_display_image",
    "upsample_grid",
]


def __getattr__(name: str) -> Any:
    """``show_identities`` lives in sag.plots.identities (the data pictures); import it on first use."""
    if name == "show_identities":
        return importlib.import_module("sag.plots.identities").show_identities
    raise AttributeError(f"module 'sag.plots' has no attribute {name!r}")
