"""The book's notebook pairs: .md and .ipynb in sync, no outputs, and the Colab install cell from _config.yml."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _load_sync():
    """book/_tools/sync.py as a module (the book's tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("book_sync", BOOK / "_tools" / "sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = _load_sync()
CONFIG = sync.load_config(ROOT)
_FIND_SPEC = importlib.util.find_spec


def _toc_files() -> list[str]:
    """Every file named in _toc.yml (root first)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [entry["file"] for entry in part["chapters"]]
    return files


def _copy_chapter(tmp_path: Path, name: str = "04_dual_resolution") -> tuple[Path, Path, Path]:
    """A throwaway book with one real chapter pair and the real _config.yml: (book, md, ipynb)."""
    book = tmp_path / "book"
    book.mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    md, ipynb = book / f"{name}.md", book / f"{name}.ipynb"
    shutil.copy(BOOK / f"{name}.md", md)
    shutil.copy(BOOK / f"{name}.ipynb", ipynb)
    return book, md, ipynb


def test_book_pairs_are_in_sync_and_output_free():
    problems = sync.check_book(BOOK, CONFIG)
    assert not problems, "\n".join(problems) + "\nfix with: python book/_tools/sync.py"


def test_every_toc_entry_exists_and_chapters_are_paired():
    chapters = {path.stem for path in sync.chapters(BOOK)}
    for name in _toc_files():
        assert (BOOK / f"{name}.md").is_file(), f"_toc.yml lists {name}, but book/{name}.md does not exist"
        if name[:2].isdigit():
            assert name in chapters, f"book/{name}.md needs a jupytext header (formats: ipynb,md:myst)"
            assert (BOOK / f"{name}.ipynb").is_file()
    assert chapters <= set(_toc_files()), f"chapters missing from _toc.yml: {sorted(chapters - set(_toc_files()))}"


def test_book_folder_links_to_the_root_config_and_toc():
    for name in ("_config.yml", "_toc.yml"):
        link = BOOK / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), f"book/{name} -> ../{name}"


def test_checker_accepts_an_untouched_copy(tmp_path):
    book, _, _ = _copy_chapter(tmp_path)
    assert sync.check_book(book, CONFIG) == []


@pytest.mark.parametrize("breakage", ["edited_source", "outputs", "execution_count", "dropped_cell", "tags"])
def test_checker_catches_a_broken_pair(tmp_path, breakage):
    book, _, ipynb = _copy_chapter(tmp_path)
    nb = nbformat.read(ipynb, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if breakage == "edited_source":
        code[2].source += "\nprint('edited in Colab')"
    elif breakage == "outputs":
        code[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    elif breakage == "execution_count":
        code[1].execution_count = 3
    elif breakage == "dropped_cell":
        nb.cells.remove(code[-1])
    else:
        code[1].metadata["tags"] = ["hide-input"]
    nbformat.write(nb, ipynb)
    problems = sync.check_book(book, CONFIG)
    expected = {
        "edited_source": "out of sync",
        "outputs": "carries outputs",
        "execution_count": "execution count",
        "dropped_cell": "out of sync",
        "tags": "out of sync",
    }[breakage]
    assert any(expected in problem for problem in problems), problems


def test_checker_catches_missing_orphan_and_wrong_install_cell(tmp_path):
    book, _, ipynb = _copy_chapter(tmp_path)
    shutil.copy(ipynb, book / "99_orphan.ipynb")
    ipynb.unlink()
    problems = sync.check_book(book, CONFIG)
    assert any("is missing" in p for p in problems) and any("99_orphan.ipynb has no paired" in p for p in problems)

    other = {"repository": {"url": "https://github.com/someone/fork", "branch": "dev"}}
    book2, _, _ = _copy_chapter(tmp_path / "second")
    assert any("install cell" in p for p in sync.check_book(book2, other))


def test_sync_repairs_a_broken_pair_and_is_idempotent(tmp_path):
    book, md, ipynb = _copy_chapter(tmp_path)
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[-1].source = "changed"
    nb.cells[3]["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text="x\n")]
    nbformat.write(nb, ipynb)
    md.touch()  # the .md is the source (a notebook newer than its .md and different is refused, see below)
    assert sync.sync_chapter(md, CONFIG) is True
    assert sync.check_book(book, CONFIG) == []
    assert sync.sync_chapter(md, CONFIG) is False  # nothing left to change: same bytes, same cell ids


def test_sync_refuses_to_overwrite_newer_notebook_edits(tmp_path):
    _, md, ipynb = _copy_chapter(tmp_path)
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[-1].source = "an edit made in Jupyter"
    nbformat.write(nb, ipynb)
    future = md.stat().st_mtime + 10
    os.utime(ipynb, (future, future))
    with pytest.raises(ValueError, match="jupytext --sync"):
        sync.sync_chapter(md, CONFIG)


def test_sync_inserts_the_install_cell_before_the_first_code_cell(tmp_path):
    book, md, ipynb = _copy_chapter(tmp_path)
    text = md.read_text()
    start = text.index("```{code-cell} ipython3\n:tags: [remove-cell, colab-install]")
    end = text.index("```\n", start + 10) + 4
    md.write_text(text[:start] + text[end:])  # a new chapter without the install cell
    ipynb.unlink()
    sync.sync_chapter(md, CONFIG)
    nb = nbformat.read(ipynb, as_version=4)
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert first_code.source == sync.install_cell_source(CONFIG)
    assert nb.cells[0].cell_type == "markdown"  # title and goals stay first
    assert sync.check_book(book, CONFIG) == []


def test_pip_spec_comes_from_the_repository_setting():
    assert sync.pip_spec(CONFIG) == f"git+{CONFIG['repository']['url']}@{CONFIG['repository']['branch']}"
    assert "git+https://github.com/a/b@dev" in sync.install_cell_source(
        {"repository": {"url": "https://github.com/a/b/", "branch": "dev"}}
    )
    with pytest.raises(ValueError, match=r"repository\.url"):
        sync.pip_spec({"repository": {"url": "https://gitlab.com/a/b", "branch": "main"}})
    with pytest.raises(ValueError, match=r"repository\.branch"):
        sync.pip_spec({"repository": {"url": "https://github.com/a/b", "branch": ""}})


def _run_install_cell(monkeypatch, in_colab: bool, sag_importable: bool) -> list[list[str]]:
    """Execute every chapter's install cell offline; returns the commands it asked subprocess.run to run."""
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    if in_colab:
        google = types.ModuleType("google")
        colab = types.ModuleType("google.colab")
        google.colab = colab
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", colab)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sag" and not sag_importable else _FIND_SPEC(name, *a),
    )
    sources = set()
    for md in sync.chapters(BOOK):
        nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code")
        assert sync.INSTALL_TAG in cell.metadata.get("tags", []), md.name
        sources.add(cell.source)
    assert len(sources) == 1, "every chapter must carry the same install cell"
    exec(compile(sources.pop(), "<install cell>", "exec"), {})
    return calls


def test_install_cell_installs_sag_alone_in_colab(monkeypatch):
    calls = _run_install_cell(monkeypatch, in_colab=True, sag_importable=False)
    url, branch = CONFIG["repository"]["url"].rstrip("/"), CONFIG["repository"]["branch"]
    assert calls == [([sys.executable, "-m", "pip", "install", "-q", f"git+{url}@{branch}"], {"check": True})]


def test_install_cell_does_nothing_outside_colab_or_when_sag_is_there(monkeypatch):
    assert _run_install_cell(monkeypatch, in_colab=False, sag_importable=False) == []
    assert _run_install_cell(monkeypatch, in_colab=True, sag_importable=True) == []
