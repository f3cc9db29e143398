"""The synthetic re-id world: a Market-1501-style dataset of drawn pedestrians, with per-pixel region masks."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from sag.atomic import remove_stale, temp_dir
from sag.data import render
from sag.data.market import MARKET1501, load_market_style
from sag.data.records import ReIDDataset

META_NAME = "synthetic.json"
MASK_FOLDER = "masks"
RENDER_VERSION = 1  # bump when the drawing changes: cached datasets of another version are not reused
REGIONS = ("background", "person", "identity")  # mask labels 0, 1, 2
_MAX_CAMERAS = 9  # one digit in Market-style names
_PARALLEL_FROM = 1500  # images; below this one process is faster than starting workers


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a synthetic dataset (same config + seed = same bytes)."""

    num_train_ids: int = 100
    num_test_ids: int = 100
    images_per_id: int = 16  # mean images per identity in train, and in the gallery for test ids
    num_cameras: int = 6
    size: tuple[int, int] = (128, 64)  # (H, W) of the written images
    max_family_size: int = 4  # identities sharing body and clothing colours, told apart by details
    junk_fraction: float = 0.29  # junk (-1) images per real gallery image (Market: 3,819 / 13,120)
    distractor_fraction: float = 0.21  # distractor (0000) images per real gallery image (Market: 2,793 / 13,120)
    multi_query_per_camera: int = 2  # gt_bbox images per (query id, camera), the query image included
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise ValueError("num_train_ids and num_test_ids must be at least 1")
        if self.num_train_ids + self.num_test_ids > 9999:
            raise ValueError("at most 9,999 identities fit Market-1501's 4-digit names")
        if not 2 <= self.num_cameras <= _MAX_CAMERAS:
            raise ValueError(f"num_cameras must be in 2..{_MAX_CAMERAS} (one digit in Market-style names)")
        if self.images_per_id < 2:
            raise ValueError("images_per_id must be at least 2 (an identity needs two cameras)")
        if len(self.size) != 2 or min(self.size) < 16:
            raise ValueError(f"size must be (H, W) with both at least 16 pixels, got {self.size}")
        if self.max_family_size < 1 or self.multi_query_per_camera < 1:
            raise ValueError("max_family_size and multi_query_per_camera must be at least 1")
        if self.junk_fraction < 0 or self.distractor_fraction < 0:
            raise ValueError("junk_fraction and distractor_fraction must be non-negative")


class _Image(NamedTuple):
    """One image to draw: where it goes, what it shows and its own random stream."""

    folder: str
    name: str
    kind: str  # person | junk | distractor
    pid: int  # whose identity is drawn (0 for distractors)
    camera: int  # 0-based
    key: int  # index of its random stream
    clean: bool  # no occluder (hand-drawn gt_bbox boxes)


