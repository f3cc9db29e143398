"""The dual-resolution, weight-shared ResNet with SAG modules at any set of depths (paper section 3.1).

How stacked modules are wired (the paper leaves this open; this is our reading):

* The upper branch runs the shared backbone on the image upsampled x2 (Eq. 1) and is never
  attended: after every stage it carries the plain high-resolution features f1.
* The lower branch runs the same backbone on the original image. After a stage Di that has a
  SAG module, the attended product v = maxpool(f1) * G (Eq. 6, optionally Eq. 7) *replaces*
  the lower branch's features and flows on into stage i+1. v has the lower branch's shape
  (C, h, w), so every later stage and module sees a well-defined input.
* Every module therefore compares a genuine "2x" input (the upper branch, 2h x 2w) with the
  lower branch at h x w, for any subset of depths (Table 1's D1, D2, D3, D4, D1,2, D1,2,3,
  D1,2,3,4). The upper branch is only computed up to the deepest SAG module.
* Eq. 7 (optional, per depth) divides each sample's whole v by its L2 norm. Normalising every grid cell
  across channels instead would cancel the grid (v_j / ||v_j|| = a_j / ||a_j||); ``l2_mode="cell"`` keeps
  that reading only so the book can show the trap.
* After stage 4 the lower branch (attended or not) is average-pooled into the embedding.
  With ``depths=()`` this is exactly the torchvision ResNet: the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sag.models.heads import INITS, build_head, init_head_released
from sag.models.sag_module import L2_EPS, SAGModule

STAGE_STRIDES = {1: 4, 2: 8, 3: 16, 4: 32}  # total stride of the backbone after each stage


class SAGNet(nn.Module):
    """ResNet backbone + SAG modules at ``depths``; train -> logits (N, classes), eval -> embedding (N, D)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        depths: Iterable[int] = (4,),
        upsample: str = "bilinear",
        l2_depths: Iterable[int] = (),
        l2_mode: str = "sample",
        head: str = "fc",
        pooled_l2: bool = False,
        bottleneck_dim: int = 512,
        dropout: float = 0.5,
        leaky_slope: float = 0.1,
        input_size: tuple[int, int] = (160, 64),
        init: str = "torch",
    ) -> None:
        super().__init__()
        self.depths = tuple(sorted(set(depths)))
        self.upsample = upsample
        self.pooled_l2 = pooled_l2
        self.input_size = tuple(input_size)
        # the shared backbone: one parameter set for both branches
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.stages = nn.ModuleList([backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4])
        channels = [_stage_channels(stage) for stage in self.stages]
        self.sag = nn.ModuleDict(
            {str(d): SAGModule(channels[d - 1], d in set(l2_depths), l2_mode) for d in self.depths}
        )
        self.feature_dim = channels[-1]
        self.head = build_head(head, self.feature_dim, num_classes, bottleneck_dim, dropout, leaky_slope)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        if init == "released":  # the new layers as the released code initialises them (the backbone is untouched)
            init_head_released(self.head)
            for module in self.sag.values():
                module.init_released()

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ValueError unless images is (N, 3, H, W) with H, W divisible by the deepest grid's stride."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        stride = STAGE_STRIDES[max(self.depths)] if self.depths else 1
        h, w = images.shape[-2:]
        if h % stride or w % stride:
            raise ValueError(
                f"input size {h}x{w} cannot be divided into the SAG grid at depth D{max(self.depths)}: "
                f"height and width must be multiples of {stride} (e.g. 160x64, 256x128)"
            )

    def backbone_features(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run both branches: images (N, 3, H, W) -> (features (N, C4, H/32, W/32), {depth: grid (N, 1, h, w)})."""
        self.check_input(images)
        low = self.stem(images)  # (N, 64, H/4, W/4)
        high = None
        if self.depths:
            mode = {"mode": "bilinear", "align_corners": False} if self.upsample == "bilinear" else {"mode": "nearest"}
            high = self.stem(F.interpolate(images, scale_factor=2, **mode))  # Eq. 1: (N, 64, H/2, W/2)
        deepest = max(self.depths, default=0)
        grids: dict[int, torch.Tensor] = {}
        for depth, stage in enumerate(self.stages, start=1):
            low = stage(low)  # (N, C_i, h, w)
            if depth <= deepest:
                high = stage(high)  # (N, C_i, 2h, 2w), same weights
            if depth in self.depths:
                low, grids[depth] = self.sag[str(depth)](high, low)  # v replaces the lower branch
        return low, grids

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled descriptor (N, C4); L2-normalised when the preset says so."""
        features, _ = self.backbone_features(images)
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)  # (N, C4)
        if self.pooled_l2:
            pooled = F.normalize(pooled, p=2.0, dim=1, eps=L2_EPS)
        return pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Training: identity logits (N, num_classes); evaluation: retrieval embedding (N, feature_dim)."""
        pooled = self.embed(images)
        return self.head(pooled) if self.training else pooled

    @torch.no_grad()
    def attention_grids(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """{depth: grid (N, 1, h, w)} for every SAG depth; each grid sums to 1 per sample."""
        return self.backbone_features(images)[1]

    def parameter_groups(self, sag: str = "backbone") -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(slow, fast) parameters for the two learning rates: the head is fast; the SAG modules (conv + BN) are
        slow with the backbone (``sag="backbone"``, both presets) or fast with the head (``sag="new"``)."""
        if sag not in ("backbone", "new"):
            raise ValueError(f"unknown SAG lr group {sag!r}; valid: backbone, new")
        new = (list(self.sag.parameters()) if sag == "new" else []) + list(self.head.parameters())
        new_ids = {id(p) for p in new}
        return [p for p in self.parameters() if id(p) not in new_ids], new


def _stage_channels(stage: nn.Sequential) -> int:
    """Output channels of a torchvision ResNet stage (BasicBlock or Bottleneck)."""
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features
