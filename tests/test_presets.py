"""The presets against transcriptions of the released code's training and test behaviour, and the paper's text."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sag import build_model
from sag.data import ImageRecord
from sag.engine import RECIPES, TrainConfig, build_optimizer, build_scheduler, train
from sag.engine.split import hold_out_images
from sag.evaluation import PROTOCOLS, evaluate_features, evaluate_ranking, get_protocol

TINY = {"num_train_ids": 8, "num_test_ids": 4, "images_per_id": 4, "size": (64, 32), "num_cameras": 2}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------- transcriptions of the release
def released_weights_init_kaiming(m: nn.Module) -> None:
    """The released ``weights_init_kaiming``, dispatching on the class name as it does (modern init calls)."""
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.kaiming_normal_(m.weight.data, a=0, mode="fan_in")
    elif name.find("Linear") != -1:
        nn.init.kaiming_normal_(m.weight.data, a=0, mode="fan_out")
        nn.init.constant_(m.bias.data, 0.0)
    elif name.find("BatchNorm1d") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0.0)


def released_weights_init_classifier(m: nn.Module) -> None:
    """The released ``weights_init_classifier``."""
    if m.__class__.__name__.find("Linear") != -1:
        nn.init.normal_(m.weight.data, std=0.001)
        nn.init.constant_(m.bias.data, 0.0)


def released_loop_lrs(num_epochs: int = 201) -> list[float]:
    """The released train.py's schedule, run on today's torch: StepLR(30, 0.1) stepped at the START of epochs 1..N."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    lrs = []
    for _epoch in range(1, num_epochs + 1):  # for epoch in range(1, num_epochs + 1):
        with warnings.catch_warnings():  # today's torch warns: "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()  # if phase == 'train': scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # the epoch's SGD steps (no gradient: nothing moves)
    return lrs


def released_loop_lrs_pytorch04(num_epochs: int = 201) -> list[float]:
    """The same loop on the PyTorch 0.4 of 2018, whose _LRScheduler.__init__ reset last_epoch to -1 after its step."""
    last_epoch, lrs = -1, []
    for _epoch in range(1, num_epochs + 1):
        last_epoch += 1  # step(): epoch = last_epoch + 1
        lrs.append(0.01 * 0.1 ** (last_epoch // 30))  # StepLR.get_lr: base_lr * gamma ** (last_epoch // step_size)
    return lrs


def released_compute_map(good: np.ndarray, junk: np.ndarray, index: np.ndarray) -> tuple[float, np.ndarray]:
    """The released compute_mAP of one query: trapezoid AP; a query without a good match gets cmc[0] = -1."""
    cmc = np.zeros(len(index), dtype=int)
    if good.size == 0:
        cmc[0] = -1
        return 0.0, cmc
    index = index[~np.isin(index, junk)]
    rows_good = np.flatnonzero(np.isin(index, good))
    cmc[rows_good[0] :] = 1
    ap, ngood = 0.0, len(good)
    for i in range(ngood):
        precision = (i + 1) / (rows_good[i] + 1)
        old_precision = i / rows_good[i] if rows_good[i] != 0 else 1.0
        ap += (1.0 / ngood) * (old_precision + precision) / 2
    return ap, cmc


def released_evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams) -> tuple[np.ndarray, float]:
    """The released test loop: cosine scores, per-query compute_mAP, CMC and mAP divided by ALL queries."""
    cmc_sum, ap_sum = np.zeros(len(g_pids)), 0.0
    for i in range(len(q_pids)):
        index = np.argsort(-(gf @ qf[i]), kind="stable")
        good = np.flatnonzero((g_pids == q_pids[i]) & (g_cams != q_cams[i]))
        junk = np.concatenate(
            [np.flatnonzero(g_pids == -1), np.flatnonzero((g_pids == q_pids[i]) & (g_cams == q_cams[i]))]
        )
        ap, cmc = released_compute_map(good, junk, index)
        if cmc[0] == -1:
            continue
        cmc_sum += cmc
        ap_sum += ap
    return cmc_sum / len(q_pids), ap_sum / len(q_pids)


# --------------------------------------------------------------------------------------------- 1. new-layer init
def test_released_init_of_the_new_layers_matches_the_release():
    model = build_model("resnet50", num_classes=751, depths=(4,), preset="released_code")
    bottleneck, bn, classifier = model.head[0], model.head[1], model.head[4]
    assert bottleneck.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.02)  # kaiming fan_out: 0.0625
    assert classifier.weight.std().item() == pytest.approx(0.001, rel=0.02)  # torch's default would be 0.0255
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.005) and bn.weight.std().item() == pytest.approx(
        0.02, rel=0.2
    )
    assert not bottleneck.bias.any() and not classifier.bias.any() and not bn.bias.any()
    conv = model.sag["4"].conv
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 2048), rel=0.1)  # kaiming fan_in: 0.03125
    # the paper preset keeps torch's defaults (the paper does not say): classifier std 1/sqrt(3 * 2048)
    paper = build_model("resnet50", num_classes=751, depths=(4,), preset="paper")
    assert paper.head.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 2048), rel=0.02)


