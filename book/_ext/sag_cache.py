"""Sphinx extension: a change in ``sag`` or in ``results/`` clears the book's execution cache (no stale outputs).

jupyter-cache keys a chapter's stored outputs on the chapter's cells only, so editing ``sag/`` alone would
leave every chapter showing outputs of the old code. This extension hashes ``sag/**/*.py`` at the start of
each build; when the hash differs from the one stamped after the last successful build, it deletes the
execution cache and marks every document outdated, so every chapter is executed again. The committed study
results the chapters read (``results/**/*.csv|md|json``) are part of the digest for the same reason. The stamp is only
written when a build finishes without an exception, so a failed build re-executes next time too.

Loaded through ``sphinx: local_extensions: {sag_cache: book/_ext}`` in the root ``_config.yml``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import Any

STAMP = "sag_package.sha256"  # file inside the cache folder holding the digest of the last successful build
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"  # committed study results the chapters read


def package_dir() -> Path:
    """Folder of the ``sag`` package the chapters import (the repository's sag/ for an editable install)."""
    spec = importlib.util.find_spec("sag")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    return Path(__file__).resolve().parents[2] / "sag"


def package_digest(folder: Path, patterns: tuple[str, ...] = ("*.py",)) -> str:
    """SHA-256 over the relative paths and contents of every file matching ``patterns`` below ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"package folder {folder} not found; install sag with `pip install -e .`")
    digest = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in folder.rglob(pattern)}):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def inputs_digest(package: Path, results: Path) -> str:
    """The digest the cached outputs depend on: the package's code and, when present, the committed results."""
    parts = package_digest(package)
    if results.is_dir():
        parts += package_digest(results, ("*.csv", "*.md", "*.json"))
    return hashlib.sha256(parts.encode()).hexdigest()


def is_stale(cache_dir: Path, digest: str) -> bool:
    """True if the cache was not stamped with ``digest`` by the last successful build."""
    stamp = cache_dir / STAMP
    return not stamp.is_file() or stamp.read_text().strip() != digest


def clear_cache(cache_dir: Path) -> bool:
    """Delete the execution cache folder; True if there was one."""
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
        return True
    return False


def write_stamp(cache_dir: Path, digest: str) -> None:
    """Record ``digest`` as the package state the cached outputs belong to."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{STAMP}.tmp"
    tmp.write_text(digest + "\n")
    tmp.replace(cache_dir / STAMP)


def _cache_dir(app: Any) -> Path:
    """The execution cache folder myst-nb uses (``<build>/.jupyter_cache`` unless configured)."""
    config = getattr(app.env, "mystnb_config", None)
    path = getattr(config, "execution_cache_path", None)
    return Path(path) if path else Path(app.outdir).parent / ".jupyter_cache"


def _on_builder_inited(app: Any) -> None:
    """Clear the cache when the package changed since the last successful build."""
    from sphinx.util import logging

    digest = inputs_digest(package_dir(), RESULTS_DIR)
    cache_dir = _cache_dir(app)
    app.sag_cache_digest = digest
    app.sag_cache_stale = is_stale(cache_dir, digest)
    if app.sag_cache_stale and clear_cache(cache_dir):
        logging.getLogger(__name__).info(f"sag_cache: sag or results/ changed, cleared {cache_dir}")


def _on_env_get_outdated(app: Any, env: Any, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    """Re-read (and so re-execute) every known document when the package changed."""
    if not getattr(app, "sag_cache_stale", False):
        return []
    return sorted(set(env.all_docs) - added - changed - removed)


def _on_build_finished(app: Any, exception: BaseException | None) -> None:
    """Stamp the cache with the package digest after a build that raised nothing."""
    if exception is None and getattr(app, "sag_cache_digest", None):
        write_stamp(_cache_dir(app), app.sag_cache_digest)


def setup(app: Any) -> dict[str, Any]:
    """Register the three event handlers (after myst-nb's own builder-inited handler)."""
    app.connect("builder-inited", _on_builder_inited, priority=900)
    app.connect("env-get-outdated", _on_env_get_outdated)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
