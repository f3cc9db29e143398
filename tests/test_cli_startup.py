"""The CLI starts without torch: ``import sag.cli``, building every parser and each ``--help`` stay torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sag.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision")

# Runs in a fresh interpreter: import the CLI, build the full parser, print every command's help, then report
# which heavy modules got imported along the way.
_PROBE = """
import contextlib, io, json, sys
import sag, sag.cli
sag.cli.build_parser()
for words in [["--help"]] + [[name, "--help"] for name in sag.cli.COMMANDS]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        sag.cli.main(words)
    assert "usage:" in out.getvalue(), words
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def _imported_by(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_parser_and_every_help_import_no_torch():
    assert _imported_by(_PROBE.format(heavy=set(HEAVY))) == []


def test_the_probe_sees_torch_when_it_is_imported():
    # the check above can fail: the same probe reports torch once something imports it
    assert "torch" in _imported_by("import torch\n" + _PROBE.format(heavy=set(HEAVY)))


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=["top", *COMMANDS])
def test_help_of_each_command_prints_from_python_m_sag(command):
    done = subprocess.run(
        [sys.executable, "-m", "sag", *command, "--help"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m sag")
    if command:
        assert "--" in done.stdout  # the command's own options are listed, not just its name
