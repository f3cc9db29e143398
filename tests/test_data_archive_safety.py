"""Hostile archives: nothing is written outside the target or before every member is checked; refusals delete them."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

import sag.data.downloader as dl
from sag.data import download


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar archive of (name, data) files and raw TarInfo entries (links, devices...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info


def _zip(entries: list[tuple[str, bytes] | zipfile.ZipInfo], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for entry in entries:
            if isinstance(entry, zipfile.ZipInfo):
                zf.writestr(entry, b"/etc/passwd")
            else:
                zf.writestr(*entry)
    return buffer.getvalue()


def _zip_entry(name: str, kind: int) -> zipfile.ZipInfo:
    """A zip entry whose Unix mode says ``kind`` (stat.S_IFLNK, S_IFIFO...)."""
    info = zipfile.ZipInfo(name)
    info.external_attr = (kind | 0o777) << 16
    return info


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(root to extract into, a sibling folder holding a file an attack would overwrite)."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("mine")
    return root, outside


# name -> (the archive's entries, what the refusal says); a tar-* attack is packed as .tar.gz, a zip-* one as .zip
ATTACKS = {
    "tar-traversal": ([("ds/a.txt", b"a"), ("../outside/new.txt", b"evil")], "unsafe path '../outside/new.txt'"),
    "tar-absolute": ([("ds/a.txt", b"a"), ("/tmp/sag_absolute_evil.txt", b"evil")], "unsafe path '/tmp/"),
    "tar-symlink": ([_link("ds/escape", "/", tarfile.SYMTYPE), ("ds/escape/x.txt", b"evil")], "a symbolic link"),
    "tar-hardlink": (
        [_link("ds/victim", "../outside/victim.txt", tarfile.LNKTYPE), ("ds/victim", b"overwritten")],
        "a hard link",
    ),
    "tar-device": ([("ds/a.txt", b"a"), _special("ds/null", tarfile.CHRTYPE)], "a device, FIFO or special entry"),
    "tar-fifo": ([("ds/a.txt", b"a"), _special("ds/pipe", tarfile.FIFOTYPE)], "a device, FIFO or special entry"),
    "zip-traversal": ([("ds/a.txt", b"a"), ("../outside/new.txt", b"evil")], "unsafe path '../outside/new.txt'"),
    "zip-absolute": ([("ds/a.txt", b"a"), ("/tmp/sag_absolute_evil.txt", b"evil")], "unsafe path '/tmp/"),
    "zip-backslash": ([("ds/a.txt", b"a"), ("..\\outside\\new.txt", b"evil")], "unsafe path"),
    "zip-drive": ([("ds/a.txt", b"a"), ("C:/evil.txt", b"evil")], "unsafe path 'C:/evil.txt'"),
    "zip-symlink": ([("ds/a.txt", b"a"), _zip_entry("ds/escape", stat.S_IFLNK)], "a symbolic link 'ds/escape'"),
    "zip-fifo": ([("ds/a.txt", b"a"), _zip_entry("ds/pipe", stat.S_IFIFO)], "a device, FIFO or socket 'ds/pipe'"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_archive_writes_nothing(attack: str, box: tuple[Path, Path]) -> None:
    root, outside = box
    entries, message = ATTACKS[attack]
    archive = root / ("ds.tar.gz" if attack.startswith("tar-") else "ds.zip")
    archive.write_bytes(_tar(entries) if attack.startswith("tar-") else _zip(entries))
    with pytest.raises(ValueError, match=f"{message}.*refusing to extract it .*was deleted") as err:
        dl.extract(archive, root)
    assert "corrupt" not in str(err.value)  # an escape is reported as unsafe, never as a damaged download
    assert _tree(root) == []  # nothing extracted, no temporary folder, the hostile archive deleted
    assert _tree(outside) == ["victim.txt"] and (outside / "victim.txt").read_text() == "mine"
    assert not Path("/tmp/sag_absolute_evil.txt").exists()


def test_safe_archives_extract_with_umask_permissions(box: tuple[Path, Path]) -> None:
    root, _ = box
    (root / "ds.tar.gz").write_bytes(_tar([("ds/sub/a.txt", b"a"), ("ds/b.txt", b"bb")]))
    folder = dl.extract(root / "ds.tar.gz", root)
    assert folder == root / "ds" and (folder / "sub" / "a.txt").read_bytes() == b"a"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    assert stat.S_IMODE((folder / "b.txt").stat().st_mode) == 0o666 & ~umask
    (root / "flat.zip").write_bytes(_zip([("x.txt", b"x"), ("y.txt", b"y")]))  # no single top folder
    assert sorted(p.name for p in dl.extract(root / "flat.zip", root).iterdir()) == ["x.txt", "y.txt"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("ds.zip", _tar([("ds/a.txt", b"a")]), "named as a zip archive but holds a tar archive"),
        ("ds.tar.gz", _zip([("ds/a.txt", b"a")]), "named as a tar archive but holds a zip archive"),
        ("ds.zip", b"<!DOCTYPE html><html>404 not found</html>", "neither a zip nor a tar archive .*web page"),
    ],
)
def test_mislabelled_or_html_archive_is_refused_and_deleted(name, data, message, box) -> None:
    root, _ = box
    (root / name).write_bytes(data)
    with pytest.raises(ValueError, match=f"{message}.*was deleted"):
        dl.extract(root / name, root)
    assert _tree(root) == []  # deleted: the next download fetches it again instead of failing forever


def test_decompression_bomb_is_refused_before_writing(box: tuple[Path, Path]) -> None:
    root, _ = box
    bomb = _zip([("ds/zeros.bin", b"\0" * 4_000_000)])  # 4 MB of zeros packs into a few kB
    (root / "bomb.zip").write_bytes(bomb)
    with pytest.raises(ValueError, match=r"would unpack to 4,000,000 bytes, \d+ times its size.*decompression bomb"):
        dl.extract(root / "bomb.zip", root)
    assert _tree(root) == []
    (root / "big.tar").write_bytes(_tar([("ds/a.bin", b"1" * 3000)], mode="w"))
    with pytest.raises(ValueError, match="would unpack to 3,000 bytes, more than the 1,000 allowed"):
        dl.extract(root / "big.tar", root, max_bytes=1000)
    assert _tree(root) == []


def test_member_larger_than_declared_is_stopped(box, monkeypatch) -> None:
    root, _ = box
    (root / "ds.tar").write_bytes(_tar([("ds/a.bin", b"1" * 100)], mode="w"))
    real = dl._tar_member  # a header that lies: 10 bytes declared, 100 stored
    monkeypatch.setattr(dl, "_tar_member", lambda info, archive: dataclasses.replace(real(info, archive), size=10))
    with pytest.raises(ValueError, match="unpacks to more bytes than it declares"):
        dl.extract(root / "ds.tar", root)
    assert _tree(root) == []


def test_extraction_needs_the_free_space(box, monkeypatch) -> None:
    root, _ = box
    (root / "ds.zip").write_bytes(_zip([("ds/a.txt", b"a" * 500)], zipfile.ZIP_STORED))
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda _path: _Usage(free=100))
    with pytest.raises(OSError, match=r"unpacks to 500 bytes but .* has 100 free") as err:
        dl.extract(root / "ds.zip", root)
    assert err.value.errno == errno.ENOSPC
    assert _tree(root) == ["ds.zip"]  # a good archive is kept for when there is room


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_stale_extraction_folder_is_removed_on_the_next_start(tmp_path: Path) -> None:
    stale = tmp_path / ".Market-1501-v15.09.15.zip.tmp-abc123"
    (stale / "Market-1501-v15.09.15").mkdir(parents=True)
    other = tmp_path / ".notes.tmp"  # not ours: another name
    other.write_text("keep")
    with pytest.raises(ConnectionError):  # no server: but the stale folder is cleaned first
        download("market1501", tmp_path, url="http://127.0.0.1:9/Market-1501-v15.09.15.zip", retries=0, timeout=2)
    assert not stale.exists() and other.read_text() == "keep"
