"""The book's notebook pairs: .md and .ipynb in sync, no outputs, and the Colab install cell from _config.yml."""

from __future__ import annotations

import importlib.util
import re
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
    """A throwaway copy of the book, its config and the sag code it includes: (book, md, ipynb)."""
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, symlinks=True, ignore=shutil.ignore_patterns("_build", "*.pyc", "__pycache__"))
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copy(ROOT / "_toc.yml", tmp_path / "_toc.yml")
    shutil.copytree(ROOT / "sag", tmp_path / "sag", ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    return book, book / f"{name}.md", book / f"{name}.ipynb"


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

    other = {**CONFIG, "repository": {"url": "https://github.com/someone/fork", "branch": "dev"}}
    book2, _, _ = _copy_chapter(tmp_path / "second")
    assert any("install cell" in p for p in sync.check_book(book2, other))


def test_sync_repairs_a_broken_pair_and_is_idempotent(tmp_path):
    book, md, ipynb = _copy_chapter(tmp_path)
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[3]["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text="x\n")]  # outputs: not an edit
    nbformat.write(nb, ipynb)
    assert sync.sync_chapter(md, CONFIG) is True
    assert sync.check_book(book, CONFIG) == []
    assert sync.sync_chapter(md, CONFIG) is False  # nothing left to change: same bytes, same cell ids

    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[-1].source = "changed"
    del nb.metadata[sync.STAMP]  # a notebook written by an older sync (no stamp) is rewritten from the .md
    nbformat.write(nb, ipynb)
    assert sync.sync_chapter(md, CONFIG) is True
    assert sync.check_book(book, CONFIG) == []


def test_sync_refuses_to_overwrite_notebook_edits(tmp_path):
    _, md, ipynb = _copy_chapter(tmp_path)
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[-1].source = "an edit made in Jupyter"
    nbformat.write(nb, ipynb)
    with pytest.raises(ValueError, match=r"edited after sync wrote it.*by hand"):
        sync.sync_chapter(md, CONFIG)
    ipynb.unlink()  # discarding the edits, as the message says
    assert sync.sync_chapter(md, CONFIG) is True


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


def _run_install_cell(monkeypatch, in_colab: bool, sag_importable: bool, url: str | None = None) -> list:
    """Execute every chapter's install cell offline; returns the commands it asked subprocess.run to run."""
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    if url is None:
        monkeypatch.delenv(sync.INSTALL_ENV, raising=False)
    else:
        monkeypatch.setenv(sync.INSTALL_ENV, url)
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


def _pip(requirement: str) -> list:
    return [([sys.executable, "-m", "pip", "install", "-q", requirement], {"check": True})]


def test_install_cell_installs_sag_alone_in_colab(monkeypatch):
    calls = _run_install_cell(monkeypatch, in_colab=True, sag_importable=False)
    url, branch = CONFIG["repository"]["url"].rstrip("/"), CONFIG["repository"]["branch"]
    assert calls == _pip(f"git+{url}@{branch}")


def test_install_cell_takes_the_requirement_from_the_environment(monkeypatch):
    fork = "git+https://github.com/someone/fork@dev"
    assert _run_install_cell(monkeypatch, in_colab=True, sag_importable=False, url=fork) == _pip(fork)
    assert _run_install_cell(monkeypatch, in_colab=False, sag_importable=False, url=fork) == _pip(fork)
    assert _run_install_cell(monkeypatch, in_colab=False, sag_importable=True, url=fork) == []


def test_install_cell_does_nothing_outside_colab_or_when_sag_is_there(monkeypatch):
    assert _run_install_cell(monkeypatch, in_colab=False, sag_importable=False) == []
    assert _run_install_cell(monkeypatch, in_colab=True, sag_importable=True) == []


# --- the notebook form: plain Jupyter markdown ----------------------------------------------------------------------

MYST_ONLY = {
    "colon fence": re.compile(r"^\s*:::", re.M),
    "directive": re.compile(r"^\s*[`~]{3,}\s*\{", re.M),
    "role": re.compile(r"(?<!`)\{[A-Za-z][\w:+.-]*\}`"),  # `{role}` inside a code span is text
    "target": re.compile(r"^\s*\([^()\s]+\)=\s*$", re.M),
    "comment": re.compile(r"^%", re.M),
}


def _myst_left(text: str) -> list[str]:
    return [f"{name}: {m.group(0).strip()!r}" for name, rx in MYST_ONLY.items() for m in rx.finditer(text)]


def test_notebook_markdown_carries_no_myst_only_syntax():
    for md in sync.chapters(BOOK):
        nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                assert not _myst_left(cell.source), (
                    f"{md.with_suffix('.ipynb').name} cell {i}: {_myst_left(cell.source)}"
                )
        assert "jupytext" not in nb.metadata, (
            "the notebook form must not be paired with the .md (jupytext would overwrite it)"
        )


def test_myst_detector_catches_each_construct():
    for sample in (":::{note}\nx\n:::", "```{literalinclude} a.py\n```", "see {numref}`fig-x`", "(ch-x)=\n# X", "% c"):
        assert _myst_left(sample), sample
    assert not _myst_left("plain `code` and $x$, ```python\nprint(1)\n``` and `{numref}` in code")


INDEX = sync.BookIndex(BOOK, CONFIG)


def _md(source: str, doc: str = "05_grid_softmax") -> str:
    return INDEX.markdown(doc, source)[0]


def test_admonitions_become_blockquotes_and_solutions_fold():
    assert _md(":::{admonition} Learning goals\n:class: tip\n- one $a +\n  b$\n:::") == (
        "> **Learning goals**\n>\n> - one $a + b$"  # math on one line: no "> " inside TeX
    )
    assert _md("```{note}\nShort.\n```") == "> **Note**\n>\n> Short."
    folded = _md(":::{admonition} Solution to exercise 1\n:class: dropdown\nBecause $x$.\n\n```python\nx = 1\n```\n:::")
    assert (
        folded
        == "<details>\n<summary>Solution to exercise 1</summary>\n\nBecause $x$.\n\n```python\nx = 1\n```\n\n</details>"
    )
    assert _md("::::{tip}\n:::{solution}\nin\n:::\n::::").startswith("> **Tip**\n>\n> <details>")


def test_literalinclude_inlines_the_selected_package_code():
    text = _md("```{literalinclude} ../sag/models/sag_module.py\n:pyobject: grid_softmax\n:language: python\n```")
    source = (ROOT / "sag" / "models" / "sag_module.py").read_text()
    assert text.startswith("```python\ndef grid_softmax(") and text.endswith("\n```")
    assert text.removeprefix("```python\n").removesuffix("\n```") in source
    assert (
        _md("```{code-block} python\na = 1\n\n\nb = 2\n```") == "```python\na = 1\n\n\nb = 2\n```"
    )  # blank lines kept
    first_two = "".join((ROOT / "sag" / "resources.py").read_text().splitlines(keepends=True)[:2]).rstrip("\n")
    assert _md("```{literalinclude} ../sag/resources.py\n:lines: 1-2\n```") == f"```python\n{first_two}\n```"
    with pytest.raises(FileNotFoundError, match="not a file of the repository"):
        _md("```{literalinclude} ../../etc/passwd\n```")


def test_roles_become_text_and_links():
    assert _md("{cite:p}`ainam2018sag`") == "(Ainam et al., 2018)"
    assert _md("{cite:t}`ioffe2015batchnorm`") == "Ioffe and Szegedy (2015)"
    assert _md("{cite:p}`ainam2018sag,ioffe2015batchnorm`") == "(Ainam et al., 2018; Ioffe and Szegedy, 2015)"
    assert _md("{numref}`fig-grid-peak`") == "[Fig. 5.1](#fig-grid-peak)"
    assert _md("{numref}`fig-grid-peak`", doc="06_max_filter") == "[Fig. 5.1](05_grid_softmax.ipynb#fig-grid-peak)"
    assert _md("{numref}`Figure %s <fig-grid-peak>`") == "[Figure 5.1](#fig-grid-peak)"
    assert _md("{ref}`ch-dual-resolution`") == "[Dual resolution](04_dual_resolution.ipynb)"
    assert _md("{ref}`the chapter <ch-dual-resolution>`") == "[the chapter](04_dual_resolution.ipynb)"
    assert _md("{doc}`04_dual_resolution`") == "[Dual resolution](04_dual_resolution.ipynb)"
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    assert _md("{doc}`bibliography`").endswith(f"({url}/blob/{branch}/book/bibliography.md)")
    assert _md("{download}`the table <../results/table1_synthetic/results.csv>`") == (
        f"[the table]({url}/blob/{branch}/results/table1_synthetic/results.csv)"
    )
    assert _md("{math}`x^2`, {sub}`2`, {abbr}`CMC (cumulative matching characteristic)`, {kbd}`Ctrl`") == (
        "$x^2$, <sub>2</sub>, CMC (cumulative matching characteristic), `Ctrl`"
    )
    assert (
        _md("code `{numref}` stays, and\n```python\n{ref}`x`\n```")
        == "code `{numref}` stays, and\n```python\n{ref}`x`\n```"
    )
    with pytest.raises(KeyError, match="no-such-label"):
        _md("{numref}`no-such-label`")
    with pytest.raises(KeyError, match="nobody2099"):
        _md("{cite:p}`nobody2099`")


def test_labels_equations_and_figures_of_a_small_book(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n      - file: 00_preface\n"
        "  - caption: B\n    numbered: true\n    chapters:\n      - file: 01_one\n      - file: 02_two\n"
    )
    (book / "intro.md").write_text("# Welcome\n")
    header = "---\njupytext:\n  formats: ipynb,md:myst\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
    figure = "```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    caption: A plot.\n    name: fig-a\n---\n1\n```\n"
    (book / "00_preface.md").write_text(header + "# Preface\n")
    (book / "01_one.md").write_text(header + "# One\n")
    two = "(ch-two)=\n# Two\n\n(sec-b)=\n## B\n\n$$\na = 1\n$$ (eq-a)\n\n```{math}\n:label: eq-b\nb = 2\n```\n\n+++\n\n"
    (book / "02_two.md").write_text(header + two + figure)
    index = sync.BookIndex(book, {"repository": CONFIG["repository"]})
    assert index.markdown("02_two", two.split("+++")[0])[0] == (
        '# Two\n\n<a id="sec-b"></a>\n## B\n\n<a id="eq-a"></a>\n$$\na = 1 \\tag{1}$$\n\n'
        '<a id="eq-b"></a>\n\n$$\nb = 2 \\tag{2}\n$$'
    )
    refs = "{eq}`eq-b`, {numref}`fig-a`, {ref}`sec-b`, {ref}`ch-two`, {doc}`00_preface`, {doc}`intro`"
    url = f"{CONFIG['repository']['url']}/blob/{CONFIG['repository']['branch']}/book/intro.md"
    assert index.markdown("01_one", refs)[0] == (
        "([2](02_two.ipynb#eq-b)), [Fig. 2.1](02_two.ipynb#fig-a), [B](02_two.ipynb#sec-b), [Two](02_two.ipynb), "
        f"[Preface](00_preface.ipynb), [Welcome]({url})"
    )
    assert index.figure_caption("02_two", "fig-a") == ('<a id="fig-a"></a>**Fig. 2.1.** A plot.', [])
    assert index.markdown("02_two", "(sec-b)=\n## Again")[0].startswith('<a id="sec-b">')
    with pytest.raises(ValueError, match=r"directive \{list-table\} has no plain Jupyter form"):
        index.markdown("02_two", "```{list-table}\n* - a\n```")
    (book / "01_one.md").write_text(header + "(sec-b)=\n# One\n")
    with pytest.raises(ValueError, match="label 'sec-b' is defined in both 01_one and 02_two"):
        sync.BookIndex(book, {"repository": CONFIG["repository"]})


def test_figures_get_their_caption_and_chapters_their_references():
    nb = nbformat.read(BOOK / "05_grid_softmax.ipynb", as_version=4)
    figure = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "mystnb" in c.metadata)
    name = nb.cells[figure].metadata["mystnb"]["figure"]["name"]
    assert nb.cells[figure + 1].source.startswith(f'<a id="{name}"></a>**Fig. 5.')
    assert nb.cells[-1].source.startswith("## References\n\n- ") and "Ioffe" in nb.cells[-1].source
