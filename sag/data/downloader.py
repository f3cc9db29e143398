"""Download a dataset archive (resumable, checksummed) and extract it atomically."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm.auto import tqdm

from sag.atomic import remove_stale, temp_dir

_CHUNK = 1 << 20
MAX_DOWNLOAD_BYTES = 64 << 30  # no dataset archive is larger (Market-1501: 153 MB, CUHK03: 1.7 GB)
MAX_EXTRACT_BYTES = 64 << 30  # the most an archive may unpack to
MAX_RATIO = 100.0  # unpacked / packed size: images barely compress, a decompression bomb does
_LOCAL_HINTS = {
    errno.ENOSPC: "; the disk is full: free some space and run again to resume",
    errno.EDQUOT: "; the disk quota is exceeded: free some space and run again to resume",
    errno.EACCES: "; no permission: choose a --root you can write",
    errno.EROFS: "; a read-only file system: choose a writable --root",
}
_RETRY_DELAY_S = 1.0  # seconds before retry k is k * this


@dataclass(frozen=True)
class Source:
    """Where a dataset archive comes from, and the environment variables that override it."""

    url: str | None
    sha256: str | None
    url_env: str
    sha256_env: str
    note: str


SOURCES: dict[str, Source] = {
    "market1501": Source(
        # The address on the dataset's project page (used by torchreid and others), often offline:
        # set $SAG_MARKET1501_URL to a mirror.
        url="http://188.138.127.15:81/Datasets/Market-1501-v15.09.15.zip",
        sha256=None,
        url_env="SAG_MARKET1501_URL",
        sha256_env="SAG_MARKET1501_SHA256",
        note="Market-1501-v15.09.15.zip from the dataset's project page or a mirror you trust",
    ),
    "cuhk03": Source(
        url=None,
        sha256=None,
        url_env="SAG_CUHK03_URL",
        sha256_env="SAG_CUHK03_SHA256",
        note="cuhk03_release.zip (CUHK03's authors distribute it on request: no public address)",
    ),
}
_REFUSED = {
    "dukemtmc": "DukeMTMC-reID was withdrawn by its authors and is never downloaded; bring your own copy and place it "
    "so that ROOT/DukeMTMC-reID/bounding_box_train exists",
    "synthetic": "the synthetic dataset is generated, not downloaded: use sag.data.make_synthetic or "
    "`python -m sag make-synthetic`",
}


def download(
    name: str,
    root: str | os.PathLike,
    url: str | None = None,
    sha256: str | None = None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Fetch and extract dataset ``name`` into ``root`` unless it is already there; returns the dataset folder.

    The URL is ``url``, else ``$SAG_<NAME>_URL``, else the built-in address; the checksum likewise (``sha256``,
    ``$SAG_<NAME>_SHA256``); without one a warning says the archive is unverified and prints its SHA-256. An
    interrupted transfer resumes from ``<archive>.part`` (HTTP Range) or restarts cleanly when the server ignores
    Range; extraction (``extract``: every member checked first) goes to a hidden temporary folder renamed into
    place only when complete. An archive that fails a check is deleted, so the next call downloads it again.
    """
    if name in _REFUSED:
        raise ValueError(_REFUSED[name])
    if name not in SOURCES:
        raise ValueError(f"cannot download {name!r}; downloadable datasets: {', '.join(SOURCES)}")
    _check_retries(retries)
    source = SOURCES[name]
    root = Path(root).expanduser()
    existing = _existing(name, root)
    if existing is not None:
        return existing
    url = url or os.environ.get(source.url_env) or source.url
    if not url:
        raise ValueError(f"no download address for {name}: pass --url URL or set ${source.url_env} ({source.note})")
    sha256 = _checked_sha256(sha256 or os.environ.get(source.sha256_env) or source.sha256, source)
    archive_name = _archive_name(url)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root, archive_name)  # the extraction folder of a killed earlier call
    archive = root / archive_name
    if sha256 is None:
        print(
            f"warning: no SHA-256 is known for {url}{' (plain http)' if url.startswith('http:') else ''}: the "
            f"archive cannot be verified; pass --sha256 HEX or set ${source.sha256_env} to verify it",
            file=sys.stderr,
        )
    if not archive.is_file():
        part = archive.with_name(archive.name + ".part")
        fetch(url, part, retries=retries, timeout=timeout)
        _verify(part, sha256, url)
        os.replace(part, archive)
    else:
        _verify(archive, sha256, url)
    if sha256 is None:
        print(f"{archive.name} has SHA-256 {sha256sum(archive)} (pin it with --sha256)", file=sys.stderr)
    folder = extract(archive, root)
    found = _existing(name, root)
    if found is None:
        raise ValueError(f"{archive} was extracted to {folder}, but it does not hold a {name} dataset")
    return found


