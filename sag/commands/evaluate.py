"""Evaluate a checkpoint: CMC rank-1/5/10/20, mAP and mINP on the test split (optionally re-ranked, multi-query).

Example:

  python -m sag evaluate --checkpoint runs/market_d4/best.pt --rerank --out runs/market_d4/eval_rerank.json

Without --out the metrics go to eval_<checkpoint>_<dataset>[_rerank][_mq][_flip].json beside the checkpoint.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sag.commands.options import add_protocol_options
from sag.engine.runlog import format_table, write_json_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sag evaluate``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="best.pt or last.pt of a run")
    parser.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    parser.add_argument("--data-root", metavar="DIR", help="default: the checkpoint's data root")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    parser.add_argument("--multi-query", action="store_true", help="Market-1501 multi-query (gt_bbox) features")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    parser.add_argument("--device", help="cpu, cuda... (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (default 0)")
    parser.add_argument("--out", metavar="JSON", help="where to write the metrics (default: beside the checkpoint)")
    add_protocol_options(parser, default="the run's")


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint and its dataset, evaluate, print the table, write the JSON."""
    from sag.data import load_dataset
    from sag.engine.checkpoint import load_checkpoint, readable_dataset_options
    from sag.engine.distributed import resolve_device
    from sag.evaluation import evaluate

    device = resolve_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device=device)
    name = args.dataset or cfg.dataset
    out = Path(args.out) if args.out else _default_out(Path(args.checkpoint), name, args)
    _check_writable(out)  # before the work, not after it
    root = Path(args.data_root or cfg.data_root)
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist; pass --data-root DIR (the folder of {name})")
    options = readable_dataset_options(cfg.dataset_options) if name == cfg.dataset else {}
    dataset = load_dataset(name, root, **options)
    if args.multi_query and dataset.multi_query is None:
        raise ValueError(f"--multi-query needs Market-1501's gt_bbox images; {name} at {root} has none")
    protocol = cfg.protocol  # the run's (its preset's, or the options it was trained with), then the command line
    protocol.update({k: getattr(args, k) for k in ("flip", "ap", "average") if getattr(args, k) is not None})
    args.flip = protocol["flip"]
    start = time.perf_counter()
    metrics = evaluate(
        model,
        dataset,
        preset=cfg.preset,
        transforms=cfg.transforms,
        size=cfg.input_size,
        device=device,
        batch_size=args.batch_size,
        flip=protocol["flip"],
        ap=protocol["ap"],
        average=protocol["average"],
        rerank=args.rerank,
        multi_query=args.multi_query,
        workers=args.workers,
    )
    seconds = time.perf_counter() - start
    record = _record(args, cfg, name, root, metrics, seconds)
    print(format_table(_rows(record), title=f"{args.checkpoint} on {name} ({root})"))  # first: never lost
    try:
        write_json_atomic(out, record)
    except OSError as err:
        raise OSError(
            err.errno, f"could not write {out} ({err.strerror or err}); the metrics are printed above"
        ) from err
    print(f"wrote {out}")
    return 0


def _check_writable(out: Path) -> None:
    """ValueError unless a file can be written at ``out`` (checked by creating a temporary file beside it)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file path, e.g. {out / 'eval.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise ValueError(f"cannot write --out {out}: {err.strerror or err}; choose a writable path") from err


def _record(args: argparse.Namespace, cfg: Any, name: str, root: Path, metrics: dict, seconds: float) -> dict:
    """The JSON written by the command: the scores, and the re-ranked scores under ``reranked``."""
    record = {
        "checkpoint": str(args.checkpoint),
        "dataset": name,
        "data_root": str(root),
        "model": {"backbone": cfg.backbone, "depths": list(cfg.depths), "preset": cfg.preset},
        "rerank": args.rerank,
        "multi_query": args.multi_query,
        "flip": args.flip,
        "protocol": metrics["protocol"],
        **_scores(metrics),
        "seconds": seconds,
    }
    if args.rerank:
        record["reranked"] = _scores(metrics, prefix="rerank_")
    return record


def _scores(metrics: dict, prefix: str = "") -> dict:
    """rank1/5/10/20, mAP, mINP and the CMC curve (first 50 ranks) as plain floats."""
    import numpy as np

    cmc = [float(x) for x in np.asarray(metrics[f"{prefix}cmc"])[:50]]
    scores = {k: float(metrics[f"{prefix}{k}"]) for k in ("rank1", "rank5", "rank10", "mAP", "mINP")}
    return scores | {"rank20": cmc[19] if len(cmc) >= 20 else None, "cmc": cmc}


def _rows(record: dict) -> list[tuple[str, str]]:
    """Printed rows: CMC ranks and mAP in percent (and re-ranked, when asked), the options and the protocol."""
    from sag.evaluation.protocol import describe_record

    rows = []
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        if record.get(key) is not None:
            value = f"{100 * record[key]:6.2f}"
            if "reranked" in record:
                value += f"   re-ranked {100 * record['reranked'][key]:6.2f}"
            rows.append((key, value))
    flags = [flag for flag in ("rerank", "multi_query") if record[flag]]
    rows.append(("options", ", ".join(flags) or "none"))
    rows.append(("test protocol", describe_record(record["protocol"])))
    return rows


def _default_out(checkpoint: Path, dataset: str, args: argparse.Namespace) -> Path:
    """eval_<checkpoint stem>_<dataset>[_rerank][_mq][_flip].json beside the checkpoint."""
    tags = [checkpoint.stem, dataset] + [
        tag for tag, on in (("rerank", args.rerank), ("mq", args.multi_query), ("flip", args.flip)) if on
    ]
    return checkpoint.parent / f"eval_{'_'.join(tags)}.json"
