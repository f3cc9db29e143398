"""Attention mass on known regions, checked on hand-made masks and grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sag import analysis
from sag.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def test_mask_to_grid_exact_blocks():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 2  # top-left cell: all identity
    mask[2:, :] = 1  # bottom row of cells: person
    mask[0, 2] = 1  # one pixel of the top-right cell
    frac = analysis.mask_to_grid(mask, (2, 2))
    assert frac.shape == (3, 2, 2)
    np.testing.assert_allclose(frac.sum(axis=0), 1.0)
    np.testing.assert_allclose(frac[2], [[1, 0], [0, 0]])
    np.testing.assert_allclose(frac[1], [[0, 0.25], [1, 1]])
    np.testing.assert_allclose(frac[0], [[0, 0.75], [0, 0]])


def test_mask_to_grid_non_divisible_splits_pixels_by_area():
    mask = np.array([[2, 0, 0]], dtype=np.uint8)  # 1x3 mask onto a 1x2 grid: cell 0 = pixel 0 + half pixel 1
    frac = analysis.mask_to_grid(mask, (1, 2))
    np.testing.assert_allclose(frac[2], [[2 / 3, 0]])
    np.testing.assert_allclose(frac[0], [[1 / 3, 1]])
    np.testing.assert_allclose(analysis.uniform_mass(frac), [2 / 3, 0, 1 / 3])  # = pixel fractions


def test_region_mass_of_a_focused_and_a_uniform_grid():
    mask = np.zeros((10, 4), dtype=np.uint8)
    mask[0:2] = 2  # top fifth: identity detail
    mask[2:8, 1:3] = 1
    frac = analysis.mask_to_grid(mask, (5, 2))
    focused = np.zeros((5, 2))
    focused[0] = 0.5  # all mass on the identity row
    np.testing.assert_allclose(analysis.region_mass(focused, frac), [0, 0, 1])
    uniform = np.full((5, 2), 0.1)
    np.testing.assert_allclose(analysis.region_mass(uniform, frac), analysis.uniform_mass(frac))
    np.testing.assert_allclose(analysis.uniform_mass(frac), [(40 - 8 - 12) / 40, 12 / 40, 8 / 40])
    with pytest.raises(ValueError, match="does not match"):
        analysis.region_mass(np.ones((4, 2)), frac)
    with pytest.raises(ValueError, match="labels"):
        analysis.mask_to_grid(np.full((2, 2), 3), (1, 1))


def test_activation_map_is_nonnegative_and_normalised():
    features = torch.tensor([[[[1.0, -3.0], [2.0, 1.0]], [[3.0, -1.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    act = analysis.activation_map(features)  # channel mean [[2, -2], [1, 1]] -> clamp -> /4
    torch.testing.assert_close(act, torch.tensor([[[0.5, 0.0], [0.25, 0.25]]]))


def test_rows_and_summary_lift():
    mask = np.zeros((8, 4), dtype=np.uint8)
    mask[:4, :2] = 2  # a quarter of the image
    grid = torch.zeros(2, 2, 2)
    grid[0, 0, 0] = 1.0  # image 0 attends only the identity cell
    grid[1] = 0.25  # image 1 is uniform
    rows = analysis.attention_mass_rows({"D4": grid}, [mask, mask], names=["a", "b"])
    assert [r["image"] for r in rows] == ["a", "b"] and rows[0]["grid"] == "2x2"
    assert rows[0]["identity"] == pytest.approx(1.0) and rows[1]["identity"] == pytest.approx(0.25)
    (summary,) = analysis.summarize_mass(rows)
    assert summary["images"] == 2
    assert summary["identity"] == pytest.approx(0.625)
    assert summary["identity_area"] == pytest.approx(0.25)
    assert summary["identity_lift"] == pytest.approx(2.5)
    assert summary["background"] + summary["person"] + summary["identity"] == pytest.approx(1.0)


def test_measure_model_covers_every_depth_and_the_activation_map():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, depths=(3, 4))
    images = torch.randn(3, 3, 64, 32)
    masks = [np.random.default_rng(i).integers(0, 3, size=(128, 64)) for i in range(3)]
    rows = analysis.measure_model(model, images, masks, batch_size=2)
    assert model.training  # the mode is restored
    by_source = {(r["source"], r["grid"]) for r in rows}
    assert by_source == {("D3", "4x2"), ("D4", "2x1"), ("activation", "2x1")}
    assert len(rows) == 9
    for r in rows:
        assert r["background"] + r["person"] + r["identity"] == pytest.approx(1.0)


def test_grid_spread_tells_a_fixed_mask_from_attention():
    fixed = torch.tensor([[0.9], [0.1]]).expand(5, 2, 1)  # (N, h, w): the same 2x1 grid for all 5 images
    stats = analysis.grid_spread(fixed)
    assert stats["cells"] == 2 and stats["peak"] == pytest.approx(1.8)  # 0.9 in units of the uniform 0.5
    assert stats["image_spread"] == pytest.approx(0.0, abs=1e-7)
    flat = torch.full((3, 4, 2), 1 / 8)
    assert analysis.grid_spread(flat)["peak"] == pytest.approx(1.0)
    one_hot = torch.zeros(4, 2, 2)
    one_hot.view(4, 4)[torch.arange(4), torch.arange(4)] = 1.0  # image i puts all its mass on cell i
    stats = analysis.grid_spread(one_hot)
    assert stats["peak"] == pytest.approx(4.0)
    # each cell is 1 for one image of four and 0 for the rest: population std sqrt(3) / 4, times 4 cells
    assert stats["image_spread"] == pytest.approx(3**0.5)
