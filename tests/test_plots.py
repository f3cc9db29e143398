"""Figures: rendered to PNG with Agg, and their axes/artists checked against the data they were given."""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

from sag import plots
from sag.models import build_model
from sag.plots.style import COLORS

matplotlib.use("Agg")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def _png(fig, tmp_path, name="fig.png"):
    path = plots.save_figure(fig, tmp_path / name, dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind
    return path


def test_to_display_image_undoes_each_normalisation():
    pixels = np.random.default_rng(0).random((8, 4, 3))
    paper = torch.from_numpy((pixels - 0.5) / 0.5).permute(2, 0, 1)  # (3, H, W) in [-1, 1]
    np.testing.assert_allclose(plots.to_display_image(paper, "paper"), pixels, atol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    imagenet = np.moveaxis((pixels - mean) / std, -1, 0)
    np.testing.assert_allclose(plots.to_display_image(imagenet, "imagenet"), pixels, atol=1e-6)
    np.testing.assert_allclose(plots.to_display_image((pixels * 255).astype(np.uint8)), pixels, atol=1 / 255)
    with pytest.raises(ValueError, match="valid"):
        plots.to_display_image(paper, "zscore")


def test_upsample_grid_nearest_keeps_cells():
    up = plots.upsample_grid(torch.tensor([[[0.75], [0.25]]]), (4, 2))
    np.testing.assert_allclose(up, [[0.75, 0.75], [0.75, 0.75], [0.25, 0.25], [0.25, 0.25]])


def test_attention_grids_figure4_layout(tmp_path):
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    grids = {4: torch.tensor([[[[0.9], [0.1]]], [[[0.5], [0.5]]]]), 3: torch.full((2, 1, 4, 2), 1 / 8)}
    fig = plots.plot_attention_grids(images, grids)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["input", "D4 (h=2, w=1)", "D3 (h=4, w=2)"]
    assert all(len(ax.images) == 1 for ax in axes[:, 0])
    assert all(len(ax.images) == 2 for ax in axes[:, 1:].flat)  # photo + heat overlay
    heat = axes[0, 1].images[1].get_array()
    assert heat.shape == (64, 32) and heat[0, 0] == pytest.approx(1.0) and heat[-1, 0] == pytest.approx(1 / 9)
    assert axes[0, 1].texts[0].get_text() == "peak x1.8"  # 0.9 vs uniform 0.5
    assert axes[1, 2].texts[0].get_text() == "peak x1.0"
    _png(fig, tmp_path)
    with pytest.raises(ValueError, match="one per image"):
        plots.plot_attention_grids(images, {4: grids[4][:1]})


def test_attention_in_units_of_the_uniform_weight_on_one_scale_per_depth(tmp_path):
    images = torch.rand(2, 3, 64, 32) * 2 - 1
    grids = {4: torch.tensor([[[[0.9], [0.1]]], [[[0.5], [0.5]]]]), 3: torch.full((2, 1, 4, 2), 1 / 8)}
    fig = plots.plot_attention_grids(images, grids, scale="uniform")
    axes = [ax for ax in fig.axes if ax.images]  # the colour bars' axes hold no image
    axes = np.array(axes).reshape(2, 3)
    d4_peaked, d4_flat, d3_flat = (axes[0, 1].images[1], axes[1, 1].images[1], axes[0, 2].images[1])
    assert d4_peaked.get_array()[0, 0] == pytest.approx(1.8) and d4_peaked.get_array()[-1, 0] == pytest.approx(0.2)
    np.testing.assert_allclose(d4_flat.get_array(), 1.0)  # a flat grid: one value, the uniform weight
    np.testing.assert_allclose(d3_flat.get_array(), 1.0)
    assert d4_peaked.get_clim() == d4_flat.get_clim() == (0.0, 2.0)  # one scale per depth, 1 in the middle
    assert len(fig.axes) == 6 + 2  # a colour bar under each depth's column
    _png(fig, tmp_path)
    with pytest.raises(ValueError, match="scale must be 'own' or 'uniform'"):
        plots.plot_attention_grids(images, grids, scale="max")


def test_model_attention_uses_every_depth_deepest_first(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, depths=(2, 4)).train()
    fig = plots.plot_model_attention(model, torch.randn(1, 3, 64, 32))
    assert model.training
    assert [ax.get_title() for ax in fig.axes] == ["input", "D4 (h=2, w=1)", "D2 (h=8, w=4)"]
    with pytest.raises(ValueError, match="baseline"):
        plots.plot_model_attention(build_model("resnet18", num_classes=3, depths=()), torch.randn(1, 3, 64, 32))


def test_rank_gallery_marks_correct_incorrect_and_junk():
    g_pids = np.array([5, 5, 7, 5, 0, -1])
    g_cams = np.array([0, 1, 1, 2, 1, 1])
    distances = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.05])
    ranked = plots.rank_gallery(distances, 5, 0, g_pids, g_cams, top_k=5)
    assert ranked == [(5, "junk", None), (0, "junk", None), (2, "incorrect", 1), (4, "incorrect", 2), (1, "correct", 3)]
    skipped = plots.rank_gallery(distances, 5, 0, g_pids, g_cams, top_k=2, skip_junk=True)
    assert skipped == [(2, "incorrect", 1), (4, "incorrect", 2)]


