"""Faults during training and bad state on disk: kills and SIGTERM at several points resume to the uninterrupted
result, one writer per run dir, checkpoint and config damage, and the CLI's one-line errors.

The training runs are subprocesses of ``python -m sag train`` on a tiny synthetic set (resnet18 at 64x32, one
torch thread); a hook in the child pauses halfway through a chosen file write so that each signal lands where
the test says, not where the scheduler happens to be.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from sag.cli import main
from sag.engine import read_checkpoint, save_checkpoint
from sag.engine.interrupts import Interrupted, deferred_signals, stop_on_sigterm
from sag.engine.runlock import RunDirBusyError, RunLock

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_train_ids": 8, "num_test_ids": 4, "images_per_id": 4, "size": (64, 32), "num_cameras": 2}
TIMING = ("seconds", "images_per_s")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the child: `python -m sag ARGS`, pausing at the N-th write of TARGET (last.pt, best.pt or metrics) when asked
CHILD = r"""
import os, sys, time
import torch
torch.set_num_threads(1)
pause = os.environ.get("SAG_TEST_PAUSE")  # "TARGET:N:RELEASE_FILE"
if pause:
    from sag import atomic
    import sag.engine.checkpoint as ckpt
    import sag.engine.trainer as trainer
    target, nth, release = pause.split(":", 2)
    seen = []

    def wait():
        print("PAUSED", flush=True)
        for _ in range(1200):  # at most a minute; a signal may end it sooner
            if os.path.exists(release):
                return
            time.sleep(0.05)

    def write(path, data, fsync=True):
        seen.append(path.name)
        if path.name != target or seen.count(target) != int(nth):
            return atomic.write_bytes_atomic(path, data, fsync=fsync)
        with atomic.atomic_path(path, fsync=fsync) as tmp:  # half the file, then the pause, then all of it
            tmp.write_bytes(bytes(data[: len(data) // 2]))
            wait()
            tmp.write_bytes(bytes(data))
        return path

    real_append = trainer.append_metrics

    def append(path, record):
        seen.append("metrics")
        if target == "metrics" and seen.count("metrics") == int(nth):
            wait()
        real_append(path, record)

    ckpt.write_bytes_atomic, trainer.append_metrics = write, append
from sag.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _train_args(data_root: Path, out: Path) -> list[str]:
    return [
        "train",
        *("--dataset", "synthetic", "--data-root", str(data_root), "--out", str(out)),
        *("--synthetic-ids", "8", "--synthetic-test-ids", "4", "--synthetic-images-per-id", "4"),
        *("--synthetic-size", "64x32", "--synthetic-cameras", "2"),
        *("--backbone", "resnet18", "--depths", "4", "--epochs", "2", "--batch-size", "8", "--eval-every", "1"),
        *("--input-size", "64x32", "--device", "cpu", "--no-progress"),
    ]


def _child(args: list[str], pause: str | None = None) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SAG_TEST_PAUSE", None)
    if pause:
        env["SAG_TEST_PAUSE"] = pause
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _interrupt(args: list[str], out: Path, target: str, nth: int, signum: int) -> tuple[int, str]:
    """Run ``python -m sag ARGS``, pause at the ``nth`` write of ``target``, send ``signum``; (exit code, stderr)."""
    release = out.parent / f"{out.name}.release"
    release.unlink(missing_ok=True)
    proc = _child(args, pause=f"{target}:{nth}:{release}")
    for line in proc.stdout:
        if line.startswith("PAUSED"):
            proc.send_signal(signum)
            time.sleep(0.3)  # the signal is in before the write may go on
            release.touch()
            break
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The tiny synthetic set; a killed earlier generation's temporary folder is removed when it is made."""
    from sag.data import make_synthetic

    base = tmp_path_factory.mktemp("data")
    (base / ".synthetic.tmp-killed" / "bounding_box_train").mkdir(parents=True)
    root = make_synthetic(base / "synthetic", seed=0, progress=False, **TINY)
    assert sorted(p.name for p in base.iterdir()) == ["synthetic"]
    return root


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory) -> dict:
    """Two trainings started at once on one run dir (the winner is the uninterrupted reference) and, beside them,
    a third killed with SIGKILL halfway through writing its first best.pt (before any last.pt exists)."""
    base = tmp_path_factory.mktemp("runs")
    race_dir, killed_dir = base / "raced", base / "killed"
    with ThreadPoolExecutor(1) as pool:
        racers = [_child(_train_args(data_root, race_dir)) for _ in range(2)]  # the same instant, one folder
        killed = pool.submit(_interrupt, _train_args(data_root, killed_dir), killed_dir, "best.pt", 1, signal.SIGKILL)
        raced = [(p.wait(timeout=300), p.stderr.read()) for p in racers]
        for p in racers:
            p.stdout.close()
            p.stderr.close()
        return {"race_dir": race_dir, "raced": raced, "killed_dir": killed_dir, "killed": killed.result()}


def _history(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _hidden(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("."))


def test_two_runs_on_one_folder_one_wins_the_other_stops_at_once(runs):
    codes = sorted(code for code, _ in runs["raced"])
    assert codes == [0, 2], runs["raced"]
    loser = next(err for code, err in runs["raced"] if code == 2)
    assert any(
        message in loser
        for message in ("is in use by another training (pid", "while this one was starting", "already holds a run")
    ), loser
    assert [r["epoch"] for r in _history(runs["race_dir"])] == [1, 2]  # not 1, 1, 2, 2
    assert _hidden(runs["race_dir"]) == []  # the lock is released and removed at the end


def _sigterm_at(monkeypatch, target: str) -> None:
    """In this process: SIGTERM arrives during the next write of ``target`` (last.pt, or metrics.jsonl)."""
    import sag.engine.checkpoint as ckpt
    import sag.engine.trainer as trainer

    def kill() -> None:
        monkeypatch.undo()  # once
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler acts here, unless the signal is held back

    real_write, real_append = ckpt.write_bytes_atomic, trainer.append_metrics

    def write(path, data, fsync=True):
        if path.name == target:
            kill()
        return real_write(path, data, fsync=fsync)

    def append(path, record):
        if target == "metrics":
            kill()
        real_append(path, record)

    monkeypatch.setattr(ckpt, "write_bytes_atomic", write)
    monkeypatch.setattr(trainer, "append_metrics", append)


def test_kills_and_sigterms_resume_to_the_uninterrupted_result(runs, monkeypatch, capsys):
    """One run interrupted four times (SIGKILL in the first best.pt save, SIGTERM in the first last.pt save, SIGTERM
    before epoch 2 is logged, SIGKILL in epoch 2's last.pt save), resumed each time: the uninterrupted result."""
    out, reference = runs["killed_dir"], runs["race_dir"]
    resume = ["train", "--out", str(out), "--resume"]
    hint = f"interrupted; continue with: python -m sag train --out {out} --resume"

    code, err = runs["killed"]  # 1. SIGKILL halfway through writing epoch 1's best.pt
    assert code == -signal.SIGKILL, err
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    assert [n for n in _hidden(out) if n.startswith(".best.pt.") and ".tmp" in n]  # the half-written temporary

    _sigterm_at(monkeypatch, "last.pt")  # 2. SIGTERM during epoch 1's last.pt save: held until the file is whole
    assert main(resume) == 143  # 128 + SIGTERM, like a shell
    assert hint in capsys.readouterr().err
    assert read_checkpoint(out / "last.pt")["epoch"] == 1 and _hidden(out) == []  # stale temporary and lock: gone

    _sigterm_at(monkeypatch, "metrics")  # 3. SIGTERM after epoch 2's training, before it is logged or saved
    assert main(resume) == 143 and hint in capsys.readouterr().err
    assert read_checkpoint(out / "last.pt")["epoch"] == 1 and _hidden(out) == []

    code, err = _interrupt(resume, out, "last.pt", 1, signal.SIGKILL)  # 4. SIGKILL halfway through epoch 2's save
    assert code == -signal.SIGKILL, err
    assert read_checkpoint(out / "last.pt")["epoch"] == 1  # the previous checkpoint is intact
    assert [n for n in _hidden(out) if n.startswith(".last.pt.")] and (out / ".lock").exists()

    assert main(resume) == 0  # 5. and to the end
    assert _hidden(out) == []
    assert _history(out) == _history(reference)
    done, want = json.loads((out / "summary.json").read_text()), json.loads((reference / "summary.json").read_text())
    assert done["test"] == want["test"] and done["best_epoch"] == want["best_epoch"]
    a, b = read_checkpoint(out / "last.pt"), read_checkpoint(reference / "last.pt")
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def test_run_files_get_umask_permissions(runs, data_root):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "summary.json", "last.pt", "best.pt", "metrics.jsonl"):
        assert stat.S_IMODE((runs["race_dir"] / name).stat().st_mode) == 0o666 & ~umask, name
    assert stat.S_IMODE(data_root.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


# ------------------------------------------------------------------ one writer per run dir


def test_resume_or_overwrite_while_a_run_holds_the_folder_fails_at_once(runs, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(runs["race_dir"], copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    with RunLock(copy) as lock:
        lock.acquire()
        for extra in (["--resume", "--epochs", "3"], ["--overwrite"]):
            assert main(["train", "--out", str(copy), *extra]) == 2
            err = capsys.readouterr().err
            assert f"error: {copy} is in use by another training (pid {os.getpid()})" in err, err
        with pytest.raises(RunDirBusyError):
            RunLock(copy).acquire()
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before  # nothing touched


# ------------------------------------------------------------------ resume checks


@pytest.fixture
def run_copy(runs, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(runs["race_dir"], copy)
    return copy


def test_resume_with_fewer_epochs_than_done_is_refused(run_copy, capsys):
    assert main(["train", "--out", str(run_copy), "--resume", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--resume --epochs 1: {run_copy / 'last.pt'} has already trained 2 epochs; pass --epochs 2 or more" in err


def test_best_pt_copied_over_last_pt(run_copy, capsys):
    (run_copy / "summary.json").unlink()
    shutil.copy(run_copy / "best.pt", run_copy / "last.pt")
    assert main(["train", "--out", str(run_copy), "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert f"{run_copy / 'last.pt'} cannot be resumed: it has no optimizer, scheduler, rng (a best.pt copied" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"dataset": "synth', "is not valid JSON"),
        ("[1, 2]", "should hold a JSON object of training options, got list"),
        ('{"depths": ["x"]}', "holds an unusable training option"),
        ('{"depths": [9]}', r"holds an unusable training option \(SAG depth\(s\) \[9\] out of range"),
    ],
)
def test_broken_config_json_is_named(run_copy, text, message, capsys):
    (run_copy / "config.json").write_text(text)
    assert main(["train", "--out", str(run_copy), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_copy / 'config.json'} ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert "repair it, or start the run over with --overwrite" in err


def test_unusable_validation_split_is_refused_before_training():
    from sag.data.records import ImageRecord
    from sag.engine.split import carve_validation

    # ids 0-3 seen by two cameras with one image each: a query per camera, no gallery image left to find
    records = [ImageRecord(f"{pid}_{cam}.jpg", pid, cam) for pid in range(4) for cam in (0, 1)]
    with pytest.raises(
        ValueError, match=r"the 2 held-out validation ids have no query with a gallery image.*--val-ids 0"
    ):
        carve_validation(records, 2)
    assert carve_validation(records, 0).num_classes == 4


def test_overwrite_lists_evaluate_and_visualize_outputs(run_copy):
    from sag.engine.runlog import existing_run_files, remove_run_files

    (run_copy / "eval_best_synthetic.json").write_text("{}")
    (run_copy / "figures").mkdir()
    (run_copy / "figures" / "ranks.png").write_bytes(b"png")
    (run_copy / "notes.txt").write_text("mine")
    found = existing_run_files(run_copy)
    assert found[-2:] == ["eval_best_synthetic.json", "figures"]
    remove_run_files(run_copy, found)
    assert sorted(p.name for p in run_copy.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ checkpoints


def _small_state() -> dict:
    from sag.engine.config import TrainConfig

    return {"model": {"w": torch.ones(3)}, "model_spec": {}, "config": TrainConfig().to_dict(), "epoch": 1}


def test_zero_byte_and_malicious_checkpoints(tmp_path, capsys):
    empty = tmp_path / "best.pt"
    empty.touch()
    assert main(["evaluate", "--checkpoint", str(empty)]) == 2
    assert f"checkpoint {empty} is empty (0 bytes)" in capsys.readouterr().err

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": Evil()}, evil)
    with pytest.raises(ValueError, match=r"unsupported GLOBAL (posix|nt)\.system") as err:
        read_checkpoint(evil)
    assert str(err.value).count("\n") == 0


def test_disk_full_during_a_checkpoint_save_names_the_cause(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _small_state())

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=rf"cannot save checkpoint {path}: No space left on device; free some space"):
        save_checkpoint(path, _small_state() | {"epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_ctrl_c_during_a_checkpoint_save_waits_for_the_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    real = torch.save
    # Python's own Ctrl-C handler: a shell that starts pytest in the background (`pytest &`) ignores SIGINT
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def save_and_get_interrupted(obj, handle):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the save
        time.sleep(0.05)
        real(obj, handle)

    monkeypatch.setattr(torch, "save", save_and_get_interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, _small_state())
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1  # complete: the interrupt came after the file
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_sigterm_becomes_an_interrupt_with_exit_code_143():
    with pytest.raises(Interrupted) as err, stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert isinstance(err.value, KeyboardInterrupt) and err.value.exit_code == 143
    finished = []
    with pytest.raises(Interrupted), stop_on_sigterm():  # held during the block, then delivered as usual
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            finished.append(True)
        time.sleep(1)
    assert finished


def test_stale_temporaries_are_removed_but_live_ones_kept(tmp_path):
    from sag.atomic import atomic_path, remove_stale

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".ds.tmp-xyz").mkdir()
    with atomic_path(tmp_path / "config.json") as live:
        live.write_text("{}")
        assert sorted(remove_stale(tmp_path)) == [".ds.tmp-xyz", ".last.pt.abc123.tmp"]
        assert live.exists()  # locked by its writer: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


# ------------------------------------------------------------------ evaluate and visualize


def test_evaluate_checks_out_before_the_work(runs, tmp_path, capsys):
    best = runs["race_dir"] / "best.pt"
    assert main(["evaluate", "--checkpoint", str(best), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; give a file path" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["evaluate", "--checkpoint", str(best), "--out", str(blocker / "eval.json")]) == 2
    assert f"cannot write --out {blocker / 'eval.json'}" in capsys.readouterr().err


def test_evaluate_prints_the_table_when_the_late_write_fails(runs, tmp_path, monkeypatch, capsys):
    import sag.commands.evaluate as evaluate_cmd

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate_cmd, "write_json_atomic", full)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(runs["race_dir"] / "best.pt"), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "rank1" in captured.out and "mAP" in captured.out  # the scores are not lost
    assert f"could not write {out} (No space left on device); the metrics are printed above" in captured.err
    assert "(the disk is full" in captured.err


def test_visualize_never_generates_from_stored_options(runs, tmp_path, capsys):
    state = read_checkpoint(runs["race_dir"] / "best.pt")
    elsewhere = tmp_path / "elsewhere" / "synthetic"
    state["config"] = state["config"] | {
        "data_root": str(elsewhere),
        "dataset_options": state["config"]["dataset_options"] | {"generate_if_missing": True},
    }
    crafted = tmp_path / "run" / "best.pt"
    save_checkpoint(crafted, state)
    assert main(["visualize", "--checkpoint", str(crafted), "--what", "grids"]) == 2
    err = capsys.readouterr().err
    assert f"data root {elsewhere} (stored in {crafted}) does not exist" in err and "--generate" in err
    assert not (tmp_path / "elsewhere").exists()  # nothing was generated where the checkpoint pointed


# ------------------------------------------------------------------ one-line CLI errors


def _fail_with(monkeypatch, err: BaseException) -> None:
    import sag.commands.evaluate as evaluate_cmd

    def run(args):
        raise err

    monkeypatch.setattr(evaluate_cmd, "run", run)


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
            "out of memory on cuda: lower --batch-size (now 64)",
        ),
        (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"), "lower --batch-size (now 64)"),
        (
            OSError(errno.EROFS, "Read-only file system", "/ro/eval.json"),
            "/ro/eval.json: Read-only file system (a read-only",
        ),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "Connection refused"),
        (
            FloatingPointError("the loss became nan in epoch 3; lower --lr"),
            "the loss became nan in epoch 3; lower --lr",
        ),
    ],
)
def test_user_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, err, message):
    _fail_with(monkeypatch, err)
    argv = ["evaluate", "--checkpoint", "x.pt", "--batch-size", "64", "--device", "cuda"]
    assert main(argv) == 2
    captured = capsys.readouterr().err
    assert captured.startswith("error: ") and message in captured and len(captured.strip().splitlines()) == 1
    assert main(["--debug", *argv]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_ctrl_c_exits_130_and_sigterm_143(monkeypatch):
    _fail_with(monkeypatch, KeyboardInterrupt())
    assert main(["evaluate", "--checkpoint", "x.pt"]) == 130
    _fail_with(monkeypatch, Interrupted(signal.SIGTERM))
    assert main(["evaluate", "--checkpoint", "x.pt"]) == 143


def test_a_bug_still_shows_its_traceback(monkeypatch):
    _fail_with(monkeypatch, KeyError("internal"))
    with pytest.raises(KeyError):
        main(["evaluate", "--checkpoint", "x.pt"])


def test_unknown_device_and_empty_depths(runs, capsys):
    assert main(["evaluate", "--checkpoint", str(runs["race_dir"] / "best.pt"), "--device", "gpu0"]) == 2
    assert "unknown device 'gpu0'; use cpu, cuda or cuda:N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--depths", ""])
    assert "empty depths; write e.g. 4 or 1,2,3, or none for the baseline" in capsys.readouterr().err


def test_evaluation_messages_say_what_is_wrong():
    from sag.evaluation import evaluate_features, extract_features

    q, ids = torch.randn(3, 4), torch.arange(3)
    with pytest.raises(ValueError, match="the gallery set is empty"):
        evaluate_features(q, torch.zeros(0, 4), ids, ids[:0], ids, ids[:0])
    with pytest.raises(ValueError, match="the query set is empty"):
        evaluate_features(torch.zeros(0, 4), q, ids[:0], ids, ids[:0], ids)

    class Overflow(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4), 1e30).half().float()  # fp16 overflow: inf

    batch = (torch.zeros(2, 3, 8, 4), torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(FloatingPointError, match="embeddings hold values that overflowed to inf"):
        extract_features(Overflow(), [batch])


def test_synthetic_messages_use_command_line_wording(data_root):
    from sag.data import make_synthetic

    with pytest.raises(FileExistsError, match=r"pass --overwrite \(overwrite=True in Python\)"):
        make_synthetic(data_root, **(TINY | {"num_train_ids": 9}), progress=False)


def test_cuhk03_mat_with_a_malformed_detected_variable(tmp_path):
    import h5py
    import numpy as np

    from sag.data import load_dataset

    folder = tmp_path / "cuhk03_release"
    folder.mkdir()
    with h5py.File(folder / "cuhk-03.mat", "w") as mat:
        mat["detected"] = np.zeros((5,))  # numbers, not cell references
        mat["labeled"] = np.zeros((5,))
        mat["testsets"] = np.zeros((20,))
    with pytest.raises(ValueError, match=r"cuhk-03.mat: detected should be a MATLAB cell array .*got a float64 array"):
        load_dataset("cuhk03", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["cuhk-03.mat"]  # no half extraction left
