"""Ranked retrieval lists: a query and its top-k gallery images, correct / incorrect / junk marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.patches import Rectangle

from sag.plots.style import COLORS, new_figure, styled, to_display_image

STATUSES = ("correct", "incorrect", "junk")


def rank_gallery(
    distances: np.ndarray,
    q_pid: int,
    q_camid: int,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    top_k: int = 10,
    skip_junk: bool = False,
) -> list[tuple[int, str, int | None]]:
    """The first ``top_k`` gallery entries for one query: (gallery index, status, rank after junk removal or None).

    Market-1501 protocol: correct = same id, other camera; junk = id -1, or same id and same camera
    (junk does not count for the ranking); everything else (distractors 0 included) is incorrect.
    """
    distances, g_pids, g_camids = np.asarray(distances), np.asarray(g_pids), np.asarray(g_camids)
    order = np.argsort(distances, kind="stable")
    junk = (g_pids == -1) | ((g_pids == q_pid) & (g_camids == q_camid))
    out: list[tuple[int, str, int | None]] = []
    rank = 0
    for index in order:
        if junk[index]:
            if skip_junk:
                continue
            out.append((int(index), "junk", None))
        else:
            rank += 1
            out.append((int(index), "correct" if g_pids[index] == q_pid else "incorrect", rank))
        if len(out) == top_k:
            break
    return out


@styled
def plot_ranked_lists(
    query_images: Sequence[Any],
    gallery_images: Sequence[Any],
    distmat: np.ndarray,
    q_pids: Sequence[int],
    g_pids: Sequence[int],
    q_camids: Sequence[int],
    g_camids: Sequence[int],
    queries: Sequence[int] | None = None,
    top_k: int = 10,
    skip_junk: bool = False,
    normalization: str | None = "[-1, 1]",
    panel_size: tuple[float, float] = (1.0, 2.3),
):
    """One row per query: the query, then its ``top_k`` nearest gallery images with coloured borders.

    Green = correct match, red = wrong identity, grey dashed = junk (ignored by the metrics); titles give the rank
    after junk removal, the id and the camera (c1 = camid 0, as in Market-1501 file names). Images may be
    paths (only the shown ones are read), arrays, or model inputs normalised as ``normalization`` says.
    ``distmat`` is (Q, G) with Q = len(query_images); ``queries`` picks rows (default: all).
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query_images), len(gallery_images)):
        raise ValueError(
            f"distmat has shape {distmat.shape}, expected (queries, gallery) = "
            f"({len(query_images)}, {len(gallery_images)})"
        )
    queries = list(range(len(query_images))) if queries is None else list(queries)
    if not queries:
        raise ValueError("no query to show; give at least one query index")
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    fig, axes = new_figure(len(queries), top_k + 1, figsize=(panel_size[0] * (top_k + 1), panel_size[1] * len(queries)))
    for row, q in enumerate(queries):
        ax = axes[row, 0]
        ax.imshow(to_display_image(query_images[q], normalization))
        ax.set_title(f"query\nid {q_pids[q]} c{q_camids[q] + 1}", fontsize=8)
        _border(ax, COLORS["query"], "query")
        ranked = rank_gallery(distmat[q], q_pids[q], q_camids[q], g_pids, g_camids, top_k, skip_junk)
        for col, (index, status, rank) in enumerate(ranked, start=1):
            ax = axes[row, col]
            ax.imshow(to_display_image(gallery_images[index], normalization))
            label = "junk" if rank is None else f"#{rank}"
            ax.set_title(f"{label}\nid {g_pids[index]} c{g_camids[index] + 1}", fontsize=8, color=COLORS[status])
            _border(ax, COLORS[status], status, dashed=status == "junk")
        for col in range(len(ranked) + 1, top_k + 1):
            axes[row, col].set_visible(False)  # fewer gallery images than top_k
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    legend = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=COLORS[s], linewidth=2, label=s) for s in STATUSES]
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def _border(ax: Any, color: str, status: str, dashed: bool = False) -> None:
    """A thick frame around an image panel, tagged with its status (gid) for tests and tools."""
    rect = Rectangle(
        (0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor=color, linewidth=4,
        linestyle="--" if dashed else "-", clip_on=False,
    )  # fmt: skip
    rect.set_gid(status)
    ax.add_patch(rect)
