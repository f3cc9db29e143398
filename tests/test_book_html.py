"""The built book: every chapter's HTML has its figures and no error output; headless Chromium renders it.

If book/_build/html is missing or older than the book's sources (chapters, config, bibliography, the sag
package), the book is built first with the README's command, reusing the execution cache. The Chromium tests
run only where the Debian package ``chromium`` is installed (CI machines may lack it: they are skipped there);
set SAG_BOOK_SCREENSHOTS=DIR to keep the screenshots for a look. The site carries its own MathJax 3 (the
sphinx-mathjax-offline package copies it into _static/mathjax) and loads no script from outside itself, so
equations typeset offline; Chromium runs with every host name unresolvable to prove it.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
HTML = BOOK / "_build" / "html"
BUILD = ["jupyter-book", "build", "-W", "-n", "--keep-going", "book"]
MATHJAX = "_static/mathjax/tex-chtml.js"  # the vendored MathJax 3 (sphinx-mathjax-offline)


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [entry["file"] for entry in part["chapters"]]
    return files


CHAPTERS = [name for name in _toc_files() if name[:2].isdigit()]


def _newest(paths) -> float:
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def _sources() -> list[Path]:
    return [
        *BOOK.glob("*.md"),
        BOOK / "references.bib",
        ROOT / "_config.yml",
        ROOT / "_toc.yml",
        *BOOK.glob("_ext/*.py"),
        *(ROOT / "sag").rglob("*.py"),
    ]


@pytest.fixture(scope="module")
def built() -> Path:
    """book/_build/html, built (with the README's command) when missing or older than its sources."""
    pages = [HTML / f"{name}.html" for name in _toc_files()]
    if not all(p.is_file() for p in pages) or _newest(HTML.rglob("*.html")) < _newest(_sources()):
        jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
        result = subprocess.run([jb, *BUILD[1:]], cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, f"`{' '.join(BUILD)}` failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return HTML


class _Page(HTMLParser):
    """Collects what the checks need from one page: figures, images, output blocks, text outside code."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, str]] = []
        self.images: list[str] = []
        self.output_classes: list[str] = []
        self.math = 0
        self.colab: list[str] = []
        self.loads: list[str] = []  # what the page loads: <script src>, <link href> of stylesheets/preloads, <img src>
        self._stack: list[str] = []
        self._code_depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = attrs.get("class") or ""
        if tag not in ("img", "br", "meta", "link", "input", "hr"):
            self._stack.append(tag)
        if tag == "figure":
            self.figures.append({"id": attrs.get("id", ""), "images": "0"})
        if tag == "script" and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href") and set((attrs.get("rel") or "").split()) & {"stylesheet", "preload"}:
            self.loads.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
            self.loads.append(attrs.get("src", ""))
            if self.figures and "figure" in self._stack:
                self.figures[-1]["images"] = str(int(self.figures[-1]["images"]) + 1)
        if tag == "div" and classes.startswith("output"):
            self.output_classes.append(classes)
        if "math" in classes.split():
            self.math += 1
        if tag == "a" and "colab.research.google.com" in (attrs.get("href") or ""):
            self.colab.append(attrs["href"])
        if tag in ("pre", "code", "script", "style") or "highlight" in classes:
            self._code_depth += 1 if tag in ("pre", "code", "script", "style") else 0

    def handle_endtag(self, tag):
        if tag in ("pre", "code", "script", "style") and self._code_depth:
            self._code_depth -= 1
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data):
        if not self._code_depth:
            self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_every_page_was_built(built):
    for name in _toc_files():
        assert (built / f"{name}.html").is_file(), f"{name}.html missing from the build"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_numbered_figures_and_no_error_output(built, chapter):
    source = (BOOK / f"{chapter}.md").read_text()
    page = _parse(built / f"{chapter}.html")
    expected = re.findall(r"^\s+name: (fig-[\w-]+)$", source, flags=re.M)
    assert expected, f"{chapter} declares no figure (cell metadata mystnb.figure.name)"
    found = {f["id"]: int(f["images"]) for f in page.figures}
    for name in expected:
        assert found.get(name, 0) >= 1, f"{chapter}: figure {name} has no image in the HTML"
    raw = html.unescape(path_text := (built / f"{chapter}.html").read_text(encoding="utf-8"))
    for marker in ("Traceback (most recent call last)", "CellExecutionError", "Error in callback"):
        assert marker not in raw, f"{chapter}: {marker!r} in the built page"
    bad = [c for c in page.output_classes if "stderr" in c or "traceback" in c or "error" in c]
    assert not bad, f"{chapter}: error or stderr output blocks {bad}: warnings must not reach the book"
    assert path_text.count('class="admonition-title"') >= 2, "learning goals and exercise solutions expected"


@pytest.mark.parametrize("name", _toc_files())
def test_no_raw_markup_or_broken_references(built, name):
    page = _parse(built / f"{name}.html")
    text = " ".join(page.text)
    for marker in (":::", "```", "{numref}", "{cite", "{ref}", "{doc}", "{literalinclude}", "??", "$$"):
        assert marker not in text, f"{name}: unrendered markup {marker!r} in the page text"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_math_and_a_colab_button_to_the_notebook(built, chapter):
    page = _parse(built / f"{chapter}.html")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
    branch, book = config["repository"]["branch"], config["repository"]["path_to_book"]
    expected = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{book}/{chapter}.ipynb"
    # the launch button and the link in the chapter's opening box: every Colab link opens this chapter's notebook
    assert len(page.colab) == 2 and set(page.colab) == {expected}, page.colab
    assert page.math > 0, f"{chapter} shows no equation"


def test_bibliography_lists_the_cited_works(built):
    text = " ".join(_parse(built / "bibliography.html").text)
    for author in ("Ainam", "Zheng", "He"):
        assert author in text


@pytest.mark.parametrize("name", _toc_files())
def test_page_loads_nothing_from_outside_the_site(built, name):
    page = _parse(built / f"{name}.html")
    outside = [url for url in page.loads if re.match(r"^([a-z][a-z0-9+.-]*:)?//", url, flags=re.I)]
    assert not outside, f"{name}.html loads {outside}: offline readers get none of it; vendor it in the site"
    if page.math:
        assert MATHJAX in page.loads, f"{name}.html shows equations but does not load the vendored MathJax ({MATHJAX})"
    for url in page.loads:
        if not url.startswith("data:"):
            assert (built / url.split("?")[0].split("#")[0]).is_file(), f"{name}.html loads {url}, not in the site"


# --- headless Chromium -------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves, as in a classroom without internet
    "--virtual-time-budget=5000",
    "--hide-scrollbars",
]


def _chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


class _VisibleText(HTMLParser):
    """Text a reader sees in a rendered DOM: outside scripts, styles, code and MathJax's own output."""

    HIDDEN = ("script", "style", "pre", "code", "mjx-container", "noscript", "template")

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.HIDDEN

    def handle_endtag(self, tag):
        self.depth -= tag in self.HIDDEN and self.depth > 0

    def handle_data(self, data):
        if not self.depth:
            self.text.append(data)


@needs_chromium
@pytest.mark.parametrize("chapter", ["05_grid_softmax", "07_l2_norm"])
def test_chromium_typesets_the_equations_offline(built, chapter):
    source = (built / f"{chapter}.html").read_text(encoding="utf-8")
    equations = source.count('class="math notranslate nohighlight"')
    assert equations > 0, f"{chapter} has no equation to typeset"
    dom = _chromium("--dump-dom", (built / f"{chapter}.html").as_uri()).stdout
    assert dom.count("<mjx-container") >= equations, "MathJax did not typeset every equation"
    assert "<mjx-merror" not in dom, "an equation failed to typeset"
    visible = _VisibleText()
    visible.feed(dom)
    text = html.unescape(" ".join(visible.text))
    for raw in ("\\(", "\\[", "$$", "\\begin{"):
        assert raw not in text, (
            f"{chapter}: raw TeX {raw!r} visible after rendering: {text[text.find(raw) - 80 :][:160]!r}"
        )


@needs_chromium
@pytest.mark.parametrize("page", ["intro", "01_introduction", "04_dual_resolution", "05_grid_softmax", "06_max_filter"])
def test_chromium_screenshot(built, tmp_path, page):
    from PIL import Image

    keep = os.environ.get("SAG_BOOK_SCREENSHOTS")
    out = Path(keep) / f"{page}.png" if keep else tmp_path / f"{page}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium(f"--screenshot={out}", "--window-size=1280,2400", (built / f"{page}.html").as_uri())
    assert out.is_file(), f"chromium wrote no screenshot of {page}"
    with Image.open(out) as shot:
        gray = shot.convert("L")
        assert shot.size == (1280, 2400)
        low, high = gray.getextrema()
        assert high - low > 100, f"the screenshot of {page} is blank"
