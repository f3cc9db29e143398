"""k-reciprocal re-ranking from features: sag.evaluation.re_ranking against the original dense algorithm.

Market-1501-sized random features (3,368 queries + 15,913 gallery, 2048-d, L2-normalised; see eval_bench.py).
The original (Zhong et al.'s person-re-ranking python-version, written out here with dense N x N arrays, N =
Q + G) needs about 8.5 GiB at full size, so by default it runs on a subset of --ref-n images, with ours on the
same subset for the comparison; --ref-full also runs it at full size. The original runs twice: as published
(np.argsort's default sort, which leaves the order of exact ties unspecified; such ties are common among the
far, concentrated distances of random high-dimensional features) and with np.argsort(kind="stable"), which
breaks ties by index as sag.evaluation does, so that the outputs can be compared entry by entry. Each
measurement runs in a fresh subprocess: time, and peak RSS (VmHWM) above the loaded features.

  python benchmarks/rerank_bench.py                 # ours at full size; ours and the original on 4,000 images
  python benchmarks/rerank_bench.py --ref-full      # the original at full size too (needs ~9 GiB free)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
from _common import peak_mib, reset_peak, rss_mib
from eval_bench import machine, market_like


def original_re_ranking(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3, kind=None):
    """The reference algorithm as users run it: dense N x N float32 arrays, np.argsort, per-image Python loops.

    Its inputs are the three squared Euclidean distance matrices, |x|^2 + |y|^2 - 2 x.y (the definition
    sag.evaluation.re_ranking uses), self-distances 0. ``kind``: np.argsort's sort; the reference's default
    leaves the order of exact ties unspecified, "stable" breaks them by index as sag.evaluation does.
    """
    q_sq, g_sq = (q_feats**2).sum(1), (g_feats**2).sum(1)
    q_g = q_sq[:, None] + g_sq[None, :] - 2 * q_feats @ g_feats.T
    q_q = q_sq[:, None] + q_sq[None, :] - 2 * q_feats @ q_feats.T
    g_g = g_sq[:, None] + g_sq[None, :] - 2 * g_feats @ g_feats.T
    np.fill_diagonal(q_q, 0)
    np.fill_diagonal(g_g, 0)
    dist = np.concatenate([np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    del q_g, q_q, g_g
    dist = np.maximum(dist, 0).astype(np.float32)
    dist = np.transpose(dist / np.max(dist, axis=0))
    num_q, num = q_feats.shape[0], dist.shape[0]
    weights = np.zeros_like(dist, dtype=np.float32)
    rank = np.argsort(dist, kind=kind).astype(np.int32)
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(num):
        forward = rank[i, : k1 + 1]
        recip = forward[np.where(rank[forward, : k1 + 1] == i)[0]]
        expansion = recip
        for c in recip:
            c_forward = rank[c, :half]
            c_recip = c_forward[np.where(rank[c_forward, :half] == c)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2.0 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        weights[i, expansion] = w / np.sum(w)
    original = dist[:num_q]
    if k2 != 1:
        expanded = np.zeros_like(weights, dtype=np.float32)
        for i in range(num):
            expanded[i] = np.mean(weights[rank[i, :k2], :], axis=0)
        weights = expanded
        del expanded
    del rank
    inverted = [np.where(weights[:, j] != 0)[0] for j in range(num)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(num_q):
        shared = np.zeros((1, num), dtype=np.float32)
        nonzero = np.where(weights[i] != 0)[0]
        for j in nonzero:
            shared[0, inverted[j]] += np.minimum(weights[i, j], weights[inverted[j], j])
        jaccard[i] = 1 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, num_q:]


def worker(name: str, data: Path, out: Path) -> dict:
    """One measurement in this (fresh) process; the result matrix is saved to ``out`` for the comparison."""
    q, g = np.load(data / "q_feats.npy"), np.load(data / "g_feats.npy")
    if name == "ours":
        from sag.evaluation import re_ranking

        re_ranking(torch.from_numpy(q[:8]), torch.from_numpy(g[:64]))  # warm-up: thread pools, lazy initialisation

        def call():
            return re_ranking(torch.from_numpy(q), torch.from_numpy(g)).numpy()
    else:

        def call():
            return original_re_ranking(q, g, kind="stable" if name == "original_stable" else None)

    process_peak = peak_mib()  # loading the features
    reset_peak()
    base = rss_mib()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = peak_mib() - base
    np.save(out, result)
    return {"seconds": seconds, "peak_mib": peak, "process_peak_mib": max(process_peak, base + peak)}


def run_worker(name: str, data: Path, out: Path, threads: int | None = None, omp_passive: bool = False) -> dict:
    """Run ``worker`` in a subprocess and return its JSON result."""
    args = ["--worker", name, "--data", str(data), "--out", str(out)]
    args += ["--threads", str(threads)] if threads else []
    return common.run_json_worker(__file__, args, f"{name} on {data.name}", omp_passive)


def metrics(distmat: np.ndarray, labels: dict[str, np.ndarray], num_q: int) -> str:
    """rank-1 / mAP of a re-ranked matrix, for the table."""
    from sag.evaluation import evaluate_ranking

    r = evaluate_ranking(
        distmat, labels["q_pids"][:num_q], labels["g_pids"], labels["q_camids"][:num_q], labels["g_camids"]
    )
    return f"{r['rank1']:.4f} / {r['mAP']:.4f}"


def main() -> None:
    """Generate the features, run each measurement in its own process, compare the outputs, print a table."""
    parser = common.feature_bench_parser(__doc__)
    parser.add_argument("--ref-n", type=int, default=4000, help="images (queries + gallery) of the subset run")
    parser.add_argument("--ref-full", action="store_true", help="also run the original at full size (~8.5 GiB)")
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.out)))
        return

    print(f"machine: {machine()}; OMP_WAIT_POLICY={'PASSIVE' if args.omp_passive else 'default'}")
    arrays = market_like(args.queries, args.gallery, dim=args.dim, noise=args.noise)
    num = args.queries + args.gallery
    sub_q = max(1, round(args.ref_n * args.queries / num))
    sizes = {"full": (args.queries, args.gallery), "subset": (sub_q, args.ref_n - sub_q)}
    runs = [("ours", "full"), ("ours", "subset"), ("original", "subset"), ("original_stable", "subset")]
    if args.ref_full:
        runs.append(("original", "full"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, (num_q, num_g) in sizes.items():
            folder = Path(tmp) / size
            folder.mkdir()
            np.save(folder / "q_feats.npy", arrays["q_feats"][:num_q])
            np.save(folder / "g_feats.npy", arrays["g_feats"][:num_g])
        outputs = {}
        for name, size in runs:
            out = Path(tmp) / f"{name}_{size}.npy"
            result = run_worker(name, Path(tmp) / size, out, args.threads, args.omp_passive)
            outputs[name, size] = np.load(out)
            num_q, num_g = sizes[size]
            labels = {k: arrays[k] for k in ("q_pids", "q_camids")} | {
                k: arrays[k][:num_g] for k in ("g_pids", "g_camids")
            }
            result["rank1_mAP"] = metrics(outputs[name, size], labels, num_q)
            rows.append((name, size, result))
            print(f"  {name} {size}: {result}", flush=True)
        for name, size in runs:
            if name != "ours":
                diff = np.abs(outputs["ours", size] - outputs[name, size])
                print(
                    f"{name} on {size}: max |ours - {name}| {diff.max():.2e}; fraction of entries differing by more "
                    f"than 1e-5: {(diff > 1e-5).mean():.2e}"
                )

    print()
    print(
        "| implementation | Q x G | time (s) | peak memory above features (MiB) | process peak (MiB) | rank-1 / mAP |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, size, r in rows:
        impl = {
            "ours": "sag.evaluation.re_ranking",
            "original": "original dense algorithm (numpy)",
            "original_stable": "original, np.argsort(kind='stable')",
        }[name]
        num_q, num_g = sizes[size]
        print(
            f"| {impl} | {num_q:,} x {num_g:,} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | "
            f"{r['process_peak_mib']:.0f} | {r['rank1_mAP']} |"
        )


if __name__ == "__main__":
    main()
