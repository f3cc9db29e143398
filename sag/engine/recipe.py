"""The two training recipes, paper text vs released code (the table of book chapter 8), and the optimiser they build."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Recipe:
    """Everything a preset fixes about training (section 4.3 of the paper, or the released code)."""

    epochs: int
    batch_size: int
    lr_backbone: float  # pre-trained ResNet layers
    lr_new: float  # SAG modules and the classifier head
    momentum: float
    weight_decay: float
    nesterov: bool
    step_size: int  # epochs between learning-rate drops
    gamma: float  # factor of each drop
    erasing_prob: float  # random erasing (Zhong et al.), applied by sag.data's transforms
    erasing_fill: str
    normalization: str  # pixel scaling, applied by sag.data's transforms
    resize: str  # interpolation used to reach the input size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for config.json and the book's tables."""
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # Paper section 4.3: SGD m=0.9 wd=5e-4, lr 0.01 backbone / 0.1 fc, x0.1 every 30 epochs, 200 epochs, batch 32,
    # pixels in [-1, 1], flip + random erasing (probability not stated: Zhong et al.'s default 0.5).
    "paper": Recipe(
        epochs=200,
        batch_size=32,
        lr_backbone=0.01,
        lr_new=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        nesterov=False,
        step_size=30,
        gamma=0.1,
        erasing_prob=0.5,
        erasing_fill="random",
        normalization="[-1, 1]",
        resize="bilinear",
    ),
    # The released 2018 code: the same optimiser plus Nesterov, StepLR(30, 0.1) for 201 epochs, batch 64,
    # ImageNet mean/std, bicubic resize, random erasing p=0.8 with fill 0.
    "released_code": Recipe(
        epochs=201,
        batch_size=64,
        lr_backbone=0.01,
        lr_new=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        nesterov=True,
        step_size=30,
        gamma=0.1,
        erasing_prob=0.8,
        erasing_fill="0",
        normalization="imagenet",
        resize="bicubic",
    ),
}


def get_recipe(preset: str) -> Recipe:
    """The recipe of ``preset``; ValueError listing the valid presets otherwise."""
    if preset not in RECIPES:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(RECIPES)}")
    return RECIPES[preset]


def build_optimizer(model: nn.Module, recipe: Recipe, lr: float | None = None) -> torch.optim.SGD:
    """SGD with two parameter groups: backbone at ``lr`` (default the recipe's), new layers at the recipe's ratio (x10).

    ``model`` must offer ``parameter_groups() -> (backbone_params, new_params)`` (``sag.models.SAGNet`` does).
    """
    backbone, new = model.parameter_groups()
    lr_backbone = recipe.lr_backbone if lr is None else lr
    lr_new = lr_backbone * recipe.lr_new / recipe.lr_backbone
    groups = [
        {"params": backbone, "lr": lr_backbone, "name": "backbone"},
        {"params": new, "lr": lr_new, "name": "new"},
    ]
    return torch.optim.SGD(
        groups, lr=lr_backbone, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov
    )


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.StepLR:
    """Step decay: every group's lr x ``gamma`` every ``step_size`` epochs (stepped once per epoch)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
