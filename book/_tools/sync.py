"""Write the chapters' notebook form (.ipynb) from their MyST source (.md), with the install cell of _config.yml.

Usage (from the repository root)::

    python book/_tools/sync.py            # write each chapter's install cell and its .ipynb (no outputs)
    python book/_tools/sync.py book/05_grid_softmax.md   # the same for the named chapters only
    python book/_tools/sync.py --check    # only report problems; exit status 1 if there are any

A chapter is a MyST-markdown notebook ``book/NN_name.md`` with a jupytext header (``formats: ipynb,md:myst``).
The .md is the only source; the .ipynb is generated from it for Jupyter and Colab: the same code cells, no outputs
or execution counts, cell ids derived from the cells (re-running gives the same file), and markdown in plain
Jupyter form (book/_tools/notebook_markdown.py: admonitions as blockquotes or folded ``<details>``, included package
code inline, citations and cross-references as text and links), plus each figure's caption under its cell and a
References section. Because the .ipynb shows code of ``sag`` inline, sync again after changing that code.
Each .ipynb carries a digest of its cells as sync wrote them: if they were edited since (in Jupyter or Colab), sync
stops instead of overwriting them: carry the edits into the .md by hand (the notebook form is not converted back).

The first code cell of every chapter (after its title and learning goals) installs ``sag`` where it is missing:
in Colab from ``repository.url`` and ``repository.branch`` of the root ``_config.yml`` (the setting that drives
the launch buttons), anywhere from ``$SAG_INSTALL_URL`` when that is set (any pip requirement, e.g. a fork's
``git+https://github.com/ORG/REPO@BRANCH`` or a local ``git+file://...``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_markdown import BookIndex  # the sibling module of this script

BOOK = Path(__file__).resolve().parents[1]
ROOT = BOOK.parent
INSTALL_TAG = "colab-install"  # tag of the install cell; with remove-cell it stays out of the HTML
INSTALL_TAGS = ["remove-cell", INSTALL_TAG]
STAMP = "book_sync"  # .ipynb metadata: the .md it was written from and a digest of the cells as written
INSTALL_ENV = "SAG_INSTALL_URL"  # a pip requirement that replaces the repository's in the install cell
_TEMPLATE = """\
# Install `sag` where it is missing: in Colab from the book's repository (nothing
# else), anywhere from $SAG_INSTALL_URL if set (e.g. a fork:
# git+https://github.com/ORG/REPO@BRANCH). Does nothing elsewhere.
import importlib.util
import os
import subprocess
import sys

wanted = "google.colab" in sys.modules or "{env}" in os.environ
if wanted and importlib.util.find_spec("sag") is None:
    default = "{spec}"  # the book's repository
    requirement = os.environ.get("{env}", default)
    pip = [sys.executable, "-m", "pip", "install", "-q", requirement]
    subprocess.run(pip, check=True)
    importlib.invalidate_caches()"""


def load_config(root: Path = ROOT) -> dict[str, Any]:
    """The root _config.yml as a dict."""
    path = root / "_config.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the book's configuration lives at the repository root")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def pip_spec(config: dict[str, Any]) -> str:
    """``git+URL@BRANCH`` from the config's ``repository`` section."""
    repo = config.get("repository") or {}
    url, branch = str(repo.get("url", "")).rstrip("/"), str(repo.get("branch", "")).strip()
    if not url.startswith("https://github.com/") or len(url.split("/")) != 5:
        raise ValueError(f"repository.url in _config.yml must be https://github.com/ORG/REPO, got {url!r}")
    if not branch:
        raise ValueError("repository.branch in _config.yml is empty; set it to the branch Colab should install")
    return f"git+{url}@{branch}"


def install_cell_source(config: dict[str, Any]) -> str:
    """Source of the Colab install cell for this config."""
    return _TEMPLATE.format(spec=pip_spec(config), env=INSTALL_ENV)