def test_released_init_is_the_transcribed_init_draw_for_draw():
    torch.manual_seed(5)
    ours = build_model("resnet18", num_classes=20, depths=(4,), preset="released_code", init="torch")
    theirs = build_model("resnet18", num_classes=20, depths=(4,), preset="released_code", init="torch")
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(6)
    from sag.models.heads import init_head_released

    init_head_released(ours.head)
    ours.sag["4"].init_released()
    torch.manual_seed(6)
    add_block, classifier = theirs.head[:4], theirs.head[4]
    add_block.apply(released_weights_init_kaiming)
    classifier.apply(released_weights_init_classifier)
    theirs.sag["4"].conv.apply(released_weights_init_kaiming)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the attention BN (BatchNorm2d) and the conv bias are not touched by the release
    assert torch.equal(ours.sag["4"].bn.weight, torch.ones(1))


# ---------------------------------------------------------------------------------------------- 2. lr groups
@pytest.mark.parametrize("preset", ["released_code", "paper"])
def test_only_the_classifier_block_trains_at_the_new_rate(preset):
    model = build_model("resnet18", num_classes=7, depths=(4,), preset=preset)
    optimizer = build_optimizer(model, RECIPES[preset])
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_lr[0.1] == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in model.sag.parameters()} <= by_lr[0.01]

    # one SGD step, ours vs the released optimiser (head at 0.1, every other parameter at 0.01)
    twin = build_model("resnet18", num_classes=7, depths=(4,), preset=preset)
    twin.load_state_dict(model.state_dict())
    head_ids = {id(p) for p in twin.head.parameters()}
    recipe = RECIPES[preset]
    released = torch.optim.SGD(
        [
            {"params": [p for p in twin.parameters() if id(p) not in head_ids], "lr": 0.01},
            {"params": list(twin.head.parameters()), "lr": 0.1},
        ],
        weight_decay=5e-4,
        momentum=0.9,
        nesterov=recipe.nesterov,
    )
    x, y = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    nn.functional.cross_entropy(model.train()(x), y).backward()
    torch.manual_seed(0)
    nn.functional.cross_entropy(twin.train()(x), y).backward()
    optimizer.step()
    released.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- 3. schedule