def fetch(
    url: str, dest: str | os.PathLike, retries: int = 3, timeout: float = 60.0, max_bytes: int | None = None
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest`` with HTTP Range; retries on broken transfers.

    A local failure (disk full, no permission) stops at once with an OSError naming ``dest``; a body longer than
    its Content-Length or than ``max_bytes`` (default ``MAX_DOWNLOAD_BYTES``) is stopped and deleted.
    """
    _check_retries(retries)
    dest = Path(dest)
    max_bytes = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_RETRY_DELAY_S * attempt)
        try:
            if _fetch_once(url, dest, timeout, max_bytes):
                return dest
        except _LocalWriteError as err:  # not the network's fault: retrying cannot help
            cause = err.__cause__
            code = getattr(cause, "errno", None)
            hint = _LOCAL_HINTS.get(code, "")
            raise OSError(code, f"cannot write {dest}: {getattr(cause, 'strerror', None) or cause}{hint}") from cause
        except urllib.error.HTTPError as err:
            if err.code == 416:  # our Range starts at or past the end: keep the file if it is exactly complete
                total = _range_total(err.headers.get("Content-Range", ""))
                if total is not None and dest.exists() and dest.stat().st_size == total:
                    return dest
                dest.unlink(missing_ok=True)
                last_error = err
                continue
            raise ConnectionError(f"download of {url} failed: HTTP {err.code} {err.reason}; check --url") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last_error = err
    raise ConnectionError(
        f"download of {url} failed after {retries + 1} attempt{'s' if retries else ''} ({last_error}); {dest} keeps "
        f"the {dest.stat().st_size if dest.exists() else 0:,} bytes received: run again to resume"
    )


def extract(
    archive: str | os.PathLike, root: str | os.PathLike, max_bytes: int | None = None, max_ratio: float | None = None
) -> Path:
    """Unpack a .zip / .tar(.gz|.bz2|.xz) into ``root`` atomically: a temporary folder, renamed when complete.

    Nothing is written before every member has been checked: only plain files and folders whose paths stay
    inside the target (no links, devices, FIFOs, absolute paths or ``..``), a content type that matches the
    name, at most ``max_bytes`` (default ``MAX_EXTRACT_BYTES``) and ``max_ratio`` times the archive's size in
    all (default ``MAX_RATIO``) and no more than the free disk space. A refused archive is deleted.
    """
    archive, root = Path(archive), Path(root)
    max_bytes = MAX_EXTRACT_BYTES if max_bytes is None else max_bytes
    max_ratio = MAX_RATIO if max_ratio is None else max_ratio
    kind = _sniff(archive)
    try:
        with _open_archive(archive, kind) as (members, open_member):
            _check_sizes(archive, root, sum(m.size for m in members if m.is_file), max_bytes, max_ratio)
            with temp_dir(root, archive.name) as tmp:
                _write_members(archive, tmp, members, open_member, max_bytes)
                entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
                source = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
                target = root / (source.name if source is not tmp else _stem(archive))
                if target.exists():
                    raise FileExistsError(
                        f"{target} already exists but is not a complete dataset; remove it and run again"
                    )
                os.rename(source, target)
                return target
    except _RefusedArchiveError as err:
        archive.unlink(missing_ok=True)
        raise ValueError(f"{err}; refusing to extract it ({archive} was deleted)") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        local = isinstance(err, OSError) and not isinstance(err, gzip.BadGzipFile)
        if local and (type(err) is not OSError or err.errno is not None):  # bz2/lzma say OSError without errno
            raise  # a local failure (disk full, target exists...), not a bad archive
        archive.unlink(missing_ok=True)
        raise ValueError(f"{archive} is corrupt ({err}); it was deleted: run the download again") from err


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Member:
    """One archive entry: its checked relative path, a folder or a file, and its declared size."""

    path: PurePosixPath
    is_file: bool
    size: int
    key: object  # the ZipInfo / TarInfo to read it with


class _RefusedArchiveError(Exception):
    """An archive that must not be extracted (unsafe member, wrong type, too big)."""


class _LocalWriteError(Exception):
    """Writing the downloaded bytes failed on this machine (the cause is the OSError)."""


def _sniff(archive: Path) -> str:
    """ "zip" or "tar", from the content; the name must announce the same type."""
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    announced = "zip" if archive.name.lower().endswith(".zip") else "tar" if _stem(archive) != archive.name else None
    found = "zip" if zipfile.is_zipfile(archive) else "tar" if tarfile.is_tarfile(archive) else None
    if found is None:
        with open(archive, "rb") as fh:
            head = fh.read(64)
        looks = " (it looks like a web page: the address answered with an HTML page)" if b"<" in head[:16] else ""
        raise _refuse_now(archive, f"{archive} is neither a zip nor a tar archive{looks}")
    if announced is not None and found != announced:
        raise _refuse_now(archive, f"{archive} is named as a {announced} archive but holds a {found} archive")
    return found


def _refuse_now(archive: Path, message: str) -> ValueError:
    """Delete a refused archive; the ValueError to raise."""
    archive.unlink(missing_ok=True)
    return ValueError(
        f"{message}; refusing to extract it ({archive} was deleted: check the address and download again)"
    )


@contextmanager
def _open_archive(archive: Path, kind: str) -> Iterator[tuple[list[_Member], Callable[[_Member], IO[bytes]]]]:
    """The checked members of the archive and a function that opens one member for reading."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            members = [_zip_member(info, archive) for info in zf.infolist()]
            yield members, lambda m: zf.open(m.key)
    else:
        with tarfile.open(archive) as tf:
            members = [_tar_member(info, archive) for info in tf.getmembers()]
            yield members, lambda m: tf.extractfile(m.key)


def _zip_member(info: zipfile.ZipInfo, archive: Path) -> _Member:
    """A zip entry, refused unless it is a plain file or folder with a safe path."""
    mode = info.external_attr >> 16  # the Unix mode, when the archive was made on Unix
    kind = stat.S_IFMT(mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        what = "a symbolic link" if kind == stat.S_IFLNK else "a device, FIFO or socket"
        raise _RefusedArchiveError(f"{archive} holds {what} {info.filename!r} (only files and folders are allowed)")
    return _Member(_safe_path(info.filename, archive), not info.is_dir(), info.file_size, info)


def _tar_member(info: tarfile.TarInfo, archive: Path) -> _Member:
    """A tar entry, refused unless it is a plain file or folder with a safe path."""
    if info.issym() or info.islnk():
        kind = "a symbolic link" if info.issym() else "a hard link"
        raise _RefusedArchiveError(
            f"{archive} holds {kind} {info.name!r} -> {info.linkname!r} (only files and folders are allowed)"
        )
    if not (info.isreg() or info.isdir()):
        raise _RefusedArchiveError(
            f"{archive} holds a device, FIFO or special entry {info.name!r} (only files and folders are allowed)"
        )
    return _Member(_safe_path(info.name, archive), info.isreg(), info.size, info)


def _safe_path(name: str, archive: Path) -> PurePosixPath:
    """The member's relative path, or a refusal for an absolute path, a drive, ``..`` or an empty name."""
    unified = name.replace("\\", "/")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if unified.startswith("/") or ".." in parts or not parts or ":" in parts[0] or "\x00" in unified:
        raise _RefusedArchiveError(f"{archive} holds an unsafe path {name!r} (outside the target folder)")
    return PurePosixPath(*parts)


def _check_sizes(archive: Path, root: Path, declared: int, max_bytes: int, max_ratio: float) -> None:
    """Refuse an archive whose declared contents exceed the caps or the free space of ``root``."""
    packed = max(archive.stat().st_size, 1)
    if declared > max_bytes:
        raise _RefusedArchiveError(f"{archive} would unpack to {declared:,} bytes, more than the {max_bytes:,} allowed")
    if declared > max_ratio * packed:
        raise _RefusedArchiveError(
            f"{archive} would unpack to {declared:,} bytes, {declared / packed:.0f} times its size (at most "
            f"{max_ratio:g} allowed: a decompression bomb?)"
        )
    free = shutil.disk_usage(root).free
    if declared > free:
        raise OSError(
            errno.ENOSPC, f"{archive} unpacks to {declared:,} bytes but {root} has {free:,} free; free some space"
        )


def _write_members(
    archive: Path, tmp: Path, members: list[_Member], open_member: Callable[[_Member], IO[bytes]], max_bytes: int
) -> None:
    """Write the checked members under ``tmp`` (umask permissions); the bytes written are counted, not trusted."""
    base = tmp.resolve()
    written = 0
    for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=None):
        target = tmp.joinpath(*member.path.parts)
        if not target.resolve().is_relative_to(base):  # belt and braces: a folder of ours is never a link
            raise _RefusedArchiveError(f"{archive} holds an unsafe path {str(member.path)!r} (outside the target)")
        try:
            if not member.is_file:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member(member) as src, open(target, "xb") as dst:
                size = 0
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if size > member.size or written > max_bytes:
                        raise _RefusedArchiveError(
                            f"{archive} unpacks to more bytes than it declares (member {str(member.path)!r})"
                        )
                    dst.write(chunk)
        except FileExistsError:
            raise _RefusedArchiveError(f"{archive} holds the path {str(member.path)!r} twice") from None


def _fetch_once(url: str, dest: Path, timeout: float, max_bytes: int) -> bool:
    """One request; True when ``dest`` is complete, an exception when the transfer broke."""
    have = dest.stat().st_size if dest.exists() else 0
    headers = {"Range": f"bytes={have}-", "User-Agent": "sag-reid"} if have else {"User-Agent": "sag-reid"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        status = getattr(resp, "status", None) or 200
        start = 0
        if have and status == 206:
            start = _range_start(resp.headers.get("Content-Range", ""))
            if start != have:  # an unexpected range: start over rather than splice wrong bytes
                raise http.client.HTTPException(f"server answered range {start} for a request from byte {have}")
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        limit = min(total, max_bytes) if total is not None else max_bytes
        if total is not None and total > max_bytes:
            raise _too_big(url, dest, total, max_bytes)
        try:
            free = shutil.disk_usage(dest.parent).free
        except OSError:
            free = None
        if total is not None and free is not None and total - start > free:
            raise _LocalWriteError() from OSError(errno.ENOSPC, f"{total - start:,} bytes to come, {free:,} free")
        with (
            _open_for_download(dest, append=bool(start)) as fh,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=dest.name.removesuffix(".part"),
                disable=None,
            ) as bar,
        ):
            size = start
            while chunk := resp.read(_CHUNK):
                size += len(chunk)
                if size > limit:  # longer than announced, or endless
                    fh.close()
                    raise _too_big(url, dest, size, limit)
                try:
                    fh.write(chunk)
                except OSError as err:
                    raise _LocalWriteError() from err
                bar.update(len(chunk))
    size = dest.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)
    return True


