"""Recipes (DESIGN.md's table), TrainConfig checks and parsing, and the validation split."""

from __future__ import annotations

import re

import pytest
import torch

from sag import build_model
from sag.data import ImageRecord
from sag.data.transforms import PRESETS as AUGMENT_PRESETS
from sag.engine import RECIPES, TrainConfig, build_optimizer, build_scheduler, carve_validation, default_val_ids
from sag.engine.config import DATASET_NAMES, parse_depths, parse_size
from sag.engine.precision import autocast_dtype, make_scaler


def test_recipes_follow_design_table():
    paper, released = RECIPES["paper"], RECIPES["released_code"]
    assert (paper.epochs, paper.batch_size, paper.nesterov) == (200, 32, False)
    assert (released.epochs, released.batch_size, released.nesterov) == (201, 64, True)
    for recipe in (paper, released):
        assert (recipe.lr_backbone, recipe.lr_new, recipe.momentum, recipe.weight_decay) == (0.01, 0.1, 0.9, 5e-4)
        assert (recipe.step_size, recipe.gamma) == (30, 0.1)
    # the data side applies erasing and normalisation: the recipe record must say the same
    assert AUGMENT_PRESETS["paper"].erasing_p == paper.erasing_prob
    assert AUGMENT_PRESETS["released_code"].erasing_p == released.erasing_prob == 0.8
    assert AUGMENT_PRESETS["paper"].mean == (0.5, 0.5, 0.5)  # [-1, 1]
    assert AUGMENT_PRESETS["released_code"].interpolation == released.resize == "bicubic"


@pytest.mark.parametrize("preset", ["paper", "released_code"])
def test_optimizer_groups_and_schedule(preset):
    model = build_model("resnet18", num_classes=5, depths=(4,), preset=preset)
    recipe = RECIPES[preset]
    optimizer = build_optimizer(model, recipe)
    backbone, new = model.parameter_groups(sag=recipe.sag_lr)
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(backbone), len(new)]
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.1]
    assert all(g["nesterov"] is recipe.nesterov and g["weight_decay"] == 5e-4 for g in optimizer.param_groups)
    scheduler = build_scheduler(optimizer, recipe)
    lrs = []
    for _ in range(61):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    first_drop = 30 - recipe.step_offset  # 0-based index of the first epoch at 0.001: epoch 31 paper, 30 released
    assert lrs[first_drop - 1] == [0.01, 0.1]
    assert lrs[first_drop] == pytest.approx([0.001, 0.01])
    assert lrs[first_drop + 30] == pytest.approx([0.0001, 0.001])
    # --lr scales both groups, keeping the recipe's 1:10 ratio
    scaled = build_optimizer(model, recipe, lr=0.02)
    assert [g["lr"] for g in scaled.param_groups] == pytest.approx([0.02, 0.2])


def test_config_resolves_preset_values_and_round_trips():
    cfg = TrainConfig(preset="released_code", depths=[1, 2]).resolved()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.data_root) == (201, 64, 0.01, "data/synthetic")
    assert TrainConfig.from_dict(cfg.to_dict() | {"recipe": {}}) == cfg
    assert TrainConfig(epochs=5, batch_size=8, lr=0.5).resolved().epochs == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; valid datasets: market1501, dukemtmc, cuhk03, synth"),
        ({"preset": "fast"}, "unknown preset 'fast'; valid presets: paper, released_code"),
        ({"depths": (5,)}, "SAG depth(s) [5] out of range; valid depths are 1, 2, 3, 4"),
        ({"depths": (4, 4)}, "repeated SAG depth"),
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'; valid backbones: resnet18"),
        ({"precision": "int8"}, "unknown precision 'int8'; valid: fp32, bf16, fp16"),
        ({"dataset": "market1501"}, "--data-root is required for market1501"),
        ({"input_size": (100, 64)}, "input size 100x64 cannot be divided into the SAG grid at D4"),
        ({"resume": True, "overwrite": True}, "--resume and --overwrite exclude each other"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"val_ids": -1}, "val_ids must be >= 0"),
    ],
)
def test_config_errors_name_the_value(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**options).resolved().validate()


