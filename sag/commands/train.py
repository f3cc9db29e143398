"""Train SAG (or the baseline) with the paper's or the released code's recipe; resumable, multi-GPU via torchrun.

Examples:

  python -m sag train                                   # offline demo on the synthetic dataset
  python -m sag train --dataset market1501 --data-root data/market1501 --depths 4 --out runs/market_d4
  python -m sag train --out runs/market_d4 --resume     # continue a killed run
  torchrun --nproc_per_node=4 -m sag train --dataset market1501 --data-root data/market1501 --out runs/ddp
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sag.engine.config import DATASET_NAMES, PRECISIONS, TrainConfig, parse_depths, parse_size
from sag.engine.recipe import RECIPES

# what a bare `python -m sag train` (no --dataset) runs: a short demo a CPU finishes in minutes
DEMO_DEFAULTS: dict[str, Any] = {"dataset": "synthetic", "backbone": "resnet18", "epochs": 3, "eval_every": 1}
_SYNTHETIC_OPTIONS = {  # CLI flag -> make_synthetic keyword
    "synthetic_ids": "num_train_ids",
    "synthetic_test_ids": "num_test_ids",
    "synthetic_images_per_id": "images_per_id",
    "synthetic_cameras": "num_cameras",
    "synthetic_size": "size",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sag train`` (unset options take the preset's / saved run's values)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", metavar="NAME", help=f"one of {', '.join(DATASET_NAMES)} (default: demo run)")
    data.add_argument("--data-root", metavar="DIR", help="dataset folder (default for synthetic: data/synthetic)")
    data.add_argument("--val-ids", type=int, metavar="N", help="ids held out to validate (default 10%%, 2-100; 0 none)")
    data.add_argument("--workers", type=int, metavar="N", help="data loader processes (default 0)")
    data.add_argument("--resident", action="store_true", default=None, help="keep the training set on the device")
    data.add_argument("--input-size", type=_arg(parse_size), metavar="HxW", help="input HxW (default 160x64)")
    for flag, key in _SYNTHETIC_OPTIONS.items():
        kind = {"type": _arg(parse_size), "metavar": "HxW"} if key == "size" else {"type": int, "metavar": "N"}
        data.add_argument(f"--{flag.replace('_', '-')}", help=f"synthetic dataset: {key}", **kind)

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", metavar="NAME", help="resnet18/34/50/101/152 (default resnet50)")
    model.add_argument("--depths", metavar="D", type=_arg(parse_depths), help='"4", "1,2,3", or "none" (baseline)')
    model.add_argument("--pretrained", action="store_true", default=None, help="start from ImageNet weights")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--preset", metavar="NAME", help=f"one of {', '.join(RECIPES)} (default paper)")
    recipe.add_argument("--epochs", type=int, metavar="N", help="default: the preset's (200 paper, 201 released_code)")
    recipe.add_argument("--batch-size", type=int, metavar="N", help="per process (default 32 paper, 64 released)")
    recipe.add_argument("--lr", type=float, help="backbone lr; new layers get 10x (default 0.01)")
    recipe.add_argument("--seed", type=int, metavar="N", help="default 0")

    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/DATASET_BACKBONE_DEPTHS_PRESET)")
    run.add_argument("--resume", action="store_true", default=None, help="continue the run in RUN_DIR")
    run.add_argument("--overwrite", action="store_true", default=None, help="delete the run in RUN_DIR, start over")
    run.add_argument("--eval-every", type=int, metavar="N", help="validate every N epochs (default 10; 0: at the end)")
    run.add_argument("--precision", metavar="P", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    run.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda if available)")
    run.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    run.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    run.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ValueError message becomes argparse's (instead of "invalid value")."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the command line: explicit options over the resumed run's config over the defaults."""
    given = {name: value for name, value in vars(args).items() if value is not None and not name.startswith("_")}
    given.pop("command", None)
    synthetic = {_SYNTHETIC_OPTIONS[k]: given.pop(k) for k in list(given) if k in _SYNTHETIC_OPTIONS}
    base: dict[str, Any] = {}
    saved = Path(given["out"]) / "config.json" if "out" in given else None
    if given.get("resume") and saved is not None and saved.is_file():
        base = TrainConfig.from_dict(json.loads(saved.read_text())).to_dict()
        base.update(resume=True, overwrite=False)
    elif "dataset" not in given:
        base = dict(DEMO_DEFAULTS)
        _print_demo_note(given)
    if synthetic:
        if given.get("dataset", base.get("dataset", "synthetic")) != "synthetic":
            raise ValueError("--synthetic-* options apply to --dataset synthetic only")
        given["dataset_options"] = base.get("dataset_options", {}) | synthetic
    merged = base | given
    if "out" not in merged:
        merged["out"] = _default_out(merged)
    return TrainConfig.from_dict(merged)


def run(args: argparse.Namespace) -> int:
    """Train, test the best checkpoint, print the summary."""
    from sag.engine import train

    try:
        train(config_from_args(args))
    except KeyboardInterrupt:
        return 130  # the trainer has said how to resume
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
