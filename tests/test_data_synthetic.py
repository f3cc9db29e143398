"""The synthetic world: Market-1501 layout and naming, masks, determinism, caching, CLI and the identity figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import sag.data.synthetic as synthetic
from sag.cli import main
from sag.data import load_dataset, load_mask, make_synthetic
from sag.data.synthetic import META_NAME, SyntheticConfig, _plan, mask_path_for
from sag.plots.identities import show_identities

TINY = {"num_train_ids": 8, "num_test_ids": 8, "images_per_id": 4}
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s([1-6])_(\d{6})_(\d{2})\.jpg$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny", **TINY)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_market_layout_and_counts_round_trip(tiny: Path) -> None:
    meta = json.loads((tiny / META_NAME).read_text())
    ds = load_dataset("synthetic", tiny)
    assert ds.name == "synthetic" and ds.num_cameras == 6 and ds.num_train_ids == 8
    assert len(ds.train) == meta["counts"]["bounding_box_train"]
    assert len(ds.query) == meta["counts"]["query"]
    assert len(ds.gallery) + len(ds.junk) == meta["counts"]["bounding_box_test"]
    assert len(ds.multi_query) == meta["counts"]["gt_bbox"]
    for folder in ("bounding_box_train", "query", "bounding_box_test", "gt_bbox"):
        names = [p.name for p in (tiny / folder).iterdir()]
        assert names and all(MARKET_NAME.match(n) for n in names), folder
    assert ds.junk and all(Path(r.path).name.startswith("-1_") for r in ds.junk)
    assert any(r.pid == 0 for r in ds.gallery)  # distractors
    counts = ds.counts()
    assert counts["test_ids"] == 8 and counts["ids"] == 16
    # train and test identities are disjoint (original ids, from the names)
    train_ids = {int(Path(r.path).name[:4]) for r in ds.train}
    assert train_ids.isdisjoint({r.pid for r in ds.query}) and len(train_ids) == 8
    # Market's rules: one query per (person, camera), each with a cross-camera match; gt_bbox holds the queries
    assert len({(r.pid, r.camid) for r in ds.query}) == len(ds.query)
    for q in ds.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    assert {Path(r.path).name for r in ds.query} <= {Path(r.path).name for r in ds.multi_query}
    with Image.open(ds.train[0].path) as image:
        assert image.size == (64, 128) and image.mode == "RGB"


def test_every_image_has_a_region_mask(tiny: Path) -> None:
    ds = load_dataset("synthetic", tiny)
    people = [*ds.train, *ds.query, *(r for r in ds.gallery if r.pid > 0), *ds.multi_query]
    others = [*ds.junk, *(r for r in ds.gallery if r.pid == 0)]
    detail_share = []
    for record in people + others:
        mask = load_mask(record.path)
        assert mask.shape == (128, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1, 2}
    for record in people:
        mask = load_mask(record.path)
        assert (mask == 1).any() and (mask == 0).any()
        detail_share.append((mask == 2).mean())
    assert np.mean([share > 0 for share in detail_share]) > 0.95  # identity details are (almost) always visible
    assert 0.01 < np.mean(detail_share) < 0.3
    assert mask_path_for(ds.train[0].path) == tiny / "masks" / "bounding_box_train" / (
        Path(ds.train[0].path).stem + ".png"
    )
    with pytest.raises(FileNotFoundError, match=r"no mask for .*masks exist only for datasets written by make_synth"):
        load_mask(tiny.parent / "elsewhere" / "query" / "0001_c1s1_000001_00.jpg")


def test_same_seed_same_bytes_whatever_the_workers(tiny: Path, tmp_path: Path) -> None:
    again = make_synthetic(tmp_path / "again", **TINY, workers=2)
    assert _files(again) == _files(tiny)
    other = make_synthetic(tmp_path / "other", **TINY, seed=1)
    assert _files(other) != _files(tiny)


def test_identities_come_in_families_that_differ_in_details() -> None:
    identities, _, _ = _plan(SyntheticConfig(num_train_ids=60, num_test_ids=60, max_family_size=4))
    groups: dict[tuple, list] = {}
    for ident in identities.values():
        groups.setdefault((ident.top, ident.bottom, ident.skin), []).append(ident)
    families = [g for g in groups.values() if len(g) > 1]
    assert len(families) > 10
    for family in families:
        assert len({ident.details() for ident in family}) == len(family)
    loners, _, _ = _plan(SyntheticConfig(num_train_ids=60, num_test_ids=60, max_family_size=1))
    assert len({(i.top, i.bottom, i.skin) for i in loners.values()}) == 120


def test_reuse_conflicts_and_overwrite(tiny: Path, tmp_path: Path) -> None:
    stamp = (tiny / META_NAME).stat().st_mtime_ns
    assert make_synthetic(tiny, **TINY) == tiny and (tiny / META_NAME).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match=r"already holds a synthetic dataset with other options.*overwrite=True"):
        make_synthetic(tiny, **{**TINY, "num_test_ids": 5})
    with pytest.raises(ValueError, match=r"made with other options \{'num_test_ids': \(5, 8\)\}"):
        load_dataset("synthetic", tiny, num_test_ids=5)
    root = make_synthetic(tmp_path / "small", num_train_ids=2, num_test_ids=2, images_per_id=2)
    remade = make_synthetic(root, num_train_ids=3, num_test_ids=2, images_per_id=2, overwrite=True)
    assert load_dataset("synthetic", remade).num_train_ids == 3
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match=r"not a synthetic dataset"):
        make_synthetic(tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_two_processes_making_the_same_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"num_train_ids": 2, "num_test_ids": 2, "images_per_id": 2}
    real = synthetic._copy_queries_to_gt_bbox
    calls = []

    def finish_and_lose_the_race(out, images):
        real(out, images)
        calls.append(out)
        if len(calls) == 1:  # meanwhile, "another process" completes the same dataset
            make_synthetic(tmp_path / "shared", **small)

    monkeypatch.setattr(synthetic, "_copy_queries_to_gt_bbox", finish_and_lose_the_race)
    assert make_synthetic(tmp_path / "shared", **small) == tmp_path / "shared"
    assert len(calls) == 2 and load_dataset("synthetic", tmp_path / "shared").num_train_ids == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # the loser's temporary folder is gone


def test_load_missing_or_generate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no synthetic dataset at .*make_synthetic.*generate_if_missing=True"):
        load_dataset("synthetic", tmp_path / "none")
    ds = load_dataset(
        "synthetic", tmp_path / "made", generate_if_missing=True, num_train_ids=2, num_test_ids=2, images_per_id=2
    )
    assert ds.num_train_ids == 2 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generate_if_missing_loads_an_existing_set_as_it_is(tiny: Path) -> None:
    before = _files(tiny)
    ds = load_dataset("synthetic", tiny, generate_if_missing=True)  # no options: not the defaults, the set on disk
    assert ds.num_train_ids == TINY["num_train_ids"] and _files(tiny) == before
    with pytest.raises(ValueError, match=r"was made with other options \{'num_train_ids': \(9, 8\)\}"):
        load_dataset("synthetic", tiny, generate_if_missing=True, num_train_ids=9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_cameras": 1}, r"num_cameras must be in 2..9"),
        ({"num_train_ids": 0}, r"at least 1"),
        ({"images_per_id": 1}, r"images_per_id must be at least 2"),
        ({"size": (8, 64)}, r"size must be \(H, W\)"),
        ({"colour": "red"}, r"unknown option\(s\) \['colour'\]"),
    ],
)
def test_invalid_options(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_synthetic(tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()


def test_make_synthetic_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["make-synthetic", "--root", str(tmp_path / "cli"), "--train-ids", "3", "--test-ids", "2"]
    assert main([*args, "--images-per-id", "3", "--cameras", "3", "--size", "64", "32", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^#Train IDs +3$", out, re.MULTILINE) and "ready in" in out
    ds = load_dataset("synthetic", tmp_path / "cli")
    assert ds.num_cameras == 3 and {r.camid for r in ds.train} <= {0, 1, 2}
    with Image.open(ds.query[0].path) as image:
        assert image.size == (32, 64)
    assert main([*args, "--images-per-id", "4"]) == 2  # other options, same root
    assert "already holds a synthetic dataset" in capsys.readouterr().err


def test_show_identities(tiny: Path) -> None:
    ds = load_dataset("synthetic", tiny)
    fig = show_identities(ds, num_ids=3, per_id=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 12
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles and all(re.fullmatch(r"id \d+\ncam [1-6]", t) for t in titles)
    first_row = titles[:4]
    assert len({t.split()[1] for t in first_row}) == 1  # a row is one person...
    person = int(first_row[0].split()[1])
    cameras = {r.camid for r in [*ds.query, *ds.gallery] if r.pid == person}
    assert len({t.splitlines()[1] for t in first_row}) == min(len(cameras), 4)  # ...seen by different cameras
    train = show_identities(ds, split="train", ids=[0, 1], per_id=2, masks=True)
    assert [ax.get_title().splitlines()[0] for ax in train.axes[:2]] == ["id 0", "id 0"]
    with pytest.raises(ValueError, match=r"ids \[999\] do not occur in the test split"):
        show_identities(ds, ids=[999])
    with pytest.raises(ValueError, match=r"unknown split 'val'"):
        show_identities(ds, split="val")
