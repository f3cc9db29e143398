"""Market-1501 / DukeMTMC-reID parsing on hand-made folders in the real layout, Table 2 counts, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from sag.data import DATASETS, TABLE2, ImageRecord, format_table2, load_dataset
from sag.data.records import CUHK03_CLASSIC_INVARIANT, EXTRA_COUNTS

MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c1s6_028546_01.jpg",
        "0007_c3s3_064744_02.jpg",
        "0007_c6s4_002202_01.jpg",
        "0010_c2s1_001976_01.jpg",
    ],
    "query": ["0001_c1s1_001051_00.jpg", "0001_c2s1_000301_00.jpg", "0003_c4s6_015641_00.jpg"],
    "bounding_box_test": [
        "0001_c1s1_001051_03.jpg",  # same camera as a query: junk for that query, but a gallery image
        "0001_c3s1_000551_01.jpg",
        "0003_c5s3_065187_02.jpg",
        "0003_c4s6_015666_04.jpg",
        "0000_c2s1_000151_02.jpg",  # distractors: kept
        "0000_c6s4_001201_05.jpg",
        "-1_c1s1_000401_03.jpg",  # junk: dropped
        "-1_c3s2_011161_07.jpg",
    ],
    "gt_bbox": ["0001_c1s1_001051_00.jpg", "0001_c1s1_001101_00.jpg", "0003_c4s6_015641_00.jpg"],
}
DUKE_FILES = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg", "0008_c8_f0010421.jpg"],
    "query": ["0012_c7_f0121312.jpg"],
    "bounding_box_test": ["0012_c1_f0108513.jpg", "0012_c7_f0121330.jpg", "0013_c3_f0040102.jpg"],
}


def _write_tree(base: Path, files: dict[str, list[str]]) -> Path:
    """Tiny valid JPEGs with the given names, one folder per split."""
    for folder, names in files.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            Image.new("RGB", (4, 8), (i * 20 % 256, 80, 160)).save(base / folder / name, quality=90)
    return base


@pytest.fixture
def market(tmp_path: Path) -> Path:
    base = _write_tree(tmp_path / "Market-1501-v15.09.15", MARKET_FILES)
    (base / "bounding_box_test" / "Thumbs.db").write_bytes(b"\x00windows thumbnail cache")
    (base / "query" / ".DS_Store").write_bytes(b"\x00macOS folder settings")
    return base


def test_market_splits_follow_the_protocol(market: Path) -> None:
    ds = load_dataset("market1501", market)
    assert ds.name == "market1501" and ds.num_cameras == 6 and ds.root == market
    # train: relabelled 0..K-1 in increasing id order (2 -> 0, 7 -> 1, 10 -> 2), camera 0-based
    assert ds.num_train_ids == 3
    assert [r.pid for r in ds.train] == [0, 0, 1, 1, 1, 2]
    assert ds.train[0] == ImageRecord(str(market / "bounding_box_train" / "0002_c1s1_000451_03.jpg"), 0, 0)
    assert [r.camid for r in ds.train] == [0, 1, 0, 2, 5, 1]
    # query / gallery keep the original ids; junk (-1) leaves the gallery, distractors (0) stay
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 0), (1, 1), (3, 3)]
    assert sorted(r.pid for r in ds.gallery) == [0, 0, 1, 1, 3, 3]
    assert [Path(r.path).name for r in ds.junk] == ["-1_c1s1_000401_03.jpg", "-1_c3s2_011161_07.jpg"]
    assert all(r.pid == -1 for r in ds.junk)
    # gt_bbox for multi-query; Thumbs.db and .DS_Store are operating-system files, not part of the dataset
    assert [Path(r.path).name for r in ds.multi_query] == sorted(MARKET_FILES["gt_bbox"])
    assert not ds.single_gallery_shot


def test_market_counts_and_table2_summary(market: Path) -> None:
    ds = load_dataset("market1501", market)
    counts = ds.counts()
    assert counts == {
        "ids": 5,
        "images": 17,
        "cameras": 6,
        "train_ids": 3,
        "train_images": 6,
        "test_ids": 2,
        "query_images": 3,
        "gallery_images": 8,
        "gallery_images_kept": 6,
        "junk_images": 2,
        "distractor_images": 2,
        "multi_query_images": 3,
    }
    lines = ds.summary().splitlines()
    assert lines[0] == "Dataset           Market-1501"
    assert "Number of IDs             5" in lines
    assert "#Gallery Images           8  (6 after dropping 2 junk)  incl. 2 distractors" in lines
    assert "#Multi-query Imgs         3  (gt_bbox)" in lines
    assert str(ds) == ds.summary()


def test_table2_constants_render_the_papers_numbers() -> None:
    market = format_table2(TABLE2["market1501"] | EXTRA_COUNTS["market1501"], title="Market-1501").splitlines()
    assert market[1:] == [
        "Number of IDs         1,501",
        "Number of Images     36,036",
        "Cameras                   6",
        "#Train IDs              751",
        "#Train Images        12,936",
        "#Test IDs               750",
        "#Query Images         3,368",
        "#Gallery Images      19,732  (15,913 after dropping 3,819 junk)  incl. 2,793 distractors",
    ]
    duke = format_table2(TABLE2["dukemtmc"], title="DukeMTMC-reID")
    assert "Number of Images     36,411" in duke and "#Gallery Images      17,661" in duke
    cuhk = format_table2(TABLE2["cuhk03"], title="CUHK03")
    assert "#Train Images        13,113" in cuhk and "#Query Images           984" in cuhk


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "cuhk03"])
def test_table2_constants_are_consistent(name: str) -> None:
    t = TABLE2[name]
    assert t["ids"] == t["train_ids"] + t["test_ids"]
    test_images = t["query_images"] if name == "cuhk03" else t["query_images"] + t["gallery_images"]
    assert t["images"] == t["train_images"] + test_images  # CUHK03 classic: query and gallery are the same images
    extra = EXTRA_COUNTS.get(name, {})
    if "junk_images" in extra:
        assert extra["gallery_images_kept"] + extra["junk_images"] == t["gallery_images"]
    np_det = EXTRA_COUNTS["cuhk03-new-detected"]
    assert np_det["train_images"] + np_det["query_images"] + np_det["gallery_images"] == TABLE2["cuhk03"]["images"]
    assert np_det["train_ids"] + np_det["test_ids"] == TABLE2["cuhk03"]["ids"]


@pytest.mark.parametrize("layout", ["root", "parent", "torchreid"])
def test_market_root_or_its_parent(tmp_path: Path, layout: str) -> None:
    if layout == "root":
        given = _write_tree(tmp_path / "anything", MARKET_FILES)
    elif layout == "parent":
        _write_tree(tmp_path / "Market-1501-v15.09.15", MARKET_FILES)
        given = tmp_path
    else:
        _write_tree(tmp_path / "market1501" / "Market-1501-v15.09.15", MARKET_FILES)
        given = tmp_path
    ds = load_dataset("market1501", given)
    assert len(ds.train) == 6 and (ds.root / "bounding_box_train").is_dir()


def test_dukemtmc_layout(tmp_path: Path) -> None:
    _write_tree(tmp_path / "DukeMTMC-reID", DUKE_FILES)
    ds = load_dataset("dukemtmc", tmp_path)
    assert ds.num_cameras == 8 and ds.num_train_ids == 2 and ds.multi_query is None and ds.junk == []
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 1), (0, 4), (1, 7)]
    assert [(r.pid, r.camid) for r in ds.query] == [(12, 6)]
    assert ds.counts()["ids"] == 3 and ds.summary().splitlines()[0] == "Dataset           DukeMTMC-reID"


def test_dukemtmc_missing_explains_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"withdrawn.*DukeMTMC-reID/bounding_box_train"):
        load_dataset("dukemtmc", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does not exist.*withdrawn"):
        load_dataset("dukemtmc", tmp_path / "nowhere")


def test_dukemtmc_rejects_junk_ids(tmp_path: Path) -> None:
    _write_tree(tmp_path, DUKE_FILES | {"bounding_box_test": [*DUKE_FILES["bounding_box_test"], "-1_c1_f0000001.jpg"]})
    with pytest.raises(ValueError, match=r"-1_c1_f0000001.jpg.*cannot parse|cannot parse.*-1_c1_f0000001.jpg"):
        load_dataset("dukemtmc", tmp_path)


def test_missing_market_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no Market-1501 found in .*bounding_box_train.*download"):
        load_dataset("market1501", tmp_path)


def test_incomplete_market_copy_names_the_missing_folder(tmp_path: Path) -> None:
    _write_tree(tmp_path, {k: v for k, v in MARKET_FILES.items() if k != "query"})
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*lacks query"):
        load_dataset("market1501", tmp_path)


def test_unparsable_file_name_is_an_error(market: Path) -> None:
    Image.new("RGB", (4, 8)).save(market / "query" / "person_7.jpg")
    with pytest.raises(ValueError, match=r"cannot parse the file name .*query/person_7.jpg.*0002_c1s1_000451_03.jpg"):
        load_dataset("market1501", market)


def test_stray_files_are_not_silently_skipped(market: Path) -> None:
    (market / "bounding_box_train" / "notes.txt").write_text("my split")
    with pytest.raises(ValueError, match=r"cannot parse the file name .*bounding_box_train/notes.txt"):
        load_dataset("market1501", market)


def test_camera_out_of_range(market: Path) -> None:
    Image.new("RGB", (4, 8)).save(market / "bounding_box_test" / "0001_c7s1_000001_01.jpg")
    with pytest.raises(ValueError, match=r"0001_c7s1_000001_01.jpg: camera 7 is outside 1..6"):
        load_dataset("market1501", market)


def test_empty_query_set(market: Path) -> None:
    for name in os.listdir(market / "query"):
        (market / "query" / name).unlink()
    with pytest.raises(ValueError, match=rf"no images found in {market / 'query'}"):
        load_dataset("market1501", market)


def test_junk_in_query_is_an_error(market: Path) -> None:
    Image.new("RGB", (4, 8)).save(market / "query" / "-1_c1s1_000001_01.jpg")
    with pytest.raises(ValueError, match=r"-1_c1s1_000001_01.jpg: junk .* bounding_box_test only"):
        load_dataset("market1501", market)


def test_query_without_gallery_match(market: Path) -> None:
    Image.new("RGB", (4, 8)).save(market / "query" / "0099_c1s1_000001_00.jpg")
    with pytest.raises(ValueError, match=r"query ids \[99\] have no image"):
        load_dataset("market1501", market)


def test_load_dataset_names_and_options(market: Path) -> None:
    assert DATASETS == ("market1501", "dukemtmc", "cuhk03", "synthetic")
    with pytest.raises(ValueError, match="unknown dataset 'market'; valid datasets: market1501, dukemtmc, cuhk03"):
        load_dataset("market", market)
    with pytest.raises(ValueError, match="market1501 does not take option"):
        load_dataset("market1501", market, split=3)


_REAL = os.environ.get("SAG_DATA_ROOT")


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "cuhk03"])
def test_real_dataset_counts_match_table2(name: str) -> None:
    """On a machine with the real datasets under $SAG_DATA_ROOT: every printed count is the paper's."""
    if not _REAL:
        pytest.skip("set SAG_DATA_ROOT to a folder holding the real datasets")
    try:
        ds = load_dataset(name, _REAL)
    except FileNotFoundError as err:
        pytest.skip(f"{name} is not under {_REAL}: {err}")
    counts = ds.counts()
    keys = CUHK03_CLASSIC_INVARIANT if name == "cuhk03" else tuple(TABLE2[name])
    assert {k: counts[k] for k in keys} == {k: TABLE2[name][k] for k in keys}
    for key, value in EXTRA_COUNTS.get(name, {}).items():
        assert counts[key] == value, key
