"""Datasets (Market-1501, DukeMTMC-reID, CUHK03, a synthetic world), downloads, transforms and loaders."""

from sag._lazy import lazy_exports

# module -> the names it exports; imported on first use, so that the CLI's --help never imports torch
__getattr__ = lazy_exports(
    __name__,
    {
        "downloader": ("download",),
        "loaders": (
            "ImageDataset",
            "TrainLoader",
            "decode_images",
            "epoch_order",
            "make_eval_loader",
            "make_train_loader",
            "read_image",
        ),
        "records": ("TABLE2", "ImageRecord", "ReIDDataset", "format_table2"),
        "registry": ("DATASETS", "load_dataset"),
        "synthetic": ("SyntheticConfig", "load_mask", "make_synthetic"),
        "transforms": ("PRESETS", "AugmentConfig", "augment_batch", "build_transforms", "get_augment"),
    },
)

__all__ = [
    "DATASETS",
    "PRESETS",
    "TABLE2",
    "AugmentConfig",
    "ImageDataset",
    "ImageRecord",
    "ReIDDataset",
    "SyntheticConfig",
    "TrainLoader",
    "augment_batch",
    "build_transforms",
    "decode_images",
    "download",
    "epoch_order",
    "format_table2",
    "get_augment",
    "load_dataset",
    "load_mask",
    "make_eval_loader",
    "make_synthetic",
    "make_train_loader",
    "read_image",
]
