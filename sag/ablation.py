"""Table 1 ablation: train every row x seed with sag.engine (resumable), then summarise beside the paper's numbers."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sag import paper
from sag.atomic import write_text_atomic
from sag.evaluation.protocol import LEGACY, describe_record

if TYPE_CHECKING:
    from sag.engine import TrainConfig

ROW_GROUPS = {
    "table1": paper.TABLE1_ROWS,
    "all": paper.TABLE1_ROWS,
    "single": ("baseline", "D1", "D2", "D3", "D4"),
    "stacked": ("baseline", "D1,2", "D1,2,3", "D1,2,3,4"),
    "sag-vs-baseline": ("baseline", "D4"),
}
METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")  # results.csv holds them in percent, like the paper
CSV_FIELDS = (
    "row",
    "depths",
    "seed",
    *METRICS,
    "best_epoch",
    "epochs",
    "wall_seconds",
    "flip",
    "ap",
    "average",
    "run_dir",
)
MANIFEST = "ablation.json"
# the config fields that must agree between the rows of one ablation (everything but depths, seed, out, ...)
_SHARED_FIELDS = (
    "dataset", "backbone", "preset", "epochs", "batch_size", "lr", "precision", "pretrained",
    "val_ids", "input_size", "dataset_options", "eval_every",
    "validation", "test_checkpoint", "drop_last", "flip", "ap", "average", "zero_center",
)  # fmt: skip


def parse_rows(spec: str | Iterable[str]) -> list[str]:
    """Row names from "table1" (all eight), a group (single, stacked, sag-vs-baseline) or a comma list.

    In a comma list a bare number continues the previous row: "baseline,D1,2,D4" -> baseline, D1,2, D4
    (write "D1,D2" for two rows). Rows may also be written D1_2 / D1-2 / D1+2 / d4 / none.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    tokens = [part.strip() for item in items for part in item.split(",")]
    rows: list[str] = []
    for token in filter(None, tokens):
        low = token.lower()
        if low in ROW_GROUPS:
            rows += ROW_GROUPS[low]
        elif low in ("baseline", "none", "base"):
            rows.append("baseline")
        elif token.isdigit() and rows and rows[-1].startswith("D"):
            rows[-1] += f",{token}"
        elif low.startswith("d"):
            digits = [c for c in low[1:] if c not in "_-+ ,"]
            rows.append("D" + ",".join(digits))
        else:
            rows.append(token)
    unknown = [r for r in rows if r not in paper.ROW_DEPTHS]
    if unknown:
        raise ValueError(
            f"unknown ablation row(s) {unknown}; valid rows: {', '.join(paper.TABLE1_ROWS)} "
            f"or groups: {', '.join(ROW_GROUPS)}"
        )
    if not rows:
        raise ValueError("no ablation row given; use --rows table1 or e.g. --rows baseline,D4")
    return list(dict.fromkeys(rows))  # drop repeats, keep order


def row_dirname(row: str) -> str:
    """The folder of a row: "D1,2,3" -> "D1_2_3" (no commas in paths), "baseline" stays."""
    return row.replace(",", "_")


def run_dir(out: str | os.PathLike, row: str, seed: int) -> Path:
    """``out/<row>/seed<k>``."""
    return Path(out) / row_dirname(row) / f"seed{seed}"


