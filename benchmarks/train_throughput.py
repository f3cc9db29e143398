"""Training throughput (images/s) of SAG-R50-D4 at 160x64, both branches, forward + backward + SGD step.

Measures every (model, batch size, precision) cell with the baseline ResNet in the same run as the reference,
and the per-image FLOPs of one training step (torch.utils.flop_counter, a multiply-add = 2 FLOPs).
Memory: a batch-32 fp32 SAG-R50-D4 step takes about 3 GiB of activations, so batch 256 needs about 24 GiB
(fine on an 80 GiB GPU; more than many CPU machines have).

  python benchmarks/train_throughput.py               # GPU if present: batch 32 and 256, fp32 and bf16; RESULTS.md
  python benchmarks/train_throughput.py --device cpu --iters 2 --warmup 1 --threads 1 --note "shared machine"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sag.engine.config import parse_depths, parse_size
from sag.engine.distributed import resolve_device
from sag.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_average, machine, sync, training_step, update_results

NUM_CLASSES = 751  # Market-1501's training ids
MARKET_RECIPE_IMAGES = 12_936 * 200  # the paper's 200 epochs over Market-1501's training set
TARGET_IMG_S = 4_000  # target: bf16, batch 256, one H100
TARGET_MINUTES = 15  # target: the 200-epoch Market recipe on one H100
START, END = "<!-- train_throughput:start -->", "<!-- train_throughput:end -->"


def main() -> None:
    """Parse options, run every cell, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--depths", type=parse_depths, default=(4,), help='SAG depths, e.g. "4" (default)')
    parser.add_argument("--input-size", type=parse_size, default=(160, 64), metavar="HxW")
    parser.add_argument("--batch-sizes", default="32,256", help="comma-separated (default 32,256)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated among fp32, bf16, fp16")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per cell (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per cell (default 5)")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="stop timing a cell after this long (at least 1 step)"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline reference rows")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--note", default=None, help="a remark added to the RESULTS.md section")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not update {RESULTS.name}")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    variants = [("SAG " + _tag(args.depths), args.depths)]
    if not args.no_baseline and args.depths:
        variants.append(("baseline", ()))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precisions = args.precisions.split(",")

    print(machine(device))
    flops = {name: per_image_flops(args.backbone, depths, args.input_size) for name, depths in variants}
    for name, value in flops.items():
        print(f"FLOPs per training image, {args.backbone} {name}: {value / 1e9:.2f} GFLOP (fwd + bwd)")

    rows = []
    for batch in batch_sizes:
        for precision in precisions:
            for name, depths in variants:
                ips = measure(args, device, depths, batch, precision)
                rows.append({"model": f"{args.backbone} {name}", "batch": batch, "precision": precision, "img_s": ips})
                print(f"  {rows[-1]['model']:<18} batch {batch:>4} {precision:<5} {ips:10.1f} img/s", flush=True)
    section = markdown(rows, flops, args, device)
    print(section)
    if not args.no_write:
        print(f"updated {update_results(section, START, END)}")
    if args.json:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        record = {"machine": machine(device), "flops_per_image": flops, "rows": rows, "args": options}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


def measure(
    args: argparse.Namespace, device: torch.device, depths: tuple[int, ...], batch: int, precision: str
) -> float:
    """Images/s of ``warmup`` + ``iters`` training steps on random images of one batch size and precision."""
    torch.manual_seed(0)
    model = build_model(args.backbone, num_classes=NUM_CLASSES, depths=depths, input_size=args.input_size)
    model = model.to(device).train()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    step_model = torch.compile(model) if args.compile else model
    height, width = args.input_size
    images = torch.randn(batch, 3, height, width, device=device).contiguous(memory_format=memory_format)
    pids = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    step = training_step(model, images, pids, precision, step_model)

    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    steps = 0
    while steps < args.iters:
        step()
        steps += 1
        if args.max_seconds is not None and time.perf_counter() - start > args.max_seconds:
            break  # a slow CPU cell: the steps so far are the measurement
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def per_image_flops(backbone: str, depths: tuple[int, ...], size: tuple[int, int], batch: int = 2) -> float:
    """FLOPs of one training image: forward + backward of the model (the SGD update is not counted)."""
    model = build_model(backbone, num_classes=NUM_CLASSES, depths=depths, input_size=size).train()
    images = torch.randn(batch, 3, *size)
    pids = torch.zeros(batch, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(images), pids).backward()
    return counter.get_total_flops() / batch


