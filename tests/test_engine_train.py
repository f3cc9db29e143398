"""End-to-end training on a tiny synthetic set (CPU): run dir contents, bit-identical resume, run-dir safety."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from sag.engine import TrainConfig, load_checkpoint, read_checkpoint, save_checkpoint, train, trainer
from sag.engine.checkpoint import FORMAT_VERSION

TINY = {"num_train_ids": 8, "num_test_ids": 4, "images_per_id": 4, "size": (64, 32), "num_cameras": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset: 8 train ids (2 held out for validation), 4 test ids, 64x32 images."""
    from sag.data import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("data") / "synthetic", seed=0, progress=False, **TINY)


def _config(data_root: Path, out: Path, **overrides) -> TrainConfig:
    options = {
        "data_root": str(data_root),
        "dataset_options": TINY,
        "backbone": "resnet18",
        "depths": (4,),
        "epochs": 2,
        "batch_size": 8,
        "eval_every": 1,
        "input_size": (64, 32),
        "out": str(out),
        "progress": False,
        "device": "cpu",
    }
    return TrainConfig(**(options | overrides))


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):
    """One finished 2-epoch run, shared by the read-only tests (released_code: its head's dropout uses the RNG)."""
    out = tmp_path_factory.mktemp("runs") / "r18_d4"
    result = train(_config(data_root, out, preset="released_code"))
    return out, result


