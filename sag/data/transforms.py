"""Input transforms of the two presets, per image (torchvision) and per batch on any device (same distribution)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = (160, 64)  # (H, W), paper section 4.3


@dataclass(frozen=True)
class AugmentConfig:
    """Resize, normalisation and training augmentation of one preset."""

    interpolation: str  # "bilinear" | "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip_p: float = 0.5
    erasing_p: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.4)  # erased fraction of the image (Zhong et al.'s sl, sh)
    erasing_ratio: float = 0.3  # aspect ratio h/w uniform in (r1, 1/r1) (Zhong et al.'s r1)
    erasing_fill: str | float = "random"  # "random": uniform random pixels; a number: that normalised value
    erasing_attempts: int = 100


PRESETS: dict[str, AugmentConfig] = {
    # paper 4.3: resize to 160x64, random flip, pixels scaled to [-1, 1], random erasing (Zhong et al.'s defaults)
    "paper": AugmentConfig(interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), erasing_p=0.5),
    # the released code: bicubic resize, ImageNet mean/std, RandomErasing(probability=0.8, mean=[0, 0, 0])
    "released_code": AugmentConfig(
        interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD, erasing_p=0.8, erasing_fill=0.0
    ),
}
_INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def get_augment(preset: str | AugmentConfig, **overrides: Any) -> AugmentConfig:
    """The preset's AugmentConfig (ValueError listing the presets), with ``overrides`` applied."""
    if isinstance(preset, AugmentConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    config = replace(config, **overrides)
    if config.interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {', '.join(_INTERPOLATION)}, got {config.interpolation!r}")
    if not (isinstance(config.erasing_fill, int | float) or config.erasing_fill == "random"):
        raise ValueError(f"erasing_fill must be 'random' or a number, got {config.erasing_fill!r}")
    return config


def build_transforms(
    preset: str | AugmentConfig, train: bool, size: tuple[int, int] = INPUT_SIZE, **overrides: Any
) -> T.Compose:
    """PIL image -> float tensor (3, H, W): resize, [flip], normalise, [random erasing] (train adds the brackets)."""
    config = get_augment(preset, **overrides)
    steps: list[Any] = [resize_transform(config, size)]
    if train and config.flip_p > 0:
        steps.append(T.RandomHorizontalFlip(config.flip_p))
    steps += [T.ToTensor(), T.Normalize(config.mean, config.std)]
    if train and config.erasing_p > 0:
        steps.append(RandomErasing(config))
    return T.Compose(steps)


def resize_transform(config: AugmentConfig, size: tuple[int, int] = INPUT_SIZE) -> T.Resize:
    """The preset's resize of a PIL image to ``size`` (H, W)."""
    return T.Resize(tuple(size), interpolation=_INTERPOLATION[config.interpolation], antialias=True)


class RandomErasing(torch.nn.Module):
    """Random erasing (Zhong et al., AAAI 2020) of one normalised image (3, H, W), with the torch global RNG."""

    def __init__(self, config: AugmentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Erase one random rectangle with probability ``erasing_p`` (the rectangle must fit; 100 attempts)."""
        cfg = self.config
        if torch.rand(1).item() >= cfg.erasing_p:
            return image
        _, height, width = image.shape
        lo, hi = cfg.erasing_area
        for _ in range(cfg.erasing_attempts):
            area = (lo + (hi - lo) * torch.rand(1).item()) * height * width
            aspect = cfg.erasing_ratio + (1 / cfg.erasing_ratio - cfg.erasing_ratio) * torch.rand(1).item()
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if h < height and w < width:
                top = int(torch.randint(0, height - h + 1, (1,)).item())
                left = int(torch.randint(0, width - w + 1, (1,)).item())
                image = image.clone()
                image[:, top : top + h, left : left + w] = _fill(cfg, (image.shape[0], h, w), image, None)
                return image
        return image

    def extra_repr(self) -> str:
        cfg = self.config
        return f"p={cfg.erasing_p}, area={cfg.erasing_area}, r1={cfg.erasing_ratio}, fill={cfg.erasing_fill!r}"


def normalize_batch(images: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, the same arithmetic as ToTensor + Normalize (bit-identical on CPU)."""
    mean = torch.tensor(config.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=images.device).view(1, 3, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation of a uint8 batch (B, 3, H, W) on its device: flip, normalise, random erasing.

    Per sample it follows exactly the distribution of ``build_transforms(config, train=True)``.
    """
    batch, _, height, width = images.shape
    device = images.device
    if config.flip_p > 0:
        flip = torch.rand(batch, generator=generator, device=device) < config.flip_p  # (B,)
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    out = normalize_batch(images, config)
    if config.erasing_p <= 0:
        return out
    region = erasing_regions(batch, height, width, config, generator, device).unsqueeze(1)  # (B, 1, H, W) bool
    if config.erasing_fill != "random":
        return out.masked_fill_(region, float(config.erasing_fill))
    region = region.squeeze(1)  # (B, H, W)
    count = int(region.sum())  # erased pixels: only these draw random values
    for channel, (mean, std) in enumerate(zip(config.mean, config.std, strict=True)):
        noise = torch.rand(count, generator=generator, device=device)  # uniform pixel values in [0, 1)
        out[:, channel][region] = noise.sub_(mean).div_(std)
    return out


def erasing_regions(
    batch: int, height: int, width: int, config: AugmentConfig, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Boolean masks (B, H, W) of the rectangles random erasing removes (all False for samples left intact)."""
    apply = torch.rand(batch, generator=generator, device=device) < config.erasing_p  # (B,)
    attempts = config.erasing_attempts
    lo, hi = config.erasing_area
    r1 = config.erasing_ratio
    area = (lo + (hi - lo) * torch.rand(batch, attempts, generator=generator, device=device, dtype=torch.float64)) * (
        height * width
    )  # (B, A)
    aspect = r1 + (1 / r1 - r1) * torch.rand(batch, attempts, generator=generator, device=device, dtype=torch.float64)
    h = torch.round(torch.sqrt(area * aspect)).long()  # (B, A); round half to even, like Python's round
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < height) & (w < width)
    first = fits.long().argmax(dim=1)  # the first attempt that fits, as the sequential loop takes
    rows = torch.arange(batch, device=device)
    h, w = h[rows, first], w[rows, first]  # (B,)
    apply &= fits.any(dim=1)
    top = (torch.rand(batch, generator=generator, device=device, dtype=torch.float64) * (height - h + 1)).long()
    left = (torch.rand(batch, generator=generator, device=device, dtype=torch.float64) * (width - w + 1)).long()
    ys = torch.arange(height, device=device).view(1, -1, 1)
    xs = torch.arange(width, device=device).view(1, 1, -1)
    inside_y = (ys >= top.view(-1, 1, 1)) & (ys < (top + h).view(-1, 1, 1))  # (B, H, 1)
    inside_x = (xs >= left.view(-1, 1, 1)) & (xs < (left + w).view(-1, 1, 1))  # (B, 1, W)
    return inside_y & inside_x & apply.view(-1, 1, 1)


def _fill(config: AugmentConfig, shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """What erased pixels become: uniform random pixels (normalised like the image) or a constant."""
    if config.erasing_fill == "random":
        mean = torch.tensor(config.mean, device=like.device)
        std = torch.tensor(config.std, device=like.device)
        noise = torch.rand(shape, generator=generator, device=like.device)
        view = (1, 3, 1, 1) if len(shape) == 4 else (3, 1, 1)
        return noise.sub(mean.view(view)).div(std.view(view))
    return torch.full(shape, float(config.erasing_fill), device=like.device, dtype=like.dtype)