def run_ablation(
    base: TrainConfig,
    rows: Sequence[str],
    seeds: int | Sequence[int],
    out: str | os.PathLike,
    log: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Train every row x seed into ``out/<row>/seed<k>`` and write results.csv, table.md and ablation.png.

    Resumable: a run with summary.json is never re-run; one with last.pt resumes; anything else starts afresh.
    ``base`` gives every training option except depths, seed and out. Returns the results rows (percent).
    """
    from sag.engine import train

    rows = parse_rows(rows)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("no seed given; use --seeds 1 or more")
    out = Path(out)
    _check_manifest(out, base, rows, seed_list)
    for row in rows:
        for seed in seed_list:
            target = run_dir(out, row, seed)
            if (target / "summary.json").is_file():
                log(f"[ablate] {row} seed {seed}: done, skipped ({target})")
                continue
            resume = (target / "last.pt").is_file()
            log(f"[ablate] {row} seed {seed}: {'resuming' if resume else 'training'} -> {target}")
            config = dataclasses.replace(
                base, depths=paper.ROW_DEPTHS[row], seed=seed, out=str(target), resume=resume, overwrite=not resume
            )
            train(config)
            write_outputs(out, dataset=base.dataset, figure=False)  # partial results stay visible
    return write_outputs(out, dataset=base.dataset)


def collect_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """One results row (metrics in percent) per finished run under ``out/<row>/seed<k>/summary.json``."""
    found = []
    for summary_path in sorted(Path(out).glob("*/seed*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config, test = summary.get("config", {}), summary.get("test", {})
        depths = tuple(config.get("depths", ()))
        row = next((r for r, d in paper.ROW_DEPTHS.items() if d == depths), None)
        if row is None or row_dirname(row) != summary_path.parent.parent.name:
            continue  # not an ablation run of this layout
        found.append(
            {
                "row": row,
                "depths": "+".join(map(str, depths)) or "none",
                "seed": int(config.get("seed", summary_path.parent.name.removeprefix("seed"))),
                **{m: 100.0 * float(test[m]) if m in test else math.nan for m in METRICS},
                "best_epoch": summary.get("best_epoch"),
                "epochs": config.get("epochs"),
                "wall_seconds": summary.get("wall_seconds"),
                **(LEGACY | summary.get("protocol", {})),  # runs recorded before the protocol was a setting: LEGACY
                "run_dir": summary_path.parent.relative_to(out).as_posix(),
            }
        )
    order = {r: i for i, r in enumerate(paper.TABLE1_ROWS)}
    return sorted(found, key=lambda r: (order[r["row"]], r["seed"]))


def summarize(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """Per row: seeds, and ``<metric>_mean``, ``<metric>_std`` (sample std, 0 for one seed) and, when a baseline
    shares seeds, ``<metric>_gain`` / ``<metric>_gain_std``: the mean and std over seeds of row minus baseline, and
    ``<metric>_gain_p``: the two-sided paired t-test p-value of that gain (NaN below 2 pairs or with no spread)."""
    by_row: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in results:
        by_row.setdefault(r["row"], {})[int(r["seed"])] = r
    order = {r: i for i, r in enumerate(paper.TABLE1_ROWS)}
    base = by_row.get("baseline", {})
    out = []
    for row in sorted(by_row, key=lambda r: order.get(r, len(order))):
        seeds = by_row[row]
        entry: dict[str, Any] = {"row": row, "seeds": len(seeds)}
        for m in metrics:
            values = np.array([float(seeds[s][m]) for s in sorted(seeds)])
            entry[f"{m}_mean"], entry[f"{m}_std"] = _mean_std(values)
            paired = [float(seeds[s][m]) - float(base[s][m]) for s in sorted(seeds) if s in base]
            if paired and row != "baseline":
                entry[f"{m}_gain"], entry[f"{m}_gain_std"] = _mean_std(np.array(paired))
                entry[f"{m}_gain_p"] = _paired_p(np.array(paired))
        out.append(entry)
    return out


def table_markdown(
    results: Sequence[Mapping[str, Any]],
    paper_dataset: str | None = "market1501",
    metrics: Sequence[str] = ("rank1", "rank5", "rank10", "mAP"),
    title: str | None = None,
) -> str:
    """Markdown table: per row the paper's numbers (Table 1, ``paper_dataset``) beside ours (mean ± std, percent)."""
    summary = summarize(results, metrics)
    heads = [m.replace("rank", "R") for m in metrics]
    cols = ["row", "seeds"]
    if paper_dataset:
        cols += [f"paper {h}" for h in heads]
    cols += [f"ours {h}" for h in heads] + ["ours ΔR1 vs baseline", "ours ΔmAP vs baseline"]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for s in summary:
        cells = [s["row"], str(s["seeds"])]
        if paper_dataset:
            known = paper.TABLE1[paper_dataset].get(s["row"], {})
            cells += [f"{known[m]:.2f}" if m in known else "-" for m in metrics]
        cells += [f"{s[f'{m}_mean']:.2f} ± {s[f'{m}_std']:.2f}" for m in metrics]
        for m in ("rank1", "mAP"):
            gain = s.get(f"{m}_gain")
            p = s.get(f"{m}_gain_p", math.nan)
            p_text = "" if math.isnan(p) else f" (p {p:.2f})" if p >= 0.01 else f" (p {p:.0e})"
            cells.append("-" if gain is None else f"{gain:+.2f} ± {s[f'{m}_gain_std']:.2f}{p_text}")
        lines.append("| " + " | ".join(cells) + " |")
    if paper_dataset:
        lines += [
            "",
            f"Paper: Table 1, {paper_dataset}, ResNet50 (percent). Ours: mean ± sample std over seeds; Δ: row minus "
            "the baseline of the same seed, with the two-sided paired t-test p-value over seeds.",
        ]
    return "\n".join(lines) + "\n"


def write_results_csv(results: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """results.csv: one line per row x seed, metrics in percent."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
    return write_text_atomic(path, buffer.getvalue())


def read_results_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Inverse of ``write_results_csv`` (numbers parsed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `python -m sag ablate --out {path.parent}` first")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seed"] = int(r["seed"])
        if "flip" in r:
            r["flip"] = r["flip"] == "True"
        for m in (*METRICS, "wall_seconds"):
            r[m] = float(r[m]) if r.get(m) not in (None, "") else math.nan
    return rows


def write_outputs(out: str | os.PathLike, dataset: str | None = None, figure: bool = True) -> list[dict[str, Any]]:
    """(Re)write out/results.csv, out/table.md and (``figure``) out/ablation.png from the finished runs."""
    out = Path(out)
    results = collect_results(out)
    if not results:
        return results
    paper_dataset = dataset if dataset in paper.TABLE1_DATASETS else "market1501"
    write_results_csv(results, out / "results.csv")
    title = f"Table 1 rows on {dataset or 'the data'}"
    if dataset != paper_dataset:
        title += f" vs paper {paper_dataset}"
    protocols = sorted({describe_record({k: r[k] for k in ("flip", "ap", "average")}) for r in results})
    title += f"; test protocol: {' | '.join(protocols)}"
    write_text_atomic(out / "table.md", table_markdown(results, paper_dataset, title=title))
    if figure:
        from sag.plots.ablation import plot_ablation
        from sag.plots.style import save_figure

        save_figure(plot_ablation(results, paper_dataset=paper_dataset, title=title), out / "ablation.png")
    return results


MASS_FIELDS = (
    "row", "seed", "source", "grid", "images",
    "identity", "person", "background", "identity_area", "person_area", "background_area",
    "identity_lift", "person_lift", "background_lift",
)  # fmt: skip


def write_attention_mass(
    out: str | os.PathLike, num_images: int = 200, device: str | None = None, log: Callable[[str], Any] = print
) -> list[dict[str, Any]]:
    """Measure every finished run's attention mass (best.pt) on synthetic test images; write attention_mass.csv
    (row x seed x map), attention_mass.md (mean ± std over seeds) and attention_mass.png. Returns the CSV rows."""
    from sag.analysis import REGIONS, measure_checkpoint, summarize_mass
    from sag.plots.mass import plot_attention_mass
    from sag.plots.style import save_figure

    out = Path(out)
    per_run = []
    for result in collect_results(out):
        checkpoint = out / result["run_dir"] / "best.pt"
        if not checkpoint.is_file():
            log(f"[ablate] {checkpoint} is missing: no attention mass for {result['row']} seed {result['seed']}")
            continue
        rows = measure_checkpoint(checkpoint, num_images=num_images, device=device)
        for s in summarize_mass(rows):
            per_run.append({"row": result["row"], "seed": result["seed"], **s})
    if not per_run:
        return per_run
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MASS_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in per_run:
        writer.writerow({k: f"{v:.5f}" if isinstance(v, float) else v for k, v in r.items()})
    write_text_atomic(out / "attention_mass.csv", buffer.getvalue())
    overall = _mass_over_seeds(per_run, REGIONS)
    write_text_atomic(out / "attention_mass.md", _mass_markdown(overall, REGIONS))
    plotted = [
        {**o, **{r: o[f"{r}_mean"] for r in REGIONS}, **{f"{r}_lift": o[f"{r}_lift_mean"] for r in REGIONS}}
        | {"map": f"{o['row']}: {o['source']} grid" if o["source"].startswith("D") else f"{o['row']}: {o['source']}"}
        for o in overall
    ]
    title = "Attention lift over a uniform map on synthetic test images (mean ± std over seeds)"
    fig = plot_attention_mass(plotted, label_keys=("map",), title=title, kind="lift")
    save_figure(fig, out / "attention_mass.png")
    return per_run


def _mass_over_seeds(per_run: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> list[dict[str, Any]]:
    """Per (row, map): mean ± std over seeds of each region's mass and lift, and the mean area."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in per_run:
        groups.setdefault((r["row"], r["source"]), []).append(r)
    order = {r: i for i, r in enumerate(paper.TABLE1_ROWS)}
    out = []
    for (row, source), members in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        entry: dict[str, Any] = {"row": row, "source": source, "grid": members[0]["grid"], "seeds": len(members)}
        for region in regions:
            for key in (region, f"{region}_lift"):
                entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std(np.array([float(m[key]) for m in members]))
            entry[f"{region}_area"] = float(np.mean([float(m[f"{region}_area"]) for m in members]))
        out.append(entry)
    return out


def _mass_markdown(overall: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> str:
    """The attention-mass table: share of each map on each region (percent) and lift over a uniform map."""
    cols = ["row", "map", "grid", "seeds"]
    cols += [f"{r} %" for r in regions] + [f"{r} area %" for r in regions] + [f"{r} lift" for r in regions]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(cols) - 4)) + "|"]
    for o in overall:
        cells = [o["row"], "grid" if o["source"].startswith("D") else o["source"], o["grid"], str(o["seeds"])]
        if o["source"].startswith("D"):
            cells[1] = f"{o['source']} grid"
        cells += [f"{100 * o[f'{r}_mean']:.1f} ± {100 * o[f'{r}_std']:.1f}" for r in regions]
        cells += [f"{100 * o[f'{r}_area']:.1f}" for r in regions]
        cells += [f"{o[f'{r}_lift_mean']:.2f} ± {o[f'{r}_lift_std']:.2f}" for r in regions]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nShare of each map's mass on the known regions of the synthetic test images (mean ± std over seeds). "
        "area = the regions' pixel share, what a uniform map scores; lift = share / area (1 = no preference). "
        "'activation' = channel mean of the last feature map, clamped at 0 and normalised (the baseline's map)."
    )
    return "\n".join(lines) + "\n" + note + "\n"


