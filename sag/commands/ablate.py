"""Run the Table 1 ablation (baseline, D1..D4, D1,2, D1,2,3, D1,2,3,4) over seeds; resumable row by row.

Examples:

  python -m sag ablate --dataset synthetic --backbone resnet18 --epochs 10 --rows table1 --seeds 3 --out runs/ablation
  python -m sag ablate --dataset market1501 --data-root data/market1501 --rows baseline,D4 --out runs/market_ablation

Each run goes to OUT/<row>/seed<k> (D1,2 -> D1_2); a run with summary.json is never re-run and a half-finished one
resumes, so the same command continues an interrupted ablation. OUT gets results.csv (one line per row x seed,
percent), table.md (the paper's Table 1 row beside ours, mean ± std over seeds) and ablation.png; on the synthetic
data also attention_mass.csv / .md (grid mass on the known identity regions; --mass-images 0 turns it off).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sag import paper
from sag.engine.config import DATASET_NAMES, PRECISIONS, TrainConfig, parse_size

SYNTHETIC_OPTIONS = {  # CLI flag (as in `sag train`) -> make_synthetic keyword
    "synthetic_ids": "num_train_ids",
    "synthetic_test_ids": "num_test_ids",
    "synthetic_images_per_id": "images_per_id",
    "synthetic_cameras": "num_cameras",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sag ablate``: what to ablate, plus the training options every run shares."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    study = parser.add_argument_group("ablation")
    study.add_argument("--rows", default="table1", help="table1 (all 8), single, stacked, or e.g. baseline,D4,D1,2")
    study.add_argument("--seeds", type=int, default=3, help="seeds per row: 0..K-1 (default 3)")
    study.add_argument("--out", required=True, metavar="DIR", help="ablation folder (resumed if it exists)")
    study.add_argument("--mass-images", type=int, default=200, help="test images for the attention-mass analysis "
                       "on synthetic data (default 200; 0 = skip)")  # fmt: skip

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", help=f"one of {', '.join(DATASET_NAMES)} (default synthetic)")
    data.add_argument("--data-root", metavar="DIR", help="dataset folder (default for synthetic: data/synthetic)")
    data.add_argument("--val-ids", type=int, help="training ids held out for validation (default 10%%; 0 = none)")
    data.add_argument("--workers", type=int, default=0, help="data loader processes (default 0)")
    data.add_argument("--resident", action="store_true", help="keep the training set on the device")
    data.add_argument("--input-size", type=parse_size, default=(160, 64), metavar="HxW", help="default 160x64")
    for flag, key in SYNTHETIC_OPTIONS.items():
        data.add_argument(f"--{flag.replace('_', '-')}", type=int, metavar="N", help=f"synthetic dataset: {key}")

    train = parser.add_argument_group("training (shared by every row)")
    train.add_argument("--backbone", default="resnet50", help="resnet18/34/50/101/152 (default resnet50, the paper's)")
    train.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    train.add_argument("--preset", default="paper", help="paper or released_code (default paper)")
    train.add_argument("--epochs", type=int, help="default: the preset's (200 paper)")
    train.add_argument("--batch-size", type=int, help="default: the preset's (32 paper)")
    train.add_argument("--lr", type=float, help="backbone lr; new layers get 10x (default 0.01)")
    train.add_argument("--eval-every", type=int, default=10, help="validate every N epochs (default 10)")
    train.add_argument("--precision", default="fp32", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    train.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda if available)")
    train.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig every row shares (depths, seed and out are set per run)."""
    options: dict[str, Any] = {
        key: getattr(args, flag) for flag, key in SYNTHETIC_OPTIONS.items() if getattr(args, flag) is not None
    }
    if options and args.dataset != "synthetic":
        raise ValueError("--synthetic-* options apply to --dataset synthetic only")
    config = TrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        backbone=args.backbone,
        depths=(),  # set per row; each row's input size check runs in run()
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        precision=args.precision,
        device=args.device,
        workers=args.workers,
        eval_every=args.eval_every,
        pretrained=args.pretrained,
        val_ids=args.val_ids,
        resident=args.resident,
        channels_last=args.channels_last,
        compile=args.compile,
        input_size=tuple(args.input_size),
        dataset_options=options,
        progress=args.progress,
    ).resolved()
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    """Train the missing runs, then write results.csv, table.md, ablation.png (and the attention mass)."""
    from sag.ablation import parse_rows, run_ablation, write_attention_mass

    rows = parse_rows(args.rows)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    if args.mass_images < 0:
        raise ValueError(f"--mass-images must be >= 0, got {args.mass_images}")
    config = base_config(args)
    for row in rows:  # fail before training anything if a row cannot take the input size
        TrainConfig.from_dict({**config.to_dict(), "depths": paper.ROW_DEPTHS[row]}).validate()
    results = run_ablation(config, rows, args.seeds, args.out)
    if config.dataset == "synthetic" and args.mass_images:
        write_attention_mass(args.out, num_images=args.mass_images, device=args.device)
    print(f"[ablate] {len(results)} finished runs; see {args.out}/table.md")
    table = Path(args.out) / "table.md"
    if table.is_file():
        print(table.read_text(encoding="utf-8"))
    return 0
