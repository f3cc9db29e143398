"""The offline demo (`python -m sag train` with no dataset): wall time, images/s, and what the model learned.

Draws the demo world first (timed on its own), then runs the bare demo command in a subprocess, reads its
summary.json and printed untrained-vs-trained table, and measures in the same run a bare training loop
of the same network (the same batches on random data, no data pipeline, no evaluation) as the reference for the
trainer's images/s. The load average is recorded before and after, since the machine may be shared.

  python benchmarks/demo_bench.py                 # writes the demo section of RESULTS.md
  python benchmarks/demo_bench.py --note "two idle cores"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sag.commands.train import DEMO_DEFAULTS
from sag.data import make_synthetic
from sag.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine, update_results

START, END = "<!-- demo_bench:start -->", "<!-- demo_bench:end -->"


def run_demo(workdir: Path) -> dict:
    """Run `python -m sag train` in ``workdir``; wall seconds, the summary and the untrained/trained lines."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sag", "train", "--no-progress", "--out", "runs/demo", "--overwrite"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    summary = json.loads((workdir / "runs" / "demo" / "summary.json").read_text())
    before = {m: float(x) for m, x in re.findall(r"test (rank-1|mAP)\s+([\d.]+) ->", done.stdout)}
    return {"wall": wall, "summary": summary, "untrained": before, "stdout": done.stdout}


def bare_loop(steps: int = 20) -> float:
    """Images/s of forward + backward + SGD on random batches of the demo's model, shape and batch size."""
    torch.manual_seed(0)
    size, batch = DEMO_DEFAULTS["input_size"], DEMO_DEFAULTS["batch_size"]
    model = build_model(DEMO_DEFAULTS["backbone"], num_classes=100, depths=(4,), input_size=size).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch, 3, *size), torch.randint(0, 100, (batch,))
    for step in range(steps + 3):
        if step == 3:  # warm-up done
            start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    """Time the world, then the demo, measure the bare loop, write RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--note", default="", help="free text for the results table (e.g. the machine's state)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="sag-demo-bench-") as tmp:
        start = time.perf_counter()
        make_synthetic(Path(tmp) / DEMO_DEFAULTS["data_root"], **DEMO_DEFAULTS["dataset_options"])
        world_seconds = time.perf_counter() - start
        second = run_demo(Path(tmp))  # the demo reuses the world drawn above
    reference = bare_loop()
    load_after = load_average()
    s = second["summary"]
    trainer_img_s = s["images_per_s"]
    rows = [
        "| | value |",
        "|---|---:|",
        f"| drawing the demo world (first run only) | {world_seconds:.0f} s |",
        f"| `python -m sag train` with the world drawn (wall) | {second['wall']:.0f} s |",
        f"| of which training ({s['config']['epochs']} epochs) | {s['train_seconds']:.0f} s |",
        f"| trainer images/s | {trainer_img_s:.0f} |",
        f"| bare loop images/s (same model, batch, size; random data) | {reference:.0f} |",
        f"| trainer / bare loop | {trainer_img_s / reference:.2f} |",
        f"| test rank-1, untrained -> trained | {second['untrained'].get('rank-1', float('nan')):.1f} -> "
        f"{100 * s['test']['rank1']:.1f} % |",
        f"| test mAP, untrained -> trained | {second['untrained'].get('mAP', float('nan')):.1f} -> "
        f"{100 * s['test']['mAP']:.1f} % |",
    ]
    section = "\n".join(
        [
            START,
            "## The offline demo (`python benchmarks/demo_bench.py`)",
            "",
            f"Machine: {machine()}. Load average before {load_before}, after {load_after}."
            + (f" {args.note}" if args.note else ""),
            "",
            *rows,
            "",
            "The demo is `python -m sag train` with no dataset flag: `resnet_small` (SAG at D4) from scratch at "
            "64x32 on the synthetic demo world (100 train / 100 test ids, 16 images per id). The bare loop is the "
            "reference measured in the same run. On a shared machine the wall times scale with the load; the "
            "images/s ratio is the comparable number.",
            END,
        ]
    )
    print(section)
    if not args.no_write:
        update_results(section, START, END)


if __name__ == "__main__":
    main()
