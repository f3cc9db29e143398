"""Shared look of every figure: a light seaborn style, pyplot-free Figures, atomic PNG saving, image display."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from sag.atomic import atomic_path

COLORS = {
    "ours": "#4c72b0",  # seaborn "deep" blue
    "paper": "#8c8c8c",
    "correct": "#2ca02c",
    "incorrect": "#d62728",
    "junk": "#9e9e9e",
    "query": "#1f1f1f",
}
# pixel normalisation of each preset's transforms (sag.data.build_transforms): name -> (mean, std)
NORMALIZATIONS = {
    "[-1, 1]": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
PRESET_NORMALIZATION = {"paper": "[-1, 1]", "released_code": "imagenet"}

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def light_style() -> Iterator[None]:
    """Seaborn's whitegrid look on a white background, only inside the block (global rcParams stay untouched)."""
    import seaborn as sns

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.9)}
    rc |= {"figure.facecolor": "white", "savefig.facecolor": "white", "axes.titlesize": 10}
    with matplotlib.rc_context(rc):
        yield


def styled(func: F) -> F:
    """Decorator: run a plotting function inside ``light_style``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with light_style():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4), **kwargs: Any) -> tuple:
    """A Figure not registered with pyplot (no global state, shown once in notebooks) and its axes array."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)  # (nrows, ncols) array of Axes
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) via a temporary file, so no half file is ever left."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def to_display_image(image: Any, normalization: str | None = "[-1, 1]") -> np.ndarray:
    """Any image -> float (H, W, 3) in [0, 1] for imshow.

    Accepts a path, a PIL image, a uint8 array (H, W, 3), or a model input tensor/array (3, H, W) normalised
    as ``normalization`` says ("[-1, 1]", "imagenet", a preset name, or None to stretch min..max to 0..1).
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        if not Path(image).is_file():
            raise FileNotFoundError(f"image {image} not found")
        with Image.open(image) as pil:
            return np.asarray(pil.convert("RGB"), dtype=np.float64) / 255.0
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # (3, H, W) -> (H, W, 3)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"cannot display an image of shape {array.shape}; expected (3, H, W) or (H, W, 3)")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    array = array.astype(np.float64)
    normalization = PRESET_NORMALIZATION.get(normalization, normalization)
    if normalization is None:
        lo, hi = array.min(), array.max()
        return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    if normalization not in NORMALIZATIONS:
        valid = ", ".join([*NORMALIZATIONS, *PRESET_NORMALIZATION, "None"])
        raise ValueError(f"unknown normalization {normalization!r}; valid: {valid}")
    mean, std = (np.asarray(v) for v in NORMALIZATIONS[normalization])
    return np.clip(array * std + mean, 0.0, 1.0)
