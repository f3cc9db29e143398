"""SAG models: the module (Eq. 3-7), the dual-resolution network (Eq. 1) and ``build_model``."""

from sag.models.factory import BACKBONES, OVERRIDES, PRESETS, VALID_DEPTHS, build_model, preset_options
from sag.models.network import SAGNet
from sag.models.sag_module import SAGModule, grid_softmax, max_filter_align

__all__ = [
    "BACKBONES",
    "OVERRIDES",
    "PRESETS",
    "VALID_DEPTHS",
    "SAGModule",
    "SAGNet",
    "build_model",
    "grid_softmax",
    "max_filter_align",
    "preset_options",
]