def test_ranked_lists_borders_follow_the_protocol(tmp_path):
    rng = np.random.default_rng(0)
    query = [rng.integers(0, 255, (16, 8, 3), dtype=np.uint8) for _ in range(2)]
    gallery = [rng.integers(0, 255, (16, 8, 3), dtype=np.uint8) for _ in range(4)]
    distmat = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    fig = plots.plot_ranked_lists(
        query, gallery, distmat, q_pids=[1, 2], g_pids=[1, 2, 1, 3], q_camids=[0, 1], g_camids=[1, 1, 0, 1], top_k=4
    )
    axes = np.array(fig.axes).reshape(2, 5)

    def border(ax):
        (rect,) = [p for p in ax.patches if p.get_gid()]
        return rect.get_gid(), to_hex(rect.get_edgecolor())

    assert [border(ax)[0] for ax in axes[0]] == ["query", "correct", "incorrect", "junk", "incorrect"]
    assert [border(ax)[0] for ax in axes[1]] == ["query", "incorrect", "incorrect", "junk", "incorrect"]
    assert border(axes[0, 1])[1] == COLORS["correct"] and border(axes[0, 2])[1] == COLORS["incorrect"]
    assert axes[0, 3].get_title().startswith("junk")
    assert axes[0, 4].get_title().startswith("#3")  # junk does not take a rank
    _png(fig, tmp_path)
    with pytest.raises(ValueError, match="distmat"):
        plots.plot_ranked_lists(query, gallery, distmat[:, :3], [1, 2], [1, 2, 1, 3], [0, 0], [1, 1, 0, 1])


def test_cmc_curves_in_percent_with_paper_points(tmp_path):
    cmc = np.linspace(0.5, 1.0, 30)
    fig = plots.plot_cmc({"ours D4": cmc, "baseline": cmc * 0.9}, {"paper D4": {1: 90.17, 5: 96.38, 10: 97.48}})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(lines["ours D4"].get_ydata(), cmc[:20] * 100)
    assert list(lines["ours D4"].get_xdata()) == list(range(1, 21))
    assert list(lines["paper D4"].get_xdata()) == [1, 5, 10] and lines["paper D4"].get_linestyle() == "None"
    _png(fig, tmp_path)


