"""Draw a trained run's figures: attention grids (Figure 4), ranked lists, training curves.

Example: python -m sag visualize --checkpoint runs/sag/best.pt --what grids ranks --num 6
Writes PNGs into --out (default: a figures/ folder beside the checkpoint).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WHAT = ("grids", "ranks", "curves", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sag visualize``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run dir")
    parser.add_argument("--what", nargs="+", choices=WHAT, default=["grids"], help="which figures (default: grids)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: <run dir>/figures)")
    parser.add_argument("--num", type=int, default=6, help="images (grids) or queries (ranks) to show (default: 6)")
    parser.add_argument("--top-k", type=int, default=10, help="gallery images per ranked list (default: 10)")
    parser.add_argument("--data-root", default=None, help="dataset folder, if it moved since training")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=128, help="feature extraction batch size (ranks)")
    parser.add_argument(
        "--generate", action="store_true", help="make the synthetic dataset the checkpoint names if it is missing"
    )


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint and its data, draw the chosen figures, print where they went."""
    for path in make_figures(
        args.checkpoint,
        what=args.what,
        out=args.out,
        num=args.num,
        top_k=args.top_k,
        data_root=args.data_root,
        device=args.device,
        batch_size=args.batch_size,
        generate=args.generate,
    ):
        print(path)
    return 0


def make_figures(
    checkpoint: str | Path,
    what: str | Sequence[str] = ("grids",),
    out: str | Path | None = None,
    num: int = 6,
    top_k: int = 10,
    data_root: str | None = None,
    device: str | None = None,
    batch_size: int = 128,
    generate: bool = False,
) -> list[Path]:
    """The figures of ``what`` for a checkpoint, saved as PNGs; returns their paths.

    The dataset paths and options stored in the checkpoint are only read from: a missing synthetic set is made
    (with the stored options) only when ``generate`` is set.
    """
    from sag.data import load_dataset
    from sag.engine import load_checkpoint
    from sag.engine.checkpoint import readable_dataset_options
    from sag.engine.distributed import resolve_device
    from sag.plots import plot_training_curves, save_figure

    what = [what] if isinstance(what, str) else list(what)
    unknown = sorted(set(what) - set(WHAT))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; valid: {', '.join(WHAT)}")
    if "all" in what:
        what = ["grids", "ranks", "curves"]
    if num < 1 or top_k < 1:
        raise ValueError(f"--num and --top-k must be positive, got {num} and {top_k}")
    checkpoint = Path(checkpoint)
    device = resolve_device(device)
    model, config = load_checkpoint(checkpoint, device=device)
    model.eval()
    out = Path(out) if out is not None else checkpoint.parent / "figures"
    written = []
    dataset = None
    if {"grids", "ranks"} & set(what):
        root = Path(data_root or config.data_root)
        options = readable_dataset_options(config.dataset_options)
        if generate and config.dataset == "synthetic":
            options["generate_if_missing"] = True
        elif not root.exists():
            make = ", or --generate to make the synthetic set there" if config.dataset == "synthetic" else ""
            raise FileNotFoundError(
                f"data root {root} (stored in {checkpoint}) does not exist; pass --data-root DIR{make}"
            )
        dataset = load_dataset(config.dataset, root, **options)
    if "grids" in what:
        if not model.depths:
            raise ValueError(f"{checkpoint} is a baseline (no SAG module): it has no attention grid; try --what ranks")
        written.append(save_figure(_grids_figure(model, config, dataset, num, device), out / "attention_grids.png"))
    if "ranks" in what:
        written.append(save_figure(_ranks_figure(model, config, dataset, num, top_k, batch_size), out / "ranks.png"))
    if "curves" in what:
        written.append(save_figure(plot_training_curves({config.out: checkpoint.parent}), out / "training_curves.png"))
    return written


def _query_sample(records: list, num: int) -> list[int]:
    """``num`` query indices spread evenly over the query set, one per identity where possible."""
    import numpy as np

    first_of_id: dict[int, int] = {}
    for i, record in enumerate(records):
        first_of_id.setdefault(record.pid, i)
    pool = list(first_of_id.values()) if len(first_of_id) >= num else list(range(len(records)))
    return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, min(num, len(pool))).round()]


def _grids_figure(model: Any, config: Any, dataset: Any, num: int, device: Any) -> Any:
    """Figure 4 for ``num`` query images."""
    import torch

    from sag.data import make_eval_loader
    from sag.plots import plot_model_attention

    picks = [dataset.query[i] for i in _query_sample(dataset.query, num)]
    loader = make_eval_loader(picks, preset=config.transforms, batch_size=len(picks), size=tuple(config.input_size))
    images = torch.cat([batch[0] for batch in loader])  # (num, 3, H, W)
    titles = [f"id {r.pid} c{r.camid + 1}" for r in picks]
    originals = [r.path for r in picks]  # drawn at full resolution under the grids
    return plot_model_attention(model, images.to(device), config.preset, display=originals, titles=titles)


def _ranks_figure(model: Any, config: Any, dataset: Any, num: int, top_k: int, batch_size: int) -> Any:
    """Ranked lists for ``num`` queries over the whole gallery (cosine distance of L2-normalised features)."""
    from sag.data import make_eval_loader
    from sag.evaluation import extract_features
    from sag.plots import plot_ranked_lists

    kwargs = {"preset": config.transforms, "batch_size": batch_size, "size": tuple(config.input_size)}
    q_feats, q_pids, q_camids = extract_features(model, make_eval_loader(dataset.query, **kwargs))
    g_feats, g_pids, g_camids = extract_features(model, make_eval_loader(dataset.gallery, **kwargs))
    distmat = (1.0 - q_feats @ g_feats.T).cpu().numpy()  # (Q, G) cosine distance
    return plot_ranked_lists(
        [r.path for r in dataset.query],
        [r.path for r in dataset.gallery],
        distmat,
        q_pids.tolist(),
        g_pids.tolist(),
        q_camids.tolist(),
        g_camids.tolist(),
        queries=_query_sample(dataset.query, num),
        top_k=top_k,
    )
