"""Download a dataset archive (resumable, checksummed) and extract it atomically."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

_CHUNK = 1 << 20
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
    ``$SAG_<NAME>_SHA256``). An interrupted transfer resumes from ``<archive>.part`` (HTTP Range) or restarts
    cleanly when the server ignores Range; extraction goes to a hidden temporary folder renamed into place only
    when complete.
    """
    if name in _REFUSED:
        raise ValueError(_REFUSED[name])
    if name not in SOURCES:
        raise ValueError(f"cannot download {name!r}; downloadable datasets: {', '.join(SOURCES)}")
    source = SOURCES[name]
    root = Path(root).expanduser()
    existing = _existing(name, root)
    if existing is not None:
        return existing
    url = url or os.environ.get(source.url_env) or source.url
    if not url:
        raise ValueError(f"no download address for {name}: pass url=... or set ${source.url_env} ({source.note})")
    sha256 = (sha256 or os.environ.get(source.sha256_env) or source.sha256 or "").lower() or None
    root.mkdir(parents=True, exist_ok=True)
    archive = root / _archive_name(url)
    if not archive.is_file():
        part = archive.with_name(archive.name + ".part")
        fetch(url, part, retries=retries, timeout=timeout)
        _verify(part, sha256, url)
        os.replace(part, archive)
    else:
        _verify(archive, sha256, url)
    folder = extract(archive, root)
    found = _existing(name, root)
    if found is None:
        raise ValueError(f"{archive} was extracted to {folder}, but it does not hold a {name} dataset")
    return found


def fetch(url: str, dest: str | os.PathLike, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest`` with HTTP Range; retries on broken transfers."""
    dest = Path(dest)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_RETRY_DELAY_S * attempt)
        try:
            if _fetch_once(url, dest, timeout):
                return dest
        except urllib.error.HTTPError as err:
            if err.code == 416:  # our Range starts at or past the end: keep the file if it is exactly complete
                total = _range_total(err.headers.get("Content-Range", ""))
                if total is not None and dest.exists() and dest.stat().st_size == total:
                    return dest
                dest.unlink(missing_ok=True)
                last_error = err
                continue
            raise ConnectionError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last_error = err
    raise ConnectionError(
        f"download of {url} failed after {retries + 1} attempts ({last_error}); {dest} keeps the "
        f"{dest.stat().st_size if dest.exists() else 0:,} bytes received: run again to resume"
    )


def extract(archive: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Unpack a .zip / .tar(.gz) into ``root`` atomically: a temporary folder, renamed when complete."""
    archive, root = Path(archive), Path(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.extract-", dir=root))
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.namelist():
                        _check_member(member, archive)
                    zf.extractall(tmp)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tf:
                    tf.extractall(tmp, filter="data")
            else:
                raise ValueError(f"{archive} is neither a zip nor a tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
            archive.unlink(missing_ok=True)
            raise ValueError(f"{archive} is corrupt ({err}); it was deleted: run the download again") from err
        entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        target = root / (source.name if source is not tmp else _stem(archive))
        if target.exists():
            raise FileExistsError(f"{target} already exists but is not a complete dataset; remove it and run again")
        os.rename(source, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_once(url: str, dest: Path, timeout: float) -> bool:
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
        total = start + int(length) if length is not None else None
        with (
            open(dest, "ab" if start else "wb") as fh,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=dest.name.removesuffix(".part"),
                disable=None,
            ) as bar,
        ):
            while chunk := resp.read(_CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
    size = dest.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)
    return True


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


def _check_member(member: str, archive: Path) -> None:
    """Refuse archive members that would land outside the extraction folder."""
    parts = Path(member).parts
    if member.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ValueError(f"{archive} holds an unsafe path {member!r}; refusing to extract it")


def _range_start(content_range: str) -> int:
    """First byte of ``bytes START-END/TOTAL``; -1 when absent or malformed."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    return int(match.group(1)) if match else -1


def _range_total(content_range: str) -> int | None:
    """TOTAL of ``bytes */TOTAL`` (a 416 answer), else None."""
    match = re.match(r"bytes \*/(\d+)", content_range.strip())
    return int(match.group(1)) if match else None
