"""CUHK03 from ``cuhk-03.mat`` (MATLAB v7.3 / HDF5): image extraction, classic 1,367/100 and new 767/700 protocols."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
from PIL import Image
from tqdm.auto import tqdm

from sag.atomic import remove_stale, temp_dir
from sag.data.records import ImageRecord, ReIDDataset, check_not_empty, relabel

MAT_NAME = "cuhk-03.mat"
NEW_PROTOCOL_NAME = "cuhk03_new_protocol_config_{subset}.mat"
NEW_PROTOCOL_FIELDS = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx", "camId")
SUBSETS = ("detected", "labeled")
PROTOCOLS = ("classic", "new")
NUM_SPLITS = 20
IMAGES_PER_CELL_ROW = 10  # images 1-5: camera view 1, images 6-10: camera view 2
_FOLDER_NAMES = ("cuhk03_release", "cuhk03", "CUHK03")
_NAME = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})\.png$")  # pair, id in pair, view, image index (all 1-based)
_HINT = (
    "unzip cuhk03_release.zip so that ROOT/cuhk03_release/cuhk-03.mat exists "
    "(for protocol='new' add cuhk03_new_protocol_config_{detected,labeled}.mat beside it)"
)


def load_cuhk03(
    root: str | os.PathLike, subset: str = "detected", protocol: str = "classic", split: int = 0
) -> ReIDDataset:
    """CUHK03 ``subset`` under ``protocol``: "classic" (1,367/100 ids, ``split`` 0..19) or "new" (767/700 ids)."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown CUHK03 subset {subset!r}; valid subsets: {', '.join(SUBSETS)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown CUHK03 protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    mat_path = find_cuhk03_mat(root)
    image_dir = extract_images(mat_path, subset)
    if protocol == "classic":
        if not 0 <= split < NUM_SPLITS:
            raise ValueError(f"CUHK03 classic split must be in 0..{NUM_SPLITS - 1}, got {split}")
        return _classic(mat_path, image_dir, subset, split)
    config = mat_path.parent / NEW_PROTOCOL_NAME.format(subset=subset)
    if not config.is_file():
        raise FileNotFoundError(
            f"{config} does not exist: the new protocol (CUHK03-NP, Zhong et al. 2017) needs it beside {mat_path}"
        )
    return _new_protocol(config, image_dir, subset)


