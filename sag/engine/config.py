"""``TrainConfig``: every choice of a training run, checked early and stored as plain JSON in the run dir."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from sag.engine.recipe import TEST_CHECKPOINTS, VALIDATIONS, Recipe, get_recipe
from sag.evaluation.protocol import AP_RULES, AVERAGES, get_protocol

PRECISIONS = ("fp32", "bf16", "fp16")
DATASET_NAMES = ("market1501", "dukemtmc", "cuhk03", "synthetic")  # the same names as sag.data.DATASETS
DEFAULT_SYNTHETIC_ROOT = "data/synthetic"
_STAGE_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}  # backbone stride after each stage (sag.models.network)


@dataclass
class TrainConfig:
    """One training run; ``None`` means "the preset's value" (see ``RECIPES`` and ``PROTOCOLS``; ``resolved()``)."""

    dataset: str = "synthetic"
    data_root: str | None = None  # None: data/synthetic for the synthetic set, required otherwise
    backbone: str = "resnet50"
    depths: tuple[int, ...] = (4,)  # () = the baseline
    preset: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None  # per process under torchrun
    lr: float | None = None  # backbone lr; the new layers get the recipe's ratio (x10)
    seed: int = 0
    precision: str = "fp32"
    device: str | None = None  # None: cuda if available, else cpu
    workers: int = 0
    eval_every: int = 10  # validate every N epochs (and after the last); 0 = only after the last
    out: str = "runs/sag"
    resume: bool = False
    overwrite: bool = False
    pretrained: bool | None = None  # ImageNet weights; None: yes on real datasets (backbones that have them)
    val_ids: int | None = (
        None  # validation="ids": held-out ids (None: 10%, 2-100); given alone, >0 means "ids", 0 "none"
    )
    validation: str | None = None  # "images" (one image per id, loss only) | "ids" | "none"; None: the preset's
    test_checkpoint: str | None = None  # "best" (validation) | "last" epoch is tested; None: the preset's
    drop_last: bool | None = None  # drop each epoch's incomplete last batch; None: the preset's
    flip: bool | None = None  # test protocol (sag.evaluation.protocol); None: the preset's
    ap: str | None = None  # "standard" | "trapezoid"
    average: str | None = None  # "valid" | "all"
    zero_center: bool = False  # paper only: after the [-1, 1] scaling, subtract the (ImageNet) mean pixel
    resident: bool = False
    channels_last: bool = False
    compile: bool = False
    input_size: tuple[int, int] = (160, 64)  # (height, width)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        self.depths = tuple(int(d) for d in self.depths)
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.dataset_options = dict(self.dataset_options)

    @property
    def recipe(self) -> Recipe:
        """The preset's recipe."""
        return get_recipe(self.preset)

    def resolved(self) -> TrainConfig:
        """A copy with every None filled in: the preset's recipe and test protocol, the data root, ImageNet weights
        on real datasets (not on the synthetic one, nor for a backbone without them such as resnet_small)."""
        recipe = self.recipe
        root = self.data_root
        if root is None and self.dataset == "synthetic":
            root = DEFAULT_SYNTHETIC_ROOT
        validation = self.validation
        if validation is None:
            validation = recipe.validation if not self.val_ids else "ids"
            validation = "none" if self.val_ids == 0 else validation
        protocol = get_protocol(self.preset, flip=self.flip, ap=self.ap, average=self.average)
        from sag.models.factory import SMALL_BACKBONES  # deferred: the config module stays light

        weights_exist = self.backbone not in SMALL_BACKBONES

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return dataclasses.replace(
            self,
            epochs=pick(self.epochs, recipe.epochs),
            batch_size=pick(self.batch_size, recipe.batch_size),
            lr=pick(self.lr, recipe.lr_backbone),
            data_root=root,
            pretrained=pick(self.pretrained, self.dataset != "synthetic" and weights_exist),
            validation=validation,
            test_checkpoint=pick(self.test_checkpoint, recipe.test_checkpoint),
            drop_last=pick(self.drop_last, recipe.drop_last),
            flip=protocol.flip,
            ap=protocol.ap,
            average=protocol.average,
        )

    @property
    def transforms(self) -> Any:
        """What the data loaders normalise with: the preset's name, or with ``zero_center`` an AugmentConfig whose
        Normalize is (x - m) / 0.5 = (2x - 1) - (2m - 1): the [-1, 1] pixels minus the ImageNet mean pixel m."""
        if not self.zero_center:
            return self.preset
        from sag.data.transforms import IMAGENET_MEAN, get_augment

        return get_augment(self.preset, mean=IMAGENET_MEAN)

    @property
    def protocol(self) -> dict[str, Any]:
        """The test protocol of this (resolved) config: {"flip", "ap", "average"}."""
        return get_protocol(self.preset, flip=self.flip, ap=self.ap, average=self.average).to_dict()

    def validate(self) -> None:
        """Raise ValueError naming the bad value and the valid choices; touches no file."""
        from sag.models import BACKBONES

        get_recipe(self.preset)
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASET_NAMES)}")
        if self.data_root is None and self.dataset != "synthetic":
            raise ValueError(f"--data-root is required for {self.dataset} (the folder that holds the dataset)")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid backbones: {', '.join(BACKBONES)}")
        bad = [d for d in self.depths if d not in _STAGE_STRIDES]
        if bad:
            raise ValueError(f"SAG depth(s) {bad} out of range; valid depths are 1, 2, 3, 4 (or none for the baseline)")
        if len(set(self.depths)) != len(self.depths):
            raise ValueError(f"repeated SAG depth in {self.depths}; give each depth at most once")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        for name in ("eval_every", "workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.val_ids is not None and self.val_ids < 0:
            raise ValueError(f"val_ids must be >= 0 (0 = no validation split), got {self.val_ids!r}")
        for name, options in (
            ("validation", VALIDATIONS),
            ("test_checkpoint", TEST_CHECKPOINTS),
            ("ap", AP_RULES),
            ("average", AVERAGES),
        ):
            value = getattr(self, name)
            if value is not None and value not in options:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(options)}")
        if self.val_ids and self.validation not in (None, "ids"):
            raise ValueError(
                f"--val-ids {self.val_ids} holds out ids: it needs --validation ids, not {self.validation}"
            )
        if self.zero_center and self.recipe.normalization != "[-1, 1]":
            raise ValueError(f"--zero-center applies to the [-1, 1] pixels of the paper preset, not to {self.preset}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: continue the run, or start it over")
        height, width = self.input_size
        stride = _STAGE_STRIDES[max(self.depths)] if self.depths else 1
        if height < 1 or width < 1 or height % stride or width % stride:
            raise ValueError(
                f"input size {height}x{width} cannot be divided into the SAG grid at D{max(self.depths, default=0)}: "
                f"height and width must be multiples of {stride} (e.g. 160x64)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists), so a config equals itself after a trip through config.json."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; keys that are not fields (e.g. config.json's ``recipe``) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


# fields that define what is trained: a resumed run must agree with its checkpoint on these (epochs may grow)
IDENTITY_FIELDS = (
    "dataset",
    "backbone",
    "depths",
    "preset",
    "batch_size",
    "lr",
    "seed",
    "precision",
    "pretrained",
    "val_ids",
    "validation",
    "drop_last",
    "zero_center",
    "input_size",
    "dataset_options",
)


def parse_depths(text: str) -> tuple[int, ...]:
    """``"4"`` -> (4,), ``"1,2,3"`` -> (1, 2, 3), ``"none"`` or ``"baseline"`` -> () (the baseline)."""
    text = text.strip().lower()
    if text in ("none", "baseline"):
        return ()
    if not text:
        raise ValueError("empty depths; write e.g. 4 or 1,2,3, or none for the baseline")
    try:
        depths = tuple(int(part.strip().removeprefix("d")) for part in text.split(","))
    except ValueError:
        raise ValueError(f"cannot read depths {text!r}; write e.g. 4, 1,2,3 or none") from None
    return depths


def parse_size(text: str) -> tuple[int, int]:
    """``"160x64"`` -> (160, 64) (height x width)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"cannot read input size {text!r}; write HEIGHTxWIDTH, e.g. 160x64") from None
    return height, width
