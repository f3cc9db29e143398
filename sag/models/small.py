"""``resnet_small``: a narrow ResNet for CPUs, with ResNet-50's four stages and strides (SAG sits at D1-D4 alike)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

SMALL_WIDTHS = (16, 32, 64, 128)  # channels of stages 1-4 (torchvision's resnet18: 64, 128, 256, 512)
SMALL_BLOCKS = (1, 1, 1, 1)  # BasicBlocks per stage (resnet18: 2, 2, 2, 2)


class SmallResNet(nn.Module):
    """conv1 (stride 2) -> maxpool (stride 2) -> layer1..4 (strides 1, 2, 2, 2): total strides 4, 8, 16, 32.

    The attribute names are torchvision's ResNet's, so ``SAGNet`` wraps it unchanged. No ImageNet weights exist.
    """

    def __init__(
        self, widths: tuple[int, ...] = SMALL_WIDTHS, blocks: tuple[int, ...] = SMALL_BLOCKS, num_classes: int = 1000
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"need 4 positive stage widths and block counts, got {widths} and {blocks}")
        stem = widths[0]
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)  # (N, 3, H, W) -> H/2
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # -> H/4
        layers, channels = [], stem
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            layers.append(_stage(channels, width, count, stride))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers  # strides 4, 8, 16, 32
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)  # torchvision's classifier; SAGNet uses its own head
        for module in self.modules():  # torchvision's ResNet initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> logits (N, num_classes)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _stage(in_channels: int, width: int, count: int, stride: int) -> nn.Sequential:
    """``count`` BasicBlocks; the first changes width / stride through a 1x1 conv + BN shortcut, as torchvision's."""
    downsample = None
    if stride != 1 or in_channels != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(width)
        )
    blocks = [BasicBlock(in_channels, width, stride, downsample)]
    blocks += [BasicBlock(width, width) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


def resnet_small() -> SmallResNet:
    """The CPU backbone: BasicBlock widths 16-32-64-128, one block per stage (about 0.3 M parameters)."""
    return SmallResNet()
