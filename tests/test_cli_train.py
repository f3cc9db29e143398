"""``python -m sag train`` / ``evaluate``: option parsing, resume from RUN_DIR, errors, and an evaluate round trip."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from sag.cli import build_parser, main
from sag.commands.train import DEMO_DEFAULTS, config_from_args
from sag.engine import TrainConfig, save_checkpoint
from sag.engine.checkpoint import build_from_spec, model_spec

TINY = {"num_train_ids": 8, "num_test_ids": 4, "images_per_id": 4, "size": (64, 32), "num_cameras": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def _config(argv: list[str] | str) -> TrainConfig:
    """The TrainConfig of ``python -m sag train ARGV``."""
    argv = shlex.split(argv) if isinstance(argv, str) else argv
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_train_options_become_a_config():
    cfg = _config(
        "--dataset market1501 --data-root /d --depths 1,2,3 --preset released_code --epochs 7 --batch-size 16 "
        "--lr 0.02 --seed 3 --precision bf16 --device cpu --workers 2 --eval-every 5 --pretrained --val-ids 50 "
        "--resident --channels-last --compile --input-size 256x128 --out runs/x --no-progress"
    )
    assert cfg == TrainConfig(
        dataset="market1501",
        data_root="/d",
        depths=(1, 2, 3),
        preset="released_code",
        epochs=7,
        batch_size=16,
        lr=0.02,
        seed=3,
        precision="bf16",
        device="cpu",
        workers=2,
        eval_every=5,
        pretrained=True,
        val_ids=50,
        resident=True,
        channels_last=True,
        compile=True,
        input_size=(256, 128),
        out="runs/x",
        progress=False,
    )
    assert _config(["--dataset", "synthetic", "--depths", "none"]).depths == ()
    assert _config(["--dataset", "synthetic", "--depths", "none"]).out == str(
        Path("runs/synthetic_resnet50_baseline_paper")
    )
    assert _config(["--dataset", "cuhk03", "--data-root", "d"]).epochs is None  # the preset decides later


def test_bare_train_is_an_offline_demo(capsys):
    cfg = _config([])
    assert cfg.dataset == "synthetic" and cfg.backbone == "resnet_small" == DEMO_DEFAULTS["backbone"]
    assert (cfg.epochs, cfg.input_size, cfg.resident, cfg.val_ids) == (DEMO_DEFAULTS["epochs"], (64, 32), True, 0)
    assert cfg.resolved().data_root == "data/synthetic_demo" and cfg.dataset_options["size"] == (64, 32)
    assert "no --dataset given: an offline demo of about 1.5 minutes on the synthetic" in capsys.readouterr().out
    assert _config(["--backbone", "resnet50"]).backbone == "resnet50"  # given options win over the demo's
    demo_world = DEMO_DEFAULTS["dataset_options"]
    assert _config(["--synthetic-ids", "20"]).dataset_options == demo_world | {"num_train_ids": 20}
    assert TrainConfig().backbone == "resnet50" and TrainConfig().lr is None  # the presets keep their numbers


def test_synthetic_size_options():
    cfg = _config("--dataset synthetic --synthetic-ids 8 --synthetic-images-per-id 4 --synthetic-size 64x32")
    assert cfg.dataset_options == {"num_train_ids": 8, "images_per_id": 4, "size": (64, 32)}
    with pytest.raises(ValueError, match="--synthetic-\\* options apply to --dataset synthetic only"):
        _config("--dataset market1501 --data-root d --synthetic-ids 8")


def test_cuhk03_options_choose_subset_protocol_and_split():
    from sag.commands import ablate
    from sag.commands.options import CUHK03_OPTIONS
    from sag.data import cuhk03

    cfg = _config("--dataset cuhk03 --data-root d --cuhk03-subset labeled --cuhk03-protocol classic --cuhk03-split 7")
    assert cfg.dataset_options == {"subset": "labeled", "protocol": "classic", "split": 7}
    assert set(CUHK03_OPTIONS.values()) == {"subset", "protocol", "split"}
    args = build_parser().parse_args(["ablate", "--out", "o", "--dataset", "cuhk03", "--data-root", "d",
                                      "--cuhk03-protocol", "new"])  # fmt: skip
    assert ablate.base_config(args).dataset_options == {"protocol": "new"}
    for flag, valid in (("--cuhk03-subset", cuhk03.SUBSETS), ("--cuhk03-protocol", cuhk03.PROTOCOLS)):
        action = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                      if flag in a.option_strings)  # fmt: skip
        assert tuple(action.choices) == valid  # the CLI offers exactly what load_cuhk03 accepts
    with pytest.raises(ValueError, match="--cuhk03-\\* options apply to --dataset cuhk03 only"):
        _config("--dataset market1501 --data-root d --cuhk03-split 3")


def test_cuhk03_bad_choice_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "cuhk03", "--cuhk03-protocol", "newest"])
    assert "invalid choice: 'newest'" in capsys.readouterr().err


def test_resume_takes_the_saved_config(tmp_path):
    saved = TrainConfig(dataset="dukemtmc", data_root="/duke", depths=(2,), epochs=50, out=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(saved.to_dict() | {"recipe": {}}))
    cfg = _config(["--out", str(tmp_path), "--resume", "--epochs", "80"])
    assert (cfg.dataset, cfg.depths, cfg.epochs, cfg.resume, cfg.data_root) == ("dukemtmc", (2,), 80, True, "/duke")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--dataset", "imagenet"],
            "unknown dataset 'imagenet'; valid datasets: market1501, dukemtmc, cuhk03, synthetic",
        ),
        (["--preset", "quick"], "unknown preset 'quick'; valid presets: paper, released_code"),
        (["--depths", "5"], "SAG depth(s) [5] out of range; valid depths are 1, 2, 3, 4"),
        (["--dataset", "market1501"], "--data-root is required for market1501"),
        (["--dataset", "market1501", "--data-root", "{tmp}/m"], "data root {tmp}/m does not exist"),
        (["--resume", "--out", "{tmp}/r"], "nothing to resume in {tmp}/r"),
        (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    ],
)
def test_train_errors_are_one_line(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in err and err.count("\n") == 1


def test_bad_depths_text_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--depths", "four"])
    assert "argument --depths: cannot read depths 'four'" in capsys.readouterr().err


def test_existing_run_dir_needs_resume_or_overwrite(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["train", "--dataset", "synthetic", "--out", str(tmp_path)]) == 2
    assert "already holds a run (config.json); pass --resume to continue it" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A best.pt (untrained weights) whose config points at a tiny synthetic dataset."""
    from sag.data import make_synthetic

    base = tmp_path_factory.mktemp("eval")
    root = make_synthetic(base / "synthetic", progress=False, **TINY)
    cfg = TrainConfig(
        data_root=str(root), dataset_options=TINY, backbone="resnet18", input_size=(64, 32), out=str(base)
    ).resolved()
    spec = model_spec(cfg, num_classes=6)
    torch.manual_seed(0)
    state = {"model": build_from_spec(spec).state_dict(), "model_spec": spec, "config": cfg.to_dict(), "epoch": 1}
    save_checkpoint(base / "best.pt", state)
    return base / "best.pt"


