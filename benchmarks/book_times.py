"""Time every chapter of the book in cpu mode: wall time and CPU time, chapter by chapter, in the book's order.

Each chapter's notebook (the synced .ipynb, no outputs) runs in its own kernel, as `jupyter-book build` runs it,
with the book's folder as the working directory. The kernels share one cache folder (``SAG_CACHE_DIR``): a fresh
temporary one by default, so the times are those of a first build, in which a chapter trains the models it is
the first to need and later chapters reuse them (``--cache DIR`` times a build with that cache instead). CPU time
is the kernel's user + system time over all its threads (``resource.RUSAGE_CHILDREN``), which the machine's other
load does not inflate the way it inflates the wall time.

  OMP_WAIT_POLICY=PASSIVE python benchmarks/book_times.py                  # every chapter, a cold cache
  python benchmarks/book_times.py 03_baseline 08_training                 # some chapters (the cache still cold)
  python benchmarks/book_times.py --write --boxes                         # RESULTS.md and each chapter's box
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

BOOK = Path(__file__).resolve().parents[1] / "book"
START, END = "<!-- book_times:start -->", "<!-- book_times:end -->"
BOX_LINE = re.compile(r"^- \*\*cpu mode\*\*: .*$", re.M)


def children_cpu() -> float:
    """User + system seconds of every finished child process so far (the kernels, once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_chapter(stem: str) -> dict[str, float]:
    """Execute book/<stem>.ipynb in a fresh kernel; its wall and CPU seconds and the load average before it."""
    notebook = nbformat.read(BOOK / f"{stem}.ipynb", as_version=4)
    load = os.getloadavg()[0]
    cpu, start = children_cpu(), time.perf_counter()
    where = {"metadata": {"path": str(BOOK)}}  # the working directory, as the book build runs it
    timeout = yaml.safe_load((BOOK / "_config.yml").read_text(encoding="utf-8"))["execute"]["timeout"]  # the build's
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources=where)
    client.execute()
    return {"wall": time.perf_counter() - start, "cpu": children_cpu() - cpu, "load": load}


def box_line(times: dict[str, float], date: str) -> str:
    """The 'cpu mode' line of a chapter's opening box."""
    wall, cpu, load = round(times["wall"]), round(times["cpu"]), times["load"]
    if load > 3:  # a busy machine: the CPU time is the comparable number
        return (
            f"- **cpu mode**: {cpu} s of CPU time on a 2-core CPU (measured {date}, load {load:.0f}: other jobs "
            f"were running, so the wall time was {wall} s)"
        )
    return f"- **cpu mode**: {wall} s on a 2-core CPU (measured {date}, load {load:.1f}; {cpu} s of CPU time)"


def update_box(stem: str, line: str) -> None:
    """Replace the 'cpu mode' line of book/<stem>.md's box (run book/_tools/sync.py afterwards)."""
    path = BOOK / f"{stem}.md"
    text = path.read_text(encoding="utf-8")
    if not BOX_LINE.search(text):
        raise ValueError(f"{path} has no '- **cpu mode**: ...' line in its opening box")
    path.write_text(BOX_LINE.sub(line, text, count=1), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="chapter stems, e.g. 03_baseline (default: every chapter)")
    parser.add_argument("--cache", help="SAG_CACHE_DIR for the run (default: a fresh temporary folder)")
    parser.add_argument("--write", action="store_true", help="update the book_times section of RESULTS.md")
    parser.add_argument("--boxes", action="store_true", help="update the 'cpu mode' line of each timed chapter")
    args = parser.parse_args()
    stems = args.chapters or sorted(p.stem for p in BOOK.glob("[0-9][0-9]_*.ipynb"))
    missing = [s for s in stems if not (BOOK / f"{s}.ipynb").is_file()]
    if missing:
        parser.error(f"no notebook book/<stem>.ipynb for {missing}; chapters: book/NN_name.ipynb")
    load_before, date = common.load_average(), datetime.date.today().isoformat()
    with tempfile.TemporaryDirectory(prefix="sag-book-cache-") as tmp:
        os.environ["SAG_CACHE_DIR"] = args.cache or tmp
        os.environ.setdefault("SAG_BOOK_MODE", "cpu")
        times = {}
        for stem in stems:
            times[stem] = run_chapter(stem)
            t = times[stem]
            print(f"{stem}: {t['wall']:.0f} s wall, {t['cpu']:.0f} s CPU, load {t['load']:.1f}", flush=True)
    rows = [f"| {stem} | {t['wall']:.0f} | {t['cpu']:.0f} | {t['load']:.1f} |" for stem, t in times.items()]
    total = {k: sum(t[k] for t in times.values()) for k in ("wall", "cpu")}
    cache = "the cache given" if args.cache else "a cold cache (each model trained by the first chapter to need it)"
    text = "\n".join(
        [
            "| chapter | wall s | CPU s | load before |",
            "|---|---:|---:|---:|",
            *rows,
            f"| **all {len(times)}** | **{total['wall']:.0f}** | **{total['cpu']:.0f}** | |",
        ]
    )
    print(text)
    if args.write:
        section = (
            f"{START}\n## The book in cpu mode (`benchmarks/book_times.py`)\n\n"
            f"Machine: {common.machine()}. Load average before {load_before}, after {common.load_average()}. "
            f"Each chapter in its own kernel, in order, with {cache}; `OMP_WAIT_POLICY` "
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}.\n\n{text}\n{END}"
        )
        print(f"updated {common.update_results(section, START, END)}")
    if args.boxes:
        for stem, t in times.items():
            update_box(stem, box_line(t, date))
        print("updated the chapters' boxes; now run: python book/_tools/sync.py")


if __name__ == "__main__":
    main()
