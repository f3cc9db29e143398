"""Every chapter opens with its box (measured CPU time, GPU costs, the Colab link) and its code fits the page."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
BOX = re.compile(
    r"\A---\n.*?\n---\n\n\([\w-]+\)=\n# [^\n]+\n\n:::\{admonition\} Running this chapter\n(.*?)\n:::\n", re.S
)


def colab_url(chapter: str) -> str:
    """The Colab link of a chapter, from repository.url / branch / path_to_book of the root _config.yml."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]
    org_repo = repo["url"].rstrip("/").removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{org_repo}/blob/{repo['branch']}/{repo['path_to_book']}/{chapter}.ipynb"


def test_all_twelve_chapters_are_checked():
    assert [p.stem[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(1, 13)]


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_opens_with_its_running_box(md):
    match = BOX.match(md.read_text(encoding="utf-8"))
    assert match, f"{md.name}: the 'Running this chapter' box must follow the title directly"
    body = match.group(1)
    assert re.search(
        r"- \*\*cpu mode\*\*: \d+ s (of CPU time )?on a 2-core CPU \(measured \d{4}-\d{2}-\d{2}, load [\d.]+", body
    ), body
    assert "- **gpu mode**: " in body and "- **full mode**: " in body
    for line in body.splitlines()[2:4]:  # GPU costs are estimates or say that they were not measured
        assert "estimate" in line or "not yet measured" in line or "no GPU work" in line or "no training" in line, line
    assert f"[open this chapter in Colab]({colab_url(md.stem)})" in body


def test_colab_url_follows_the_config():
    assert colab_url("07_l2_norm").startswith("https://colab.research.google.com/github/")
    assert colab_url("07_l2_norm").endswith("/book/07_l2_norm.ipynb")


def test_cells_may_run_the_papers_200_epochs():
    timeout = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["execute"]["timeout"]
    flop = 24.8e9 * 12_936 * 200  # SAG-D4, forward + backward, every training image, 200 epochs
    assert timeout >= flop / 5e12  # a cell may train that long on a GPU that sustains 5 TFLOP/s


CODE_WIDTH = 88  # columns a code cell shows on a rendered page without scrolling sideways


def long_code_lines(text: str) -> list[str]:
    """Each line of a chapter's code cells (MyST source, read by jupytext: no cell options) wider than CODE_WIDTH."""
    code = [cell.source for cell in jupytext.reads(text, fmt="md:myst").cells if cell.cell_type == "code"]
    return [f"code cell {k + 1}: {len(line)} columns: {line.strip()[:50]}"
            for k, source in enumerate(code) for line in source.splitlines() if len(line) > CODE_WIDTH]  # fmt: skip


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_code_cells_fit_the_page(md):
    long = long_code_lines(md.read_text(encoding="utf-8"))
    assert not long, f"{md.name}: wrap these lines at 88 columns:\n" + "\n".join(long)


def test_long_code_lines_skips_cell_options():
    caption = "```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    caption: " + "x" * 100 + "\n---\ny = 1\n```\n"
    assert long_code_lines(caption) == []
    too_wide = "```{code-cell} ipython3\n" + "z" * 89 + "\n```\n"
    assert long_code_lines(too_wide) == ["code cell 1: 89 columns: " + "z" * 50]