def find_cuhk03_mat(root: str | os.PathLike) -> Path:
    """``cuhk-03.mat`` in ``root`` or in its ``cuhk03_release`` (or ``cuhk03/cuhk03_release``) folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CUHK03 folder {root} does not exist; {_HINT}")
    candidates = [
        root,
        *(root / n for n in _FOLDER_NAMES),
        *(root / n / m for n in _FOLDER_NAMES for m in _FOLDER_NAMES),
    ]
    for folder in candidates:
        if (folder / MAT_NAME).is_file():
            return folder / MAT_NAME
    raise FileNotFoundError(f"no {MAT_NAME} found in {root} or {root}/cuhk03_release; {_HINT}")


def extract_images(mat_path: str | os.PathLike, subset: str = "detected") -> Path:
    """Write every image of ``subset`` to ``images_<subset>/`` beside the .mat once (atomically); returns the folder.

    Names follow the usual convention ``{pair}_{id:03d}_{view}_{index:02d}.png`` (1-based), the names that
    ``cuhk03_new_protocol_config_*.mat`` lists. Empty cells (no image taken) produce no file.
    """
    mat_path = Path(mat_path)
    out = mat_path.parent / f"images_{subset}"
    if out.is_dir():
        return out
    remove_stale(mat_path.parent, out.name)  # a killed earlier extraction
    with temp_dir(mat_path.parent, out.name) as tmp:
        with _open_mat(mat_path) as mat:
            pairs = _cell_array(mat, subset, mat_path)
            total = sum(p.size for p in pairs)
            with tqdm(total=total, desc=f"CUHK03 {subset} -> PNG", unit="cell", disable=None) as bar:
                for pair, cells in enumerate(pairs, start=1):
                    for idx in range(cells.shape[0]):
                        for k in range(cells.shape[1]):
                            image = _read_image(mat, cells[idx, k], mat_path, f"{subset}{{{pair}}}({idx + 1},{k + 1})")
                            if image is not None:
                                view = 1 if k < IMAGES_PER_CELL_ROW // 2 else 2
                                Image.fromarray(image).save(tmp / f"{pair}_{idx + 1:03d}_{view}_{k + 1:02d}.png")
                            bar.update()
        try:
            os.rename(tmp, out)  # one rename: a crash before it leaves only the hidden temporary folder
        except OSError:
            if not out.is_dir():  # else another process extracted the same images first
                raise
    return out


def read_testsets(mat_path: str | os.PathLike) -> list[np.ndarray]:
    """The 20 classic test splits of ``cuhk-03.mat``: each an int array (100, 2) of 1-based (pair, id) rows."""
    mat_path = Path(mat_path)
    with _open_mat(mat_path) as mat:
        splits = []
        for i, ref in enumerate(_refs(mat, "testsets", mat_path)):
            rows = np.asarray(mat[ref]).T  # MATLAB stores column-major: (2, 100) on disk -> (100, 2)
            if rows.ndim != 2 or rows.shape[1] != 2 or rows.size == 0 or rows.min() < 1:
                raise ValueError(f"{mat_path}: testsets{{{i + 1}}} should be a (k, 2) array of 1-based (pair, id)")
            splits.append(rows.astype(np.int64))
    if len(splits) != NUM_SPLITS:
        raise ValueError(f"{mat_path}: testsets holds {len(splits)} splits, expected {NUM_SPLITS}")
    return splits


def pair_sizes(mat_path: str | os.PathLike, subset: str = "detected") -> list[int]:
    """Number of identities in each camera pair (843, 440, 77, 58, 49 in the real file)."""
    mat_path = Path(mat_path)
    with _open_mat(mat_path) as mat:
        return [cells.shape[0] for cells in _cell_array(mat, subset, mat_path)]


def _classic(mat_path: Path, image_dir: Path, subset: str, split: int) -> ReIDDataset:
    """Classic protocol: 100 test ids of ``split``; query == gallery == all their images."""
    offsets = np.concatenate([[0], np.cumsum(pair_sizes(mat_path, subset))])
    test_pairs = {(int(p), int(i)) for p, i in read_testsets(mat_path)[split]}
    train, test = [], []
    for name, pair, idx, view in _list_images(image_dir):
        record = ImageRecord(str(image_dir / name), int(offsets[pair - 1]) + idx, view - 1)
        (test if (pair, idx) in test_pairs else train).append(record)
    check_not_empty(test, image_dir, f"the (pair, id) rows of testsets{{{split + 1}}} in {mat_path}")
    train, num_train_ids = relabel(train)
    return ReIDDataset(
        name="cuhk03",
        root=mat_path.parent,
        train=train,
        query=list(test),
        gallery=list(test),
        num_train_ids=num_train_ids,
        num_cameras=2,
        protocol="classic",
        split=split,
        subset=subset,
    )


def _new_protocol(config: Path, image_dir: Path, subset: str) -> ReIDDataset:
    """New protocol (CUHK03-NP): the index lists of ``config`` (1-based) over its ``filelist``."""
    fields = _load_config(config)
    files = [_mat_string(x) for x in np.asarray(fields["filelist"], dtype=object).ravel()]
    labels = np.asarray(fields["labels"]).ravel().astype(np.int64)
    cams = np.asarray(fields["camId"]).ravel().astype(np.int64) - 1
    if not len(files) == len(labels) == len(cams):
        raise ValueError(
            f"{config}: filelist, labels and camId must have one entry per image, got {len(files)}, {len(labels)}, "
            f"{len(cams)}"
        )
    if cams.size and cams.min() < 0:
        raise ValueError(f"{config}: camId must be 1-based, found {cams.min() + 1}")
    available = {name for name, *_ in _list_images(image_dir)}
    missing = [f for f in files if f not in available]
    if missing:
        raise FileNotFoundError(
            f"{config} lists {len(missing)} images missing from {image_dir}, e.g. {missing[:3]}; "
            f"was {image_dir} extracted from the matching cuhk-03.mat?"
        )

    def records(key: str) -> list[ImageRecord]:
        idx = np.asarray(fields[key]).ravel().astype(np.int64)
        if idx.size == 0:
            raise ValueError(f"{config}: {key} is empty; expected 1-based indices into filelist")
        if idx.min() < 1 or idx.max() > len(files):
            raise ValueError(f"{config}: {key} must hold 1-based indices in 1..{len(files)}, got {idx.min()}..")
        return [ImageRecord(str(image_dir / files[i - 1]), int(labels[i - 1]), int(cams[i - 1])) for i in idx]

    train, num_train_ids = relabel(records("train_idx"))
    return ReIDDataset(
        name="cuhk03",
        root=config.parent,
        train=train,
        query=records("query_idx"),
        gallery=records("gallery_idx"),
        num_train_ids=num_train_ids,
        num_cameras=len(set(cams.tolist())),
        protocol="new",
        subset=subset,
    )


def _list_images(image_dir: Path) -> list[tuple[str, int, int, int]]:
    """(name, pair, id in pair, view) of every extracted image, sorted by name."""
    out = []
    for name in sorted(os.listdir(image_dir)):
        match = _NAME.match(name)
        if match is None:
            raise ValueError(
                f"cannot parse the file name {image_dir / name}: CUHK03 images are named like 1_001_1_01.png "
                f"(pair, id, view, index); delete {image_dir} to extract it again"
            )
        out.append((name, int(match.group(1)), int(match.group(2)), int(match.group(3))))
    return out


def _open_mat(mat_path: Path) -> h5py.File:
    """Open a MATLAB v7.3 file, with an error that says what was expected."""
    if not mat_path.is_file():
        raise FileNotFoundError(f"{mat_path} does not exist; {_HINT}")
    try:
        return h5py.File(mat_path, "r")
    except OSError as err:
        raise ValueError(
            f"{mat_path} is not a MATLAB v7.3 (HDF5) file ({err}); expected cuhk-03.mat from cuhk03_release.zip"
        ) from err


def _field(mat: h5py.File, key: str, mat_path: Path) -> h5py.Dataset:
    """A top-level variable of the .mat, or ValueError naming what a cuhk-03.mat holds."""
    if key not in mat:
        found = ", ".join(sorted(k for k in mat if not k.startswith("#"))) or "nothing"
        raise ValueError(f"{mat_path} has no variable {key!r} (found: {found}); expected detected, labeled, testsets")
    return mat[key]


def _refs(mat: h5py.File, key: str, mat_path: Path) -> list[Any]:
    """The object references of cell array ``key``; ValueError when it is not one (a damaged or foreign .mat)."""
    field = _field(mat, key, mat_path)
    if not isinstance(field, h5py.Dataset) or h5py.check_dtype(ref=field.dtype) is None:
        kind = f"{field.dtype} array" if isinstance(field, h5py.Dataset) else type(field).__name__
        raise ValueError(
            f"{mat_path}: {key} should be a MATLAB cell array (HDF5 object references), got a {kind}; "
            "the file is damaged or not CUHK03's cuhk-03.mat"
        )
    refs = list(np.asarray(field).ravel())
    for i, ref in enumerate(refs):
        if not ref:  # a null reference: the cell was never written
            raise ValueError(f"{mat_path}: {key}{{{i + 1}}} refers to nothing; the file is damaged")
    return refs


def _cell_array(mat: h5py.File, subset: str, mat_path: Path) -> list[np.ndarray]:
    """The 5 camera-pair cells of ``subset``: each an object-reference array (n_ids, 10)."""
    pairs = []
    for i, ref in enumerate(_refs(mat, subset, mat_path)):
        cells = np.asarray(mat[ref]).T  # (10, n_ids) on disk -> (n_ids, 10)
        if cells.ndim != 2 or cells.shape[1] != IMAGES_PER_CELL_ROW or cells.dtype != object:
            raise ValueError(
                f"{mat_path}: {subset}{{{i + 1}}} should be an n_ids x {IMAGES_PER_CELL_ROW} cell array of images, "
                f"got an array of shape {cells.shape} and type {cells.dtype}"
            )
        pairs.append(cells)
    return pairs


def _read_image(mat: h5py.File, ref: Any, mat_path: Path, where: str) -> np.ndarray | None:
    """One cell: an (H, W, 3) uint8 image, or None for an empty cell (MATLAB stores [] as uint64 zeros (2,))."""
    data = mat[ref]
    if data.attrs.get("MATLAB_empty", 0) or (data.shape in ((2,), (0,)) and not np.any(data[()])):
        return None
    if data.ndim != 3 or data.shape[0] != 3 or data.dtype != np.uint8:
        raise ValueError(
            f"{mat_path}: cell {where} should hold an H x W x 3 uint8 image, got shape {data.shape[::-1]} "
            f"(MATLAB order) and type {data.dtype}"
        )
    return np.ascontiguousarray(data[()].T)  # (3, W, H) on disk -> (H, W, 3)


def _load_config(config: Path) -> dict[str, Any]:
    """The variables of a new-protocol config .mat (MATLAB v5), checked for the expected fields."""
    try:
        fields = scipy.io.loadmat(config)
    except NotImplementedError as err:  # scipy's answer for v7.3 files
        raise ValueError(f"{config} is a MATLAB v7.3 file; re-save it with MATLAB's save -v7 ({err})") from err
    except Exception as err:  # scipy raises several types for files that are not .mat at all
        raise ValueError(f"cannot read {config} as a MATLAB .mat file: {err}") from err
    missing = [k for k in NEW_PROTOCOL_FIELDS if k not in fields]
    if missing:
        found = ", ".join(sorted(k for k in fields if not k.startswith("__"))) or "nothing"
        raise ValueError(
            f"{config} lacks {', '.join(missing)} (found: {found}); expected {', '.join(NEW_PROTOCOL_FIELDS)}"
        )
    return fields


def _mat_string(value: Any) -> str:
    """A MATLAB char array as loaded by scipy (possibly nested in 1-element arrays) -> str."""
    while isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            return "".join(value.ravel().tolist())
        value = value.ravel()[0]
    return str(value)