def test_config_knows_the_data_packages_datasets():
    from sag.data import DATASETS

    assert DATASET_NAMES == DATASETS


def test_parse_depths_and_size():
    assert parse_depths("4") == (4,)
    assert parse_depths("1,2,3") == (1, 2, 3)
    assert parse_depths("D1, d4") == (1, 4)
    assert parse_depths("none") == parse_depths("baseline") == ()
    with pytest.raises(ValueError, match=r"empty depths; .* or none for the baseline"):
        parse_depths(" ")  # an empty option (e.g. an unset shell variable) is never the baseline by accident
    assert parse_size("160x64") == (160, 64)
    with pytest.raises(ValueError, match="cannot read depths 'four'"):
        parse_depths("four")
    with pytest.raises(ValueError, match="write HEIGHTxWIDTH"):
        parse_size("160")


def _records(num_ids: int, per_camera: int = 2, cameras: int = 3) -> list[ImageRecord]:
    return [
        ImageRecord(f"{pid}_{cam}_{i}.jpg", pid, cam)
        for pid in range(num_ids)
        for cam in range(cameras)
        for i in range(per_camera)
    ]


def test_validation_split_holds_out_whole_ids():
    records = _records(20)
    split = carve_validation(records, val_ids=4, seed=1)
    assert len(split.held_out) == 4 and split.num_classes == 16
    assert sorted({r.pid for r in split.train}) == list(range(16))  # relabelled for the classifier
    val_paths = {r.path for r in split.query + split.gallery}
    train_paths = {r.path for r in split.train}
    assert not val_paths & train_paths and len(val_paths | train_paths) == len(records)
    assert {r.pid for r in split.query} == set(split.held_out) == {r.pid for r in split.gallery}
    # one query per (held-out id, camera); each id keeps a gallery image in another camera
    assert sorted((r.pid, r.camid) for r in split.query) == sorted({(r.pid, r.camid) for r in split.query})
    assert len(split.query) == 4 * 3 and len(split.gallery) == 4 * 3
    assert carve_validation(records, val_ids=4, seed=1) == split  # seeded
    assert carve_validation(records, val_ids=4, seed=2).held_out != split.held_out


def test_validation_split_prefers_multi_camera_ids_and_checks_size():
    records = _records(6, cameras=2) + [ImageRecord(f"single{i}.jpg", 99, 0) for i in range(3)]
    split = carve_validation(records, val_ids=4, seed=0)
    assert 99 not in split.held_out
    assert carve_validation(records, val_ids=0).query == [] and carve_validation(records, 0).num_classes == 7
    with pytest.raises(ValueError, match=r"cannot hold out 6 of 7 training ids.*--val-ids 5 or fewer"):
        carve_validation(records, val_ids=6)
    assert default_val_ids(751) == 75 and default_val_ids(8) == 2 and default_val_ids(1367) == 100


def test_split_records_train_a_model_of_the_right_width():
    split = carve_validation(_records(10), val_ids=2)
    model = build_model("resnet18", num_classes=split.num_classes, depths=())
    assert model.train()(torch.zeros(2, 3, 64, 32)).shape == (2, 8)


def test_precision_dtypes_scaler_and_fallback(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    assert make_scaler(cpu, torch.float16).is_enabled() and not make_scaler(cpu, torch.bfloat16).is_enabled()
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: fp32, bf16, fp16"):
        autocast_dtype("fp8", cpu)

    def unsupported(*args, **kwargs):
        raise RuntimeError("CPU autocast does not support float16")

    monkeypatch.setattr(torch, "autocast", unsupported)
    with pytest.warns(UserWarning, match="--precision fp16 is not supported on cpu .*training in fp32 instead"):
        assert autocast_dtype("fp16", cpu) is None
