"""SAG-ReID: Self Attention Grid for person re-identification, as a small tested PyTorch package."""

from __future__ import annotations

import importlib
from types import ModuleType

from sag.models import build_model

__version__ = "0.1.0"
__all__ = ["__version__", "build_model"]

_SUBMODULES = ("ablation", "analysis", "book", "data", "engine", "evaluation", "models", "paper", "plots", "resources")


def __getattr__(name: str) -> ModuleType:
    """Import subpackages on first use, so ``import sag; sag.data.load_dataset(...)`` works and stays cheap."""
    if name in _SUBMODULES:
        return importlib.import_module(f"sag.{name}")
    raise AttributeError(f"module 'sag' has no attribute {name!r}")