def _trainer_lrs(recipe, epochs: int) -> list[list[float]]:
    """The lrs the trainer logs: read before each epoch, the scheduler stepped after it (sag.engine.trainer)."""
    model = nn.Linear(2, 2)
    model.parameter_groups = lambda sag="backbone": ([model.weight], [model.bias])
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe)
    lrs = []
    for _ in range(epochs):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_lr_of_every_released_epoch_is_the_released_loops():
    recipe = RECIPES["released_code"]
    expected = released_loop_lrs(recipe.epochs)
    assert len(expected) == 201 and expected[28] == 0.01 and expected[29] == pytest.approx(0.001)  # drop at epoch 30
    ours = _trainer_lrs(recipe, recipe.epochs)
    for epoch, ((backbone, new), lr) in enumerate(zip(ours, expected, strict=True), start=1):
        assert backbone == pytest.approx(lr, rel=1e-12), epoch
        assert new == pytest.approx(10 * lr, rel=1e-12), epoch
        assert recipe.lr(epoch) == pytest.approx((lr, 10 * lr), rel=1e-12)
        assert lr == pytest.approx(0.01 * 0.1 ** (epoch // 30), rel=1e-12)


def test_paper_schedule_is_the_formula_and_the_2018_pytorch_loop():
    recipe = RECIPES["paper"]
    ours = _trainer_lrs(recipe, recipe.epochs)
    old = released_loop_lrs_pytorch04(recipe.epochs)
    for epoch, ((backbone, _), lr) in enumerate(zip(ours, old, strict=True), start=1):
        assert backbone == pytest.approx(lr, rel=1e-12)
        assert lr == pytest.approx(0.01 * 0.1 ** ((epoch - 1) // 30), rel=1e-12)  # k = epoch - 1, drops at 31, 61...
    drops = [e for e in range(2, 201) if recipe.lr_factor(e) < recipe.lr_factor(e - 1)]
    assert drops == [31, 61, 91, 121, 151, 181]  # six drops in 200 epochs


# ------------------------------------------------------------------------------------- 4. ids, validation, drop_last
def test_first_image_of_each_id_is_held_out_and_every_id_trains():
    records = [
        ImageRecord(f"{pid:04d}_c{cam}_{i}.jpg", pid, cam) for pid in (3, 7, 9) for cam in (1, 2) for i in (1, 0)
    ]
    records.append(ImageRecord("0011_c1_0.jpg", 11, 1))  # an id with one image keeps it for training
    split = hold_out_images(records)
    assert split.num_classes == 4 and sorted({r.pid for r in split.train}) == [0, 1, 2, 3]
    assert [r.path for r in split.images] == ["0003_c1_0.jpg", "0007_c1_0.jpg", "0009_c1_0.jpg"]
    assert [r.pid for r in split.images] == [0, 1, 2]  # labelled as in training
    assert len(split.train) + len(split.images) == len(records) and not split.query and not split.held_out


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("released_code", {"validation": "images", "test_checkpoint": "last", "drop_last": False}),
        ("paper", {"validation": "images", "test_checkpoint": "best", "drop_last": True}),
    ],
)
def test_preset_defaults_of_a_run(preset, expected):
    config = TrainConfig(preset=preset).resolved()
    assert {k: getattr(config, k) for k in expected} == expected
    assert config.protocol == PROTOCOLS[preset].to_dict()
    assert config.pretrained is False  # the synthetic demo trains from scratch
    assert TrainConfig(preset=preset, dataset="market1501", data_root="data").resolved().pretrained is True
    small = TrainConfig(preset=preset, dataset="market1501", data_root="data", backbone="resnet_small")
    assert small.resolved().pretrained is False  # no ImageNet weights exist for it
    assert TrainConfig(preset=preset, val_ids=5).resolved().validation == "ids"  # the former default, on request
    with pytest.raises(ValueError, match="--val-ids 5 holds out ids: it needs --validation ids, not images"):
        TrainConfig(preset=preset, val_ids=5, validation="images").resolved().validate()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from sag.data import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("data") / "synthetic", seed=0, progress=False, **TINY)


def _run(root: Path, out: Path, **options) -> tuple[dict, dict, list]:
    defaults = {
        "data_root": str(root), "dataset_options": TINY, "backbone": "resnet18", "depths": (4,), "epochs": 2,
        "batch_size": 5, "eval_every": 1, "input_size": (64, 32), "out": str(out), "progress": False, "device": "cpu",
    }  # fmt: skip
    config = TrainConfig(**(defaults | options))
    result = train(config)
    summary = json.loads((out / "summary.json").read_text())
    return json.loads((out / "config.json").read_text()), summary, result.history


def test_paper_run_trains_every_id_drops_last_and_tests_the_best_epoch(tiny_root, tmp_path):
    config, summary, history = _run(tiny_root, tmp_path / "paper", preset="paper")
    assert config["num_classes"] == 8 and config["val_images"] == 8  # all 8 ids; one image of each validates
    assert all(r["images"] == 20 for r in history)  # 24 images, batches of 5, the incomplete one dropped
    assert all(set(r["val"]) == {"loss", "accuracy"} for r in history)
    best = max(history, key=lambda r: (r["val"]["accuracy"], -r["val"]["loss"]))
    assert summary["best_epoch"] == best["epoch"] and summary["tested"] == "best"
    assert summary["protocol"] == config["protocol"] == {"flip": False, "ap": "trapezoid", "average": "all"}
    assert config["recipe"]["validation"] == "images" and config["recipe"]["sag_lr"] == "backbone"


def test_released_run_keeps_the_last_batch_and_tests_the_last_epoch(tiny_root, tmp_path, capsys):
    from sag.engine import read_checkpoint

    config, summary, history = _run(tiny_root, tmp_path / "released", preset="released_code")
    assert config["num_classes"] == 8 and all(r["images"] == 24 for r in history)  # drop_last off: 4 + 1 batches
    assert summary["best_epoch"] == 2 and summary["tested"] == "last"
    assert summary["protocol"] == {"flip": True, "ap": "trapezoid", "average": "all"}
    best, last = read_checkpoint(tmp_path / "released" / "best.pt"), read_checkpoint(tmp_path / "released" / "last.pt")
    for key, value in last["model"].items():
        assert torch.equal(value, best["model"][key]), key
    printed = capsys.readouterr().out
    assert re.search(r"test protocol +flip on, trapezoid AP, averaged over all queries", printed)
    assert re.search(r"tested epoch +2 \(last\)", printed)
    with pytest.raises(ValueError, match="the last batch of each epoch holds 1 image"):
        _run(tiny_root, tmp_path / "one", preset="released_code", batch_size=23)


# ---------------------------------------------------------------------------------------------- 5. test protocol
def test_protocol_defaults_and_overrides():
    assert PROTOCOLS["released_code"].to_dict() == {"flip": True, "ap": "trapezoid", "average": "all"}
    assert get_protocol("released_code", flip=False, ap="standard").to_dict() == {
        "flip": False,
        "ap": "standard",
        "average": "all",
    }
    with pytest.raises(ValueError, match="unknown averaging 'some'; valid: valid, all"):
        get_protocol("paper", average="some")


def test_released_protocol_scores_like_the_released_evaluate():
    rng = np.random.default_rng(0)
    q_pids, q_cams = np.array([1, 2, 3, 4, 9]), np.array([1, 1, 2, 2, 1])  # id 9 has no match in the gallery
    g_pids, g_cams = rng.choice([1, 2, 3, 4, 5, -1], size=40), rng.integers(1, 4, size=40)
    qf = rng.standard_normal((5, 8))
    gf = rng.standard_normal((40, 8))
    qf, gf = qf / np.linalg.norm(qf, axis=1, keepdims=True), gf / np.linalg.norm(gf, axis=1, keepdims=True)
    cmc, m_ap = released_evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams)
    ours = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, ap="trapezoid", average="all")
    assert ours["num_skipped_queries"] == 1
    assert ours["mAP"] == pytest.approx(m_ap, abs=1e-12) and ours["rank1"] == pytest.approx(cmc[0], abs=1e-12)
    np.testing.assert_allclose(ours["cmc"][:40], cmc, atol=1e-12)
    valid = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, ap="trapezoid", average="valid")
    assert valid["mAP"] == pytest.approx(m_ap * 5 / 4, abs=1e-12)  # the 4 matched queries only


