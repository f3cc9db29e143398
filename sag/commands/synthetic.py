"""Generate the synthetic re-id dataset: drawn pedestrians in the Market-1501 layout, with region masks.

Example: python -m sag make-synthetic --root data/synthetic --train-ids 751 --test-ids 750 --seed 0
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``make-synthetic``."""
    from sag.data.synthetic import SyntheticConfig  # numpy and PIL (never torch): only when this command is parsed

    defaults = SyntheticConfig()
    parser.add_argument("--root", required=True, help="output folder (created; reused if it holds the same set)")
    parser.add_argument("--train-ids", type=int, default=defaults.num_train_ids, help="training identities")
    parser.add_argument("--test-ids", type=int, default=defaults.num_test_ids, help="test (query/gallery) identities")
    parser.add_argument(
        "--images-per-id", type=int, default=defaults.images_per_id, help="mean images per identity and split"
    )
    parser.add_argument("--cameras", type=int, default=defaults.num_cameras, help="number of cameras (2-9)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same bytes)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=list(defaults.size), help="image size")
    parser.add_argument(
        "--max-family-size",
        type=int,
        default=defaults.max_family_size,
        help="identities sharing clothes and body, told apart by details (1 = none)",
    )
    parser.add_argument("--junk-fraction", type=float, default=defaults.junk_fraction, help="junk per gallery image")
    parser.add_argument(
        "--distractor-fraction", type=float, default=defaults.distractor_fraction, help="distractors per gallery image"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores for large sets)")
    parser.add_argument("--overwrite", action="store_true", help="replace a synthetic set made with other options")


def run(args: argparse.Namespace) -> int:
    """Generate (or reuse) the dataset, then print its Table-2-style summary and the time taken."""
    from sag.data.synthetic import load_synthetic, make_synthetic

    start = time.perf_counter()
    root = make_synthetic(
        args.root,
        num_train_ids=args.train_ids,
        num_test_ids=args.test_ids,
        images_per_id=args.images_per_id,
        seed=args.seed,
        size=tuple(args.size),
        num_cameras=args.cameras,
        max_family_size=args.max_family_size,
        junk_fraction=args.junk_fraction,
        distractor_fraction=args.distractor_fraction,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    print(load_synthetic(root).summary())
    print(f"ready in {seconds:.1f} s: {root}")
    return 0