@contextmanager
def _open_for_download(dest: Path, append: bool) -> Iterator[IO[bytes]]:
    """``dest`` opened for (appending) binary writes; local errors (also on close) become _LocalWriteError."""
    try:
        fh = open(dest, "ab" if append else "wb")  # noqa: SIM115 (closed below, its errors translated)
    except OSError as err:
        raise _LocalWriteError() from err
    try:
        yield fh
    finally:
        try:
            fh.close()
        except OSError as err:
            raise _LocalWriteError() from err


def _too_big(url: str, dest: Path, size: int, limit: int) -> ValueError:
    """Delete the partial download; the error for a body over its announced size or the cap."""
    dest.unlink(missing_ok=True)
    return ValueError(
        f"download of {url} stopped: it sent {size:,} bytes or more, over the {limit:,} expected (a wrong address, "
        f"or a server that does not stop); nothing was kept"
    )


def _check_retries(retries: int) -> None:
    """ValueError unless ``retries`` is a whole number >= 0."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be 0 or more (--retries N), got {retries!r}")


def _checked_sha256(value: str | None, source: Source) -> str | None:
    """The lower-case hex digest, or a ValueError before anything is downloaded."""
    if not value:
        return None
    digest = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(
            f"--sha256 {value!r} (or ${source.sha256_env}) is not a SHA-256: expected 64 hex digits, as "
            "sha256sum prints them"
        )
    return digest


def _verify(path: Path, sha256: str | None, url: str) -> None:
    """Check the archive's SHA-256 when one is known; a mismatch deletes the file."""
    if sha256 is None:
        return
    actual = sha256sum(path)
    if actual != sha256:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; the file was deleted "
            f"(a corrupt transfer or a different archive at that address)"
        )