def test_training_curves_from_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    epochs = [
        {"epoch": 1, "loss": 3.0, "accuracy": 0.2, "lr": [0.01, 0.1]},
        {"epoch": 2, "loss": 2.0, "accuracy": 0.5, "lr": [0.01, 0.1], "val": {"rank1": 0.6, "mAP": 0.4}},
        {"epoch": 3, "loss": 1.5, "accuracy": 0.7, "lr": [0.01, 0.1]},
        {"epoch": 4, "loss": 1.0, "accuracy": 0.9, "lr": [0.01, 0.1], "val": {"rank1": 0.8, "mAP": 0.55}},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    fig = plots.plot_training_curves(run)
    loss_ax, acc_ax, val_ax = fig.axes[:3]
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [3.0, 2.0, 1.5, 1.0])
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [20, 50, 70, 90])
    val = {line.get_label(): line for line in val_ax.lines}
    np.testing.assert_allclose(val["run mAP"].get_xdata(), [2, 4])
    np.testing.assert_allclose(val["run mAP"].get_ydata(), [40, 55])
    _png(fig, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        plots.load_metrics(tmp_path / "missing")


def _results():
    rows = []
    for seed, (b, d4, d1) in enumerate([(60, 66, 58), (62, 70, 60), (64, 68, 59)]):
        rows += [
            {"row": "baseline", "seed": seed, "rank1": b, "mAP": b - 20},
            {"row": "D4", "seed": seed, "rank1": d4, "mAP": d4 - 20},
            {"row": "D1", "seed": seed, "rank1": d1, "mAP": d1 - 20},
        ]
    return rows


def test_ablation_bars_with_paper_and_gain(tmp_path):
    fig = plots.plot_ablation(_results(), paper_dataset="market1501", title="t")
    top_r1, top_map, gain_r1, _ = fig.axes
    ours = [p for p in top_r1.patches if to_hex(p.get_facecolor()) == COLORS["ours"]]
    theirs = [p for p in top_r1.patches if to_hex(p.get_facecolor()) == COLORS["paper"]]
    assert [t.get_text() for t in top_r1.get_xticklabels()] == ["baseline", "D1", "D4"]  # Table 1 order
    np.testing.assert_allclose([p.get_height() for p in ours], [62, 59, 68])
    np.testing.assert_allclose([p.get_height() for p in theirs], [83.49, 84.35, 90.17])
    assert len(top_r1.collections) >= 3  # error bars + seed dots
    gains = [p.get_height() for p in gain_r1.patches if to_hex(p.get_facecolor()) == COLORS["ours"]]
    np.testing.assert_allclose(gains, [-3.0, 6.0])  # paired by seed: D1 -3, D4 +6 over the baseline
    assert top_map.get_title() == "mAP"
    _png(fig, tmp_path)
    only = plots.plot_ablation(_results(), paper_dataset=None, show_gain=False)
    assert len(only.axes) == 2 and all(to_hex(p.get_facecolor()) == COLORS["ours"] for p in only.axes[0].patches)


def test_attention_mass_bars(tmp_path):
    areas = {"background_area": 0.5, "person_area": 0.3, "identity_area": 0.2}
    summary = [
        {"source": "D4", "grid": "5x2", "background": 0.2, "person": 0.3, "identity": 0.5} | areas,
        {"source": "activation", "grid": "5x2", "background": 0.5, "person": 0.3, "identity": 0.2} | areas,
        {"source": "D3", "grid": "10x4", "background": 0.4, "person": 0.3, "identity": 0.3} | areas,
    ]
    fig = plots.plot_attention_mass(summary)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["D4\n(5x2)", "activation\n(5x2)", "D3\n(10x4)", "uniform\n(5x2, 10x4)"]  # one shared reference
    identity = ax.patches[8:12]  # third stacked segment of the four bars
    np.testing.assert_allclose([p.get_height() for p in identity], [50, 20, 30, 20])
    assert [t.get_text() for t in ax.texts] == ["50%", "20%", "30%", "20%"]
    _png(fig, tmp_path)
    lift = plots.plot_attention_mass(summary, kind="lift").axes[0]
    bars = [c for c in lift.containers if hasattr(c, "patches")]
    widths = {(c.get_label(), i): p.get_width() for c in bars for i, p in enumerate(c.patches)}
    assert widths[("identity", 0)] == pytest.approx(2.5) and widths[("background", 0)] == pytest.approx(0.4)
    assert [t.get_text() for t in lift.get_yticklabels()] == ["D4 (5x2)", "activation (5x2)", "D3 (10x4)"]
    assert list(lift.get_yticks()) == [2, 1, 0]  # the first map on top
    (uniform,) = [line for line in lift.lines if line.get_linestyle() == "--"]
    assert list(uniform.get_xdata()) == [1.0, 1.0]  # the uniform line
    with pytest.raises(ValueError, match="valid"):
        plots.plot_attention_mass(summary, kind="pie")


def test_show_identities_is_reexported_lazily():
    assert "show_identities" in plots.__all__
    try:
        func = plots.show_identities
    except ModuleNotFoundError:
        pytest.skip("sag.plots.identities (the data worker's module) is not there yet")
    assert callable(func)


def test_atomic_writes_replace_whole_or_leave_the_old_file(tmp_path):
    from sag.atomic import atomic_path, write_text_atomic

    target = write_text_atomic(tmp_path / "out" / "table.md", "first\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "first\n" and target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "first\n"  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.md"]  # and no temp file is left
