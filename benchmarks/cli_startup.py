"""CLI start-up: wall time of ``python -m sag [COMMAND] --help`` against ``python -c "import torch"``, same run.

Each command runs in a fresh interpreter ``--repeats`` times (median kept), interleaved with the reference so
that a change in the machine's load hits both. The target: every help in under half the time of importing torch.

  python benchmarks/cli_startup.py                 # print the table
  python benchmarks/cli_startup.py --write         # also update the cli_startup section of RESULTS.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- cli_startup:start -->", "<!-- cli_startup:end -->"


def _seconds(argv: list[str]) -> float:
    """Wall time of one fresh interpreter running ``argv``; fails loudly if it exits with an error."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr}")
    return elapsed


def measure(repeats: int) -> list[tuple[str, float]]:
    """(what, median seconds) for the reference and every help, measured round-robin ``repeats`` times."""
    from sag.cli import COMMANDS

    cases = {'python -c "import torch"': ["-c", "import torch"], "python -m sag --help": ["-m", "sag", "--help"]}
    cases.update({f"python -m sag {name} --help": ["-m", "sag", name, "--help"] for name in COMMANDS})
    times: dict[str, list[float]] = {what: [] for what in cases}
    for _ in range(repeats):
        for what, argv in cases.items():
            times[what].append(_seconds(argv))
    return [(what, statistics.median(values)) for what, values in times.items()]


def table(rows: list[tuple[str, float]]) -> str:
    """Markdown table with each time as a fraction of the torch import."""
    reference = rows[0][1]
    lines = ["| command | median wall time (s) | vs `import torch` |", "|---|---:|---:|"]
    lines += [f"| `{what}` | {seconds:.3f} | {seconds / reference:.2f}x |" for what, seconds in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (median kept; default 5)")
    parser.add_argument("--write", action="store_true", help="update the cli_startup section of RESULTS.md")
    args = parser.parse_args()
    load_before = common.load_average()
    rows = measure(args.repeats)
    text = table(rows)
    worst = max(seconds for _, seconds in rows[1:]) / rows[0][1]
    verdict = "met" if worst < 0.5 else "NOT met"
    print(text)
    print(f"slowest help: {worst:.2f}x the torch import (target < 0.5x: {verdict})")
    if args.write:
        section = (
            f"{START}\n## CLI start-up (`benchmarks/cli_startup.py`)\n\n"
            f"- machine: {common.machine()}\n"
            f"- load average before / after: {load_before} / {common.load_average()}\n"
            f"- each command in a fresh interpreter, {args.repeats} runs round-robin with the reference, median\n\n"
            f"{text}\n\nThe slowest help takes {worst:.2f}x the time of importing torch (target: under 0.5x, "
            f"{verdict}). "
            "No help imports torch or torchvision (`tests/test_cli_startup.py`); `make-synthetic --help` imports "
            "numpy and PIL for its defaults.\n"
            f"{END}"
        )
        print(f"updated {common.update_results(section, START, END)}")


if __name__ == "__main__":
    main()
