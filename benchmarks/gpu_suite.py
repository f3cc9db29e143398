"""Everything to measure on a GPU, as one command (<= 8 minutes on one GPU): tests, throughput, evaluation, a run.

Sections, each timed and recorded; a section that fails is recorded with its error and makes the exit status 1
(nothing is skipped silently):

  tests       the test suite's device-aware tests with SAG_TEST_DEVICE=cuda
  evaluation  Market-1501-sized features (3,368 x 15,913, 2048-d): features -> CMC/mAP and k-reciprocal
              re-ranking on the device (target: re-ranking < 1 s)
  training    one short Market-scale synthetic run of sag.engine.train: 751 train ids, ResNet-50 SAG-D4,
              160x64, bf16, channels_last, device-resident data, then the test of its best checkpoint
  throughput  training images/s of ResNet-50 SAG-D4 and the baseline at 160x64: fp32, bf16 and bf16 +
              channels_last, each eager at batch sizes doubling up to the largest that fits (out-of-memory
              probe), then bf16 + channels_last under torch.compile at its largest batch; it runs last and
              stops (failing) at the suite's time budget

  python benchmarks/gpu_suite.py                  # on the GPU: writes benchmarks/results/gpu-DATE.json/.md
                                                  # and the gpu_suite section of RESULTS.md
  python benchmarks/gpu_suite.py --dry-run --out-dir /tmp/x   # the same code paths on the CPU at toy sizes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- gpu_suite:start -->", "<!-- gpu_suite:end -->"
# the tests that take their device from SAG_TEST_DEVICE (the `device` fixture)
DEVICE_TESTS = [
    "tests/test_evaluation_ranking.py",
    "tests/test_evaluation_rerank.py",
    "tests/test_evaluation_multi_query.py",
    "tests/test_evaluation_pipeline.py",
    "tests/test_data_loaders.py",
]
MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+channels_last": ("bf16", True)}
COMPILED_MODES = ("bf16+channels_last",)  # torch.compile takes a minute per model: only where it matters most


class Sizes:
    """What each section runs: the real sizes on the GPU, toy ones for --dry-run on the CPU."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.tests = ["tests/test_evaluation_ranking.py", "-k", "tensor_inputs_and_dtypes"] if dry_run else DEVICE_TESTS
        self.backbone, self.input_size = ("resnet18", (64, 32)) if dry_run else ("resnet50", (160, 64))
        self.num_classes = 10 if dry_run else 751
        self.batches = [2] if dry_run else [32, 64, 128, 256, 512, 1024]
        self.warmup, self.min_steps, self.min_seconds = (1, 1, 0.0) if dry_run else (2, 3, 1.0)
        self.compile_backend = "eager" if dry_run else "inductor"  # eager: dynamo only, no C++ toolchain needed
        self.eval = (
            {"num_q": 300, "num_g": 2000, "dim": 64} if dry_run else {"num_q": 3368, "num_g": 15913, "dim": 2048}
        )
        self.synthetic = (
            {"num_train_ids": 8, "num_test_ids": 4, "images_per_id": 4, "size": (64, 32), "num_cameras": 2}
            if dry_run
            else {"num_train_ids": 751, "num_test_ids": 750, "images_per_id": 17, "size": (128, 64)}
        )
        self.train = (
            {"backbone": "resnet18", "input_size": (64, 32), "batch_size": 8, "epochs": 1, "precision": "fp32"}
            if dry_run
            else {"backbone": "resnet50", "input_size": (160, 64), "batch_size": 64, "epochs": 2, "precision": "bf16"}
        )


