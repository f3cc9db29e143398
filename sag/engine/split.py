"""Validation splits: one held-out image per id (every id trains, the released prepare.py), or held-out ids."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class ValidationSplit(NamedTuple):
    """Training records (ids relabelled 0..K-1) and a query/gallery set built from the held-out ids."""

    train: list[Any]  # ImageRecord with pid in 0..num_classes-1
    query: list[Any]  # one image per (held-out id, camera)
    gallery: list[Any]  # the other images of the held-out ids
    num_classes: int
    held_out: list[int]  # original pids held out
    images: tuple[Any, ...] = ()  # validation images of trained ids (pid relabelled like train): loss, accuracy only


def default_val_ids(num_ids: int) -> int:
    """10% of the training ids, at least 2 and at most 100 (Market-1501: 75)."""
    return int(min(100, max(2, round(0.1 * num_ids))))


def hold_out_images(records: Sequence[Any]) -> ValidationSplit:
    """Every id trains; the first image (in path order) of each id with 2+ images becomes a validation image.

    This is the released ``prepare.py``: its val folder holds the first image of every training id and is scored
    by loss and accuracy only. ids are relabelled 0..K-1 in sorted order, in ``train`` and ``images`` alike.
    """
    by_id: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_id[int(record.pid)].append(record)
    ids = sorted(by_id)
    first = {min(group, key=lambda r: str(r.path)) for group in by_id.values() if len(group) > 1}
    train = [r for r in records if r not in first]
    val = sorted(first, key=lambda r: (int(r.pid), str(r.path)))
    return ValidationSplit(_relabel(train, ids), [], [], len(ids), [], tuple(_relabel(val, ids)))


def carve_validation(records: Sequence[Any], val_ids: int, seed: int = 0) -> ValidationSplit:
    """Hold out ``val_ids`` ids (seeded, preferring ids seen by 2+ cameras); per held-out id one image per camera
    becomes a query and the rest the gallery; the remaining ids are relabelled 0..K-1 for the classifier.

    ``records`` are ``ImageRecord(path, pid, camid)`` (anything with ``pid``, ``camid`` and ``_replace``).
    """
    by_id: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_id[int(record.pid)].append(record)
    ids = sorted(by_id)
    if val_ids == 0:
        return ValidationSplit(_relabel(records, ids), [], [], len(ids), [])
    if val_ids > len(ids) - 2:
        raise ValueError(
            f"cannot hold out {val_ids} of {len(ids)} training ids for validation: at least 2 must remain to "
            f"train on; use --val-ids {max(0, len(ids) - 2)} or fewer (0 = no validation)"
        )
    rng = np.random.default_rng(seed)
    multi_camera = [pid for pid in ids if len({r.camid for r in by_id[pid]}) > 1 and len(by_id[pid]) > 1]
    multi_set = set(multi_camera)
    single_camera = [pid for pid in ids if pid not in multi_set]
    order = list(rng.permutation(multi_camera)) + list(rng.permutation(single_camera))
    held_out = sorted(int(pid) for pid in order[:val_ids])
    held_set = set(held_out)
    query, gallery = [], []
    for pid in held_out:
        by_camera: dict[int, list[Any]] = defaultdict(list)
        for record in by_id[pid]:
            by_camera[int(record.camid)].append(record)
        for camid in sorted(by_camera):
            images = by_camera[camid]
            pick = int(rng.integers(len(images)))
            query.append(images[pick])
            gallery.extend(image for i, image in enumerate(images) if i != pick)
    gallery_views = {(int(r.pid), int(r.camid)) for r in gallery}
    if not any(any(p == int(q.pid) and c != int(q.camid) for p, c in gallery_views) for q in query):
        raise ValueError(
            f"the {val_ids} held-out validation ids have no query with a gallery image from another camera, so "
            f"validation could not score anything; use a larger --val-ids or --val-ids 0 (no validation)"
        )
    kept = [pid for pid in ids if pid not in held_set]
    kept_records = [r for r in records if int(r.pid) not in held_set]
    return ValidationSplit(_relabel(kept_records, kept), query, gallery, len(kept), held_out)


def _relabel(records: Sequence[Any], ids: list[int]) -> list[Any]:
    """Records with pids mapped onto 0..len(ids)-1 in sorted-id order."""
    label = {pid: i for i, pid in enumerate(ids)}
    return [r._replace(pid=label[int(r.pid)]) for r in records]
