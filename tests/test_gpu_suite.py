"""benchmarks/gpu_suite.py --dry-run: every section of the GPU suite runs on the CPU at toy sizes and reports."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_dry_run_runs_every_section(tmp_path):
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_suite.py", "--dry-run", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report_file,) = tmp_path.glob("dry-run-*.json")
    report = json.loads(report_file.read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    assert list(report["sections"]) == ["tests", "evaluation", "training", "throughput"]
    assert all(s["status"] == "ok" for s in report["sections"].values())
    rows = report["sections"]["throughput"]["result"]["rows"]
    cells = {(r["model"], r["mode"], r["compile"]) for r in rows}
    assert len(cells) == 8 and all(r["images_per_s"] > 0 for r in rows)  # 2 models x (3 modes eager + 1 compiled)
    assert "passed" in report["sections"]["tests"]["result"]["summary"]
    assert report["sections"]["training"]["result"]["train_images_per_s"] > 0
    assert (tmp_path / report_file.name.replace(".json", ".md")).read_text().startswith("# GPU suite")
    assert results.read_bytes() == before  # a dry run never touches RESULTS.md


def test_gpu_suite_refuses_to_run_without_a_gpu_unless_dry(tmp_path):
    code = "import sys, torch; torch.cuda.is_available = lambda: False; sys.argv = ['gpu_suite.py']; "
    code += "import runpy; runpy.run_path('benchmarks/gpu_suite.py', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "--dry-run" in done.stderr
    assert not list(tmp_path.iterdir())


def test_a_failing_section_is_recorded_and_fails_the_suite(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)

    def broken(sizes, device):
        raise RuntimeError("re-ranking diverged")

    monkeypatch.setattr(suite, "run_evaluation", broken)
    assert suite.main(["--dry-run", "--out-dir", str(tmp_path), "--sections", "evaluation"]) == 1
    (report_file,) = tmp_path.glob("dry-run-*.json")
    section = json.loads(report_file.read_text())["sections"]["evaluation"]
    assert section["status"] == "FAILED" and section["error"] == "RuntimeError: re-ranking diverged"
    assert "| evaluation | FAILED |" in report_file.with_suffix(".md").read_text()