def _existing(name: str, root: Path) -> Path | None:
    """The dataset folder when ``root`` already holds a complete copy, else None."""
    if not root.is_dir():
        return None
    try:
        if name == "market1501":
            from sag.data.market import MARKET1501, find_dataset_root

            return find_dataset_root(root, MARKET1501)
        from sag.data.cuhk03 import find_cuhk03_mat

        return find_cuhk03_mat(root).parent
    except FileNotFoundError:
        return None


def _archive_name(url: str) -> str:
    """File name of the archive behind ``url``."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or not re.search(r"\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$", name, re.IGNORECASE):
        raise ValueError(f"cannot tell the archive name from {url}; expected an address ending in .zip or .tar.gz")
    return name


def _stem(archive: Path) -> str:
    """Archive name without its extensions."""
    return re.sub(r"\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$", "", archive.name, flags=re.IGNORECASE)


def _range_start(content_range: str) -> int:
    """First byte of ``bytes START-END/TOTAL``; -1 when absent or malformed."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    return int(match.group(1)) if match else -1


def _range_total(content_range: str) -> int | None:
    """TOTAL of ``bytes */TOTAL`` (a 416 answer), else None."""
    match = re.match(r"bytes \*/(\d+)", content_range.strip())
    return int(match.group(1)) if match else None
