"""benchmarks/_common.py: the RESULTS.md section update and the machine line the four benchmark scripts share."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCHMARKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_update_results_creates_replaces_and_appends(common, tmp_path):
    path = tmp_path / "RESULTS.md"
    common.update_results("<!-- a:start -->\nfirst\n<!-- a:end -->", "<!-- a:start -->", "<!-- a:end -->", path)
    assert path.read_text().startswith("# Benchmark results")
    assert "first" in path.read_text()
    common.update_results("<!-- b:start -->\nother\n<!-- b:end -->", "<!-- b:start -->", "<!-- b:end -->", path)
    common.update_results("<!-- a:start -->\nsecond\n<!-- a:end -->", "<!-- a:start -->", "<!-- a:end -->", path)
    text = path.read_text()
    assert "first" not in text and text.count("second") == 1 and "other" in text
    assert text.index("second") < text.index("other")  # replaced in place, not appended
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_machine_line_names_cpu_torch_and_gpu(common):
    line = common.machine("cpu")
    assert "cores" in line and f"torch {torch.__version__}" in line
    assert line.endswith(datetime.date.today().isoformat())
    assert "GPU: none" in line


def test_json_worker_error_names_the_worker(common, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\nsys.exit('boom')\n")
    with pytest.raises(RuntimeError, match=r"(?s)ranking failed:.*boom"):
        common.run_json_worker(str(script), [], "ranking")
    script.write_text('print("noise")\nprint(\'{"seconds": 1.5}\')\n')
    assert common.run_json_worker(str(script), [], "ranking") == {"seconds": 1.5}


def test_peak_memory_helpers_see_an_allocation(common):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc")
    common.reset_peak()
    before = common.rss_mib()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    assert common.peak_mib() - before > 50


@pytest.fixture(scope="module")
def book_times():
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_book_times", BENCHMARKS / "book_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_book_times_writes_the_box_line_the_box_test_accepts(book_times, tmp_path, monkeypatch):
    import re

    quiet = book_times.box_line({"wall": 41.4, "cpu": 70.2, "load": 1.23}, "2026-12-02")
    busy = book_times.box_line({"wall": 90.0, "cpu": 70.0, "load": 7.6}, "2026-12-02")
    assert quiet == "- **cpu mode**: 41 s on a 2-core CPU (measured 2026-12-02, load 1.2; 70 s of CPU time)"
    assert busy.startswith("- **cpu mode**: 70 s of CPU time on a 2-core CPU (measured 2026-12-02, load 8: ")
    pattern = r"- \*\*cpu mode\*\*: \d+ s (of CPU time )?on a 2-core CPU \(measured \d{4}-\d{2}-\d{2}, load [\d.]+"
    assert re.match(pattern, quiet) and re.match(pattern, busy)  # tests/test_book_boxes.py's rule
    chapter = tmp_path / "03_x.md"
    chapter.write_text("# T\n\n:::{admonition} Running\n- **cpu mode**: 1 s (old)\n- **gpu mode**: g\n:::\n")
    monkeypatch.setattr(book_times, "BOOK", tmp_path)
    book_times.update_box("03_x", quiet)
    assert chapter.read_text().splitlines()[3:5] == [quiet, "- **gpu mode**: g"]
    (tmp_path / "04_y.md").write_text("# no box\n")
    with pytest.raises(ValueError, match=r"04_y\.md has no '- \*\*cpu mode\*\*"):
        book_times.update_box("04_y", quiet)


def test_book_times_refuses_an_unknown_chapter_before_running_anything(book_times, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["book_times.py", "03_baseline", "99_nope"])
    monkeypatch.setattr(book_times, "run_chapter", lambda stem: pytest.fail("nothing may run"))
    with pytest.raises(SystemExit) as exit_info:
        book_times.main()
    assert exit_info.value.code == 2
    assert "no notebook book/<stem>.ipynb for ['99_nope']" in capsys.readouterr().err
