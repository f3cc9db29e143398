"""Market-1501 and DukeMTMC-reID: folders of images whose file names carry person id and camera."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sag.data.records import (
    DISTRACTOR_PID,
    JUNK_PID,
    ImageRecord,
    ReIDDataset,
    check_not_empty,
    relabel,
)

_OS_FILES = ("Thumbs.db", "desktop.ini")
SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
MULTI_QUERY_FOLDER = "gt_bbox"


@dataclass(frozen=True)
class FolderLayout:
    """How one Market-style dataset names its files and folders."""

    name: str
    display: str
    pattern: re.Pattern[str]  # groups: pid, camera
    example: str
    num_cameras: int
    folder_names: tuple[str, ...]  # usual names of the dataset root, to accept its parent folder too
    allow_junk: bool  # id -1 allowed in the gallery (Market only)
    missing_hint: str


MARKET1501 = FolderLayout(
    name="market1501",
    display="Market-1501",
    pattern=re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.(?:jpg|jpeg|png)$", re.IGNORECASE),
    example="0002_c1s1_000451_03.jpg (person id, camera, sequence, frame, box)",
    num_cameras=6,
    folder_names=("Market-1501-v15.09.15", "Market-1501", "market1501", "market-1501"),
    allow_junk=True,
    missing_hint="download it with `python -m sag download market1501 --root DIR` or sag.data.download",
)
DUKEMTMC = FolderLayout(
    name="dukemtmc",
    display="DukeMTMC-reID",
    pattern=re.compile(r"^(\d{4})_c(\d)_f(\d{7})\.(?:jpg|jpeg|png)$", re.IGNORECASE),
    example="0005_c2_f0046985.jpg (person id, camera, frame)",
    num_cameras=8,
    folder_names=("DukeMTMC-reID", "dukemtmc-reid", "dukemtmc", "DukeMTMC"),
    allow_junk=False,
    missing_hint=(
        "DukeMTMC-reID was withdrawn by its authors and is never downloaded; bring your own copy and place it so "
        "that ROOT/DukeMTMC-reID/bounding_box_train exists (or pass the DukeMTMC-reID folder itself as root)"
    ),
)


def load_market1501(root: str | os.PathLike) -> ReIDDataset:
    """Market-1501 from its root folder or the folder that contains ``Market-1501-v15.09.15/``."""
    return load_market_style(root, MARKET1501)


def load_dukemtmc(root: str | os.PathLike) -> ReIDDataset:
    """DukeMTMC-reID from its root folder or the folder that contains ``DukeMTMC-reID/`` (never downloaded)."""
    return load_market_style(root, DUKEMTMC)


def load_market_style(root: str | os.PathLike, layout: FolderLayout, name: str | None = None) -> ReIDDataset:
    """Parse the three split folders (and ``gt_bbox`` when present) of a Market-style dataset."""
    base = find_dataset_root(root, layout)
    train = parse_folder(base / "bounding_box_train", layout)
    query = parse_folder(base / "query", layout)
    gallery_all = parse_folder(base / "bounding_box_test", layout)
    for split, records in (("bounding_box_train", train), ("query", query)):
        bad = next((r for r in records if r.pid in (JUNK_PID, DISTRACTOR_PID)), None)
        if bad is not None:
            raise ValueError(
                f"{bad.path}: junk (-1) and distractor (0000) images belong in bounding_box_test only, not in {split}"
            )
    if not layout.allow_junk and any(r.pid == JUNK_PID for r in gallery_all):
        raise ValueError(f"{layout.display} has no junk images, but {base / 'bounding_box_test'} holds id -1 files")
    gallery = [r for r in gallery_all if r.pid != JUNK_PID]
    junk = [r for r in gallery_all if r.pid == JUNK_PID]
    missing = {r.pid for r in query} - {r.pid for r in gallery}
    if missing:
        raise ValueError(
            f"{base / 'query'}: query ids {sorted(missing)[:10]} have no image in {base / 'bounding_box_test'}"
        )
    multi_query = None
    if (base / MULTI_QUERY_FOLDER).is_dir():
        multi_query = parse_folder(base / MULTI_QUERY_FOLDER, layout)
    train, num_train_ids = relabel(train)
    return ReIDDataset(
        name=name or layout.name,
        root=base,
        train=train,
        query=query,
        gallery=gallery,
        num_train_ids=num_train_ids,
        num_cameras=layout.num_cameras,
        multi_query=multi_query,
        junk=junk,
    )


def find_dataset_root(root: str | os.PathLike, layout: FolderLayout) -> Path:
    """The folder holding the split folders: ``root`` itself or a child / grand-child with the dataset's usual name."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{layout.display} folder {root} does not exist; {layout.missing_hint}")
    candidates = [root]
    candidates += [root / n for n in layout.folder_names]
    candidates += [root / n / m for n in layout.folder_names for m in layout.folder_names]
    for candidate in candidates:
        if (candidate / SPLIT_FOLDERS[0]).is_dir() or (candidate / SPLIT_FOLDERS[2]).is_dir():
            missing = [f for f in SPLIT_FOLDERS if not (candidate / f).is_dir()]
            if missing:
                raise FileNotFoundError(
                    f"{candidate} looks like {layout.display} but lacks {', '.join(missing)}; "
                    f"expected the folders {', '.join(SPLIT_FOLDERS)} (an incomplete copy or extraction?)"
                )
            return candidate
    raise FileNotFoundError(
        f"no {layout.display} found in {root}: expected {root}/bounding_box_train (or "
        f"{root}/{layout.folder_names[0]}/bounding_box_train) with query and bounding_box_test beside it; "
        f"{layout.missing_hint}"
    )


def parse_folder(folder: Path, layout: FolderLayout) -> list[ImageRecord]:
    """Records of every image in ``folder``, sorted by name; a file name that does not parse is an error.

    Only operating-system clutter is passed over: hidden files (``.DS_Store``, ``._*``) and ``Thumbs.db`` /
    ``desktop.ini`` (some Market-1501 copies carry a ``Thumbs.db``). Any other file must be a dataset image.
    """
    names = sorted(
        e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".") and e.name not in _OS_FILES
    )
    records = []
    for name in names:
        match = layout.pattern.match(name)
        if match is None:
            raise ValueError(
                f"cannot parse the file name {folder / name}: {layout.display} names look like {layout.example}"
            )
        pid, camera = int(match.group(1)), int(match.group(2))
        if not 1 <= camera <= layout.num_cameras:
            raise ValueError(f"{folder / name}: camera {camera} is outside 1..{layout.num_cameras} of {layout.display}")
        records.append(ImageRecord(str(folder / name), pid, camera - 1))
    check_not_empty(records, folder, layout.example)
    return records
