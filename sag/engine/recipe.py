"""The two training recipes, paper text vs released code (DESIGN.md's table), and the optimiser they build."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

SAG_LR_GROUPS = ("backbone", "new")  # which learning rate the SAG modules (conv + BN) train at
VALIDATIONS = ("images", "ids", "none")
TEST_CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class Recipe:
    """Everything a preset fixes about training (section 4.3 of the paper, or the released code)."""

    epochs: int
    batch_size: int
    lr_backbone: float  # pre-trained ResNet layers (and the SAG modules when sag_lr == "backbone")
    lr_new: float  # the classifier head (and the SAG modules when sag_lr == "new")
    momentum: float
    weight_decay: float
    nesterov: bool
    step_size: int  # epochs between learning-rate drops
    gamma: float  # factor of each drop
    erasing_prob: float  # random erasing (Zhong et al.), applied by sag.data's transforms
    erasing_fill: str
    normalization: str  # pixel scaling, applied by sag.data's transforms
    resize: str  # interpolation used to reach the input size
    sag_lr: str = "backbone"  # "backbone": the SAG conv + BN at lr_backbone; "new": at lr_new
    step_offset: int = 0  # scheduler steps taken before epoch 1 (1: StepLR stepped at the start of every epoch)
    validation: str = "images"  # "images": one image per id, loss only | "ids": held-out ids, rank-1/mAP | "none"
    test_checkpoint: str = "best"  # the epoch tested at the end: "best" on validation, or the "last"
    drop_last: bool = True  # drop the last, incomplete training batch of each epoch

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for config.json and the book's tables (with the preset's test protocol)."""
        return asdict(self)

    def lr_factor(self, epoch: int) -> float:
        """The factor on the base learning rates in 1-based ``epoch``: ``gamma ** ((epoch - 1 + offset) // step)``."""
        return self.gamma ** ((epoch - 1 + self.step_offset) // self.step_size)

    def lr(self, epoch: int, base: float | None = None) -> tuple[float, float]:
        """(backbone lr, new-layer lr) in 1-based ``epoch``; ``base`` replaces ``lr_backbone`` (``--lr``)."""
        base = self.lr_backbone if base is None else base
        return base * self.lr_factor(epoch), base * self.lr_new / self.lr_backbone * self.lr_factor(epoch)


RECIPES: dict[str, Recipe] = {
    # Paper section 4.3: SGD m=0.9 wd=5e-4, lr 0.01 "upper layers" / 0.1 "fully connected layers" (the SAG convs are
    # not fully connected: 0.01), x0.1 every 30 epochs (lr = lr0 * 0.1 ** (k // 30), k = 0 in the first epoch),
    # 200 epochs, batch 32, pixels in [-1, 1], flip + random erasing (probability not stated: Zhong et al.'s 0.5).
    # "751 units" (every training id) and "a validation set to select the model": our reading holds out one image
    # per id as the validation set (every id is still trained) and tests the epoch of best validation accuracy.
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
        sag_lr="backbone",
        step_offset=0,
        validation="images",
        test_checkpoint="best",
        drop_last=True,
    ),
    # The released 2018 code: the same optimiser plus Nesterov, batch 64, ImageNet mean/std, bicubic resize, random
    # erasing p=0.8 with fill 0. Only the classifier block is at 0.1 (the attention conv + BN at 0.01). StepLR(30, 0.1)
    # is stepped at the START of each of its epochs 1..201; on PyTorch >= 1.1 (any version installable today) epoch e
    # then runs at 0.01 * 0.1 ** (e // 30). (On the PyTorch 0.4 / 1.0 of 2018 the constructor reset last_epoch to -1
    # and the same loop ran epoch e at 0.01 * 0.1 ** ((e - 1) // 30): the paper preset's schedule.) prepare.py moves
    # the first image of each id to a loss-only val folder (all 751 ids train), drop_last is off, the last epoch is
    # tested.
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
        sag_lr="backbone",
        step_offset=1,
        validation="images",
        test_checkpoint="last",
        drop_last=False,
    ),
}


def get_recipe(preset: str) -> Recipe:
    """The recipe of ``preset``; ValueError listing the valid presets otherwise."""
    if preset not in RECIPES:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(RECIPES)}")
    return RECIPES[preset]


def build_optimizer(model: nn.Module, recipe: Recipe, lr: float | None = None) -> torch.optim.SGD:
    """SGD with two parameter groups: backbone at ``lr`` (default the recipe's), new layers at the recipe's ratio (x10).

    The SAG modules join the backbone group or the new one as ``recipe.sag_lr`` says; ``model`` must offer
    ``parameter_groups(sag=...) -> (backbone_params, new_params)`` (``sag.models.SAGNet`` does).
    """
    backbone, new = model.parameter_groups(sag=recipe.sag_lr)
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
    """Step decay, stepped after each epoch: epoch e (1-based) runs at ``recipe.lr_factor(e)`` x the base rates.

    ``recipe.step_offset`` steps are taken here, before epoch 1: the released loop calls ``scheduler.step()`` at the
    start of every epoch, which is the same as one step ahead of a loop that steps at the end.
    """
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    with warnings.catch_warnings():  # "step() before optimizer.step()": intended, nothing has been trained yet
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(recipe.step_offset):
            scheduler.step()
    return scheduler
