"""The Self Attention Grid module (paper section 3.2, Eq. 3-7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

L2_EPS = 1e-12  # Eq. 7's epsilon
L2_MODES = ("sample", "cell")  # Eq. 7 over all of a sample's v (keeps the grid), or per grid cell (cancels it)


def grid_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the h*w cells of each sample's grid (Eq. 4-5): (N, 1, h, w) -> same, sums to 1."""
    n, c, h, w = scores.shape
    return F.softmax(scores.reshape(n, c * h * w), dim=1).reshape(n, c, h, w)


def max_filter_align(high: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Max-pool high-resolution features over non-overlapping regions onto the grid.

    (N, C, kh*h, kw*w) -> (N, C, h, w); each grid cell keeps the maximum of its kh x kw region.
    """
    h, w = grid_size
    hh, hw = high.shape[-2:]
    if hh % h or hw % w:
        raise ValueError(
            f"high-resolution features of size {hh}x{hw} cannot be split into a {h}x{w} grid "
            "of equal non-overlapping regions; use an input size divisible by 32"
        )
    kernel = (hh // h, hw // w)
    return F.max_pool2d(high, kernel_size=kernel, stride=kernel)


class SAGModule(nn.Module):
    """One SAG module: grid = softmax(ReLU(BN(conv1x1(f_low)))); v = maxpool(f_high) * grid (Eq. 3-7).

    Args:
        channels: channels of the residual stage it follows.
        l2_normalize: apply Eq. 7 to v with eps 1e-12.
        l2_mode: ``"sample"`` (default) divides each sample's whole v (C, h, w) by its norm, which keeps the grid's
            relative weights; ``"cell"`` normalises every grid cell across channels, which cancels the grid exactly
            (v_j / ||v_j|| = a_j / ||a_j||): kept only to show that trap (book chapter 7).
    """

    def __init__(self, channels: int, l2_normalize: bool = False, l2_mode: str = "sample") -> None:
        super().__init__()
        if l2_mode not in L2_MODES:
            raise ValueError(f"unknown l2_mode {l2_mode!r}; valid: {', '.join(L2_MODES)}")
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)  # Eq. 3: h(x) = w^T x + b
        self.bn = nn.BatchNorm2d(1)
        self.l2_normalize = l2_normalize
        self.l2_mode = l2_mode

    def init_released(self) -> None:
        """The released code's init of the attention conv: kaiming_normal (fan_in); bias and BN keep torch's."""
        nn.init.kaiming_normal_(self.conv.weight, a=0, mode="fan_in")

    def grid(self, low: torch.Tensor) -> torch.Tensor:
        """Attention grid G from low-resolution features: (N, C, h, w) -> (N, 1, h, w), sums to 1."""
        return grid_softmax(F.relu(self.bn(self.conv(low))))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (v, grid): v (N, C, h, w) attended features, grid (N, 1, h, w)."""
        g = self.grid(low)  # (N, 1, h, w)
        aligned = max_filter_align(high, tuple(low.shape[-2:]))  # (N, C, h, w)
        v = aligned * g  # Eq. 6, broadcast over channels
        if self.l2_normalize and self.l2_mode == "cell":
            v = F.normalize(v, p=2.0, dim=1, eps=L2_EPS)  # Eq. 7 per cell: the grid cancels
        elif self.l2_normalize:
            v = F.normalize(v.flatten(1), p=2.0, dim=1, eps=L2_EPS).view_as(v)  # Eq. 7 per sample
        return v, g

    def extra_repr(self) -> str:
        return f"l2_normalize={self.l2_normalize}, l2_mode={self.l2_mode!r}"
