"""Atomic file writes: a temp file in the target's folder, then ``os.replace``, so no reader sees half a file.

Every file and folder gets the usual permissions (0666 / 0777 minus the umask), not mkstemp's 0600 / 0700.
A temporary is ``flock``-ed while it is written, so ``remove_stale`` can tell the leftovers of a killed process
(unlocked) from the work of a live one (locked) and delete only the former.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_FILE_GLOBS = (".*.tmp", ".*.tmp.*")  # .NAME.XXXX.tmp[.suffix]: files being written by atomic_path
TEMP_DIR_GLOB = ".*.tmp-*"  # .NAME.tmp-XXXX: folders being filled by temp_dir


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (same suffix) to write; on success it replaces ``path``, else it is removed.

    With ``fsync`` the data reach the disk before the rename (for checkpoints: a crash leaves the old or the new
    file, never an empty one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "being written": remove_stale leaves it alone
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes | memoryview, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk first unless ``fsync=False``); returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def temp_dir(parent: str | os.PathLike, name: str) -> Iterator[Path]:
    """A hidden folder ``.NAME.tmp-XXXX`` in ``parent`` (umask permissions) to fill and rename; removed on exit."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """Delete the temporaries a killed process left in ``folder`` (those no live writer holds); returns their names.

    ``name``: only the temporaries of that file or folder (in a folder shared with other files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    patterns = (*TEMP_FILE_GLOBS, TEMP_DIR_GLOB)
    if name is not None:
        name = glob.escape(name)
        patterns = (f".{name}.*.tmp", f".{name}.*.tmp.*", f".{name}.tmp-*")
    candidates = {p for pattern in patterns for p in folder.glob(pattern)}
    for path in sorted(candidates):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
        except OSError:
            continue  # a live process is writing it
        finally:
            os.close(fd)
    return removed


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
