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

from sag import paper
from sag.commands.options import add_training_options, given_options
from sag.engine.config import TrainConfig

# ablate-only options: not training settings (mass_images is the analysis after training)
_ABLATION_OPTIONS = ("rows", "seeds", "out", "mass_images")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sag ablate``: what to ablate, plus the training options every run shares."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    study = parser.add_argument_group("ablation")
    study.add_argument("--rows", default="table1", help="table1 (all 8), single, stacked, or e.g. baseline,D4,D1,2")
    study.add_argument("--seeds", type=int, default=3, help="seeds per row: 0..K-1 (default 3)")
    study.add_argument("--out", required=True, metavar="DIR", help="ablation folder (resumed if it exists)")
    study.add_argument("--mass-images", type=int, default=200, help="test images for the attention-mass analysis "
                       "on synthetic data (default 200; 0 = skip)")  # fmt: skip
    add_training_options(parser, dataset_default="default synthetic")  # shared by every row


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig every row shares (depths, seed and out are set per run); unset options: TrainConfig's."""
    given = {k: v for k, v in given_options(args).items() if k not in _ABLATION_OPTIONS}
    config = TrainConfig.from_dict({**given, "depths": ()}).resolved()  # each row's input size check runs in run()
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
