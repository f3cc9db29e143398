"""Train SAG (or the baseline) with the paper's or the released code's recipe; resumable, multi-GPU via torchrun.

Examples:

  python -m sag train                                   # offline demo on the synthetic dataset
  python -m sag train --dataset market1501 --data-root data/market1501 --depths 4 --out runs/market_d4
  python -m sag train --out runs/market_d4 --resume     # continue a killed run
  torchrun --nproc_per_node=4 -m sag train --dataset market1501 --data-root data/market1501 --out runs/ddp
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sag.commands.options import add_training_options, given_options, parsed_by
from sag.engine.config import TrainConfig, parse_depths

# what a bare `python -m sag train` (no --dataset) runs: a short demo a CPU finishes in minutes
DEMO_DEFAULTS: dict[str, Any] = {"dataset": "synthetic", "backbone": "resnet18", "epochs": 3, "eval_every": 1}


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

    try:
        train(config_from_args(args))
    except KeyboardInterrupt as err:
        return getattr(err, "exit_code", 130)  # 130 Ctrl-C, 143 SIGTERM; the trainer has said how to resume
    return 0


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
    demo = ", ".join(f"{k}={v}" for k, v in DEMO_DEFAULTS.items() if k not in given)
    print(
        f"no --dataset given: a short offline demo on the synthetic dataset ({demo}), generated in "
        "data/synthetic if missing. Pass --dataset synthetic (or market1501 ...) for the full recipe."
    )
