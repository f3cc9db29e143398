"""download(): a local HTTP server serves a zip the test builds; resume, restart, checksum, caps, atomic extraction."""

from __future__ import annotations

import errno
import hashlib
import io
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

import sag.data.downloader as dl
from sag.cli import main
from sag.data import download, load_dataset

FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_064744_02.jpg"],
    "query": ["0001_c1s1_001051_00.jpg"],
    "bounding_box_test": ["0001_c2s1_000551_01.jpg", "0000_c2s1_000151_02.jpg", "-1_c1s1_000401_03.jpg"],
}
NAME = "Market-1501-v15.09.15.zip"


def _market_zip(corrupt: bool = False, unsafe: bool = False) -> bytes:
    """A Market-1501 archive with a single top folder, stored uncompressed (so a flipped byte breaks a CRC)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for folder, names in FILES.items():
            for i, name in enumerate(names):
                image = io.BytesIO()
                Image.new("RGB", (16, 32), (40 * i, 90, 200)).save(image, "JPEG", quality=95)
                zf.writestr(f"Market-1501-v15.09.15/{folder}/{name}", image.getvalue())
        zf.writestr("Market-1501-v15.09.15/readme.txt", "x" * 20_000)
        if unsafe:
            zf.writestr("../escape.txt", "outside")
    data = bytearray(buffer.getvalue())
    if corrupt:
        at = data.index(b"x" * 1000) + 500
        data[at : at + 4] = b"yyyy"
    return bytes(data)


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    honour_range: bool = True
    cut: int = 0  # this many responses stop halfway, then the connection drops
    ranges: list[str | None]
    endless: bool = False  # answer with a body that never ends (and no Content-Length)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.ranges.append(self.headers.get("Range"))
        if self.server.endless:
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and self.server.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut > 0:
            self.server.cut -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.ranges = {f"/{NAME}": _market_zip()}, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/{NAME}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "_RETRY_DELAY_S", 0.0)
    for env in ("SAG_MARKET1501_URL", "SAG_MARKET1501_SHA256", "SAG_CUHK03_URL", "SAG_CUHK03_SHA256"):
        monkeypatch.delenv(env, raising=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hidden(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_download_verifies_and_extracts(server: _Server, tmp_path: Path) -> None:
    folder = download("market1501", tmp_path, url=server.url, sha256=_sha(server.files[f"/{NAME}"]))
    assert folder == tmp_path / "Market-1501-v15.09.15"
    assert (tmp_path / NAME).read_bytes() == server.files[f"/{NAME}"] and not (tmp_path / f"{NAME}.part").exists()
    assert _hidden(tmp_path) == []
    ds = load_dataset("market1501", tmp_path)
    assert len(ds.train) == 3 and len(ds.gallery) == 2 and len(ds.junk) == 1
    server.ranges.clear()
    assert download("market1501", tmp_path, url=server.url) == folder  # already there: no request
    assert server.ranges == []


def test_interrupted_download_resumes_with_range(server: _Server, tmp_path: Path) -> None:
    server.cut = 1
    with pytest.raises(ConnectionError, match=r"failed after 1 attempt \(.*\.part keeps the .* bytes.*run again"):
        download("market1501", tmp_path, url=server.url, retries=0)
    part = tmp_path / f"{NAME}.part"
    size = len(server.files[f"/{NAME}"])
    assert part.stat().st_size == size // 2
    with pytest.raises(FileNotFoundError):  # nothing half-done loads as a dataset
        load_dataset("market1501", tmp_path)
    folder = download("market1501", tmp_path, url=server.url, sha256=_sha(server.files[f"/{NAME}"]), retries=0)
    assert server.ranges == [None, f"bytes={size // 2}-"]
    assert (tmp_path / NAME).read_bytes() == server.files[f"/{NAME}"]
    assert load_dataset("market1501", folder).num_train_ids == 2


def test_broken_transfer_is_retried_within_one_call(server: _Server, tmp_path: Path) -> None:
    server.cut = 2
    download("market1501", tmp_path, url=server.url, sha256=_sha(server.files[f"/{NAME}"]), retries=3)
    size = len(server.files[f"/{NAME}"])
    assert server.ranges == [None, f"bytes={size // 2}-", f"bytes={size // 2 + (size - size // 2) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(server: _Server, tmp_path: Path) -> None:
    server.honour_range, server.cut = False, 1
    with pytest.raises(ConnectionError):
        download("market1501", tmp_path, url=server.url, retries=0)
    download("market1501", tmp_path, url=server.url, sha256=_sha(server.files[f"/{NAME}"]), retries=0)
    assert server.ranges[1] is not None  # we asked for a range, got the whole file, and did not splice it
    assert (tmp_path / NAME).read_bytes() == server.files[f"/{NAME}"]


def test_complete_part_file_is_kept_on_416(server: _Server, tmp_path: Path) -> None:
    (tmp_path / f"{NAME}.part").write_bytes(server.files[f"/{NAME}"])  # finished, but never renamed
    assert download("market1501", tmp_path, url=server.url).name == "Market-1501-v15.09.15"


def test_bad_checksum_deletes_the_download(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"checksum mismatch for .*: expected sha256 {'0' * 64}, got [0-9a-f]{{64}}"):
        download("market1501", tmp_path, url=server.url, sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        load_dataset("market1501", tmp_path)


def test_corrupt_archive_never_leaves_a_dataset(server: _Server, tmp_path: Path) -> None:
    server.files[f"/{NAME}"] = _market_zip(corrupt=True)
    with pytest.raises(ValueError, match=rf"{NAME} is corrupt .*deleted: run the download again"):
        download("market1501", tmp_path, url=server.url)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-extracted folder, no temp, no archive
    with pytest.raises(FileNotFoundError):
        load_dataset("market1501", tmp_path)


def test_interrupted_extraction_leaves_no_folder(server: _Server, tmp_path: Path, monkeypatch) -> None:
    real = zipfile.ZipFile.open  # what the extraction calls for each member

    def crash_after_three(self, *args, **kwargs):
        crash_after_three.calls += 1
        if crash_after_three.calls > 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C halfway through
        return real(self, *args, **kwargs)

    crash_after_three.calls = 0
    monkeypatch.setattr(zipfile.ZipFile, "open", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        download("market1501", tmp_path, url=server.url)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]  # the archive, nothing extracted
    monkeypatch.undo()
    assert download("market1501", tmp_path, url=server.url).is_dir()


def test_unsafe_archive_paths_are_refused(server: _Server, tmp_path: Path) -> None:
    server.files[f"/{NAME}"] = _market_zip(unsafe=True)
    with pytest.raises(ValueError, match=r"unsafe path '../escape.txt'"):
        download("market1501", tmp_path / "data", url=server.url)
    assert not (tmp_path / "escape.txt").exists()


def test_url_from_environment_and_http_errors(server: _Server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SAG_MARKET1501_URL", server.url.replace(NAME, "missing.zip"))
    with pytest.raises(ConnectionError, match=r"missing.zip failed: HTTP 404"):
        download("market1501", tmp_path)
    monkeypatch.setenv("SAG_MARKET1501_URL", server.url)
    monkeypatch.setenv("SAG_MARKET1501_SHA256", _sha(server.files[f"/{NAME}"]).upper())
    assert download("market1501", tmp_path).is_dir()


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"DukeMTMC-reID was withdrawn by its authors and is never downloaded"):
        download("dukemtmc", tmp_path)
    with pytest.raises(ValueError, match=r"generated, not downloaded"):
        download("synthetic", tmp_path)
    with pytest.raises(ValueError, match=r"cannot download 'viper'; downloadable datasets: market1501, cuhk03"):
        download("viper", tmp_path)
    with pytest.raises(ValueError, match=r"no download address for cuhk03: pass --url URL or set \$SAG_CUHK03_URL"):
        download("cuhk03", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_command(server: _Server, tmp_path: Path, capsys) -> None:
    assert main(["download", "market1501", "--root", str(tmp_path), "--url", server.url]) == 0
    assert "market1501 ready at" in capsys.readouterr().out
    assert main(["download", "dukemtmc", "--root", str(tmp_path)]) == 2
    assert "withdrawn" in capsys.readouterr().err


def test_endless_body_is_stopped_at_the_cap_and_not_retried(server: _Server, tmp_path: Path) -> None:
    server.endless = True
    with pytest.raises(ValueError, match=r"stopped: it sent [\d,]+ bytes or more, over the 1,000,000 expected"):
        dl.fetch(server.url, tmp_path / "x.zip.part", retries=3, max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []  # nothing kept
    assert len(server.ranges) == 1  # and not asked again


def test_announced_size_over_the_cap_is_refused_before_reading(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sent [\d,]+ bytes or more, over the 1,000 expected"):  # Content-Length
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
    assert f"has SHA-256 {_sha(server.files[f'/{NAME}'])} (pin it with --sha256)" in err


def test_retries_must_not_be_negative(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["download", "market1501", "--root", str(tmp_path), "--retries", "-1"])
    assert "expected a whole number 0 or more, got '-1'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        download("market1501", tmp_path, url="http://127.0.0.1:9/x.zip", retries=-1)


def test_cached_html_page_is_deleted_and_fetched_again(server: _Server, tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(b"<html>login required</html>")
    with pytest.raises(ValueError, match=r"web page.*was deleted"):
        download("market1501", tmp_path, url=server.url)
    assert not (tmp_path / NAME).exists()
    assert download("market1501", tmp_path, url=server.url) == tmp_path / "Market-1501-v15.09.15"  # fetched anew