def test_run_dir_holds_config_metrics_checkpoints_and_summary(finished_run, capsys):
    out, result = finished_run
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.jsonl",
        "summary.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "released_code" and config["recipe"]["nesterov"] is True
    assert config["recipe"]["epochs"] == 201 and config["recipe"]["erasing_prob"] == 0.8
    assert config["epochs"] == 2 and config["batch_size"] == 8 and config["lr"] == 0.01  # resolved values
    # released_code: every id trains, the first image of each validates (loss only), the last epoch is tested
    assert config["val_images"] == 8 and config["num_classes"] == 8 and config["effective_batch_size"] == 8
    assert config["validation"] == "images" and config["test_checkpoint"] == "last"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines == result.history
    for record in lines:
        assert {"loss", "accuracy", "lr", "images_per_s", "seconds", "val"} <= set(record)
        assert record["lr"] == [0.01, 0.1] and record["images"] == 24  # 32 images less 8 validation ones
        assert set(record["val"]) == {"loss", "accuracy"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {
        "config",
        "test",
        "best_epoch",
        "wall_seconds",
        "device",
        "torch",
        "sag_version",
        "git_commit",
    }
    assert (
        set(summary["test"]) == {"rank1", "rank5", "rank10", "mAP", "mINP", "cmc"} and len(summary["test"]["cmc"]) == 20
    )
    assert summary["test"] == result.final and summary["best_epoch"] == result.best["epoch"]
    assert result.best == {"epoch": 2, **lines[-1]["val"]} and summary["tested"] == "last"

    model, cfg = load_checkpoint(out / "best.pt")
    assert cfg.backbone == "resnet18" and cfg.depths == (4,) and not model.training
    last = read_checkpoint(out / "last.pt")
    assert {"optimizer", "scheduler", "scaler", "rng", "loader", "epoch", "config"} <= set(last)
    assert last["epoch"] == 2 and last["scheduler"]["last_epoch"] == 3  # released: stepped once before epoch 1
    assert isinstance(last["rng"]["torch"], torch.Tensor) and isinstance(last["rng"]["python"]["state"], torch.Tensor)


def test_resume_after_a_kill_is_bit_identical(finished_run, data_root, tmp_path):
    """The 2-epoch run again, killed after epoch 1 (always checkpointed), then --resume: the same weights, optimiser
    and log."""
    straight_dir, straight = finished_run

    class KilledError(Exception):
        pass

    def kill_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KilledError

    with pytest.raises(KilledError):
        train(_config(data_root, tmp_path / "killed", preset="released_code"), callbacks=[kill_after_first_epoch])
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert read_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    resumed = train(_config(data_root, tmp_path / "killed", preset="released_code", resume=True))

    a, b = read_checkpoint(straight_dir / "last.pt"), read_checkpoint(tmp_path / "killed" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    timing = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in straight.history] == [
        {k: v for k, v in r.items() if k not in timing} for r in resumed.history
    ]
    assert resumed.final == straight.final and resumed.best == straight.best


def test_checkpoints_wait_until_cheap_and_best_pt_never_outruns_last_pt(data_root, tmp_path, monkeypatch):
    """Checkpoints after the first and last epochs only, when a middle one would cost too much of the run's time;
    a new best waits in memory for the next checkpoint, so a kill never leaves a best.pt newer than last.pt."""
    monkeypatch.setattr(trainer, "CHECKPOINT_OVERHEAD", 1e-9)  # no middle epoch is long enough for a checkpoint
    run_dir, seen = tmp_path / "run", []

    def checkpoints_after_each_epoch(record):
        seen.append({p.stem: read_checkpoint(p)["epoch"] for p in sorted(run_dir.glob("*.pt"))})
        if record["epoch"] == 2 and len(seen) == 2:
            raise KeyboardInterrupt  # killed after epoch 2: its record is in metrics.jsonl, its state is not saved

    with pytest.raises(KeyboardInterrupt):
        train(_config(data_root, run_dir, epochs=3), callbacks=[checkpoints_after_each_epoch])
    assert seen == [{"best": 1, "last": 1}, {"best": 1, "last": 1}]  # epoch 2's best (if any) was never written
    resumed = train(_config(data_root, run_dir, epochs=3, resume=True), callbacks=[checkpoints_after_each_epoch])
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]  # epoch 2 redone from last.pt
    assert seen[2]["last"] == 2 and seen[2]["best"] <= 2 and seen[3]["last"] == 3  # first and last of the session
    assert read_checkpoint(run_dir / "best.pt")["epoch"] == resumed.best["epoch"]
    assert "optimizer" not in read_checkpoint(run_dir / "best.pt")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_sigusr1_writes_last_pt_after_the_current_epoch_and_the_run_goes_on(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer, "CHECKPOINT_OVERHEAD", 1e-9)  # the time rule alone: first and last epochs only
    run_dir, last_epoch = tmp_path / "run", []

    def signal_in_epoch_2(record):
        last_epoch.append(read_checkpoint(run_dir / "last.pt")["epoch"])
        if record["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # e.g. SLURM, before a time limit

    result = train(_config(data_root, run_dir, epochs=4, eval_every=0), callbacks=[signal_in_epoch_2])
    assert last_epoch == [1, 1, 3, 4]  # epoch 3 was saved on request; epoch 2's record came before the signal
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert "epoch 3/4:" in capsys.readouterr().out.split("(last.pt written on SIGUSR1)")[0].splitlines()[-1]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is gone with the run


def test_existing_run_is_never_overwritten_silently(finished_run, data_root, tmp_path):
    out, _ = finished_run
    before = (out / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match=re.escape(f"{out} already holds a run (config.json, metrics.jsonl")):
        train(_config(data_root, out))
    with pytest.raises(FileExistsError, match="pass --resume to continue it, --overwrite to start it over"):
        train(_config(data_root, out, epochs=1))
    assert (out / "last.pt").read_bytes() == before
    # an error found while setting up (bad data root) leaves an --overwrite target untouched
    with pytest.raises(FileNotFoundError):
        train(_config(tmp_path / "nowhere", out, dataset="market1501", overwrite=True))
    assert (out / "last.pt").read_bytes() == before


def test_finished_run_resumes_to_its_stored_result(finished_run, data_root, capsys):
    out, result = finished_run
    again = train(_config(data_root, out, preset="released_code", resume=True))
    assert again.final == result.final and again.history == result.history
    assert "already finished" in capsys.readouterr().out


def test_resume_errors_name_the_problem(finished_run, data_root, tmp_path):
    out, _ = finished_run
    with pytest.raises(ValueError, match=r"records a different run \(depths: \[4\] in the run, \[3\] requested"):
        train(_config(data_root, out, preset="released_code", depths=(3,), resume=True))
    with pytest.raises(FileNotFoundError, match=f"nothing to resume in {re.escape(str(tmp_path / 'empty'))}"):
        train(_config(data_root, tmp_path / "empty", resume=True))

    other = tmp_path / "other"
    shutil.copytree(out, other)
    (other / "summary.json").unlink()
    state = read_checkpoint(other / "last.pt")
    state["model_spec"] = state["model_spec"] | {"num_classes": 9, "backbone": "resnet34"}
    save_checkpoint(other / "last.pt", state)
    with pytest.raises(ValueError, match="holds a different model") as err:
        train(_config(data_root, other, preset="released_code", epochs=3, resume=True))
    assert "backbone: checkpoint 'resnet34' vs requested 'resnet18'" in str(err.value)
    assert "num_classes: checkpoint 9 vs requested 8" in str(err.value)

    torch.save(state | {"format_version": FORMAT_VERSION + 1}, other / "last.pt")
    with pytest.raises(ValueError, match="newer than this sag reads"):
        train(_config(data_root, other, preset="released_code", epochs=3, resume=True))


def test_bad_inputs_fail_before_any_file_is_written(data_root, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(FileNotFoundError, match=re.escape(f"data root {tmp_path / 'market'} does not exist")):
        train(_config(tmp_path / "market", out, dataset="market1501"))
    with pytest.raises(ValueError, match="unknown preset 'fastest'; valid presets: paper, released_code"):
        train(_config(data_root, out, preset="fastest"))
    with pytest.raises(ValueError, match=r"SAG depth\(s\) \[0\] out of range"):
        train(_config(data_root, out, depths=(0,)))
    with pytest.raises(ValueError, match="cannot hold out 7 of 8 training ids"):
        train(_config(data_root, out, val_ids=7))
    assert not out.exists()


def test_overwrite_with_the_fast_paths(data_root, tmp_path):
    """--overwrite replaces only run files; bf16 autocast, channels_last and the resident loader on CPU."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "summary.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    (out / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint from a killed run")
    (out / "eval_best_synthetic.json").write_text("{}")  # evaluate's and visualize's outputs of the old run
    (out / "figures").mkdir()
    (out / "figures" / "ranks.png").write_bytes(b"old figure")
    options = {"precision": "bf16", "channels_last": True, "resident": True}
    result = train(_config(data_root, out, epochs=1, batch_size=12, val_ids=0, overwrite=True, **options))
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 1 and config["recipe"]["nesterov"] is False and config["precision"] == "bf16"
    assert (out / "notes.txt").read_text() == "mine"  # only run files are replaced
    assert not (out / ".last.pt.x1y2.tmp").exists()
    assert not (out / "eval_best_synthetic.json").exists() and not (out / "figures").exists()
    assert result.best == {"epoch": 1} and len(result.history) == 1 and "val" not in result.history[0]
    assert result.history[0]["images"] == 24 and torch.isfinite(torch.tensor(result.history[0]["loss"]))
    assert load_checkpoint(out / "best.pt")[1].val_ids == 0
