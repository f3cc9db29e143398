"""Eq. 7's optional scale (``l2_scale``): a fixed factor after the unit-norm output, checked on its own."""

from __future__ import annotations

import pytest
import torch

from sag.models import SAGModule, build_model


def _pair(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper (N, C, 2h, 2w) and lower (N, C, h, w) features of a 5x2 grid."""
    torch.manual_seed(3)
    return torch.randn(3, 8, 10, 4, device=device), torch.randn(3, 8, 5, 2, device=device)


@pytest.mark.parametrize("mode", ["sample", "cell"])
def test_numeric_scale_multiplies_eq7_and_keeps_the_grid(mode, device):
    high, low = _pair(device)
    plain = SAGModule(8, l2_normalize=True, l2_mode=mode).to(device).train()
    scaled = SAGModule(8, l2_normalize=True, l2_mode=mode, l2_scale=2.5).to(device).train()
    scaled.load_state_dict(plain.state_dict())
    (v1, g1), (v2, g2) = plain(high, low), scaled(high, low)
    torch.testing.assert_close(v2, 2.5 * v1)
    torch.testing.assert_close(g2, g1)
    assert plain.l2_scale == 1.0 and "l2_scale=2.5" in repr(scaled)


def test_rms_scale_gives_every_sample_or_cell_unit_rms(device):
    high, low = _pair(device)
    sample = SAGModule(8, l2_normalize=True, l2_scale="rms").to(device).train()
    v, _ = sample(high, low)  # (3, 8, 5, 2)
    torch.testing.assert_close(v.flatten(1).pow(2).mean(dim=1).sqrt(), torch.ones(3, device=device))
    cell = SAGModule(8, l2_normalize=True, l2_mode="cell", l2_scale="rms").to(device).train()
    v, _ = cell(high, low)
    torch.testing.assert_close(v.pow(2).mean(dim=1).sqrt(), torch.ones(3, 5, 2, device=device))


def test_scale_without_eq7_changes_nothing(device):
    high, low = _pair(device)
    plain, scaled = SAGModule(8).to(device), SAGModule(8, l2_scale=10.0).to(device)
    scaled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(scaled(high, low)[0], plain(high, low)[0])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "auto", True])
def test_bad_scale_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="l2_scale must be a positive number or 'rms'"):
        SAGModule(8, l2_normalize=True, l2_scale=bad)


def test_build_model_passes_the_scale_to_every_eq7_module():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, depths=(3, 4), l2_depths=(3, 4), l2_scale="rms")
    assert {d: m.l2_scale for d, m in model.sag.items()} == {"3": "rms", "4": "rms"}
    logits = model.train()(torch.randn(2, 3, 64, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
