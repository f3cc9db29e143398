"""SAG-ReID: Self Attention Grid for person re-identification, as a small tested PyTorch package."""

from __future__ import annotations

from sag._lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["__version__", "build_model"]

# subpackages and build_model are imported on first use: ``import sag`` (and the CLI's --help) stays free of torch
__getattr__ = lazy_exports(
    __name__,
    {
        "models": ("build_model",),
        **dict.fromkeys(
            ("ablation", "analysis", "book", "data", "engine", "evaluation", "paper", "plots", "resources"), ()
        ),
    },
)
