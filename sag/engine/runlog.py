"""The run dir's files: atomic JSON, the per-epoch ``metrics.jsonl`` log and the final summary table."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON: temp file in the same folder, then ``os.replace``."""
    _write_text_atomic(Path(path), json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    _write_text_atomic(Path(path), "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def existing_run_files(run_dir: str | Path) -> list[str]:
    """The run files already in ``run_dir`` (what --overwrite would delete)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


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