def make_synthetic(
    root: str | os.PathLike,
    num_train_ids: int = 100,
    num_test_ids: int = 100,
    images_per_id: int = 16,
    seed: int = 0,
    size: tuple[int, int] = (128, 64),
    num_cameras: int = 6,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> Path:
    """Write a synthetic dataset in the Market-1501 layout at ``root`` (reused when it already matches); returns root.

    ``options``: the other fields of :class:`SyntheticConfig`. ``workers``: processes (default: all cores for
    large sets). The result does not depend on ``workers``. ``progress``: tqdm bar (None: only on a terminal).
    """
    unknown = set(options) - {f.name for f in fields(SyntheticConfig)}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {[f.name for f in fields(SyntheticConfig)]}")
    config = SyntheticConfig(
        num_train_ids=num_train_ids,
        num_test_ids=num_test_ids,
        images_per_id=images_per_id,
        seed=seed,
        size=size,
        num_cameras=num_cameras,
        **options,
    )
    root = Path(root).expanduser()
    if root.exists():
        existing = _read_meta(root, missing_ok=True)
        if existing is not None and existing["config"] == _config_dict(config):
            return root
        if not overwrite:
            what = "a synthetic dataset with other options" if existing else "files that are not a synthetic dataset"
            raise FileExistsError(
                f"{root} already holds {what}; choose another root or pass --overwrite (overwrite=True in Python)"
            )
        if existing is None:
            raise FileExistsError(f"{root} is not a synthetic dataset (no {META_NAME}); refusing to delete it")
        shutil.rmtree(root)
    identities, cameras, images = _plan(config)
    remove_stale(root.parent, root.name)  # what a killed earlier call left
    with temp_dir(root.parent, root.name) as tmp:  # umask permissions, locked while being filled
        _draw_all(tmp, config, identities, cameras, images, workers, progress)
        _copy_queries_to_gt_bbox(tmp, images)
        counts = {folder: sum(img.folder == folder for img in images) for folder in _FOLDERS}
        counts["gt_bbox"] += counts["query"]
        meta = {"generator": "sag.data.make_synthetic", "config": _config_dict(config), "counts": counts}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, root)  # the dataset appears complete or not at all
        except OSError:  # another process finished the same dataset first: use theirs
            existing = _read_meta(root, missing_ok=True)
            if existing is None or existing["config"] != _config_dict(config):
                raise
    return root


def load_synthetic(root: str | os.PathLike, generate_if_missing: bool = False, **options: Any) -> ReIDDataset:
    """Load a synthetic dataset (making it first when ``generate_if_missing``); ``options`` must match its config."""
    root = Path(root).expanduser()
    if generate_if_missing and _read_meta(root, missing_ok=True) is None:
        make_synthetic(root, **options)  # an existing set is loaded as it is; options left out are not defaults
    valid = {f.name for f in fields(SyntheticConfig)} | set(_RUN_OPTIONS)
    if set(options) - valid:
        raise ValueError(f"unknown option(s) {sorted(set(options) - valid)}; valid: {sorted(valid)}")
    meta = _read_meta(root)
    config = meta["config"]
    requested = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if k not in _RUN_OPTIONS}
    differ = {k: (v, config.get(k)) for k, v in requested.items() if config.get(k) != v}
    if differ:
        raise ValueError(
            f"{root} was made with other options {differ} (requested, found); make it again with those options "
            f"(make-synthetic --overwrite, or overwrite=True in Python), or use another root"
        )
    layout = replace(MARKET1501, name="synthetic", display="Synthetic", num_cameras=config["num_cameras"])
    return load_market_style(root, layout, name="synthetic")


def load_mask(image_path: str | os.PathLike) -> np.ndarray:
    """Region mask (H, W) uint8 of a synthetic image: 0 background/clutter/occluder, 1 person, 2 identity detail."""
    path = Path(image_path)
    mask_path = mask_path_for(path)
    if not mask_path.is_file():
        raise FileNotFoundError(
            f"no mask for {path}: expected {mask_path}; masks exist only for datasets written by make_synthetic"
        )
    with Image.open(mask_path) as mask:
        return np.asarray(mask, dtype=np.uint8)


def mask_path_for(image_path: str | os.PathLike) -> Path:
    """Where the mask of a synthetic image lives: ``<root>/masks/<split folder>/<image stem>.png``."""
    path = Path(image_path)
    return path.parent.parent / MASK_FOLDER / path.parent.name / f"{path.stem}.png"


_FOLDERS = ("bounding_box_train", "query", "bounding_box_test", "gt_bbox")
_RUN_OPTIONS = ("workers", "overwrite", "progress")  # make_synthetic arguments that do not change the data


def _config_dict(config: SyntheticConfig) -> dict[str, Any]:
    """The config as stored in synthetic.json (JSON types), with the drawing version."""
    data = asdict(config)
    data["size"] = list(config.size)
    data["render_version"] = RENDER_VERSION
    return data


