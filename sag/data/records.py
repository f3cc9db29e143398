"""Image records, the dataset object every loader returns, and its Table-2-style summary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

JUNK_PID = -1  # Market-1501 "junk" boxes: removed from the gallery, no influence on the ranking
DISTRACTOR_PID = 0  # Market-1501 "distractor" boxes (0000): kept in the gallery, always a wrong match

# What the loaders must report on the real datasets: the paper's Table 2 plus the protocols' facts (book chapter 2).
# Keys are those of ReIDDataset.counts(); CUHK03 is the classic protocol on the detected set (the paper's).
TABLE2: dict[str, dict[str, int]] = {
    "market1501": {
        "ids": 1501,
        "images": 36_036,
        "cameras": 6,
        "train_ids": 751,
        "train_images": 12_936,
        "test_ids": 750,
        "query_images": 3_368,
        "gallery_images": 19_732,
    },
    "cuhk03": {
        "ids": 1_467,
        "images": 14_097,
        "cameras": 2,
        "train_ids": 1_367,
        "train_images": 13_113,
        "test_ids": 100,
        "query_images": 984,
        "gallery_images": 984,
    },
    "dukemtmc": {
        "ids": 1404,
        "images": 36_411,
        "cameras": 8,
        "train_ids": 702,
        "train_images": 16_522,
        "test_ids": 702,
        "query_images": 2_228,
        "gallery_images": 17_661,
    },
}
# Facts beyond Table 2 (the datasets' protocols; Market's project page for the 2,793 distractors).
EXTRA_COUNTS: dict[str, dict[str, int]] = {
    "market1501": {"gallery_images_kept": 15_913, "junk_images": 3_819, "distractor_images": 2_793},
    "dukemtmc": {"gallery_images_kept": 17_661, "junk_images": 0},
    "cuhk03-new-detected": {
        "train_ids": 767,
        "test_ids": 700,
        "train_images": 7_365,
        "query_images": 1_400,
        "gallery_images": 5_332,
    },
}
# CUHK03 classic: Table 2's 984 test images belong to one of the 20 splits; the split-invariant counts are these.
CUHK03_CLASSIC_INVARIANT = ("ids", "images", "cameras", "train_ids", "test_ids")

DISPLAY_NAMES = {
    "market1501": "Market-1501",
    "dukemtmc": "DukeMTMC-reID",
    "cuhk03": "CUHK03",
    "synthetic": "Synthetic",
}
_ROW_LABELS = (  # Table 2's rows, in its order
    ("ids", "Number of IDs"),
    ("images", "Number of Images"),
    ("cameras", "Cameras"),
    ("train_ids", "#Train IDs"),
    ("train_images", "#Train Images"),
    ("test_ids", "#Test IDs"),
    ("query_images", "#Query Images"),
    ("gallery_images", "#Gallery Images"),
)


class ImageRecord(NamedTuple):
    """One image: its path, person id (relabelled 0..K-1 in train) and 0-based camera id."""

    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    """A re-id dataset split into train / query / gallery records, as the official protocol defines them."""

    name: str
    root: Path
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    num_train_ids: int
    num_cameras: int
    multi_query: list[ImageRecord] | None = None  # Market gt_bbox: hand-drawn boxes for multi-query
    protocol: str | None = None  # CUHK03: "classic" or "new"
    junk: list[ImageRecord] = field(default_factory=list)  # gallery images of id -1, dropped from `gallery`
    split: int | None = None  # CUHK03 classic: which of the 20 splits
    subset: str | None = None  # CUHK03: "detected" or "labeled"

    @property
    def single_gallery_shot(self) -> bool:
        """True when the protocol evaluates single-gallery-shot CMC (CUHK03 classic): query == gallery."""
        return self.name == "cuhk03" and self.protocol == "classic"

    @property
    def display_name(self) -> str:
        """Human name, e.g. ``Market-1501``."""
        return DISPLAY_NAMES.get(self.name, self.name)

    def counts(self) -> dict[str, int]:
        """Every count of Table 2 (same keys as ``TABLE2``) plus junk / distractor / multi-query counts."""
        test_ids = _real_ids(self.query)
        test_paths = {r.path for r in self.query} | {r.path for r in self.gallery} | {r.path for r in self.junk}
        cameras = {r.camid for r in (*self.train, *self.query, *self.gallery, *self.junk)}
        counts = {
            "ids": self.num_train_ids + len(test_ids),
            "images": len(self.train) + len(test_paths),
            "cameras": len(cameras),
            "train_ids": self.num_train_ids,
            "train_images": len(self.train),
            "test_ids": len(test_ids),
            "query_images": len(self.query),
            "gallery_images": len(self.gallery) + len(self.junk),
            "gallery_images_kept": len(self.gallery),
            "junk_images": len(self.junk),
            "distractor_images": sum(r.pid == DISTRACTOR_PID for r in self.gallery),
        }
        if self.multi_query is not None:
            counts["multi_query_images"] = len(self.multi_query)
        return counts

    def summary(self) -> str:
        """A Table-2-style summary of the splits."""
        title = self.display_name
        if self.subset:
            title += f" ({self.subset})"
        if self.protocol:
            title += f", {self.protocol} protocol" + (f", split {self.split}" if self.split is not None else "")
        return format_table2(self.counts(), title=title, root=self.root)

    def __str__(self) -> str:
        return self.summary()


def format_table2(counts: dict[str, int], title: str, root: Path | str | None = None) -> str:
    """Render ``counts`` (keys of ``TABLE2``, optionally the extra ones) as the rows of the paper's Table 2."""
    lines = [f"{'Dataset':<18}{title}"]
    if root is not None:
        lines.append(f"{'Root':<18}{root}")
    for key, label in _ROW_LABELS:
        line = f"{label:<18}{counts[key]:>9,}"
        if key == "gallery_images" and counts.get("junk_images"):
            line += f"  ({counts['gallery_images_kept']:,} after dropping {counts['junk_images']:,} junk)"
        if key == "gallery_images" and counts.get("distractor_images"):
            line += f"  incl. {counts['distractor_images']:,} distractors"
        lines.append(line)
    if "multi_query_images" in counts:
        lines.append(f"{'#Multi-query Imgs':<18}{counts['multi_query_images']:>9,}  (gt_bbox)")
    return "\n".join(lines)


def relabel(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], int]:
    """Map the person ids of ``records`` to 0..K-1 in increasing id order; returns (records, K)."""
    records = list(records)
    pids = sorted({r.pid for r in records})
    label = {pid: i for i, pid in enumerate(pids)}
    return [r._replace(pid=label[r.pid]) for r in records], len(pids)


def check_not_empty(records: Sequence[ImageRecord], where: Path | str, example: str) -> None:
    """ValueError naming ``where`` when a split has no images at all."""
    if not records:
        raise ValueError(f"no images found in {where}; expected image files named like {example}")


def _real_ids(records: Iterable[ImageRecord]) -> set[int]:
    """Person ids other than junk (-1) and distractor (0)."""
    return {r.pid for r in records if r.pid not in (JUNK_PID, DISTRACTOR_PID)}
