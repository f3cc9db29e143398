"""Engine overhead: training images/s of ``sag.engine.train`` against a bare loop over the same model, data and
optimiser, in the same run.

The bare loop is what training costs at least: the same loader, ``build_model`` and ``build_optimizer``, and per
batch a forward pass, cross-entropy, backward and an SGD step. ``train`` adds validation, checkpoints and logging.
Both run the scale's epochs; the steady state, epochs 2..E-1, is timed (for ``train``: from the end of epoch 1
to the end of epoch E-1, so those epochs' validation, checkpoints and logging count): epoch 1 warms up and writes
the first checkpoint, epoch E the final one. ``train`` runs twice: with the
default checkpoint rule (``CHECKPOINT_OVERHEAD``) and with a checkpoint after every epoch, as before.

  python benchmarks/engine_overhead.py --scale demo       # the demo: resnet_small SAG-D4, 64x32, its synthetic set
  python benchmarks/engine_overhead.py --scale resnet50   # ResNet-50 SAG-D4, 160x64, a small synthetic set
  python benchmarks/engine_overhead.py --scale demo --write   # also update RESULTS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

from sag.commands.train import DEMO_DEFAULTS

START, END = "<!-- engine_overhead:start -->", "<!-- engine_overhead:end -->"
SCALES: dict[str, dict[str, Any]] = {
    # the demo: exactly what a bare `python -m sag train` runs (its data root aside)
    "demo": {k: v for k, v in DEMO_DEFAULTS.items() if k != "data_root"},
    # the paper's network and input size (validation every 10 epochs and after the last one); a synthetic set of
    # about 80 training images: ten CPU steps per epoch, so that the timed epoch is not one step long
    "resnet50": {
        "backbone": "resnet50",
        "input_size": (160, 64),
        "epochs": 3,
        "eval_every": 10,
        "batch_size": 8,
        "dataset_options": {"num_train_ids": 12, "num_test_ids": 4, "images_per_id": 8, "size": (160, 64)},
    },
}


def engine_images_per_s(config: Any, every_epoch: bool) -> tuple[float, dict[str, float]]:
    """images/s of ``train(config)`` over epochs 2..E-1, and the seconds of its pure training steps there."""
    from sag.engine import train, trainer

    marks: list[float] = []
    images: list[int] = []
    steps: list[float] = []

    def mark(record: dict[str, Any]) -> None:
        marks.append(time.perf_counter())
        images.append(record["images"])
        steps.append(record["seconds"])

    saved = trainer.CHECKPOINT_OVERHEAD
    trainer.CHECKPOINT_OVERHEAD = float("inf") if every_epoch else saved
    try:
        train(config, callbacks=[mark])
    finally:
        trainer.CHECKPOINT_OVERHEAD = saved
    wall = marks[-2] - marks[0]
    return sum(images[1:-1]) / wall, {"wall": wall, "steps": sum(steps[1:-1])}


def bare_images_per_s(config: Any) -> float:
    """images/s of the bare loop over epochs 2..E-1: same loader, model and optimiser as ``train(config)``."""
    from sag.data import load_dataset, make_train_loader
    from sag.engine import build_optimizer, carve_validation, default_val_ids
    from sag.models import build_model

    cfg = config.resolved()
    dataset = load_dataset("synthetic", cfg.data_root, generate_if_missing=True, **cfg.dataset_options)
    val_ids = default_val_ids(dataset.num_train_ids) if cfg.val_ids is None else cfg.val_ids
    split = carve_validation(dataset.train, val_ids, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.backbone, num_classes=split.num_classes, depths=cfg.depths, preset=cfg.preset, input_size=cfg.input_size
    )
    optimizer = build_optimizer(model, cfg.recipe, cfg.lr)
    loader = make_train_loader(
        split.train,
        preset=cfg.preset,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        size=cfg.input_size,
        resident=cfg.resident,
        progress=False,
    )
    model.train()
    seen, start = 0, 0.0
    for epoch in range(1, cfg.epochs):  # epoch E would not be timed
        loader.set_epoch(epoch)
        for images, pids in loader:
            loss = F.cross_entropy(model(images), pids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(pids) if epoch > 1 else 0
        if epoch == 1:
            start = time.perf_counter()
    return seen / (time.perf_counter() - start)


def measure(scale: str, root: Path, rounds: int = 3, epochs: int | None = None) -> dict[str, Any]:
    """Interleaved runs: bare, engine, bare, engine, ..., bare (``rounds`` engine runs), then one engine run that
    checkpoints every epoch between two more bare runs.

    Each engine run is compared with the mean of the two bare runs around it, so a load that drifts over minutes
    cancels; the overhead is the median over the rounds.
    """
    from sag.engine import TrainConfig

    options = SCALES[scale] | ({"epochs": epochs} if epochs else {})
    base = {"dataset": "synthetic", "data_root": str(root / "data"), "device": "cpu", "progress": False}

    def config(name: str) -> TrainConfig:
        return TrainConfig(**(base | options | {"out": str(root / name), "overwrite": True}))

    bare = [bare_images_per_s(config("bare"))]
    engine, details, overheads = [], [], []
    for _ in range(rounds):
        rate, detail = engine_images_per_s(config("engine"), every_epoch=False)
        bare.append(bare_images_per_s(config("bare")))
        engine.append(rate)
        details.append(detail)
        overheads.append((bare[-2] + bare[-1]) / 2 / rate - 1)
    every, every_detail = engine_images_per_s(config("every"), every_epoch=True)
    bare.append(bare_images_per_s(config("bare")))
    return {
        "epochs": options["epochs"],
        "bare": bare,
        "engine": engine,
        "every_epoch": every,
        "overheads": overheads,
        "overhead": statistics.median(overheads),
        "overhead_every_epoch": (bare[-2] + bare[-1]) / 2 / every - 1,
        "engine_detail": {k: sum(d[k] for d in details) for k in ("wall", "steps")},
        "every_detail": every_detail,
    }


def report(scale: str, result: dict[str, Any]) -> str:
    """Markdown rows for one scale."""
    o = SCALES[scale]
    what = f"{scale}: {o['backbone']} SAG-D4, {o['input_size'][0]}x{o['input_size'][1]}, {result['epochs']} epochs"
    bare = " / ".join(f"{x:.1f}" for x in result["bare"])
    engine = " / ".join(f"{x:.1f}" for x in result["engine"])
    each = ", ".join(f"{100 * x:+.1f}" for x in result["overheads"])
    outside = {
        k: d["wall"] / d["steps"] - 1
        for k, d in (("engine", result["engine_detail"]), ("every", result["every_detail"]))
    }
    return "\n".join(
        [
            f"| {what} | bare loop (every run, in order) | {bare} | | |",
            f"| {what} | `sag.engine.train`, checkpoints <= {_interval()} of the time | {engine} "
            f"| {100 * result['overhead']:+.1f} % (median of {each}) | {100 * outside['engine']:.1f} % |",
            f"| {what} | `sag.engine.train`, checkpoint every epoch | {result['every_epoch']:.1f} "
            f"| {100 * result['overhead_every_epoch']:+.1f} % | {100 * outside['every']:.1f} % |",
        ]
    )


def _interval() -> str:
    from sag.engine import trainer

    return f"{100 * trainer.CHECKPOINT_OVERHEAD:g} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), nargs="+", default=["demo", "resnet50"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=3, help="engine runs, each between two bare runs (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the scale's)")
    parser.add_argument("--write", action="store_true", help="update the engine_overhead section of RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = common.load_average()
    rows = []
    for scale in args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(scale, Path(tmp), rounds=args.rounds, epochs=args.epochs)
        print(scale, result, flush=True)
        rows.append(report(scale, result))
    header = (
        "| scale | loop | training images/s (epochs 2..E-1) | overhead vs bare | time outside training steps |\n"
        "|---|---|---:|---:|---:|"
    )
    text = header + "\n" + "\n".join(rows)
    print(text)
    if args.write:
        section = (
            f"{START}\n## Engine overhead (`benchmarks/engine_overhead.py`)\n\n"
            f"- machine: {common.machine()}\n"
            f"- load average before / after: {load_before} / {common.load_average()}\n"
            "- runs interleaved: bare, engine, bare, engine, ..., bare, then a checkpoint-every-epoch engine run and "
            "a last bare run; overhead vs bare = mean images/s of the two bare runs around an engine run / its "
            "images/s - 1, the median over the rounds; time outside training "
            "steps = the engine's wall time over epochs 2..E-1 / its own training-step seconds there - 1 (validation, "
            "checkpoint writes with fsync, logging), which the machine's load cannot skew between runs\n\n"
            f"{text}\n{END}"
        )
        print(f"updated {common.update_results(section, START, END)}")


if __name__ == "__main__":
    main()
