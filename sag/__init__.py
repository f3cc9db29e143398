"""SAG-ReID: Self Attention Grid for person re-identification, as a small tested PyTorch package."""

from sag.models import build_model

__version__ = "0.1.0"
__all__ = ["__version__", "build_model"]