def chapters(book: Path = BOOK) -> list[Path]:
    """The MyST notebooks in ``book`` (markdown files with a jupytext header), sorted by name."""
    found = []
    for path in sorted(book.glob("*.md")):
        head = path.read_text(encoding="utf-8")[:2000]
        if head.startswith("---") and "jupytext:" in head.split("\n---", 1)[0]:
            found.append(path)
    return found


def cell_signature(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...], str]]:
    """What a pair must agree on: (cell type, source, tags, attachments) per cell."""
    return [
        (
            c.cell_type,
            c.source.strip(),
            tuple(c.get("metadata", {}).get("tags", [])),
            json.dumps(c.get("attachments", {}), sort_keys=True),
        )
        for c in nb.cells
    ]


def notebook_form(nb: nbformat.NotebookNode, doc: str, index: BookIndex) -> nbformat.NotebookNode:
    """The .ipynb form of a chapter: plain Jupyter markdown, each figure's caption, a References section."""
    out = nbformat.from_dict(nb)
    cells, cited = [], []
    for cell in out.cells:
        if cell.cell_type != "markdown":
            cells.append(cell)
            figure = (cell.get("metadata", {}).get("mystnb") or {}).get("figure") or {}
            if figure.get("name"):
                caption, keys = index.figure_caption(doc, figure["name"])
                cells.append(nbformat.v4.new_markdown_cell(caption))
                cited += [key for key in keys if key not in cited]
            continue
        cell.source, attachments, keys = index.markdown(doc, cell.source)
        if attachments:
            cell["attachments"] = attachments
        cited += [key for key in keys if key not in cited]
        cells.append(cell)
    if cited:
        cells.append(nbformat.v4.new_markdown_cell(index.references(cited)))
    out.cells = cells
    out.metadata.pop("jupytext", None)  # not paired: jupytext in Jupyter must not write this form into the .md
    return out


def output_problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """Problems if any code cell carries outputs or an execution count."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{name}: cell {i} carries outputs; run `python book/_tools/sync.py` to strip them")
        if cell.get("execution_count") is not None:
            problems.append(f"{name}: cell {i} has an execution count; run `python book/_tools/sync.py`")
    return problems


def check_chapter(md: Path, config: dict[str, Any], index: BookIndex | None = None) -> list[str]:
    """Problems of one chapter: missing/out-of-sync .ipynb, outputs, a wrong install cell."""
    ipynb = md.with_suffix(".ipynb")
    if not ipynb.is_file():
        return [f"{md.name}: paired notebook {ipynb.name} is missing; run `python book/_tools/sync.py`"]
    index = BookIndex(md.parent, config) if index is None else index
    text = jupytext.read(md)
    nb = nbformat.read(ipynb, as_version=4)
    problems = output_problems(nb, ipynb.name)
    expected = notebook_form(text, md.stem, index)
    if cell_signature(expected) != cell_signature(nb):
        problems.append(
            f"{ipynb.name} is not what {md.name} (and the sag code it includes) gives{_first_difference(expected, nb)}"
            f"; run `python book/_tools/sync.py` (out of sync)"
        )
    formats = text.metadata.get("jupytext", {}).get("formats", "")
    if set(formats.split(",")) != {"ipynb", "md:myst"}:
        problems.append(f"{md.name}: jupytext header needs `formats: ipynb,md:myst`, got {formats!r}")
    expected = install_cell_source(config)
    first = next((cell for cell in text.cells if cell.cell_type == "code"), None)
    if first is None or first.source.strip() != expected:
        problems.append(f"{md.name}: first code cell is not the Colab install cell of _config.yml; run sync.py")
    elif sorted(first.metadata.get("tags", [])) != sorted(INSTALL_TAGS):
        problems.append(f"{md.name}: the install cell needs the tags {INSTALL_TAGS}")
    return problems


def check_book(book: Path = BOOK, config: dict[str, Any] | None = None) -> list[str]:
    """Problems of every chapter pair, plus .ipynb files that have no .md source."""
    config = load_config(book.parent) if config is None else config
    problems = []
    mds = chapters(book)
    index = BookIndex(book, config)
    for md in mds:
        problems += check_chapter(md, config, index)
    sources = {md.with_suffix(".ipynb") for md in mds}
    for ipynb in sorted(book.glob("*.ipynb")):
        if ipynb not in sources:
            problems.append(f"{ipynb.name} has no paired .md chapter; write the .md or delete the notebook")
    return problems


def sync_chapter(md: Path, config: dict[str, Any], index: BookIndex | None = None) -> bool:
    """Bring one pair in line (install cell first among code cells, .ipynb from .md, no outputs); True if changed."""
    ipynb = md.with_suffix(".ipynb")
    index = BookIndex(md.parent, config) if index is None else index
    nb = jupytext.read(md)
    if ipynb.is_file() and _edited(nbformat.read(ipynb, as_version=4)):
        raise ValueError(
            f"{ipynb.name} was edited after sync wrote it (in Jupyter or Colab?) and sync would overwrite the edits: "
            f"the .md is the source, so copy them into {md} by hand, or delete {ipynb} to discard them, then sync"
        )
    source = install_cell_source(config)
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(INSTALL_TAGS)})
    nb.cells = [c for c in nb.cells if INSTALL_TAG not in c.get("metadata", {}).get("tags", [])]
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, cell)  # the first code cell, right after the title and learning goals
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,md:myst"
    changed = _write(md, jupytext.writes(nb, fmt="md:myst"))
    form = _strip(notebook_form(nb, md.stem, index))
    form.metadata[STAMP] = {"source": md.name, "cells_sha256": _digest(form)}
    changed |= _write(ipynb, jupytext.writes(form, fmt="ipynb"))
    return changed


def _digest(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of a notebook's cell signature: what sync wrote, to tell later edits apart."""
    return hashlib.sha256(json.dumps(cell_signature(nb)).encode()).hexdigest()


