"""``build_model``: the one entry point that turns a name, depths and a preset into a SAGNet."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sag.models.heads import HEADS
from sag.models.network import SAGNet

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_small")
SMALL_BACKBONES = ("resnet_small",)  # sag.models.small: no ImageNet weights exist
VALID_DEPTHS = (1, 2, 3, 4)
UPSAMPLING = ("bilinear", "nearest")


def preset_options(preset: str, depths: tuple[int, ...]) -> dict[str, Any]:
    """Model options of a preset: the paper's text or what the released code does (DESIGN.md's table)."""
    if preset == "paper":
        # bilinear x2 (Eq. 1), fc head; Eq. 7 only below D4, as section 4.6 recommends
        below_d4 = tuple(d for d in depths if d < 4)
        return {"upsample": "bilinear", "head": "fc", "pooled_l2": False, "l2_depths": below_d4, "init": "torch"}
    if preset == "released_code":
        # nearest x2, 512-d bottleneck head, L2 norm of the pooled feature always on, its init of the new layers
        return {"upsample": "nearest", "head": "bottleneck", "pooled_l2": True, "l2_depths": (), "init": "released"}
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")


PRESETS = ("paper", "released_code")
OVERRIDES = (
    "upsample",
    "head",
    "pooled_l2",
    "l2_depths",
    "l2_mode",
    "bottleneck_dim",
    "dropout",
    "leaky_slope",
    "input_size",
    "init",
)


def build_model(
    backbone: str = "resnet50",
    num_classes: int = 751,
    depths: Iterable[int] = (4,),
    preset: str = "paper",
    pretrained: bool | str = False,
    **overrides: Any,
) -> SAGNet:
    """Build SAG-ResNet: ``depths=()`` is the baseline, ``(4,)`` the paper's best, any subset of 1..4 allowed.

    Presets (see DESIGN.md and the book's training chapter):

    ===============  ==========================  ====================================================
    option           ``"paper"``                 ``"released_code"``
    ===============  ==========================  ====================================================
    upsample (Eq.1)  bilinear x2                 nearest x2
    Eq. 7 L2 norm    at D1-D3 only (sec. 4.6)    never at the grid (per sample: ``l2_mode="sample"``)
    pooled feature   average pool                average pool, then L2-normalised (always)
    head             Linear(C4, classes)         Linear(C4,512)-BN1d-LeakyReLU(0.1)-Dropout(0.5)-Linear
    init (new)       torch's defaults            Linear kaiming fan_out, BN1d N(1, .02), classifier
                                                 N(0, .001), biases 0; SAG conv kaiming fan_in
    ===============  ==========================  ====================================================

    ``overrides`` replace single preset options: one of ``OVERRIDES``. ``pretrained`` loads
    torchvision's ImageNet weights through its weight API (``True`` = ``"IMAGENET1K_V1"``).
    """
    import torchvision  # deferred: importing sag stays cheap

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    depths = tuple(depths)
    bad = [d for d in depths if d not in VALID_DEPTHS]
    if bad:
        raise ValueError(f"invalid SAG depth(s) {bad}; valid depths are 1, 2, 3, 4 (or () for the baseline)")
    if len(set(depths)) != len(depths):
        raise ValueError(f"repeated SAG depth in {depths}; give each depth at most once")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid options: {', '.join(OVERRIDES)}")
    options = preset_options(preset, depths) | overrides
    if options["upsample"] not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {options['upsample']!r}; valid: {', '.join(UPSAMPLING)}")
    if options["head"] not in HEADS:
        raise ValueError(f"unknown head {options['head']!r}; valid heads: {', '.join(HEADS)}")
    if isinstance(options["l2_depths"], bool):
        options["l2_depths"] = depths if options["l2_depths"] else ()
    stray = sorted(set(options["l2_depths"]) - set(depths))
    if stray:
        raise ValueError(f"l2_depths {stray} has no SAG module; choose among the model's depths {depths}")
    _check_input_size(tuple(options["input_size"]) if "input_size" in options else (160, 64), depths)

    if backbone in SMALL_BACKBONES:
        if pretrained:
            raise ValueError(
                f"backbone {backbone!r} has no ImageNet weights (it is sag's own small CPU network); drop "
                "--pretrained, or choose resnet18/34/50/101/152 for pretrained weights"
            )
        from sag.models.small import resnet_small

        return SAGNet(resnet_small(), num_classes, depths, **options)
    weights = None
    if pretrained:
        weights_enum = torchvision.models.get_model_weights(backbone)
        weights = weights_enum["IMAGENET1K_V1" if pretrained is True else pretrained]
    try:
        net = torchvision.models.get_model(backbone, weights=weights)
    except OSError as err:  # URLError, HTTPError, a socket error: the weights could not be downloaded
        raise _weights_error(weights, err) from err
    return SAGNet(net, num_classes, depths, **options)


def _weights_error(weights: Any, err: OSError) -> FileNotFoundError:
    """The one-line error for ImageNet weights neither cached nor downloadable: how to do without, or offline."""
    import torch

    name = weights.url.rsplit("/", 1)[-1]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return FileNotFoundError(
        f"ImageNet weights {name} are not in {cache} and cannot be downloaded ({type(err).__name__}: {err}); "
        f"pass --no-pretrained (pretrained=False) to train from scratch, or copy {name} from {weights.url} into "
        f"{cache} for offline use"
    )


def _check_input_size(size: tuple[int, int], depths: tuple[int, ...]) -> None:
    """Raise ValueError if the deepest grid cannot divide an input of ``size`` (H, W)."""
    from sag.models.network import STAGE_STRIDES

    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (height, width), got {size}")
    if not depths:
        return  # the baseline takes any size
    stride = STAGE_STRIDES[max(depths)]
    if size[0] % stride or size[1] % stride:
        valid = ", ".join(f"D{d}: multiples of {STAGE_STRIDES[d]}" for d in VALID_DEPTHS)
        raise ValueError(f"input size {size[0]}x{size[1]} cannot be divided into the SAG grid ({valid}); try 160x64")
