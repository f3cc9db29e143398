"""Classifier heads: the paper's fc and the released code's 512-d bottleneck."""

from __future__ import annotations

from torch import nn

HEADS = ("fc", "bottleneck")
INITS = ("torch", "released")  # torch's default init of the new layers, or the released code's


def build_head(
    name: str, in_dim: int, num_classes: int, bottleneck_dim: int = 512, dropout: float = 0.5, leaky_slope: float = 0.1
) -> nn.Module:
    """'fc': Linear(in, classes); 'bottleneck': Linear(in, 512)-BN1d-LeakyReLU-Dropout-Linear(512, classes)."""
    if name == "fc":
        return nn.Linear(in_dim, num_classes)
    if name == "bottleneck":
        return nn.Sequential(
            nn.Linear(in_dim, bottleneck_dim),
            nn.BatchNorm1d(bottleneck_dim),
            nn.LeakyReLU(leaky_slope),
            nn.Dropout(dropout),
            nn.Linear(bottleneck_dim, num_classes),
        )
    raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(HEADS)}")


def init_head_released(head: nn.Module) -> None:
    """The released code's init: hidden Linear kaiming_normal (fan_out), bias 0; BatchNorm1d weight N(1, 0.02),
    bias 0; the classifier (the last Linear) N(0, 0.001), bias 0."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    for module in head.modules():
        if isinstance(module, nn.Linear) and module is not linears[-1]:
            nn.init.kaiming_normal_(module.weight, a=0, mode="fan_out")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    nn.init.normal_(linears[-1].weight, std=0.001)
    nn.init.zeros_(linears[-1].bias)
