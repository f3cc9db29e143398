"""Copy the study's small outputs from runs/table1_128x64 into this folder, add figures and provenance.json.

Run from the repository root after reproduce.sh:
  python results/table1_synthetic_128x64/collect.py --log runs/table1_128x64_times.log
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sag.ablation import collect_results
from sag.analysis import grid_spread, model_maps
from sag.data import load_dataset, make_eval_loader
from sag.engine import load_checkpoint
from sag.plots import plot_attention_grids, plot_cmc, save_figure

RUNS = Path("runs/table1_128x64")
HERE = Path(__file__).resolve().parent
HERE_REL = "results/table1_synthetic_128x64"
FILES = ("results.csv", "table.md", "ablation.png", "attention_mass.csv", "attention_mass.md", "attention_mass.png")


def main() -> None:
    """Copy, draw, write provenance.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", help="the study's times: UTC start and end of each phase, in pairs")
    parser.add_argument("--commit", help="git commit the study ran on (default: HEAD now)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in FILES:
        shutil.copyfile(RUNS / name, HERE / name)
    results = collect_results(RUNS)
    _cmc_figure(results)
    _grids_figure()
    _grid_spread(results)
    _provenance(results, args)


def _cmc_figure(results: list[dict]) -> None:
    """Mean test CMC over seeds, per row."""
    curves: dict[str, list[np.ndarray]] = {}
    for r in results:
        summary = json.loads((RUNS / r["run_dir"] / "summary.json").read_text())
        curves.setdefault(r["row"], []).append(np.asarray(summary["test"]["cmc"]))
    mean = {f"{row} (mean of {len(c)} seeds)": np.mean(c, axis=0) for row, c in curves.items()}
    fig = plot_cmc(mean, max_rank=20, title="Synthetic test set, resnet_small 128x64: CMC per Table 1 row")
    save_figure(fig, HERE / "cmc.png", dpi=100)


def _grids_figure(seed: int = 0, num: int = 4) -> None:
    """Figure 4 on the synthetic world: D4, D3, D2, D1, each from its own single-depth model, uniform-weight units."""
    grids, config = {}, None
    picks = images = None
    for depth in (4, 3, 2, 1):
        model, config = load_checkpoint(RUNS / f"D{depth}" / f"seed{seed}" / "best.pt", device="cpu")
        if picks is None:
            dataset = load_dataset("synthetic", config.data_root, **config.dataset_options)
            first = {}
            for record in dataset.query:
                first.setdefault(record.pid, record)
            people = list(first.values())
            picks = [people[int(i)] for i in np.linspace(0, len(people) - 1, num).round()]
            loader = make_eval_loader(picks, preset=config.preset, batch_size=num, size=tuple(config.input_size))
            images = torch.cat([batch[0] for batch in loader])
        model.eval()
        grids[f"D{depth}"] = model.attention_grids(images)[depth]  # each column: its own single-depth model
    titles = [f"id {r.pid} c{r.camid + 1}" for r in picks]
    fig = plot_attention_grids([r.path for r in picks], grids, normalization=None, titles=titles, scale="uniform")
    save_figure(fig, HERE / "attention_grids.png", dpi=80)


def _grid_spread(results: list[dict], num_images: int = 200) -> None:
    """grid_spread.csv / .md: per run and SAG depth, the grid's peak and its spread over images (fixed mask or not)."""
    lines, per_key = ["row,seed,depth,cells,peak,image_spread"], {}
    images = None
    for r in results:
        model, config = load_checkpoint(RUNS / r["run_dir"] / "best.pt", device="cpu")
        if not config.depths:
            continue
        if images is None:
            dataset = load_dataset("synthetic", config.data_root, **config.dataset_options)
            loader = make_eval_loader(dataset.query[:num_images], preset=config.preset, batch_size=100,
                                      size=tuple(config.input_size))  # fmt: skip
            images = torch.cat([batch[0] for batch in loader])
        for name, grids in model_maps(model, images).items():
            if name == "activation":
                continue
            stats = grid_spread(grids)
            lines.append(f"{r['row']},{r['seed']},{name},{stats['cells']:.0f},{stats['peak']:.4f},"
                         f"{stats['image_spread']:.4f}")  # fmt: skip
            per_key.setdefault((r["row"], name, int(stats["cells"])), []).append(stats)
    (HERE / "grid_spread.csv").write_text("\n".join(lines) + "\n")
    table = [
        f"Grids of every SAG depth on {num_images} synthetic query images (mean ± std over seeds). peak: the largest "
        "cell's weight in units of the uniform weight (1 = flat); image spread: the std over images of a cell's "
        "weight, averaged over cells, in the same units (0 = the same grid for every image: a fixed mask).",
        "",
        "| row | grid | cells | seeds | peak (x uniform) | image spread (x uniform) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (row, name, cells), stats in per_key.items():
        peak = np.array([s["peak"] for s in stats])
        spread = np.array([s["image_spread"] for s in stats])
        table.append(f"| {row} | {name} | {cells} | {len(stats)} | {peak.mean():.2f} ± {peak.std(ddof=1):.2f} | "
                     f"{spread.mean():.3f} ± {spread.std(ddof=1):.3f} |")  # fmt: skip
    (HERE / "grid_spread.md").write_text("\n".join(table) + "\n")


def _provenance(results: list[dict], args: argparse.Namespace) -> None:
    """provenance.json: command, commit, device, date, wall time, versions."""
    phases = []  # (start, end) UTC of each stretch of work on the machine
    if args.log:
        stamps = Path(args.log).read_text().split()
        if len(stamps) % 2:
            raise ValueError(f"{args.log}: expected UTC start/end pairs, got {len(stamps)} timestamps")
        phases = list(zip(stamps[::2], stamps[1::2], strict=True))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    wall = sum((datetime.strptime(b, fmt) - datetime.strptime(a, fmt)).total_seconds() for a, b in phases) or None
    start, end = (phases[0][0], phases[-1][1]) if phases else (None, None)
    commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "diff", "--name-only", commit, "--", "sag"], capture_output=True, text=True)
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    record = {
        "command": f"sh {HERE_REL}/reproduce.sh && python {HERE_REL}/collect.py",
        "commands": [line for line in (HERE / "reproduce.sh").read_text().splitlines() if line.startswith("python")],
        "git_commit": commit,
        "sag_files_changed_since_commit": changed.stdout.split(),  # when collected: refactors after the runs
        "device": f"cpu: {cpu}, {len(os.sched_getaffinity(0))} cores (shared with other work); two ablate processes, "
        "one torch thread each",
        "started_utc": start,
        "finished_utc": end,
        "phases_utc": phases,
        "wall_seconds": wall,  # summed over the phases
        "train_wall_seconds_sum": round(sum(float(r["wall_seconds"]) for r in results), 1),
        "runs": len(results),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "written_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": json.loads((RUNS / "ablation.json").read_text()),
    }
    (HERE / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
