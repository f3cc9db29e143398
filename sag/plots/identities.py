"""A grid of identities seen by several cameras: one row per person, one column per image."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from sag.data.loaders import read_image
from sag.data.records import DISTRACTOR_PID, JUNK_PID, ImageRecord, ReIDDataset
from sag.plots.style import new_figure, styled

SPLITS = ("train", "test", "query", "gallery")
_MASK_COLORS = np.array([[0.0, 0.0, 0.0], [0.25, 0.55, 1.0], [1.0, 0.35, 0.1]])  # background, person, detail


@styled
def show_identities(
    dataset: ReIDDataset,
    num_ids: int = 6,
    per_id: int = 6,
    split: str = "test",
    ids: Sequence[int] | None = None,
    seed: int = 0,
    masks: bool = False,
    image_width: float = 0.9,
) -> Figure:
    """Images of ``num_ids`` identities across cameras, titled with person id and camera (1-based).

    ``split``: "train", "query", "gallery" or "test" (query + gallery). Identities seen by the most cameras are
    preferred (ties broken by ``seed``), or pass ``ids``. Each row takes one image per camera before repeating a
    camera. ``masks=True`` overlays the synthetic region masks (blue person, orange identity details).
    """
    records = _split_records(dataset, split)
    by_id: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        if split == "train" or record.pid not in (JUNK_PID, DISTRACTOR_PID):  # train labels start at 0
            by_id[record.pid].append(record)
    if not by_id:
        raise ValueError(f"the {split} split of {dataset.name} has no identities to show")
    if ids is None:
        rng = np.random.default_rng(seed)
        candidates = list(by_id)
        tie = rng.permutation(len(candidates))
        cameras = [len({r.camid for r in by_id[pid]}) for pid in candidates]
        order = sorted(range(len(candidates)), key=lambda i: (-cameras[i], tie[i]))
        ids = [candidates[i] for i in order[:num_ids]]
    else:
        unknown = [pid for pid in ids if pid not in by_id]
        if unknown:
            raise ValueError(f"ids {unknown} do not occur in the {split} split of {dataset.name}")
    rows = [_spread_over_cameras(by_id[pid], per_id) for pid in ids]
    fig, axes = new_figure(len(rows), per_id, figsize=(per_id * image_width, len(rows) * image_width * 2.1))
    for row_axes, pid, row in zip(axes, ids, rows, strict=True):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, record in zip(row_axes, row, strict=False):
            image = np.asarray(read_image(record.path), dtype=np.float64) / 255.0  # (H, W, 3)
            if masks:
                from sag.data.synthetic import load_mask

                mask = load_mask(record.path)
                tint = _MASK_COLORS[mask]
                alpha = np.where(mask > 0, 0.45, 0.0)[..., None]
                image = (1 - alpha) * image + alpha * tint
            ax.imshow(image, interpolation="nearest")
            ax.set_title(f"id {pid}\ncam {record.camid + 1}", fontsize=7)
    fig.suptitle(f"{dataset.display_name}: {len(rows)} identities across cameras ({split})", fontsize=9)
    return fig


def _split_records(dataset: ReIDDataset, split: str) -> list[ImageRecord]:
    """Records of one split name."""
    if split == "train":
        return dataset.train
    if split == "query":
        return dataset.query
    if split == "gallery":
        return dataset.gallery
    if split == "test":
        seen = {r.path for r in dataset.query}
        return [*dataset.query, *(r for r in dataset.gallery if r.path not in seen)]
    raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _spread_over_cameras(records: list[ImageRecord], count: int) -> list[ImageRecord]:
    """Up to ``count`` records, cycling through the cameras so that each appears before any repeats."""
    per_camera: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        per_camera[record.camid].append(record)
    queues = [per_camera[c] for c in sorted(per_camera)]
    out: list[ImageRecord] = []
    depth = 0
    while len(out) < count and any(depth < len(q) for q in queues):
        out += [q[depth] for q in queues if depth < len(q)][: count - len(out)]
        depth += 1
    return out