def _read_meta(root: Path, missing_ok: bool = False) -> dict[str, Any] | None:
    """synthetic.json of ``root``; FileNotFoundError (or None) when absent."""
    path = root / META_NAME
    if not path.is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(
            f"no synthetic dataset at {root} (no {META_NAME}); make one with sag.data.make_synthetic({str(root)!r}) "
            f"or load_dataset('synthetic', root, generate_if_missing=True)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete {root} and generate it again") from err


def _plan(config: SyntheticConfig) -> tuple[dict[int, render.Identity], list[render.Camera], list[_Image]]:
    """Identities, cameras and the list of every image with its name: all drawn from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    cameras = [
        render.draw_camera(rng, low_res=(c == config.num_cameras - 1 and config.num_cameras >= 4))
        for c in range(config.num_cameras)
    ]
    pids = rng.permutation(np.arange(1, config.num_train_ids + config.num_test_ids + 1))  # interleaved, like Market
    train_pids = sorted(int(p) for p in pids[: config.num_train_ids])
    test_pids = sorted(int(p) for p in pids[config.num_train_ids :])
    identities = {**_families(rng, train_pids, config), **_families(rng, test_pids, config)}

    images: list[_Image] = []
    namer = _Namer(rng, config)

    def add(folder: str, kind: str, pid: int, camera: int, clean: bool = False) -> _Image:
        image = _Image(folder, namer.name(pid, camera, kind), kind, pid, camera, len(images), clean)
        images.append(image)
        return image

    for pid in train_pids:
        n = _num_images(rng, config.images_per_id)
        for camera in _cameras_for(rng, n, config.num_cameras):
            add("bounding_box_train", "person", pid, camera)
    num_gallery = 0
    for pid in test_pids:
        n = _num_images(rng, config.images_per_id)
        cams = _cameras_for(rng, n, config.num_cameras)
        num_gallery += n
        for camera in cams:
            add("bounding_box_test", "person", pid, camera)
        for camera in sorted(set(cams)):  # one query per camera the person was seen in (Market's rule)
            add("query", "person", pid, camera)
            for _ in range(config.multi_query_per_camera - 1):
                add("gt_bbox", "person", pid, camera, clean=True)
    for _ in range(round(config.junk_fraction * num_gallery)):
        add("bounding_box_test", "junk", int(rng.choice(test_pids)), int(rng.integers(config.num_cameras)))
    for _ in range(round(config.distractor_fraction * num_gallery)):
        add("bounding_box_test", "distractor", 0, int(rng.integers(config.num_cameras)))
    return identities, cameras, images


def _families(rng: np.random.Generator, pids: list[int], config: SyntheticConfig) -> dict[int, render.Identity]:
    """Identities in groups that share body and clothes and differ only in details (hair, shoes, bag, logo...)."""
    order = [int(p) for p in rng.permutation(pids)]
    out: dict[int, render.Identity] = {}
    while order:
        size = int(rng.integers(1, config.max_family_size + 1))
        members, order = order[:size], order[size:]
        base = render.draw_identity(rng)
        seen: set[tuple] = set()
        for pid in members:
            ident = base if not seen else render.draw_identity(rng, base)
            while ident.details() in seen:
                ident = render.draw_identity(rng, base)
            seen.add(ident.details())
            out[pid] = ident
    return out


class _Namer:
    """Market-1501 file names: ``{pid:04d}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg``, unique per camera frame."""

    def __init__(self, rng: np.random.Generator, config: SyntheticConfig) -> None:
        self.rng = rng
        per_camera = (config.num_train_ids + 2 * config.num_test_ids) * config.images_per_id / config.num_cameras
        self.max_step = int(np.clip(600_000 / max(per_camera, 1), 2, 40))
        self.frames = [int(f) for f in rng.integers(0, 200, config.num_cameras)]

    def name(self, pid: int, camera: int, kind: str) -> str:
        """The next free name in ``camera``."""
        self.frames[camera] += int(self.rng.integers(1, self.max_step + 1))
        frame = self.frames[camera]
        seq = 1 + min(frame // 160_000, 5)
        box = int(self.rng.integers(2, 9)) if kind != "person" else int(self.rng.integers(0, 4))
        label = "-1" if kind == "junk" else f"{pid:04d}"
        return f"{label}_c{camera + 1}s{seq}_{frame:06d}_{box:02d}.jpg"


def _num_images(rng: np.random.Generator, mean: int) -> int:
    """Images of one identity: the mean +- 40%, at least 2."""
    return max(2, round(mean * rng.uniform(0.6, 1.4)))


def _cameras_for(rng: np.random.Generator, n: int, num_cameras: int) -> list[int]:
    """Cameras of ``n`` images of one person: 2..num_cameras distinct cameras, each used at least once.

    The number of cameras is 2 + Binomial(num_cameras - 2, 0.62): 4.5 on average with 6 cameras, as in Market-1501
    (3,368 queries, one per camera and person, for 750 people).
    """
    k = min(2 + int(rng.binomial(num_cameras - 2, 0.62)), n)
    chosen = rng.choice(num_cameras, size=k, replace=False)
    return sorted(int(c) for c in np.concatenate([chosen, rng.choice(chosen, size=n - k)]))


_STATE: dict[str, Any] = {}  # per worker process: identities, cameras, output root, config


def _init_worker(identities, cameras, out: Path, config: SyntheticConfig) -> None:
    """Hand a worker what every task needs, once."""
    _STATE.update(identities=identities, cameras=cameras, out=out, config=config)


def _draw_task(images: list[_Image]) -> int:
    """Draw and write a batch of images (one identity's, usually); returns how many."""
    config: SyntheticConfig = _STATE["config"]
    out: Path = _STATE["out"]
    for image in images:
        rng = np.random.default_rng([config.seed, image.key])
        identity = _STATE["identities"].get(image.pid)
        pixels, mask = render.render(
            rng, identity, _STATE["cameras"][image.camera], config.size, kind=image.kind, clean=image.clean
        )
        Image.fromarray(pixels).save(out / image.folder / image.name, quality=92)
        Image.fromarray(mask).save(mask_path_for(out / image.folder / image.name))
    return len(images)


def _draw_all(out: Path, config, identities, cameras, images: list[_Image], workers, progress) -> None:
    """Draw every image, in worker processes for large sets (the bytes do not depend on the split of work)."""
    for folder in _FOLDERS:
        (out / folder).mkdir()
        (out / MASK_FOLDER / folder).mkdir(parents=True)
    tasks: dict[tuple[str, int], list[_Image]] = {}
    for image in images:  # one task per identity; junk and distractors in batches of 32
        key = (image.kind, image.pid if image.kind == "person" else image.key // 32)
        tasks.setdefault(key, []).append(image)
    chunks = list(tasks.values())
    if workers is None:
        workers = _available_cores() if len(images) >= _PARALLEL_FROM else 1
    disable = None if progress is None else not progress
    with tqdm(total=len(images), desc="drawing synthetic pedestrians", unit="img", disable=disable) as bar:
        if workers <= 1:
            _init_worker(identities, cameras, out, config)
            try:
                for chunk in chunks:
                    bar.update(_draw_task(chunk))
            finally:
                _STATE.clear()
            return
        ctx = multiprocessing.get_context()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(identities, cameras, out, config)) as pool:
            for done in pool.imap_unordered(_draw_task, chunks):
                bar.update(done)


def _copy_queries_to_gt_bbox(out: Path, images: list[_Image]) -> None:
    """gt_bbox holds every query image too (with its mask), as in Market-1501."""
    for image in images:
        if image.folder == "query":
            shutil.copyfile(out / "query" / image.name, out / "gt_bbox" / image.name)
            shutil.copyfile(mask_path_for(out / "query" / image.name), mask_path_for(out / "gt_bbox" / image.name))


def _available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
