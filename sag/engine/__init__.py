"""Training: the paper's and the released code's recipes, the training loop, checkpoints, resume and DDP."""

from sag.engine.checkpoint import FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint
from sag.engine.config import PRECISIONS, TrainConfig, parse_depths, parse_size
from sag.engine.recipe import RECIPES, Recipe, build_optimizer, build_scheduler, get_recipe
from sag.engine.split import ValidationSplit, carve_validation, default_val_ids
from sag.engine.trainer import RunResult, history_of, train

__all__ = [
    "FORMAT_VERSION",
    "PRECISIONS",
    "RECIPES",
    "Recipe",
    "RunResult",
    "TrainConfig",
    "ValidationSplit",
    "build_optimizer",
    "build_scheduler",
    "carve_validation",
    "default_val_ids",
    "get_recipe",
    "history_of",
    "load_checkpoint",
    "parse_depths",
    "parse_size",
    "read_checkpoint",
    "save_checkpoint",
    "train",
]
