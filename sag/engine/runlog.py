"""The run dir's files: atomic JSON, the per-epoch ``metrics.jsonl`` log and the final summary table."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sag.atomic import write_text_atomic

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json")
OUTPUT_GLOBS = ("eval_*.json", "figures")  # written into a run dir by evaluate and visualize


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (``sag.atomic``: temp file, then ``os.replace``)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (empty if the file is missing); a torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash: everything after it is untrusted
    return records


def append_metrics(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def truncate_metrics(path: str | Path, last_epoch: int) -> list[dict[str, Any]]:
    """Keep the records up to ``last_epoch`` (the resumed checkpoint's) and return them."""
    kept = [r for r in read_metrics(path) if r.get("epoch", 0) <= last_epoch]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def existing_run_files(run_dir: str | Path) -> list[str]:
    """The run files already in ``run_dir`` (what --overwrite deletes), with ``evaluate``'s and ``visualize``'s."""
    run_dir = Path(run_dir)
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    outputs = [p.name for pattern in OUTPUT_GLOBS for p in sorted(run_dir.glob(pattern))] if run_dir.is_dir() else []
    return found + outputs


def remove_run_files(run_dir: str | Path, names: Sequence[str]) -> None:
    """Delete ``names`` (files, or folders such as figures/) from ``run_dir``."""
    for name in names:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def read_run_config(path: str | Path) -> Any:
    """The TrainConfig stored in a run's ``config.json``; a broken file is a ValueError naming it."""
    from sag.engine.config import TrainConfig

    path = Path(path)
    fix = "repair it, or start the run over with --overwrite"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {fix}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object of training options, got {type(data).__name__}; {fix}")
    try:
        config = TrainConfig.from_dict(data)
        dataclasses.replace(config, resume=False, overwrite=False).validate()
    except (TypeError, ValueError, KeyError, IndexError) as err:
        raise ValueError(f"{path} holds an unusable training option ({err}); {fix}") from err
    return config


def format_table(rows: Sequence[tuple[str, Any]], title: str = "") -> str:
    """Two aligned columns under an optional title."""
    width = max((len(name) for name, _ in rows), default=0)
    lines = [title, "-" * max(len(title), width + 12)] if title else []
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of the final table: best epoch, validation and test scores, time."""
    test = summary.get("test", {})
    rows = [("run dir", summary.get("run_dir", "")), ("best epoch", str(summary.get("best_epoch")))]
    val = summary.get("best_val") or {}
    if "mAP" in val:
        rows.append(("val rank-1 / mAP", f"{100 * val['rank1']:.2f} / {100 * val['mAP']:.2f}"))
    elif val:
        rows.append(("val loss / accuracy", f"{val['loss']:.4f} / {100 * val['accuracy']:.2f}"))
    if "tested" in summary:
        rows.append(("tested epoch", f"{summary.get('best_epoch')} ({summary['tested']})"))
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        if key in test:
            rows.append((f"test {key}", f"{100 * test[key]:.2f}"))
    if "protocol" in summary:
        from sag.evaluation.protocol import describe_record

        rows.append(("test protocol", describe_record(summary["protocol"])))
    rows.append(("train images/s", f"{summary.get('images_per_s', 0.0):.1f}"))
    rows.append(("wall time", f"{summary.get('wall_seconds', 0.0):.1f} s"))
    rows.append(("device", f"{summary.get('device')} x {summary.get('world_size', 1)}"))
    return rows