def _check_manifest(out: Path, base: TrainConfig, rows: Sequence[str], seeds: Sequence[int]) -> None:
    """Write out/ablation.json, or check that an existing one used the same training options."""
    shared = {k: v for k, v in base.to_dict().items() if k in _SHARED_FIELDS}
    path = out / MANIFEST
    if path.is_file():
        before = json.loads(path.read_text()).get("config", {})
        # a field the manifest does not record yet (written by an older sag) is taken as agreeing
        diffs = [f"{k}: {before[k]!r} -> {shared[k]!r}" for k in shared if k in before and before[k] != shared[k]]
        if diffs:
            raise ValueError(
                f"{out} holds an ablation with other training options ({'; '.join(diffs)}); "
                "use the same options to resume it, or a new --out"
            )
        previous = json.loads(path.read_text())
        rows = list(dict.fromkeys([*previous.get("rows", []), *rows]))
        seeds = sorted(set(previous.get("seeds", [])) | set(seeds))
    write_text_atomic(path, json.dumps({"config": shared, "rows": list(rows), "seeds": list(seeds)}, indent=2) + "\n")


def _paired_p(differences: np.ndarray) -> float:
    """Two-sided p-value of a one-sample t-test of the paired differences against 0 (= scipy's ttest_rel)."""
    from scipy import stats

    if len(differences) < 2 or float(np.std(differences)) <= 1e-9 * max(1.0, float(np.abs(differences).max())):
        return math.nan
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else 0.0)
