"""Train SAG (or the baseline) with the paper's or the released code's recipe; resumable, multi-GPU via torchrun.

Examples:

  python -m sag train                                   # offline demo on the synthetic dataset
  python -m sag train --dataset market1501 --data-root data/market1501 --depths 4 --out runs/market_d4
  python -m sag train --out runs/market_d4 --resume     # continue a killed run
  torchrun --nproc_per_node=4 -m sag train --dataset market1501 --data-root data/market1501 --out runs/ddp

last.pt is written after the first and last epochs and whenever writing it costs at most 5 % of the time since the
previous one; `kill -USR1 PID` (or SLURM's --signal=USR1@120) writes it after the current epoch. Ctrl-C or SIGTERM
stops the run (exit 130 / 143); --resume continues from last.pt.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sag.commands.options import add_training_options, given_options, parsed_by
from sag.engine.config import TrainConfig, parse_depths

# what a bare `python -m sag train` (no --dataset) runs: a demo two idle CPU cores finish in 78-84 s (65-72 s of
# training; benchmarks/demo_bench.py). Sized for it: the small backbone at 64x32 on a synthetic world drawn at 64x32,
# batch 16 and a from-scratch learning rate (the presets' 0.01 / 0.1 are for ImageNet-pretrained ResNet-50); 15
# epochs is the shortest schedule we found that reaches test rank-1 >= 60 % and mAP >= 40 %. The paper preset's
# recipe is otherwise unchanged.
DEMO_DEFAULTS: dict[str, Any] = {
    "dataset": "synthetic",
    "data_root": "data/synthetic_demo",
    "dataset_options": {"num_train_ids": 100, "num_test_ids": 100, "images_per_id": 16, "size": (64, 32)},
    "backbone": "resnet_small",
    "input_size": (64, 32),
    "epochs": 15,
    "batch_size": 16,
    "lr": 0.03,
    "val_ids": 0,
    "eval_every": 0,
    "resident": True,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sag train`` (unset options take the preset's / saved run's values)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    groups = add_training_options(parser, dataset_default="default: demo run")
    groups["model"].add_argument(
        "--depths", metavar="D", type=parsed_by(parse_depths), help='"4", "1,2,3", or "none" (baseline)'
    )
    groups["recipe"].add_argument("--seed", type=int, metavar="N", help="default 0")
    run = groups["run"]
    run.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/DATASET_BACKBONE_DEPTHS_PRESET)")
    run.add_argument("--resume", action="store_true", default=None, help="continue the run in RUN_DIR")
    run.add_argument("--overwrite", action="store_true", default=None, help="delete the run in RUN_DIR, start over")


def is_demo(args: argparse.Namespace) -> bool:
    """True for a bare ``python -m sag train`` (no --dataset, not resuming a saved run)."""
    saved = Path(args.out) / "config.json" if args.out is not None else None
    return args.dataset is None and not (args.resume and saved is not None and saved.is_file())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the command line: explicit options over the resumed run's config over the defaults."""
    base: dict[str, Any] = {}
    saved = Path(args.out) / "config.json" if args.out is not None else None
    if args.resume and saved is not None and saved.is_file():
        from sag.engine.runlog import read_run_config

        base = read_run_config(saved).to_dict()
        base.update(resume=True, overwrite=False)
    elif args.dataset is None:
        base = dict(DEMO_DEFAULTS)
    given = given_options(args, dataset=base.get("dataset", "synthetic"))
    if not base.get("resume") and args.dataset is None:
        _print_demo_note(given)
    if "dataset_options" in given:
        given["dataset_options"] = base.get("dataset_options", {}) | given["dataset_options"]
    merged = base | given
    if "out" not in merged:
        merged["out"] = _default_out(merged)
    return TrainConfig.from_dict(merged)


def run(args: argparse.Namespace) -> int:
    """Train, test the best checkpoint, print the summary."""
    from sag.engine import train

    config = config_from_args(args)
    try:
        result = train(config)
    except KeyboardInterrupt as err:
        return getattr(err, "exit_code", 130)  # 130 Ctrl-C, 143 SIGTERM; the trainer has said how to resume
    if is_demo(args) and os.environ.get("RANK", "0") == "0":
        print(compare_untrained(config, result.final))
    return 0


def compare_untrained(config: TrainConfig, trained: dict[str, Any]) -> str:
    """A small table: the test scores of the trained network beside the same network before training."""
    from sag.engine.runlog import format_table

    before = untrained_scores(config)
    rows = [("", "untrained -> trained")]
    for key, label in (("rank1", "test rank-1"), ("mAP", "test mAP")):
        rows.append((label, f"{100 * before[key]:6.2f} -> {100 * trained[key]:6.2f}"))
    return format_table(rows, title="the same network before and after training")


def untrained_scores(config: TrainConfig) -> dict[str, float]:
    """Test rank-1 / mAP of ``config``'s network as the trainer initialises it (same seed), before any step."""
    import torch

    from sag.data import load_dataset
    from sag.engine.trainer import _seed_everything
    from sag.evaluation import evaluate
    from sag.models import build_model

    cfg = config.resolved()
    dataset = load_dataset(cfg.dataset, cfg.data_root, **cfg.dataset_options)
    _seed_everything(cfg.seed)
    model = build_model(cfg.backbone, num_classes=max(dataset.num_train_ids, 1), depths=cfg.depths, preset=cfg.preset,
                        pretrained=cfg.pretrained, input_size=cfg.input_size)  # fmt: skip
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    metrics = evaluate(model.to(device), dataset, preset=cfg.preset, size=cfg.input_size, device=device)
    return {key: float(metrics[key]) for key in ("rank1", "mAP")}


def _default_out(options: dict[str, Any]) -> str:
    """runs/<dataset>_<backbone>_<D4|baseline>_<preset>."""
    depths = options.get("depths", (4,))
    tag = "baseline" if not depths else "D" + "".join(map(str, depths))
    defaults = TrainConfig()
    parts = (
        options.get("dataset", defaults.dataset),
        options.get("backbone", defaults.backbone),
        tag,
        options.get("preset", defaults.preset),
    )
    return str(Path("runs") / "_".join(parts))


def _print_demo_note(given: dict[str, Any]) -> None:
    """Tell a new user what the bare command does (once, under torchrun too)."""
    if os.environ.get("RANK", "0") != "0":
        return
    demo = ", ".join(f"{k}={v}" for k, v in DEMO_DEFAULTS.items() if k not in given and k != "dataset_options")
    print(
        f"no --dataset given: an offline demo of about 1.5 minutes on the synthetic dataset ({demo}), generated in "
        f"{DEMO_DEFAULTS['data_root']} if missing. Pass --dataset synthetic (or market1501 ...) for the full recipe."
    )