def test_averaging_over_all_queries_counts_a_no_match_query_as_zero():
    distmat = [[0.0, 1.0], [0.0, 1.0]]
    args = (distmat, [5, 7], [5, 6], [0, 0], [1, 1])  # query 7 has no good match
    valid, every = evaluate_ranking(*args, average="valid"), evaluate_ranking(*args, average="all")
    assert (valid["mAP"], valid["rank1"], valid["mINP"]) == (1.0, 1.0, 1.0)
    assert (every["mAP"], every["rank1"], every["mINP"]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown average 'every'"):
        evaluate_ranking(*args, average="every")


def test_evaluate_uses_the_presets_protocol(tiny_root):
    from sag.data import load_dataset
    from sag.evaluation import evaluate

    data = load_dataset("synthetic", tiny_root)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=8, depths=(4,), preset="released_code", input_size=(64, 32))
    released = evaluate(model, data, preset="released_code")
    assert released["protocol"] == {"flip": True, "ap": "trapezoid", "average": "all"}
    explicit = evaluate(model, data, preset="released_code", flip=True, ap="trapezoid", average="all")
    assert explicit["mAP"] == released["mAP"] and explicit["protocol"] == released["protocol"]
    assert evaluate(model, data, preset="released_code", flip=False)["mAP"] != released["mAP"]


