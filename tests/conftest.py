"""Shared test settings: CPU by default (SAG_TEST_DEVICE=cuda to run on a GPU), few threads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def device() -> torch.device:
    """The device under test: $SAG_TEST_DEVICE or CPU, never assumed to be a GPU."""
    return torch.device(os.environ.get("SAG_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests (two threads crawl on shared CI cores); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- a copy of the working tree and a virtual environment without sag (for the install and wheel tests) ----------

ROOT = Path(__file__).resolve().parents[1]
_NOT_SEEN = ("sag", "__editable__", "sag_reid")  # entries of this environment that the isolated one must not see


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory) -> Path:
    """A copy of the working tree's files (tracked and untracked, not ignored): what a fresh clone would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    tree = tmp_path_factory.mktemp("source") / "sag-reid"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the working tree: not part of it
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name, follow_symlinks=False)
    return tree


@pytest.fixture(scope="session")
def _site_view(tmp_path_factory) -> Path:
    """A folder of links to this environment's installed packages, minus sag and every .pth file."""
    view = tmp_path_factory.mktemp("site-view")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(_NOT_SEEN) or entry.suffix == ".pth":
            continue
        (view / entry.name).symlink_to(entry)
    return view


@pytest.fixture(scope="module")
def isolated_python(tmp_path_factory, _site_view) -> Path:
    """The python of a new virtual environment that sees this one's packages (torch, pip, ...) but not sag."""
    venv = tmp_path_factory.mktemp("isolated") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_site_view.pth").write_text(f"{_site_view}\n")
    return python


@pytest.fixture
def isolated_env() -> dict[str, str]:
    """Environment for commands in an isolated venv: no PYTHONPATH (so no checkout on the path), pip offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PIP_")}
    # pip with no configuration files, no index and no build isolation (PIP_NO_BUILD_ISOLATION=0 turns it off)
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", MPLBACKEND="Agg")
    return env
