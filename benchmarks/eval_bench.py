"""CMC / mAP on Market-1501-sized inputs: sag.evaluation against a torchreid-style per-query numpy loop.

Generates 3,368 query x 15,913 gallery labels (750 ids, 6 cameras, 2,793 distractors of id 0) and two distance
matrices, then measures, each in a fresh subprocess so that peak memory is its own (peak RSS, VmHWM, minus the RSS
once the inputs are loaded):

  identity  squared Euclidean distances of L2-normalised 2048-d features around one random centre per identity
            (ranks like a trained model); also features -> CMC/mAP (distances + ranking) against numpy + the loop
  uniform   uniform random distances in [0, 1): no identity structure at all (an untrained model), the case
            where good matches sit anywhere in the ranking

and prints each ranking time as a ratio to the per-query loop's in the same run.

  python benchmarks/eval_bench.py                      # both cases, full size
  python benchmarks/eval_bench.py --cases uniform --ranking-only
  python benchmarks/eval_bench.py --queries 300 --gallery 2000 --skip-reference   # quick look
"""

from __future__ import annotations

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


def market_like(
    num_q: int = 3368,
    num_g: int = 15913,
    num_ids: int = 750,
    num_cams: int = 6,
    dim: int = 2048,
    distractors: int = 2793,
    noise: float = 3.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random L2-normalised features: identity centre + ``noise`` x Gaussian; distractors (id 0) are pure noise.

    Smaller sets keep Market-1501's proportions: ids per query and distractors per gallery image.
    """
    gen = torch.Generator().manual_seed(seed)
    num_ids = max(1, min(num_ids, round(num_ids * num_q / 3368)))
    distractors = min(round(distractors * num_g / 15913), num_g - num_ids)
    q_pids = torch.arange(1, num_ids + 1).repeat(num_q // num_ids + 1)[:num_q]
    real = torch.arange(1, num_ids + 1).repeat((num_g - distractors) // num_ids + 1)[: num_g - distractors]
    g_pids = torch.cat([torch.zeros(distractors, dtype=torch.int64), real])
    centres = torch.randn(num_ids + 1, dim, generator=gen)

    def features(pids: torch.Tensor) -> torch.Tensor:
        feats = centres[pids] + noise * torch.randn(len(pids), dim, generator=gen)
        feats[pids == 0] = torch.randn(int((pids == 0).sum()), dim, generator=gen)
        return torch.nn.functional.normalize(feats, dim=1)

    return {
        "q_feats": features(q_pids).numpy(),
        "g_feats": features(g_pids).numpy(),
        "q_pids": q_pids.numpy(),
        "g_pids": g_pids.numpy(),
        "q_camids": torch.randint(0, num_cams, (num_q,), generator=gen).numpy(),
        "g_camids": torch.randint(0, num_cams, (num_g,), generator=gen).numpy(),
    }


def torchreid_style_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The per-query numpy evaluation of torchreid's Python fallback: argsort every row, then loop over queries."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        remove = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        raw_cmc = matches[i][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.where(raw_cmc == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
        all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
    cmc = np.mean(np.asarray(all_cmc, dtype=np.float64), axis=0)
    return {"rank1": float(cmc[0]), "mAP": float(np.mean(all_ap)), "mINP": float(np.mean(all_inp))}


def worker(name: str, data: Path, repeats: int) -> dict:
    """One measurement in this (fresh) process: load the inputs, time the call, report peak memory above them."""
    labels = [np.load(data / f"{key}.npy") for key in ("q_pids", "g_pids", "q_camids", "g_camids")]
    if name.endswith("ranking"):
        inputs = (np.load(data / "distmat.npy"),)
    else:
        inputs = (np.load(data / "q_feats.npy"), np.load(data / "g_feats.npy"))
    if name.startswith("ours"):
        from sag.evaluation import evaluate_features, evaluate_ranking

        tensors = [torch.from_numpy(x) for x in inputs]
        if name == "ours_ranking":

            def call(rows=slice(None)):
                return evaluate_ranking(tensors[0][rows], labels[0][rows], *labels[1:2], labels[2][rows], labels[3])
        else:

            def call(rows=slice(None)):
                return evaluate_features(
                    tensors[0][rows], tensors[1], labels[0][rows], labels[1], labels[2][rows], labels[3]
                )

        call(slice(0, 16))  # warm-up: thread pools, lazy initialisation
    else:
        repeats = 1
        if name == "reference_ranking":

            def call():
                return torchreid_style_eval(inputs[0], *labels)
        else:

            def call():
                distmat = 2 - 2 * inputs[0] @ inputs[1].T  # squared Euclidean of L2-normalised features
                return torchreid_style_eval(distmat, *labels)

    reset_peak()
    base = rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return {
        "seconds": min(times),
        "peak_mib": peak_mib() - base,
        "rank1": result["rank1"],
        "mAP": result["mAP"],
        "mINP": result["mINP"],
    }


def machine() -> str:
    """CPU model, cores, torch version, the load when the run started and the float32 matmul rate right now."""
    return f"{common.machine()}, numpy {np.__version__}, float32 matmul {_gemm_gflops():.0f} GFLOP/s"


def _gemm_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Best float32 matrix-product rate of a few size x size x size products: how much of the CPU is ours now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run_worker(name: str, data: Path, repeats: int, threads: int | None = None, omp_passive: bool = False) -> dict:
    """Run ``worker`` in a subprocess and return its JSON result."""
    args = ["--worker", name, "--data", str(data), "--repeats", str(repeats)]
    args += ["--threads", str(threads)] if threads else []
    return common.run_json_worker(__file__, args, name, omp_passive)


def main() -> None:
    """Generate the data once per case, run every measurement in its own process, print a table with ratios."""
    parser = common.feature_bench_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours (best kept; default 3)")
    parser.add_argument("--skip-reference", action="store_true", help="only measure sag.evaluation")
    parser.add_argument("--cases", default="identity,uniform", help="comma-separated: identity, uniform")
    parser.add_argument("--ranking-only", action="store_true", help="skip features -> CMC/mAP")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.repeats)))
        return

    print(f"machine: {machine()}; OMP_WAIT_POLICY={'PASSIVE' if args.omp_passive else 'default'}")
    rows = []
    for case in args.cases.split(","):
        if case not in ("identity", "uniform"):
            raise SystemExit(f"unknown case {case!r}: choose identity or uniform")
        rows += _run_case(case, args)
    print(f"load average at the end: {common.load_average()}")
    print()
    print(
        "| case | task | implementation | time (s) | vs loop | peak memory above inputs (MiB) | rank-1 | mAP | mINP |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for case, name, r in rows:
        task = "distance matrix -> CMC/mAP" if name.endswith("ranking") else "features -> CMC/mAP"
        impl = "sag.evaluation" if name.startswith("ours") else "per-query numpy loop (torchreid Python)"
        ref = next((x for c, n, x in rows if c == case and n == name.replace("ours", "reference")), None)
        ratio = f"{ref['seconds'] / r['seconds']:.1f}x" if ref else ""
        print(
            f"| {case} | {task} | {impl} | {r['seconds']:.3f} | {ratio} | {r['peak_mib']:.0f} | {r['rank1']:.4f} "
            f"| {r['mAP']:.4f} | {r['mINP']:.4f} |"
        )


def _run_case(case: str, args) -> list[tuple[str, str, dict]]:
    """Write one case's inputs to a temporary folder and run its measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        arrays = market_like(args.queries, args.gallery, dim=args.dim, noise=args.noise)
        q, g = torch.from_numpy(arrays["q_feats"]), torch.from_numpy(arrays["g_feats"])
        if case == "identity":
            arrays["distmat"] = (2 - 2 * q @ g.T).clamp_(min=0).numpy()  # squared Euclidean: 2 - 2 cos
        else:
            gen = torch.Generator().manual_seed(1)
            arrays["distmat"] = torch.rand(args.queries, args.gallery, generator=gen).numpy()
        for key, value in arrays.items():
            np.save(data / f"{key}.npy", value)
        size = f"{args.queries:,} x {args.gallery:,}"
        print(f"{case}: {size}, distance matrix {arrays['distmat'].nbytes / 2**20:.0f} MiB", flush=True)
        del arrays, q, g
        names = ["ours_ranking", "reference_ranking"]
        if case == "identity" and not args.ranking_only:
            names += ["ours_features", "reference_features"]
        if args.skip_reference:
            names = [n for n in names if n.startswith("ours")]
        rows = []
        for name in names:
            result = run_worker(name, data, args.repeats, args.threads, args.omp_passive)
            rows.append((case, name, result))
            print(f"  {case} {name}: {result}", flush=True)
    return rows


if __name__ == "__main__":
    main()
