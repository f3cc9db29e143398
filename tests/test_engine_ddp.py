"""DistributedDataParallel on CPU: ``torchrun --nproc_per_node=2 -m sag train`` with gloo on a tiny synthetic set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sag.engine import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_one_valid_run_dir(tmp_path):
    from sag.data import make_synthetic

    root = make_synthetic(
        tmp_path / "synthetic", num_train_ids=8, num_test_ids=4, images_per_id=4, size=(64, 32), num_cameras=2
    )
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run",  # fmt: skip  (= torchrun)
        "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "sag", "train", "--dataset", "synthetic", "--data-root", str(root),
        "--synthetic-ids", "8", "--synthetic-test-ids", "4", "--synthetic-images-per-id", "4",
        "--synthetic-cameras", "2", "--synthetic-size", "64x32",
        "--backbone", "resnet18", "--depths", "4", "--input-size", "64x32", "--epochs", "1", "--batch-size", "4",
        "--eval-every", "1", "--device", "cpu", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.jsonl",
        "summary.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 4 and config["effective_batch_size"] == 8
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1]
    assert all(r["images"] == 24 and "val" in r for r in history)  # 2 processes x 3 batches x 4 images
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and 0 <= summary["test"]["mAP"] <= 1
    model, cfg = load_checkpoint(out / "best.pt")  # the bare model, not the DDP wrapper, was saved
    assert cfg.depths == (4,) and not any(k.startswith("module.") for k in model.state_dict())
    # rank 0 alone prints
    assert done.stdout.count("sag train: summary") == 1
    assert "batch 4 x 2 processes = 8 effective" in done.stdout