# ------------------------------------------------------------------------------------------- 6. ImageNet weights
def test_weights_that_cannot_be_downloaded_name_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cache = re.escape(str(tmp_path / "hub" / "checkpoints"))
    with pytest.raises(FileNotFoundError, match=rf"resnet18-f37072fd.pth are not in {cache}.*--no-pretrained.*{cache}"):
        build_model("resnet18", num_classes=5, depths=(4,), pretrained=True)


def test_cli_pretrained_defaults(tmp_path):
    from sag.cli import build_parser
    from sag.commands.train import config_from_args

    parse = build_parser().parse_args
    real = config_from_args(parse(["train", "--dataset", "market1501", "--data-root", str(tmp_path)])).resolved()
    assert real.pretrained is True
    off = parse(["train", "--dataset", "market1501", "--data-root", str(tmp_path), "--no-pretrained"])
    assert config_from_args(off).resolved().pretrained is False
    assert config_from_args(parse(["train"])).resolved().pretrained is False  # the synthetic demo
    args = parse(["train", "--dataset", "synthetic", "--no-flip", "--ap", "standard", "--average", "valid"])
    cfg = config_from_args(args).resolved()
    assert cfg.protocol == {"flip": False, "ap": "standard", "average": "valid"}
    assert dataclasses.replace(cfg, preset="released_code").resolved().flip is False  # given values stay


def test_zero_center_reading_of_the_paper_is_an_option():
    from sag.data.transforms import IMAGENET_MEAN, build_transforms

    assert TrainConfig().resolved().transforms == "paper"  # default reading: the [-1, 1] scaling alone
    config = TrainConfig(zero_center=True).resolved()
    assert config.to_dict()["zero_center"] is True  # recorded in config.json
    from PIL import Image

    image = Image.new("RGB", (32, 64), (200, 100, 50))
    x = build_transforms(config.transforms, train=False, size=(64, 32))(image)[:, 0, 0]
    pixel = torch.tensor([200, 100, 50]) / 255
    expected = (2 * pixel - 1) - (2 * torch.tensor(IMAGENET_MEAN) - 1)  # [-1, 1], then minus the mean pixel
    torch.testing.assert_close(x, expected.float(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="--zero-center applies to the \\[-1, 1\\] pixels of the paper preset"):
        TrainConfig(preset="released_code", zero_center=True).resolved().validate()
