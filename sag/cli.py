"""Command-line interface: ``python -m sag COMMAND ...`` (``python -m sag --help`` lists the commands)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> module in sag.commands that defines add_arguments(parser) and run(args) -> int
COMMANDS = {
    "train": "train",
    "evaluate": "evaluate",
    "make-synthetic": "synthetic",
    "download": "download",
    "ablate": "ablate",
    "visualize": "visualize",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="python -m sag", description="SAG-ReID: train, evaluate and study SAG.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"sag.commands.{module_name}")
        cmd = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print one line and exit with 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
