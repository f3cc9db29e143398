"""The paper's reported numbers (Tables 1, 3, 4, 5) as data, in percent, so every comparison can show "paper"."""

from __future__ import annotations

from typing import Any

METRICS = ("rank1", "rank5", "rank10", "mAP")  # the paper's R1, R5, R10, mAP; all numbers below are percent
TABLE1_DATASETS = ("market1501", "cuhk03", "dukemtmc")  # Table 1's column groups, in the paper's order
TABLE1_ROWS = ("baseline", "D1", "D2", "D3", "D4", "D1,2", "D1,2,3", "D1,2,3,4")
ROW_DEPTHS: dict[str, tuple[int, ...]] = {
    "baseline": (),
    "D1": (1,),
    "D2": (2,),
    "D3": (3,),
    "D4": (4,),
    "D1,2": (1, 2),
    "D1,2,3": (1, 2, 3),
    "D1,2,3,4": (1, 2, 3, 4),
}
ROW_LABELS = {  # the paper's own row names
    "baseline": "Baseline(ResNet50)",
    "D1": "Basel.+ D1 (h=40,w=16)",
    "D2": "Basel.+ D2 (h=20,w=8)",
    "D3": "Basel.+ D3 (h=10,w=4)",
    "D4": "Basel.+ D4 (h=5,w=2)",
    "D1,2": "Basel.+ D1,2",
    "D1,2,3": "Basel.+ D1,2,3",
    "D1,2,3,4": "Basel.+ D1,2,3,4",
}

# Table 1 (no re-ranking), per dataset: row -> (R1, R5, R10, mAP)
_TABLE1_RAW: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "market1501": {
        "baseline": (83.49, 93.82, 95.90, 63.87),
        "D1": (84.35, 94.00, 96.08, 64.40),
        "D2": (85.18, 94.12, 96.20, 65.90),
        "D3": (87.65, 95.07, 96.91, 70.03),
        "D4": (90.17, 96.38, 97.48, 73.87),
        "D1,2": (84.09, 93.97, 96.17, 61.28),
        "D1,2,3": (85.10, 94.24, 96.23, 65.60),
        "D1,2,3,4": (82.13, 92.79, 95.72, 60.81),
    },
    "cuhk03": {
        "baseline": (71.04, 92.89, 96.63, 80.46),
        "D1": (78.50, 95.60, 98.22, 85.93),
        "D2": (78.99, 95.63, 98.13, 86.25),
        "D3": (81.41, 96.62, 98.51, 88.00),
        "D4": (82.46, 96.44, 98.42, 88.64),
        "D1,2": (77.60, 95.79, 98.50, 85.52),
        "D1,2,3": (77.77, 95.81, 98.34, 85.59),
        "D1,2,3,4": (76.51, 94.86, 97.86, 84.53),
    },
    "dukemtmc": {
        "baseline": (72.04, 84.96, 89.09, 54.36),
        "D1": (73.74, 84.87, 88.24, 51.99),
        "D2": (74.28, 85.05, 89.18, 52.20),
        "D3": (76.30, 87.25, 90.80, 56.62),
        "D4": (79.94, 89.68, 92.15, 60.88),
        "D1,2": (74.55, 84.96, 88.69, 51.65),
        "D1,2,3": (72.44, 84.52, 88.47, 51.03),
        "D1,2,3,4": (70.42, 82.27, 86.58, 48.76),  # printed "4876": see CORRECTIONS
    },
}
TABLE1: dict[str, dict[str, dict[str, float]]] = {
    dataset: {row: dict(zip(METRICS, values, strict=True)) for row, values in rows.items()}
    for dataset, rows in _TABLE1_RAW.items()
}

CORRECTIONS = (
    "Table 1, DukeMTMC, Basel.+ D1,2,3,4, mAP: printed '4876', recorded as 48.76 (a missing decimal point; "
    "every other mAP in the column lies between 51 and 61).",
)
NOTES = (
    "Table 3 is transcribed as printed. Some peer rows look shifted by a column in the paper itself "
    "(MR B-CNN: single-query mAP 85.01 above its R1 66.36; HydraPlus-Net: 91.3 and 94.5 look like R5/R10; "
    "Cross-GAN: multi-query R1 94.3); they are kept as printed, not guessed.",
    "Table 4 (CUHK03) has no SAG+RR row in the paper; Tables 3 and 5 do.",
)

