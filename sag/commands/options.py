"""Command-line options that ``train`` and ``ablate`` share: data, model, recipe and run settings of a TrainConfig.

Every shared option defaults to None, meaning "not given": the command then uses the resumed run's value or
TrainConfig's default, so the defaults live in one place (``sag.engine.config``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sag.engine.config import DATASET_NAMES, PRECISIONS, parse_size
from sag.engine.recipe import RECIPES, TEST_CHECKPOINTS, VALIDATIONS
from sag.evaluation.protocol import AP_RULES, AVERAGES

SYNTHETIC_OPTIONS = {  # CLI flag -> make_synthetic keyword
    "synthetic_ids": "num_train_ids",
    "synthetic_test_ids": "num_test_ids",
    "synthetic_images_per_id": "images_per_id",
    "synthetic_cameras": "num_cameras",
    "synthetic_size": "size",
}
CUHK03_OPTIONS = {  # CLI flag -> load_cuhk03 keyword
    "cuhk03_subset": "subset",
    "cuhk03_protocol": "protocol",
    "cuhk03_split": "split",
}


def parsed_by(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ValueError message becomes argparse's (instead of "invalid value")."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def add_training_options(parser: argparse.ArgumentParser, dataset_default: str) -> dict[str, Any]:
    """Add the data, model, recipe and run groups; returns them by name so a command can add its own options."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", metavar="NAME", help=f"one of {', '.join(DATASET_NAMES)} ({dataset_default})")
    data.add_argument("--data-root", metavar="DIR", help="dataset folder (default for synthetic: data/synthetic)")
    data.add_argument(
        "--validation", choices=VALIDATIONS, help="images: 1 image per id, loss only (default); ids: held-out ids"
    )
    data.add_argument("--val-ids", type=int, metavar="N", help="--validation ids: ids held out (default 10%%, 2-100)")
    data.add_argument("--workers", type=int, metavar="N", help="data loader processes (default 0)")
    data.add_argument("--resident", action="store_true", default=None, help="keep the training set on the device")
    data.add_argument("--input-size", type=parsed_by(parse_size), metavar="HxW", help="input HxW (default 160x64)")
    for flag, key in SYNTHETIC_OPTIONS.items():
        kind = {"type": parsed_by(parse_size), "metavar": "HxW"} if key == "size" else {"type": int, "metavar": "N"}
        data.add_argument(f"--{flag.replace('_', '-')}", help=f"synthetic dataset: {key}", **kind)
    data.add_argument("--cuhk03-subset", choices=("detected", "labeled"), help="CUHK03 boxes (default detected)")
    data.add_argument("--cuhk03-protocol", choices=("classic", "new"), help="CUHK03 protocol (default classic)")
    data.add_argument("--cuhk03-split", type=int, metavar="K", help="CUHK03 classic split 0..19 (default 0)")

    model = parser.add_argument_group("model")
    model.add_argument(
        "--backbone", metavar="NAME", help="resnet18/34/50/101/152 (default resnet50, the paper's), resnet_small"
    )
    model.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from ImageNet weights (default: yes on real datasets, no on synthetic)",
    )

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--preset", metavar="NAME", help=f"one of {', '.join(RECIPES)} (default paper)")
    recipe.add_argument("--epochs", type=int, metavar="N", help="default: the preset's (200 paper, 201 released_code)")
    recipe.add_argument("--batch-size", type=int, metavar="N", help="per process (default 32 paper, 64 released)")
    recipe.add_argument("--lr", type=float, help="backbone lr; new layers get 10x (default 0.01)")
    recipe.add_argument(
        "--zero-center", action="store_true", default=None, help="paper: minus the ImageNet mean pixel after [-1, 1]"
    )
    recipe.add_argument("--test-checkpoint", choices=TEST_CHECKPOINTS, help="epoch tested (best paper, last released)")
    recipe.add_argument(
        "--drop-last", action=argparse.BooleanOptionalAction, default=None, help="drop incomplete batches (paper: yes)"
    )
    add_protocol_options(parser)

    run = parser.add_argument_group("run")
    run.add_argument("--eval-every", type=int, metavar="N", help="validate every N epochs (default 10; 0: at the end)")
    run.add_argument("--precision", metavar="P", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    run.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda if available)")
    run.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    run.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    run.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    return {"data": data, "model": model, "recipe": recipe, "run": run}


def add_protocol_options(parser: argparse.ArgumentParser, default: str = "the preset's") -> None:
    """The test protocol: --flip/--no-flip, --ap, --average (unset: ``default``)."""
    group = parser.add_argument_group("test protocol")
    group.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None, help=f"mean with the mirror image ({default})"
    )
    group.add_argument("--ap", choices=AP_RULES, help=f"AP rule; trapezoid = official Market-1501 ({default})")
    group.add_argument("--average", choices=AVERAGES, help=f"all: no-match queries count 0, official ({default})")


def given_options(args: argparse.Namespace, dataset: str = "synthetic") -> dict[str, Any]:
    """The options set on the command line (not None), the --synthetic-* / --cuhk03-* ones gathered in dataset_options.

    ``dataset`` is the dataset assumed when --dataset is not given; dataset options of another dataset are an error.
    """
    given = {name: value for name, value in vars(args).items() if value is not None and not name.startswith("_")}
    given.pop("command", None)
    for name, flags in (("synthetic", SYNTHETIC_OPTIONS), ("cuhk03", CUHK03_OPTIONS)):
        options = {flags[k]: given.pop(k) for k in list(given) if k in flags}
        if not options:
            continue
        if given.get("dataset", dataset) != name:
            raise ValueError(f"--{name}-* options apply to --dataset {name} only")
        given["dataset_options"] = options
    return given
