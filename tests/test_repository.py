"""The repository itself: README commands, CI script, requirements, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's "Set up and test" bash block."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and test", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands():
    setup, test = readme_commands()
    assert setup.startswith("pip install -r requirements.txt") and "jupyter-book build" in setup
    assert test.split()[0] == "pytest"


def test_ci_runs_the_readme_commands_verbatim():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in readme_commands():
        assert command in ci_lines, f".ci/run does not run the README command {command!r} verbatim"


def test_requirements_are_lower_bounds_and_pins_are_ci_only():
    for path in (ROOT / "requirements.txt", ROOT / "pyproject.toml"):
        assert "==" not in path.read_text(), f"{path.name} must hold lower bounds only"
    constraints = (ROOT / ".ci" / "constraints.txt").read_text()
    assert "torch==2.14.1" in constraints and "torchvision==0.29.1" in constraints
    assert "constraints" not in (ROOT / "README.md").read_text()


def test_layout():
    for name in ("book", "sag", "tests", "_config.yml", "_toc.yml", "requirements.txt", "pyproject.toml"):
        assert (ROOT / name).exists(), f"missing {name}"
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    ruff = shutil.which("ruff") or pytest.fail("ruff is not installed: pip install -r requirements.txt")
    result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_help_lists_every_command():
    from sag.cli import COMMANDS

    result = subprocess.run([sys.executable, "-m", "sag", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout
