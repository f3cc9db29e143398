"""Helpers shared by the benchmark scripts: machine description, RESULTS.md sections, subprocess peak memory."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1/5/15-minute load averages, or "n/a" where the OS has none."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine(device: torch.device | str = "cpu") -> str:
    """One line for a results table: CPU, cores, load, torch and its threads, Python, GPU, date."""
    device = torch.device(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (
        f"{cpu_model()}, {cores} cores (load average {load_average()}), torch {torch.__version__} "
        f"({threads} thread{'' if threads == 1 else 's'}), Python {platform.python_version()}, GPU: {gpu}, "
        f"{datetime.date.today().isoformat()}"
    )


def training_step(
    model: torch.nn.Module, images: torch.Tensor, pids: torch.Tensor, precision: str, compiled: torch.nn.Module
) -> Callable[[], None]:
    """One training step of ``model`` (run through ``compiled``): autocast forward, cross-entropy, backward, SGD."""
    import torch.nn.functional as F

    from sag.engine.precision import autocast, autocast_dtype, make_scaler
    from sag.engine.recipe import RECIPES, build_optimizer

    optimizer = build_optimizer(model, RECIPES["paper"])
    dtype = autocast_dtype(precision, images.device)
    scaler = make_scaler(images.device, dtype)

    def step() -> None:
        with autocast(images.device, dtype):
            loss = F.cross_entropy(compiled(images).float(), pids)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def sync(device: torch.device) -> None:
    """Wait for queued GPU work before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update_results(section: str, start: str, end: str, path: Path = RESULTS) -> Path:
    """Replace the ``start``..``end`` section of RESULTS.md (or append it; create the file); atomic write."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\nMeasured numbers, one section per script.\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def rss_mib() -> float:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Restart the peak-RSS count from the current RSS (Linux: clear_refs 5), so earlier peaks do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process life
        pass


def peak_mib() -> float:
    """Peak resident set size of this process since the last ``reset_peak`` (Linux).

    VmHWM, not getrusage's ru_maxrss: the latter also counts the parent's RSS at fork, before exec.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def run_json_worker(script: str, args: list[str], what: str, omp_passive: bool = False) -> dict:
    """Run ``python script args`` in a fresh process (its own peak memory) and return its last stdout line's JSON.

    ``omp_passive`` sets OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, which is much
    faster when other jobs share the cores.
    """
    env = dict(os.environ)
    if omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def feature_bench_parser(description: str) -> argparse.ArgumentParser:
    """Options of the Market-sized random-feature benchmarks (eval_bench, rerank_bench), worker flags included."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--noise", type=float, default=3.2, help="per-dimension noise around the identity centres")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="run the measurements with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning: "
        "much faster when other jobs share the cores)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser
