"""Committed data files that the book reads (study results, benchmark tables), found in a checkout or a wheel.

``sag.resources.path("results/table1_synthetic/results.csv")`` gives a local path of the file; names are
relative to the repository root, as in the repository. In a repository checkout (``pip install -e .``) that is
the repository's own file. An installed wheel (``pip install git+URL`` builds one) carries a copy of every
packaged file under ``sag/_data/``, made from the checkout when the wheel is built (``setup.py`` copies what
:func:`packaged_files` lists), so the repository stays the one source of these files.

This module uses the standard library only: ``setup.py`` loads it by path at build time.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

PACKAGED = ("results", "benchmarks/RESULTS.md")  # what a wheel carries, relative to the repository root
DATA_DIRNAME = "_data"  # the copy's folder inside the installed package: sag/_data/<name>
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent  # the repository root when sag is imported from a checkout


def packaged_files(root: str | Path) -> list[str]:
    """Names (relative to ``root``, sorted) of the files under :data:`PACKAGED` that a wheel carries."""
    root = Path(root)
    names = []
    for entry in PACKAGED:
        top = root / entry
        if not top.exists():
            raise FileNotFoundError(f"{top} is missing; sag/resources.py PACKAGED lists {entry!r} to ship with sag")
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(root)
            if not any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                names.append(relative.as_posix())
    return sorted(names)


def search_roots() -> list[Path]:
    """Where :func:`path` looks, in order: the repository checkout (if sag runs from one), then the packaged copy."""
    roots = [_CHECKOUT] if (_CHECKOUT / "pyproject.toml").is_file() else []
    return [*roots, _PACKAGE / DATA_DIRNAME]


def path(name: str) -> Path:
    """Local path of the committed file or folder ``name``, e.g. ``"results/table1_synthetic/results.csv"``."""
    parts = PurePosixPath(name).parts
    inside = any(parts[: len(PurePosixPath(e).parts)] == PurePosixPath(e).parts for e in PACKAGED)
    if not name or name.startswith("/") or ".." in parts or not inside:
        raise ValueError(
            f"{name!r} is not a packaged data file: give a path relative to the repository root under one of "
            f"{', '.join(PACKAGED)}, e.g. 'results/table1_synthetic/results.csv'"
        )
    roots = search_roots()
    for root in roots:
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{name} not found in {' or '.join(str(r) for r in roots)}: this sag carries no copy of it; install sag "
        f"from a repository that has the file (pip install git+URL, as the book's first cell does)"
    )
