"""Datasets (Market-1501, DukeMTMC-reID, CUHK03, a synthetic world), downloads, transforms and loaders."""

from sag.data.downloader import download
from sag.data.loaders import (
    ImageDataset,
    TrainLoader,
    decode_images,
    epoch_order,
    make_eval_loader,
    make_train_loader,
    read_image,
)
from sag.data.records import TABLE2, ImageRecord, ReIDDataset, format_table2
from sag.data.registry import DATASETS, load_dataset
from sag.data.synthetic import SyntheticConfig, load_mask, make_synthetic
from sag.data.transforms import PRESETS, AugmentConfig, augment_batch, build_transforms, get_augment

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
