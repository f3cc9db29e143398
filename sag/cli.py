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


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command; only those in ``commands`` (default all) get options.

    A command's module is imported for its help line; its options (which may import what it needs for their
    defaults) are added only when asked for, so ``python -m sag --help`` imports no command's dependencies.
    """
    parser = argparse.ArgumentParser(prog="python -m sag", description="SAG-ReID: train, evaluate and study SAG.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"sag.commands.{module_name}")
        cmd = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__)
        if commands is None or name in commands:
            module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _command_in(argv: Sequence[str]) -> list[str]:
    """The command named in ``argv`` (the first word that is not an option), as a list; empty when none is."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return [first] if first in COMMANDS else []


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print one line and exit with 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
