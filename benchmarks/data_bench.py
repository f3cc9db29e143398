"""Input-pipeline throughput: images/s of the DataLoader path and the device-resident path, on synthetic data.

    python benchmarks/data_bench.py                      # CPU (or CUDA when present), writes benchmarks/RESULTS.md
    python benchmarks/data_bench.py --device cuda --batches 200 --no-write

Each row times ``--batches`` training batches after two warm-up batches. The resident path's one-time decode
(JPEG -> resized uint8 tensor on the device) is timed separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from sag.data import load_dataset, make_synthetic, make_train_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, sync, update_results

START, END = "<!-- data_bench:start -->", "<!-- data_bench:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="synthetic dataset folder (default: generate one in a temp dir)")
    parser.add_argument("--train-ids", type=int, default=100, help="identities of the generated set")
    parser.add_argument("--images-per-id", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per row")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    parser.add_argument("--presets", nargs="+", default=["paper", "released_code"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--note", default=None, help="a remark added to the RESULTS.md section")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not update {RESULTS.name}")
    return parser.parse_args(argv)


def time_loader(loader, batches: int, device: torch.device) -> float:
    """Images per second over ``batches`` batches, after two warm-up batches."""
    loader.set_epoch(0)
    iterator = iter(loader)
    for images, _ in islice(iterator, 2):
        images.sum().item()
    sync(device)
    start, seen = time.perf_counter(), 0
    for images, _ in islice(iterator, batches):
        seen += images.shape[0]
    sync(device)
    return seen / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    """Time every (preset, path) pair; returns the table rows."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or make_synthetic(
            Path(tmp) / "synthetic", num_train_ids=args.train_ids, num_test_ids=10, images_per_id=args.images_per_id
        )
        records = load_dataset("synthetic", root).train
        need = (args.batches + 2) * args.batch_size
        records = (records * (need // len(records) + 1))[: max(need, len(records))]
        rows: list[dict[str, object]] = []
        for preset in args.presets:
            for workers in args.workers:
                loader = make_train_loader(records, preset, args.batch_size, workers=workers, device=device)
                rate = time_loader(loader, args.batches, device)
                rows.append({"preset": preset, "path": f"DataLoader, {workers} workers", "images/s": rate})
                print(f"{preset:14s} DataLoader {workers} workers: {rate:9.0f} images/s", flush=True)
            start = time.perf_counter()
            loader = make_train_loader(records, preset, args.batch_size, device=device, resident=True, progress=False)
            sync(device)
            decode = len(records) / (time.perf_counter() - start)
            rate = time_loader(loader, args.batches, device)
            rows.append({"preset": preset, "path": "resident (decode once)", "images/s": decode})
            rows.append({"preset": preset, "path": f"resident on {device.type}", "images/s": rate})
            print(f"{preset:14s} resident decode:        {decode:9.0f} images/s", flush=True)
            print(f"{preset:14s} resident on {device.type}:       {rate:9.0f} images/s", flush=True)
    return rows


def markdown(rows: list[dict[str, object]], args: argparse.Namespace, device: torch.device) -> str:
    """The RESULTS.md section."""
    lines = [
        START,
        "## Input pipeline (`benchmarks/data_bench.py`)",
        "",
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {machine(device)}",
        f"- data: synthetic, resized to 160x64, batch size {args.batch_size}, {args.batches} timed batches per row",
    ]
    if device.type != "cuda":
        lines.append(
            "- CPU only: not yet measured on a GPU. On a GPU the resident path's augmentation runs on the "
            "device; rerun `python benchmarks/data_bench.py --device cuda` there to fill in GPU numbers."
        )
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += ["", "| preset | path | images/s |", "|---|---|---:|"]
    lines += [f"| {r['preset']} | {r['path']} | {r['images/s']:,.0f} |" for r in rows]
    lines += [
        "",
        "The resident path decodes once (the 'decode once' row is that one-time cost) and then only gathers, flips, "
        "normalises and erases uint8 tensors; the DataLoader path decodes and resizes a JPEG per image per epoch.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, update RESULTS.md."""
    args = parse_args(argv)
    device = torch.device(args.device)
    rows = run(args)
    section = markdown(rows, args, device)
    print(section)
    if not args.no_write:
        print(f"updated {update_results(section, START, END)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
