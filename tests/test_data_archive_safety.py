"""Hostile archives and downloads: nothing is written outside the target, refused archives are deleted, caps hold."""

from __future__ import annotations

import dataclasses
import errno
import http.server
import io
import os
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sag.data.downloader as dl
from sag.cli import main
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


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
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


TAR_ATTACKS = {
    "traversal": ([("ds/a.txt", b"a"), ("../outside/new.txt", b"evil")], "unsafe path '../outside/new.txt'"),
    "absolute": ([("ds/a.txt", b"a"), ("/tmp/sag_absolute_evil.txt", b"evil")], "unsafe path '/tmp/"),
    "symlink": ([_link("ds/escape", "/", tarfile.SYMTYPE), ("ds/escape/x.txt", b"evil")], "a symbolic link"),
    "hardlink": (
        [_link("ds/victim", "../outside/victim.txt", tarfile.LNKTYPE), ("ds/victim", b"overwritten")],
        "a hard link",
    ),
    "device": ([("ds/a.txt", b"a"), _special("ds/null", tarfile.CHRTYPE)], "a device, FIFO or special entry"),
    "fifo": ([("ds/a.txt", b"a"), _special("ds/pipe", tarfile.FIFOTYPE)], "a device, FIFO or special entry"),
}


@pytest.mark.parametrize("attack", sorted(TAR_ATTACKS))
def test_hostile_tar_writes_nothing(attack: str, box: tuple[Path, Path]) -> None:
    root, outside = box
    members, message = TAR_ATTACKS[attack]
    archive = root / "ds.tar.gz"
    archive.write_bytes(_tar(members))
    with pytest.raises(ValueError, match=f"{message}.*refusing to extract it .*was deleted") as err:
        dl.extract(archive, root)
    assert "corrupt" not in str(err.value)  # an escape is reported as unsafe, never as a damaged download
    assert _tree(root) == []  # nothing extracted, no temporary folder, the hostile archive deleted
    assert _tree(outside) == ["victim.txt"] and (outside / "victim.txt").read_text() == "mine"
    assert not Path("/tmp/sag_absolute_evil.txt").exists()


ZIP_ATTACKS = {
    "traversal": ([("ds/a.txt", b"a"), ("../outside/new.txt", b"evil")], "unsafe path '../outside/new.txt'"),
    "absolute": ([("ds/a.txt", b"a"), ("/tmp/sag_absolute_evil.txt", b"evil")], "unsafe path '/tmp/"),
    "backslash": ([("ds/a.txt", b"a"), ("..\\outside\\new.txt", b"evil")], "unsafe path"),
    "drive": ([("ds/a.txt", b"a"), ("C:/evil.txt", b"evil")], "unsafe path 'C:/evil.txt'"),
    "symlink": ([("ds/a.txt", b"a"), _zip_symlink("ds/escape")], "a symbolic link 'ds/escape'"),
}


@pytest.mark.parametrize("attack", sorted(ZIP_ATTACKS))
def test_hostile_zip_writes_nothing(attack: str, box: tuple[Path, Path]) -> None:
    root, outside = box
    entries, message = ZIP_ATTACKS[attack]
    archive = root / "ds.zip"
    archive.write_bytes(_zip(entries))
    with pytest.raises(ValueError, match=f"{message}.*refusing to extract it"):
        dl.extract(archive, root)
    assert _tree(root) == [] and _tree(outside) == ["victim.txt"]


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


# ------------------------------------------------------------------ downloads


class _Server(http.server.ThreadingHTTPServer):
    body: bytes
    length: int | None
    endless: bool = False
    requests: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(200)
        if self.server.length is not None:
            self.send_header("Content-Length", str(self.server.length))
        self.end_headers()
        try:
            if self.server.endless:
                for _ in range(10_000):
                    self.wfile.write(b"\0" * 65536)
            else:
                self.wfile.write(self.server.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    market = [(f"Market-1501-v15.09.15/{f}/x.txt", b"x") for f in ("bounding_box_train", "query", "bounding_box_test")]
    httpd.body, httpd.length = _zip(market), None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/Market-1501-v15.09.15.zip"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "_RETRY_DELAY_S", 0.0)
    for env in ("SAG_MARKET1501_URL", "SAG_MARKET1501_SHA256", "SAG_CUHK03_URL", "SAG_CUHK03_SHA256"):
        monkeypatch.delenv(env, raising=False)


def test_endless_body_is_stopped_at_the_cap_and_not_retried(server: _Server, tmp_path: Path) -> None:
    server.endless = True
    with pytest.raises(ValueError, match=r"stopped: it sent [\d,]+ bytes or more, over the 1,000,000 expected"):
        dl.fetch(server.url, tmp_path / "x.zip.part", retries=3, max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []  # nothing kept
    assert server.requests == 1  # and not asked again


def test_announced_size_over_the_cap_is_refused_before_reading(server: _Server, tmp_path: Path) -> None:
    server.length = 5_000_000
    with pytest.raises(ValueError, match="over the 1,000 expected"):
        dl.fetch(server.url, tmp_path / "x.zip.part", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_download_stops_without_retrying(server: _Server, tmp_path: Path, monkeypatch) -> None:
    calls = []

    class FullDisk(io.BytesIO):
        def write(self, data) -> int:
            calls.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "open", lambda *a, **k: FullDisk(), raising=False)
    with pytest.raises(OSError, match=r"cannot write .*x.zip.part: No space left on device; the disk is full"):
        dl.fetch(server.url, tmp_path / "x.zip.part", retries=3)
    assert len(calls) == 1  # one attempt: a full disk is not a network error


def test_bad_sha256_is_refused_before_downloading(server: _Server, tmp_path: Path, capsys) -> None:
    assert main(["download", "market1501", "--root", str(tmp_path), "--url", server.url, "--sha256", "nothex"]) == 2
    assert "--sha256 'nothex' (or $SAG_MARKET1501_SHA256) is not a SHA-256: expected 64 hex" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before any request


def test_missing_checksum_warns_and_prints_the_digest(server: _Server, tmp_path: Path, capsys) -> None:
    download("market1501", tmp_path / "d", url=server.url)
    err = capsys.readouterr().err
    assert "warning: no SHA-256 is known for http://127.0.0.1" in err and "(plain http)" in err
    assert f"has SHA-256 {dl.hashlib.sha256(server.body).hexdigest()} (pin it with --sha256)" in err


def test_retries_must_not_be_negative(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["download", "market1501", "--root", str(tmp_path), "--retries", "-1"])
    assert "expected a whole number 0 or more, got '-1'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        download("market1501", tmp_path, url="http://127.0.0.1:9/x.zip", retries=-1)


def test_cached_html_page_is_deleted_and_fetched_again(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "Market-1501-v15.09.15.zip").write_bytes(b"<html>login required</html>")
    with pytest.raises(ValueError, match=r"web page.*was deleted"):
        download("market1501", tmp_path, url=server.url)
    assert not (tmp_path / "Market-1501-v15.09.15.zip").exists()
    assert download("market1501", tmp_path, url=server.url) == tmp_path / "Market-1501-v15.09.15"  # fetched anew