def _tag(depths: tuple[int, ...]) -> str:
    """D4, D1,2 ..."""
    return "D" + ",".join(map(str, depths)) if depths else "baseline"


def markdown(rows: list[dict], flops: dict[str, float], args: argparse.Namespace, device: torch.device) -> str:
    """The RESULTS.md section: machine, FLOPs, the table, and how the numbers compare with the GPU targets."""
    reference = {(r["batch"], r["precision"]): r["img_s"] for r in rows if r["model"].endswith("baseline")}
    load = load_average()
    sag_name = f"SAG {_tag(args.depths)}"
    lines = [
        START,
        "## Training throughput (`benchmarks/train_throughput.py`)",
        "",
        f"- machine: {machine(device)}",
        f"- load average at the end: {load} (other jobs were running on the machine)",
        f"- model: {args.backbone} with SAG at {_tag(args.depths)}, input {args.input_size[0]}x{args.input_size[1]}, "
        f"{NUM_CLASSES} classes; one step = forward of both branches + cross-entropy + backward + SGD step "
        f"(the paper recipe's two lr groups); {args.warmup} warm-up and up to {args.iters} timed steps per row"
        + (f" (at most {args.max_seconds:g} s of timed steps)" if args.max_seconds else "")
        + (", channels_last" if args.channels_last else "")
        + (", torch.compile" if args.compile else ""),
        "- FLOPs per training image (torch.utils.flop_counter, forward + backward, a multiply-add = 2): "
        + "; ".join(f"{name} {value / 1e9:.2f} GFLOP" for name, value in flops.items())
        + " (the estimate for SAG-R50-D4 was about 25 GFLOP)",
        "",
        "| model | batch | precision | images/s | achieved TFLOP/s | vs baseline |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        name = r["model"].removeprefix(f"{args.backbone} ")
        tflops = r["img_s"] * flops[name] / 1e12
        ref = reference.get((r["batch"], r["precision"]))
        ratio = f"{r['img_s'] / ref:.2f}x" if ref and not name.endswith("baseline") else "1.00x" if ref else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['img_s']:,.1f} | {tflops:.3f} | {ratio} |")
    best = max((r for r in rows if r["model"].endswith(sag_name)), key=lambda r: r["img_s"], default=None)
    lines.append("")
    if best is not None:
        hours = MARKET_RECIPE_IMAGES / best["img_s"] / 3600
        lines.append(
            f"At the fastest SAG row ({best['img_s']:,.1f} images/s, batch {best['batch']} {best['precision']}) the "
            f"200-epoch Market-1501 recipe (12,936 images x 200 epochs = {MARKET_RECIPE_IMAGES:,} training images) "
            "would take "
            f"{hours:,.1f} h of pure training steps."
        )
    if device.type == "cuda":
        cell = next(
            (r for r in rows if r["model"].endswith(sag_name) and r["batch"] == 256 and r["precision"] == "bf16"), None
        )
        if cell is not None:
            minutes = MARKET_RECIPE_IMAGES / cell["img_s"] / 60
            verdict = "meets" if cell["img_s"] >= TARGET_IMG_S else "misses"
            lines.append(
                f"Targets (one H100): >= {TARGET_IMG_S:,} images/s bf16 at batch 256 -> measured {cell['img_s']:,.0f}, "
                f"{verdict} it; 200-epoch Market recipe <= {TARGET_MINUTES} min -> {minutes:.1f} min of training steps "
                "(data loading and evaluation excluded)."
            )
    else:
        lines.append(
            f"Not yet measured on a GPU: the GPU targets (>= {TARGET_IMG_S:,} images/s in bf16 at batch 256 on "
            f"one H100; the 200-epoch Market recipe in <= {TARGET_MINUTES} minutes) were **not measured**. Rerun "
            "`python benchmarks/train_throughput.py` on a GPU machine to fill them in."
        )
    if args.note:
        lines.append(f"\nNote: {args.note}")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
