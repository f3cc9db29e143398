"""CUHK03 from a MATLAB-v7.3-like cuhk-03.mat (HDF5 cell arrays of references) and the new-protocol config."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

import sag.data.cuhk03 as cuhk03
from sag.data import load_dataset

PAIR_SIZES = (3, 2, 2)  # identities per camera pair (the real file: 843, 440, 77, 58, 49)
EMPTY = {(1, 1, 3), (1, 1, 4), (2, 2, 9), (3, 1, 0)}  # (pair, id, image) cells with no image (0-based here)
TEST_ROWS = [(1, 2), (3, 1)]  # split 0's test identities, 1-based (pair, id): global ids 2 and 6


def _image(pair: int, idx: int, k: int) -> np.ndarray:
    """A distinctive (H, W, 3) uint8 image per cell; H != W so a transposition error cannot pass."""
    rng = np.random.default_rng(100 * pair + 10 * idx + k)
    return rng.integers(0, 256, size=(7 + k % 3, 4, 3), dtype=np.uint8)


def _cells(subset_shift: int = 0) -> list[list[list[np.ndarray | None]]]:
    """pairs -> identities -> 10 images (None = empty cell)."""
    return [
        [
            [None if (p, i, k) in EMPTY else _image(p + subset_shift, i, k) for k in range(10)]
            for i in range(PAIR_SIZES[p - 1])
        ]
        for p in range(1, len(PAIR_SIZES) + 1)
    ]


def write_cuhk03_mat(path: Path, subsets: dict | None = None, testsets: list | None = None, skip=()) -> Path:
    """Write ``path`` the way MATLAB -v7.3 stores cuhk-03.mat (column-major, object references into #refs#)."""
    subsets = subsets if subsets is not None else {"detected": _cells(), "labeled": _cells(50)}
    if testsets is None:
        testsets = [np.array(TEST_ROWS if s == 0 else [(1, 1 + s % 3), (2, 1 + s % 2)]) for s in range(20)]
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**6))
        empty = refs.create_dataset("a", data=np.zeros(2, np.uint64))  # MATLAB's shared [] (dims 0x0)
        empty.attrs["MATLAB_class"] = np.bytes_("double")
        empty.attrs["MATLAB_empty"] = np.uint8(1)

        def store(data: np.ndarray, matlab_class: str, name: str | None = None) -> h5py.Reference:
            target = f if name else refs
            ds = target.create_dataset(name or f"b{next(counter)}", data=data)
            ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            return ds.ref

        for subset, pairs in subsets.items():
            pair_refs = np.empty((1, len(pairs)), dtype=h5py.ref_dtype)  # 5x1 cell in MATLAB -> (1, 5) here
            for p, people in enumerate(pairs):
                cells = np.empty((10, len(people)), dtype=h5py.ref_dtype)  # n_ids x 10 in MATLAB -> (10, n_ids)
                for i, images in enumerate(people):
                    for k, image in enumerate(images):
                        cells[k, i] = empty.ref if image is None else store(image.T, "uint8")  # H x W x 3 -> (3, W, H)
                pair_refs[0, p] = store(cells, "cell")
            if subset not in skip:
                store(pair_refs, "cell", name=subset)
        if "testsets" not in skip:
            split_refs = np.empty((1, len(testsets)), dtype=h5py.ref_dtype)
            for s, rows in enumerate(testsets):
                split_refs[0, s] = store(np.asarray(rows, np.float64).T, "double")  # 100 x 2 -> (2, 100)
            store(split_refs, "cell", name="testsets")
    with open(path, "r+b") as fh:  # MATLAB's text header in the HDF5 user block
        fh.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Jan 1 00:00:00 2014 HDF5 schema 1.00 .".ljust(116)
        )
        fh.write(b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """``tmp/cuhk03_release/cuhk-03.mat``, as the release zip unpacks."""
    folder = tmp_path / "cuhk03_release"
    folder.mkdir()
    write_cuhk03_mat(folder / "cuhk-03.mat")
    return folder


def _num_images(pair_filter=lambda p, i: True) -> int:
    return sum(
        (p, i, k) not in EMPTY
        for p in range(1, len(PAIR_SIZES) + 1)
        for i in range(PAIR_SIZES[p - 1])
        for k in range(10)
        if pair_filter(p, i + 1)
    )


def test_extraction_writes_every_non_empty_cell_with_the_usual_names(release: Path) -> None:
    out = cuhk03.extract_images(release / "cuhk-03.mat", "detected")
    assert out == release / "images_detected"
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == _num_images()
    assert "1_001_1_01.png" in names and "1_001_2_06.png" in names and "3_002_2_10.png" in names
    assert "1_002_1_04.png" not in names  # an empty cell: no image was taken
    with Image.open(out / "1_002_2_07.png") as png:  # pair 1, id 2, image index 6 (0-based): camera view 2
        np.testing.assert_array_equal(np.asarray(png), _image(1, 1, 6))
    assert not [p for p in release.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_classic_protocol_split(release: Path) -> None:
    ds = load_dataset("cuhk03", release.parent, protocol="classic", split=0)
    assert (ds.name, ds.protocol, ds.split, ds.subset, ds.num_cameras) == ("cuhk03", "classic", 0, "detected", 2)
    assert ds.single_gallery_shot and ds.query == ds.gallery
    assert {r.pid for r in ds.query} == {2, 6}  # global ids: pair offsets 0, 3, 5 plus the 1-based id
    test_rows = {(1, 2), (3, 1)}
    assert len(ds.query) == _num_images(lambda p, i: (p, i) in test_rows)
    assert len(ds.train) == _num_images(lambda p, i: (p, i) not in test_rows)
    assert ds.num_train_ids == 5 and {r.pid for r in ds.train} == set(range(5))
    assert {r.camid for r in ds.query} == {0, 1}
    assert all(r.camid == (0 if int(Path(r.path).stem[-2:]) <= 5 else 1) for r in ds.train)
    counts = ds.counts()
    assert counts["ids"] == 7 and counts["images"] == _num_images() and counts["test_ids"] == 2
    assert "CUHK03 (detected), classic protocol, split 0" in ds.summary()


def test_classic_splits_differ_and_labeled_subset(release: Path) -> None:
    other = load_dataset("cuhk03", release, split=5)
    assert {r.pid for r in other.query} == {3, 5}  # (1, 3) and (2, 2)
    labeled = load_dataset("cuhk03", release, subset="labeled")
    assert (release / "images_labeled").is_dir() and labeled.subset == "labeled"
    with Image.open(release / "images_labeled" / "1_001_1_01.png") as png:
        np.testing.assert_array_equal(np.asarray(png), _image(51, 0, 0))


def test_images_are_extracted_only_once(release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("cuhk03", release)

    def fail(*args, **kwargs):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(cuhk03, "_read_image", fail)
    assert load_dataset("cuhk03", release).train == first.train


def test_new_protocol(release: Path) -> None:
    cuhk03.extract_images(release / "cuhk-03.mat", "detected")
    names = sorted(p.name for p in (release / "images_detected").iterdir())
    offsets = {1: 0, 2: 3, 3: 5}
    labels = [offsets[int(n[0])] + int(n[2:5]) for n in names]
    cams = [int(n[6]) for n in names]
    order = np.argsort(labels, kind="stable")
    train_idx = [i + 1 for i in order if labels[i] <= 4]  # ids 1-4 train, 5-7 test (1-based indices)
    test = [i for i in order if labels[i] > 4]
    query_idx = [i + 1 for i in test if cams[i] == 1]
    gallery_idx = [i + 1 for i in test if cams[i] == 2]
    filelist = np.empty((len(names), 1), dtype=object)
    filelist[:, 0] = names
    config = {
        "filelist": filelist,
        "labels": np.array(labels, np.float64)[:, None],
        "camId": np.array(cams, np.float64)[:, None],
        "train_idx": np.array(train_idx, np.float64)[:, None],
        "query_idx": np.array(query_idx, np.float64)[:, None],
        "gallery_idx": np.array(gallery_idx, np.float64)[:, None],
    }
    scipy.io.savemat(release / "cuhk03_new_protocol_config_detected.mat", config)
    ds = load_dataset("cuhk03", release, protocol="new")
    assert ds.protocol == "new" and not ds.single_gallery_shot and ds.split is None
    assert ds.num_train_ids == 4 and {r.pid for r in ds.train} == {0, 1, 2, 3}
    assert [Path(r.path).name for r in ds.query] == [names[i - 1] for i in query_idx]
    assert {r.pid for r in ds.query} == {5, 6, 7} and {r.camid for r in ds.query} == {0}
    assert {r.camid for r in ds.gallery} == {1}
    assert len(ds.train) + len(ds.query) + len(ds.gallery) == len(names)

    config["query_idx"] = np.array([0, *query_idx[1:]], np.float64)[:, None]  # a 0-based index by mistake
    scipy.io.savemat(release / "cuhk03_new_protocol_config_detected.mat", config)
    with pytest.raises(ValueError, match=r"query_idx must hold 1-based indices"):
        load_dataset("cuhk03", release, protocol="new")
    del config["query_idx"], config["camId"]
    scipy.io.savemat(release / "cuhk03_new_protocol_config_detected.mat", config)
    with pytest.raises(ValueError, match=r"cuhk03_new_protocol_config_detected.mat lacks query_idx, camId"):
        load_dataset("cuhk03", release, protocol="new")


def test_new_protocol_needs_its_config(release: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cuhk03_new_protocol_config_labeled.mat does not exist"):
        load_dataset("cuhk03", release, subset="labeled", protocol="new")


def test_bad_cell_fails_without_leaving_a_half_extraction(tmp_path: Path) -> None:
    cells = _cells()
    cells[1][0][2] = np.zeros((5, 4), np.uint8)  # a 2-D "image": not what cuhk-03.mat holds
    write_cuhk03_mat(tmp_path / "cuhk-03.mat", subsets={"detected": cells, "labeled": _cells()})
    with pytest.raises(ValueError, match=r"cuhk-03.mat: cell detected\{2\}\(1,3\) should hold an H x W x 3 uint8"):
        load_dataset("cuhk03", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuhk-03.mat"]  # no images_detected, no temp folder


def test_mat_without_expected_variables(tmp_path: Path) -> None:
    write_cuhk03_mat(tmp_path / "cuhk-03.mat", skip=("detected",))
    with pytest.raises(ValueError, match=r"has no variable 'detected' \(found: labeled, testsets\)"):
        load_dataset("cuhk03", tmp_path)
    (tmp_path / "cuhk-03.mat").unlink()
    write_cuhk03_mat(tmp_path / "cuhk-03.mat", skip=("testsets",))
    with pytest.raises(ValueError, match=r"has no variable 'testsets'"):
        load_dataset("cuhk03", tmp_path)


def test_wrong_number_of_splits(tmp_path: Path) -> None:
    write_cuhk03_mat(tmp_path / "cuhk-03.mat", testsets=[np.array(TEST_ROWS)] * 3)
    with pytest.raises(ValueError, match=r"testsets holds 3 splits, expected 20"):
        load_dataset("cuhk03", tmp_path)


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    (tmp_path / "cuhk-03.mat").write_bytes(b"MATLAB 5.0 MAT-file, not what we expect")
    with pytest.raises(ValueError, match=r"cuhk-03.mat is not a MATLAB v7.3 \(HDF5\) file"):
        load_dataset("cuhk03", tmp_path)


def test_missing_folder_and_bad_options(tmp_path: Path, release: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images does not exist; unzip cuhk03_release.zip"):
        load_dataset("cuhk03", tmp_path / "cuhk03_release" / "images")  # no such folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no cuhk-03.mat found in .*empty or .*empty/cuhk03_release"):
        load_dataset("cuhk03", tmp_path / "empty")
    with pytest.raises(ValueError, match=r"split must be in 0..19, got 20"):
        load_dataset("cuhk03", release, split=20)
    with pytest.raises(ValueError, match=r"unknown CUHK03 protocol 'np'; valid protocols: classic, new"):
        load_dataset("cuhk03", release, protocol="np")
    with pytest.raises(ValueError, match=r"unknown CUHK03 subset 'hand'"):
        load_dataset("cuhk03", release, subset="hand")