def run_tests(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """pytest on the device-aware tests with SAG_TEST_DEVICE set; fails when any test fails."""
    env = dict(os.environ, SAG_TEST_DEVICE=str(device), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *sizes.tests]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode != 0:
        raise RuntimeError(f"SAG_TEST_DEVICE={device} pytest failed: {summary}\n{done.stdout[-4000:]}{done.stderr}")
    return {"command": " ".join(command[1:]), "summary": summary}


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def step_rate(
    sizes: Sizes, device: torch.device, depths: tuple[int, ...], batch: int, mode: str, compile_model: bool
) -> float:
    """Training images/s of one cell: forward of both branches + cross-entropy + backward + SGD step."""
    from sag.models import build_model

    precision, channels_last = MODES[mode]
    torch.manual_seed(0)
    model = build_model(sizes.backbone, num_classes=sizes.num_classes, depths=depths, input_size=sizes.input_size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt).train()
    net = torch.compile(model, backend=sizes.compile_backend) if compile_model else model
    images = torch.randn(batch, 3, *sizes.input_size, device=device).contiguous(memory_format=fmt)
    pids = torch.randint(0, sizes.num_classes, (batch,), device=device)
    step = common.training_step(model, images, pids, precision, net)

    for _ in range(sizes.warmup):
        step()
    common.sync(device)
    start, steps = time.perf_counter(), 0
    while steps < sizes.min_steps or time.perf_counter() - start < sizes.min_seconds:
        step()
        steps += 1
        common.sync(device)
    return batch * steps / (time.perf_counter() - start)


def run_throughput(sizes: Sizes, device: torch.device, deadline: float) -> dict[str, Any]:
    """Every (model, mode): eager at doubling batch sizes until out of memory, then (``COMPILED_MODES``) compiled
    at the largest; raises TimeoutError once past ``deadline``, naming the first cell it could not run."""
    rows: list[dict[str, Any]] = []
    for model_name, depths in (("SAG-D4", (4,)), ("baseline", ())):
        for mode in MODES:
            largest = None
            for batch in sizes.batches:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"time budget exhausted before {model_name} {mode} batch {batch}")
                try:
                    rate = step_rate(sizes, device, depths, batch, mode, compile_model=False)
                except (torch.OutOfMemoryError, RuntimeError) as err:
                    if not _is_oom(err):
                        raise
                    rows.append({"model": model_name, "mode": mode, "batch": batch, "compile": False, "oom": True})
                    break
                finally:
                    _free(device)
                largest = batch
                rows.append({"model": model_name, "mode": mode, "batch": batch, "compile": False, "images_per_s": rate})
            if largest is None:
                raise RuntimeError(f"{model_name} {mode}: even batch {sizes.batches[0]} does not fit")
            if mode not in COMPILED_MODES:
                continue
            if time.perf_counter() > deadline:
                raise TimeoutError(f"time budget exhausted before compiling {model_name} {mode}")
            rate = step_rate(sizes, device, depths, largest, mode, compile_model=True)
            _free(device)
            rows.append({"model": model_name, "mode": mode, "batch": largest, "compile": True, "images_per_s": rate})
    return {"backbone": sizes.backbone, "input_size": list(sizes.input_size), "rows": rows}


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_evaluation(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Market-sized random features on the device: features -> CMC/mAP, and re-ranking (target < 1 s)."""
    from eval_bench import market_like

    from sag.evaluation import evaluate_features, evaluate_ranking, re_ranking

    data = market_like(sizes.eval["num_q"], sizes.eval["num_g"], dim=sizes.eval["dim"])
    q, g = (torch.from_numpy(data[k]).to(device) for k in ("q_feats", "g_feats"))
    labels = [torch.from_numpy(data[k]).to(device) for k in ("q_pids", "g_pids", "q_camids", "g_camids")]
    evaluate_features(q[:8], g, labels[0][:8], labels[1], labels[2][:8], labels[3])  # warm-up
    out: dict[str, Any] = {"queries": int(q.shape[0]), "gallery": int(g.shape[0]), "dim": int(q.shape[1])}
    for name, call in (
        ("features_to_cmc_map", lambda: evaluate_features(q, g, *labels)),
        ("re_ranking", lambda: re_ranking(q, g)),
    ):
        common.sync(device)
        start = time.perf_counter()
        result = call()
        common.sync(device)
        out[f"{name}_s"] = time.perf_counter() - start
        if name == "re_ranking":
            result = evaluate_ranking(result, *labels)
        out[f"{name}_rank1"], out[f"{name}_mAP"] = float(result["rank1"]), float(result["mAP"])
        _free(device)
    out["re_ranking_target_met"] = out["re_ranking_s"] < 1.0
    return out


def run_training(sizes: Sizes, device: torch.device, work: Path) -> dict[str, Any]:
    """One short Market-scale synthetic run of sag.engine.train (generation included), then its test."""
    from sag.data import make_synthetic
    from sag.engine import TrainConfig, train

    start = time.perf_counter()
    root = make_synthetic(work / "synthetic", seed=0, progress=False, **sizes.synthetic)
    generated = time.perf_counter() - start
    cuda = device.type == "cuda"
    config = TrainConfig(
        dataset="synthetic",
        data_root=str(root),
        dataset_options=sizes.synthetic,
        depths=(4,),
        eval_every=1,
        out=str(work / "run"),
        device=str(device),
        resident=cuda,
        channels_last=cuda,
        progress=False,
        **sizes.train,
    )
    result = train(config)
    summary = json.loads((Path(config.out) / "summary.json").read_text())
    return {
        "synthetic_seconds": generated,
        "train_images_per_s": summary["images_per_s"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": summary["wall_seconds"],
        "test_rank1": result.final["rank1"],
        "test_mAP": result.final["mAP"],
        "config": {k: v for k, v in sizes.train.items()} | {"resident": cuda, "channels_last": cuda},
    }


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown section."""
    lines = [
        f"- date: {report['date']}; device: {report['device']}; {report['machine']}",
        f"- total: {report['seconds']:.0f} s{' (dry run: CPU, toy sizes)' if report['dry_run'] else ''}",
        "",
        "| section | status | seconds | result |",
        "|---|---|---:|---|",
    ]
    for name, section in report["sections"].items():
        result = section.get("error") or _brief(name, section.get("result", {}))
        lines.append(f"| {name} | {section['status']} | {section['seconds']:.1f} | {result} |")
    rows = report["sections"].get("throughput", {}).get("result", {}).get("rows", [])
    if rows:
        lines += ["", "| model | mode | batch | torch.compile | images/s |", "|---|---|---:|---|---:|"]
        for r in rows:
            rate = "out of memory" if r.get("oom") else f"{r['images_per_s']:.1f}"
            lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {'yes' if r['compile'] else 'no'} | {rate} |")
    return "\n".join(lines)


def _brief(name: str, result: dict[str, Any]) -> str:
    if name == "tests":
        return result.get("summary", "")
    if name == "evaluation":
        return (
            f"features -> CMC/mAP {result['features_to_cmc_map_s']:.2f} s; re-ranking {result['re_ranking_s']:.2f} s "
            f"(target < 1 s: {'met' if result['re_ranking_target_met'] else 'not met'})"
        )
    if name == "training":
        return (
            f"{result['train_images_per_s']:.0f} img/s, {result['train_seconds']:.0f} s training, "
            f"{result['wall_seconds']:.0f} s wall; test rank-1 {100 * result['test_rank1']:.1f} %"
        )
    if name == "throughput":
        best = max((r for r in result["rows"] if "images_per_s" in r), key=lambda r: r["images_per_s"])
        return f"fastest: {best['model']} {best['mode']} batch {best['batch']}, {best['images_per_s']:.0f} img/s"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the code paths (< 60 s)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results", help="for the results")
    parser.add_argument(
        "--budget", type=float, default=450.0, help="seconds of the whole suite; throughput (last) stops there"
    )
    parser.add_argument("--sections", default="tests,evaluation,training,throughput", help="comma-separated")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no GPU here (torch.cuda.is_available() is False): run with --dry-run to check the code paths")
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = Sizes(args.dry_run)
    began = time.perf_counter()
    deadline = began + args.budget
    sections: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work: dict[str, Callable[[], dict[str, Any]]] = {
            "tests": lambda: run_tests(sizes, device),
            "throughput": lambda: run_throughput(sizes, device, deadline),
            "evaluation": lambda: run_evaluation(sizes, device),
            "training": lambda: run_training(sizes, device, Path(tmp)),
        }
        for name in args.sections.split(","):
            if name not in work:
                raise SystemExit(f"unknown section {name!r}; choose from {', '.join(work)}")
            start = time.perf_counter()
            try:
                sections[name] = {"status": "ok", "result": work[name]()}
            except Exception as err:  # recorded and reported: the suite goes on, the exit status says it failed
                traceback.print_exc()
                sections[name] = {"status": "FAILED", "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            sections[name]["seconds"] = time.perf_counter() - start
            print(f"{name}: {sections[name]['status']} in {sections[name]['seconds']:.1f} s", flush=True)
    today = datetime.date.today().isoformat()
    report = {
        "date": today,
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": common.machine(device),
        "torch": torch.__version__,
        "seconds": time.perf_counter() - began,
        "sections": sections,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"{'dry-run' if args.dry_run else 'gpu'}-{today}"
    text = markdown(report)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{stem}.md").write_text(f"# GPU suite, {today}\n\n{text}\n")
    print(text)
    if not args.dry_run:
        section = f"{START}\n## GPU suite (`benchmarks/gpu_suite.py`)\n\n{text}\n{END}"
        print(f"updated {common.update_results(section, START, END)}")
    failed = [name for name, s in sections.items() if s["status"] != "ok"]
    if failed:
        print(f"FAILED sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
