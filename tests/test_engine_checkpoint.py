"""Checkpoints: atomic writes, weights_only loading, RNG round trips and the errors a user can hit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sag.engine import FORMAT_VERSION, TrainConfig, load_checkpoint, read_checkpoint, save_checkpoint
from sag.engine import checkpoint as ckpt


def _spec_state(cfg: TrainConfig, num_classes: int = 5) -> dict:
    spec = ckpt.model_spec(cfg, num_classes)
    model = ckpt.build_from_spec(spec)
    return {"model": model.state_dict(), "model_spec": spec, "config": cfg.to_dict(), "epoch": 3}


@pytest.fixture
def cfg() -> TrainConfig:
    return TrainConfig(backbone="resnet18", depths=(4,), input_size=(64, 32)).resolved()


def test_load_checkpoint_rebuilds_the_model(tmp_path, cfg):
    state = _spec_state(cfg)
    save_checkpoint(tmp_path / "best.pt", state)
    model, loaded_cfg = load_checkpoint(tmp_path / "best.pt")
    assert loaded_cfg == cfg and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key])
    assert model.depths == (4,) and model.train()(torch.zeros(2, 3, 64, 32)).shape == (2, 5)
    assert read_checkpoint(tmp_path / "best.pt")["format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left behind


def test_save_is_atomic_when_writing_fails(tmp_path, cfg, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _spec_state(cfg) | {"epoch": 1})

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _spec_state(cfg) | {"epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_newer_format_version_is_refused(tmp_path, cfg):
    path = tmp_path / "last.pt"
    torch.save(_spec_state(cfg) | {"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}, newer than this sag reads.*upgrade"):
        load_checkpoint(path)


def test_missing_foreign_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope.pt does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not a sag checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*torn.pt"):
        read_checkpoint(tmp_path / "torn.pt")
    torch.save(
        {"format_version": 1, "model": {}, "model_spec": {}, "config": {}, "epoch": 0, "x": _Pickled()},
        tmp_path / "p.pt",
    )
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*p.pt"):  # weights_only=True refuses objects
        read_checkpoint(tmp_path / "p.pt")


class _Pickled:
    """An arbitrary object: weights_only loading must refuse it."""


def test_model_mismatch_names_every_field(tmp_path, cfg):
    found = ckpt.model_spec(cfg, 5)
    other = ckpt.model_spec(TrainConfig(backbone="resnet50", depths=(3,), input_size=(64, 32)), 7)
    with pytest.raises(ValueError, match="different model") as err:
        ckpt.check_model_spec(found, other, tmp_path / "last.pt")
    message = str(err.value)
    assert "backbone: checkpoint 'resnet18' vs requested 'resnet50'" in message
    assert "depths: checkpoint [4] vs requested [3]" in message
    assert "num_classes: checkpoint 5 vs requested 7" in message
    ckpt.check_model_spec(found, dict(found), tmp_path / "last.pt")  # same spec: fine


def test_state_dict_that_does_not_fit(tmp_path, cfg):
    state = _spec_state(cfg)
    state["model_spec"] = ckpt.model_spec(TrainConfig(backbone="resnet18", depths=(3,), input_size=(64, 32)), 5)
    save_checkpoint(tmp_path / "x.pt", state)
    with pytest.raises(ValueError, match="does not fit the model"):
        load_checkpoint(tmp_path / "x.pt")


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # cached gaussians are part of the state
    save_checkpoint(
        tmp_path / "rng.pt", {"model": {}, "model_spec": {}, "config": {}, "epoch": 0, "rng": ckpt.capture_rng_state()}
    )
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.randn(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore_rng_state(read_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.randn(), torch.rand(3))
    assert again[:2] == expected[:2] and np.array_equal(again[2], expected[2]) and again[3] == expected[3]
    assert torch.equal(again[4], expected[4])