def test_evaluate_prints_cmc_and_writes_json(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--flip", "--rerank"]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert 0 <= record[key] <= 1 and f"{100 * record[key]:.2f}" in printed
    assert record["rerank"] and record["flip"] and not record["multi_query"] and len(record["cmc"]) == 50
    # the run's protocol (the paper preset's: trapezoid AP over all queries), --flip on top; printed and recorded
    assert record["protocol"] == {"flip": True, "ap": "trapezoid", "average": "all"}
    assert "test protocol  flip on, trapezoid AP, averaged over all queries" in printed
    assert record["model"] == {"backbone": "resnet18", "depths": [4], "preset": "paper"}
    assert 0 <= record["reranked"]["mAP"] <= 1 and f"re-ranked {100 * record['reranked']['rank1']:6.2f}" in printed

    # multi-query (the synthetic set has gt_bbox images), default output beside the checkpoint
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--multi-query"]) == 0
    assert json.loads((checkpoint.parent / "eval_best_synthetic_mq.json").read_text())["multi_query"] is True
    other = tmp_path / "other.json"
    assert (
        main(
            ["evaluate", "--checkpoint", str(checkpoint), "--out", str(other), "--ap", "standard", "--average", "valid"]
        )
        == 0
    )
    assert json.loads(other.read_text())["protocol"] == {"flip": False, "ap": "standard", "average": "valid"}


def test_evaluate_errors(checkpoint, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert f"checkpoint {tmp_path / 'none.pt'} does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(tmp_path / "gone")]) == 2
    assert f"data root {tmp_path / 'gone'} does not exist" in capsys.readouterr().err


def test_demo_prints_the_untrained_network_beside_the_trained_one(tmp_path):
    from sag.commands.train import compare_untrained
    from sag.data import make_synthetic

    root = make_synthetic(tmp_path / "world", **TINY)
    cfg = TrainConfig(data_root=str(root), dataset_options=TINY, backbone="resnet_small", input_size=(64, 32))
    table = compare_untrained(cfg, {"rank1": 0.625, "mAP": 0.5})
    assert "untrained -> trained" in table and "->  62.50" in table and "->  50.00" in table