# Table 3, Market-1501: method -> (single-query R1, mAP, multi-query R1, mAP); None = '-' (not reported)
_TABLE3_RAW: dict[str, tuple[float | None, float | None, float | None, float | None]] = {
    "CAN": (60.3, 35.9, 72.1, 47.9),
    "DNS": (61.02, 35.68, 71.56, 46.03),
    "Gated Reid": (65.88, 39.55, 76.04, 48.45),
    "MR B-CNN": (66.36, 85.01, 90.17, 41.17),
    "Cross-GAN*": (72.15, None, 94.3, 48.24),
    "SOMAnet": (73.87, 47.89, 81.29, 56.98),
    "HydraPlus-Net": (76.9, 91.3, 94.5, None),
    "Verif.Identif": (79.51, 59.87, 85.47, 70.33),
    "MSCAN": (80.31, 57.53, 86.79, 66.70),
    "SVDNet": (82.3, 62.1, None, None),
    "DeepTransfer*": (83.7, 65.5, 89.6, 73.80),
    "LSRO": (83.97, 66.07, 88.42, 76.10),
    "JLML": (85.1, 65.5, 89.7, 74.5),
    "KFM-ReID": (90.1, 75.3, None, None),
    "SAG": (90.17, 73.87, 92.76, 80.15),
    "SAG+RR": (92.04, 89.28, 94.60, 85.32),
}
TABLE3: dict[str, dict[str, dict[str, float | None]]] = {
    method: {"single_query": {"rank1": v[0], "mAP": v[1]}, "multi_query": {"rank1": v[2], "mAP": v[3]}}
    for method, v in _TABLE3_RAW.items()
}

# Table 4, CUHK03 (detected, classic protocol): method -> (R1, R5, R10, mAP)
_TABLE4_RAW: dict[str, tuple[float | None, ...]] = {
    "SI-CI": (52.20, 84.30, 94.8, None),
    "DNS": (54.7, 80.1, 88.30, None),
    "FisherNet": (63.23, 89.95, 92.73, 44.11),
    "MR B-CNN": (63.67, 89.15, 94.66, None),
    "Gated ReID": (68.1, 88.1, 94.6, 58.8),
    "SOMAnet": (72.40, 92.10, 95.80, None),
    "SSM": (72.7, 92.4, 96.1, None),
    "SVDNet": (81.8, 95.2, 97.2, 84.8),
    "SAG": (82.46, 96.44, 98.42, 88.64),
}
TABLE4: dict[str, dict[str, float | None]] = {m: dict(zip(METRICS, v, strict=True)) for m, v in _TABLE4_RAW.items()}

# Table 5, DukeMTMC-reID: method -> (R1, R5, R10, mAP)
_TABLE5_RAW: dict[str, tuple[float | None, ...]] = {
    "PUL": (36.5, 52.6, 57.9, 21.5),
    "SPGAN": (46.9, 62.6, 68.5, 26.4),
    "LSRO": (67.68, None, None, 47.13),
    "OIM": (68.1, None, None, 47.4),
    "TriNet*": (72.44, None, None, 53.50),
    "SVDNet": (76.7, 86.4, 89.9, 56.8),
    "DCC": (80.3, 92.0, 97.1, 59.2),
    "SAG": (79.94, 89.68, 92.15, 60.88),
    "SAG+RR": (85.28, 91.07, 93.76, 81.05),
}
TABLE5: dict[str, dict[str, float | None]] = {m: dict(zip(METRICS, v, strict=True)) for m, v in _TABLE5_RAW.items()}

TABLES = ("1", "3", "4", "5")


def table1(dataset: str, row: str) -> dict[str, float]:
    """Table 1's numbers (percent) for one dataset and row, e.g. ``table1("market1501", "D4")["rank1"] == 90.17``."""
    dataset = _check_dataset(dataset)
    if row not in TABLE1[dataset]:
        raise ValueError(f"unknown Table 1 row {row!r}; valid rows: {', '.join(TABLE1_ROWS)}")
    return dict(TABLE1[dataset][row])


