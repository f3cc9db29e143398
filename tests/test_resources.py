"""sag.resources: committed data files reach the book through sag, from a checkout and from an installed wheel.

The wheel tests build sag from a copy of the working tree, install it into a virtual environment that sees the
test environment's packages but not the checkout, and run every chapter that reads such files from a copy of
its .ipynb in an empty folder (CPU mode), as a notebook opened in Colab after its install cell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import jupytext
import pytest

from sag import resources

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
# chapters whose code reads committed files through sag.resources (and so need the packaged copy)
READERS = sorted(p.stem for p in BOOK.glob("[0-9][0-9]_*.md") if "sag.resources.path(" in p.read_text())


def test_path_finds_the_repository_files_in_a_checkout():
    assert resources.path("results/table1_synthetic/results.csv") == ROOT / "results/table1_synthetic/results.csv"
    assert resources.path("benchmarks/RESULTS.md").read_text(encoding="utf-8").startswith("#")
    assert resources.path("results/table1_synthetic").is_dir()


@pytest.mark.parametrize("name", ["", "/etc/passwd", "results/../sag/cli.py", "sag/cli.py", "benchmarks/x.py"])
def test_path_rejects_names_outside_the_packaged_files(name):
    with pytest.raises(ValueError, match=r"not a packaged data file.*results/table1_synthetic/results\.csv"):
        resources.path(name)


def test_path_falls_back_to_the_packaged_copy_and_names_where_it_looked(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "sag"
    (package / "_data" / "results" / "s").mkdir(parents=True)
    (package / "_data" / "results" / "s" / "a.csv").write_text("x\n")
    monkeypatch.setattr(resources, "_PACKAGE", package)
    monkeypatch.setattr(resources, "_CHECKOUT", package.parent)  # site-packages: no pyproject.toml there
    assert resources.search_roots() == [package / "_data"]
    assert resources.path("results/s/a.csv").read_text() == "x\n"
    with pytest.raises(FileNotFoundError, match=r"results/s/b.csv not found in .*_data: .*pip install git\+"):
        resources.path("results/s/b.csv")


def test_packaged_files_cover_every_committed_result_and_skip_caches(tmp_path):
    names = resources.packaged_files(ROOT)
    assert "benchmarks/RESULTS.md" in names and "results/table1_synthetic/results.csv" in names
    assert not [n for n in names if "__pycache__" in n or "/." in n]
    (tmp_path / "results" / "new_study" / "__pycache__").mkdir(parents=True)
    (tmp_path / "results" / "new_study" / "table.md").write_text("| a |\n")
    (tmp_path / "results" / "new_study" / "__pycache__" / "x.pyc").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"benchmarks/RESULTS\.md is missing"):
        resources.packaged_files(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("# r\n")
    assert resources.packaged_files(tmp_path) == ["benchmarks/RESULTS.md", "results/new_study/table.md"]


def test_no_chapter_reads_files_relative_to_the_repository():
    for md in sorted(BOOK.glob("[0-9][0-9]_*.md")):
        for cell in jupytext.read(md).cells:
            if cell.cell_type == "code":
                for marker in ('Path("..")', "Path('..')", "'../", '"../', "parents[1]"):
                    if marker in cell.source:
                        pytest.fail(f"{md.name}: a code cell reaches {marker!r}; use sag.resources.path(...) instead")


# --- the built wheel ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(source_tree, tmp_path_factory) -> Path:
    """A wheel of sag built offline from a copy of the working tree."""
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "-w", str(out), str(source_tree)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("sag_reid-*.whl")
    return found


def test_wheel_carries_a_copy_of_every_packaged_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packaged = {n.removeprefix("sag/_data/"): n for n in archive.namelist() if n.startswith("sag/_data/")}
        assert sorted(packaged) == resources.packaged_files(ROOT)
        for name, member in packaged.items():
            assert archive.read(member) == (ROOT / name).read_bytes(), f"{member} differs from {name}"
        assert "sag/resources.py" in archive.namelist()


@pytest.fixture(scope="module")
def wheel_python(isolated_python, wheel) -> Path:
    """An isolated environment with sag installed from the wheel."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [isolated_python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    return isolated_python


_RUNNER = textwrap.dedent(
    """
    import sys
    import nbclient, nbformat

    nb = nbformat.read(sys.argv[1], as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sag, sys; print(sag.__file__); print(sys.executable)"))
    nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    print(nb.cells[-1].outputs[0]["text"], end="")
    """
)


def test_installed_wheel_finds_its_packaged_copy(wheel_python, isolated_env, tmp_path):
    code = "from sag import resources; print(resources.path('results/table1_synthetic/results.csv'))"
    out = subprocess.run([wheel_python, "-c", code], cwd=tmp_path, env=isolated_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = Path(out.stdout.strip())
    assert found.read_bytes() == (ROOT / "results/table1_synthetic/results.csv").read_bytes()
    assert "site-packages" in found.parts and ROOT not in found.parents


@pytest.mark.slow
@pytest.mark.parametrize("chapter", READERS)
def test_chapter_runs_in_an_empty_folder_with_sag_from_the_wheel(wheel_python, isolated_env, tmp_path, chapter):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / f"{chapter}.ipynb").write_bytes((BOOK / f"{chapter}.ipynb").read_bytes())
    (tmp_path / "runner.py").write_text(_RUNNER)
    env = {**isolated_env, "SAG_BOOK_MODE": "cpu", "JUPYTER_DATA_DIR": str(tmp_path / "jupyter")}
    out = subprocess.run(
        [wheel_python, str(tmp_path / "runner.py"), f"{chapter}.ipynb"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, f"{chapter} failed outside the repository:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    sag_file, python = out.stdout.strip().splitlines()[-2:]
    assert Path(python) == wheel_python and "site-packages" in Path(sag_file).parts, (sag_file, python)
    assert ROOT not in Path(sag_file).resolve().parents
