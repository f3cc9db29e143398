"""The chapters' install cell against a real git server: a fresh virtual environment gets a working sag.

A copy of the working tree is committed to a repository that ``git daemon`` serves on 127.0.0.1 (a free port);
the install cell of the chapters runs in a virtual environment that sees the test environment's packages but not
sag, with ``SAG_INSTALL_URL`` pointing at the server, and pip offline (no index, no build isolation).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
_spec = importlib.util.spec_from_file_location("book_sync", BOOK / "_tools" / "sync.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)
BRANCH = sync.load_config(ROOT)["repository"]["branch"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def git_server(source_tree, tmp_path):
    """``git+git://127.0.0.1:PORT/sag-reid.git@BRANCH``: the working tree, committed and served by git daemon."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to test the install cell (apt-get install git)")
    work = tmp_path / "work"
    shutil.copytree(source_tree, work, ignore=shutil.ignore_patterns("build", "*.egg-info", ".git"))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=" + BRANCH]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "snapshot"], check=True)
    served = tmp_path / "served"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "sag-reid.git")], check=True)
    port = _free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}", "--listen=127.0.0.1",
         f"--port={port}", str(served)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(100):  # wait until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if daemon.poll() is not None:
                    pytest.fail(f"git daemon did not start: {daemon.stderr.read().decode()[-500:]}")
                time.sleep(0.1)
        yield f"git+git://127.0.0.1:{port}/sag-reid.git@{BRANCH}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.mark.slow
def test_install_cell_installs_a_working_sag_from_a_git_server(git_server, isolated_python, isolated_env, tmp_path):
    nb = nbformat.read(BOOK / "05_grid_softmax.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    assert sync.INSTALL_TAG in cell.metadata["tags"] and sync.INSTALL_ENV in cell.source
    env = {**isolated_env, sync.INSTALL_ENV: git_server}
    missing = subprocess.run([isolated_python, "-c", "import sag"], cwd=tmp_path, env=env, capture_output=True)
    assert missing.returncode != 0, "the fresh environment must not see sag before the install cell runs"

    install = subprocess.run(
        [isolated_python, "-c", cell.source], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, f"the install cell failed against {git_server}:\n{install.stderr[-4000:]}"

    check = (
        "import sag, sag.resources, torch; "
        "model = sag.build_model('resnet18', num_classes=3, pretrained=False, depths=(4,)).eval(); "
        "out = model(torch.rand(1, 3, 64, 32)); "
        "print(sag.__file__); print(sag.resources.path('results/table1_synthetic/results.csv'))"
    )
    works = subprocess.run([isolated_python, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert works.returncode == 0, works.stderr[-4000:]
    sag_file, results = map(Path, works.stdout.split())
    assert "site-packages" in sag_file.parts and ROOT not in sag_file.resolve().parents
    assert results.read_bytes() == (ROOT / "results/table1_synthetic/results.csv").read_bytes()
    cli = subprocess.run([isolated_python, "-m", "sag", "--help"], cwd=tmp_path, env=env, capture_output=True)
    assert cli.returncode == 0 and b"usage" in cli.stdout

    again = subprocess.run(
        [isolated_python, "-c", cell.source.replace("subprocess.run(", "print('pip ran') or subprocess.run(")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "pip ran" not in again.stdout  # with sag there, the cell does nothing
