"""Training: the paper's and the released code's recipes, the training loop, checkpoints, resume and DDP."""

from sag._lazy import lazy_exports

# module -> the names it exports; imported on first use, so that sag.engine.config stays free of torch
__getattr__ = lazy_exports(
    __name__,
    {
        "checkpoint": ("FORMAT_VERSION", "load_checkpoint", "read_checkpoint", "save_checkpoint"),
        "config": ("PRECISIONS", "TrainConfig", "parse_depths", "parse_size"),
        "recipe": ("RECIPES", "Recipe", "build_optimizer", "build_scheduler", "get_recipe"),
        "split": ("ValidationSplit", "carve_validation", "default_val_ids"),
        "trainer": ("RunResult", "history_of", "train"),
    },
)

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
