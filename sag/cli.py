"""Command-line interface: ``python -m sag [--debug] COMMAND ...`` (``python -m sag --help`` lists the commands)."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"sag.commands.{module_name}")
        cmd = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print one line and exit with 2 (--debug: traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM during training (Interrupted)
        if args.debug:
            traceback.print_exc()
        return getattr(err, "exit_code", 130)
    except Exception as err:
        message = user_message(err, args)
        if message is None:
            raise  # a bug: the traceback is what a report needs
        if args.debug:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return 2


def user_message(err: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """The one-line message for an error a user can act on (bad input, a full disk, no memory...); None for a bug."""
    batch = getattr(args, "batch_size", None)
    lower = f"lower --batch-size (now {batch})" if batch else "lower --batch-size"
    if type(err).__name__ == "OutOfMemoryError" or isinstance(err, MemoryError) or _is_cpu_oom(err):
        device = getattr(args, "device", None) or "the device"
        return f"out of memory on {device}: {lower}, or use a smaller --input-size / --precision bf16"
    if isinstance(err, (ValueError, FileNotFoundError, FileExistsError, ConnectionError, FloatingPointError)):
        return _first_line(err)
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        hint = _OS_HINTS.get(err.errno, "")
        return f"{where}{err.strerror or _first_line(err)}{hint}"
    return None


_OS_HINTS = {
    errno.ENOSPC: " (the disk is full: free some space or write elsewhere, then run again)",
    errno.EDQUOT: " (disk quota exceeded: free some space or write elsewhere, then run again)",
    errno.EACCES: " (no permission: choose a folder you can write, e.g. another --out)",
    errno.EPERM: " (not permitted: choose a folder you can write, e.g. another --out)",
    errno.EROFS: " (a read-only file system: choose a writable folder, e.g. another --out)",
    errno.EISDIR: " (a folder where a file was expected: give a file path)",
    errno.ENOTDIR: " (a file where a folder was expected: check the path)",
}


def _first_line(err: BaseException) -> str:
    """The first line of the error's text (its type name when it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _is_cpu_oom(err: BaseException) -> bool:
    """torch's CPU allocator failure (a RuntimeError, not a MemoryError)."""
    return isinstance(err, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(err)