def cmc_points(dataset: str, row: str = "D4") -> dict[int, float]:
    """Table 1's CMC points {rank: percent} for a row, e.g. ``{1: 90.17, 5: 96.38, 10: 97.48}``, for CMC plots."""
    values = table1(dataset, row)
    return {1: values["rank1"], 5: values["rank5"], 10: values["rank10"]}


def table1_rows(dataset: str | None = None) -> list[dict[str, Any]]:
    """Table 1 as tidy rows: {table, dataset, method (the row), depths, label, setting, metric, value (percent)}."""
    datasets = TABLE1_DATASETS if dataset is None else (_check_dataset(dataset),)
    return [
        _tidy("1", ds, row, "single_query", metric, value)
        for ds in datasets
        for row in TABLE1_ROWS
        for metric, value in TABLE1[ds][row].items()
    ]


def comparison_rows(table: str) -> list[dict[str, Any]]:
    """Tables 3-5 as tidy rows (methods vs state of the art); '-' entries are left out."""
    if table == "3":
        rows = [
            _tidy("3", "market1501", method, setting, metric, value)
            for method, settings in TABLE3.items()
            for setting, metrics in settings.items()
            for metric, value in metrics.items()
        ]
    elif table in ("4", "5"):
        dataset, data = ("cuhk03", TABLE4) if table == "4" else ("dukemtmc", TABLE5)
        rows = [
            _tidy(table, dataset, method, "single_query", metric, value)
            for method, metrics in data.items()
            for metric, value in metrics.items()
        ]
    else:
        raise ValueError(f"unknown comparison table {table!r}; valid: 3 (Market-1501), 4 (CUHK03), 5 (DukeMTMC)")
    return [r for r in rows if r["value"] is not None]


def paper_rows(table: str | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every reported number as tidy rows, optionally filtered by table ("1", "3", "4", "5") and dataset."""
    if table is not None and str(table) not in TABLES:
        raise ValueError(f"unknown table {table!r}; valid tables: {', '.join(TABLES)}")
    tables = TABLES if table is None else (str(table),)
    rows = []
    for t in tables:
        rows += table1_rows() if t == "1" else comparison_rows(t)
    if dataset is not None:
        dataset = _check_dataset(dataset)
        rows = [r for r in rows if r["dataset"] == dataset]
    return rows


def sag_results(dataset: str) -> dict[str, dict[str, float | None]]:
    """The paper's headline SAG (D4) numbers for a dataset, with and without re-ranking where reported."""
    dataset = _check_dataset(dataset)
    out: dict[str, dict[str, float | None]] = {"SAG": dict(TABLE1[dataset]["D4"])}
    if dataset == "market1501":
        out["SAG+RR"] = {**TABLE3["SAG+RR"]["single_query"], "rank5": None, "rank10": None}
        out["SAG multi-query"] = dict(TABLE3["SAG"]["multi_query"])
        out["SAG+RR multi-query"] = dict(TABLE3["SAG+RR"]["multi_query"])
    elif dataset == "dukemtmc":
        out["SAG+RR"] = dict(TABLE5["SAG+RR"])
    return out


def _check_dataset(dataset: str) -> str:
    """The dataset name if the paper reports it, else a ValueError listing the valid names."""
    if dataset not in TABLE1_DATASETS:
        raise ValueError(f"the paper reports no numbers for {dataset!r}; valid datasets: {', '.join(TABLE1_DATASETS)}")
    return dataset


def _tidy(table: str, dataset: str, method: str, setting: str, metric: str, value: float | None) -> dict[str, Any]:
    """One tidy row; Table 1 rows also carry their SAG depths and the paper's label."""
    return {
        "table": table,
        "dataset": dataset,
        "method": method,
        "depths": ROW_DEPTHS.get(method) if table == "1" else None,
        "label": ROW_LABELS.get(method, method) if table == "1" else method,
        "setting": setting,
        "metric": metric,
        "value": value,
    }