def _edited(nb: nbformat.NotebookNode) -> bool:
    """True if a notebook that sync wrote was changed since (its cells no longer match the stamp it carries)."""
    stamp = nb.metadata.get(STAMP) or {}
    return "cells_sha256" in stamp and stamp["cells_sha256"] != _digest(nb)


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Copy without outputs or execution counts, cell ids derived from position and content."""
    nb = nbformat.from_dict(nb)
    for i, cell in enumerate(nb.cells):
        digest = hashlib.sha1(f"{i}\0{cell.cell_type}\0{cell.source}".encode()).hexdigest()
        cell["id"] = digest[:8]
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
    nb.metadata.get("jupytext", {}).pop("text_representation", None)
    return nb


def _write(path: Path, text: str) -> bool:
    """Write ``text`` atomically if it differs from the file; True if written."""
    if not text.endswith("\n"):
        text += "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; chapters are ordinary readable files
    os.replace(tmp, path)
    return True


def _first_difference(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> str:
    """': cell i differs' for the first differing cell, or the cell counts."""
    sa, sb = cell_signature(a), cell_signature(b)
    for i, (x, y) in enumerate(zip(sa, sb, strict=False)):
        if x != y:
            return f": cell {i} differs ({x[0]} {x[1][:40]!r}... vs {y[0]} {y[1][:40]!r}...)"
    return f": {len(sa)} cells vs {len(sb)} cells"


def main(argv: list[str] | None = None) -> int:
    """Sync (default) or check every chapter pair; exit status 1 when --check finds problems."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="chapter .md files to sync (default: all)")
    parser.add_argument("--check", action="store_true", help="report problems instead of fixing them")
    parser.add_argument("--book", type=Path, default=BOOK, help="the book folder (default: %(default)s)")
    args = parser.parse_args(argv)
    config = load_config(args.book.resolve().parent)
    if args.check:
        problems = check_book(args.book, config)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    index = BookIndex(args.book, config)
    for md in args.chapters or chapters(args.book):
        if md.suffix != ".md" or not md.is_file():
            raise FileNotFoundError(f"{md} is not a chapter .md file; give paths like book/05_grid_softmax.md")
        if sync_chapter(md, config, index):
            print(f"synced {md.name} <-> {md.with_suffix('.ipynb').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
