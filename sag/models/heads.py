"""Classifier heads: the paper's fc and the released code's 512-d bottleneck."""

from __future__ import annotations

from torch import nn

HEADS = ("fc", "bottleneck")


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
