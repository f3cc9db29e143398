"""The Table 1 ablation and the visualize command, end to end on a tiny synthetic world on the CPU."""

from __future__ import annotations

import csv
import json
import math

import pytest

import sag.engine
from sag import ablation
from sag.cli import main

WORLD = ["--synthetic-ids", "6", "--synthetic-test-ids", "4", "--synthetic-images-per-id", "4"]
TRAIN = ["--backbone", "resnet18", "--epochs", "1", "--batch-size", "8", "--input-size", "32x16", "--val-ids", "0"]


def _ablate(root, out, *extra):
    argv = ["ablate", "--dataset", "synthetic", "--data-root", str(root), *WORLD, *TRAIN, "--rows", "baseline,D1"]
    argv += ["--ap", "standard"]  # every training option reaches each run, the test protocol too
    return main([*argv, "--seeds", "2", "--out", str(out), "--mass-images", "12", "--no-progress", *extra])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny ablation (2 rows x 2 seeds), shared by the tests below; returns (data root, out dir, calls)."""
    base = tmp_path_factory.mktemp("ablation")
    calls = []
    real_train = sag.engine.train

    def counting_train(config, *args, **kwargs):
        calls.append(config)
        return real_train(config, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sag.engine, "train", counting_train)
        assert _ablate(base / "data", base / "out") == 0
    return base / "data", base / "out", calls


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def test_parse_rows_groups_lists_and_spellings():
    assert ablation.parse_rows("table1") == list(ablation.paper.TABLE1_ROWS)
    assert ablation.parse_rows("baseline,D4") == ["baseline", "D4"]
    assert ablation.parse_rows("baseline,D1,2,D4") == ["baseline", "D1,2", "D4"]
    assert ablation.parse_rows("D1,D2") == ["D1", "D2"]
    assert ablation.parse_rows("none,d1_2_3,D1-2-3-4,D4,d4") == ["baseline", "D1,2,3", "D1,2,3,4", "D4"]
    with pytest.raises(ValueError, match="valid rows"):
        ablation.parse_rows("D5")
    with pytest.raises(ValueError, match="valid rows"):
        ablation.parse_rows("baseline,2")
    assert ablation.row_dirname("D1,2,3") == "D1_2_3"


def test_summary_pairs_seeds_and_table_puts_paper_beside_ours():
    results = [
        {"row": "D4", "seed": 0, "rank1": 70.0, "rank5": 90.0, "rank10": 95.0, "mAP": 50.0},
        {"row": "baseline", "seed": 0, "rank1": 60.0, "rank5": 85.0, "rank10": 92.0, "mAP": 40.0},
        {"row": "D4", "seed": 1, "rank1": 74.0, "rank5": 91.0, "rank10": 96.0, "mAP": 54.0},
        {"row": "baseline", "seed": 1, "rank1": 62.0, "rank5": 86.0, "rank10": 93.0, "mAP": 42.0},
    ]
    base, d4 = ablation.summarize(results, ("rank1", "mAP"))
    assert base["row"] == "baseline" and "rank1_gain" not in base
    assert d4["rank1_mean"] == pytest.approx(72.0) and d4["rank1_std"] == pytest.approx(2**0.5 * 2)
    assert d4["rank1_gain"] == pytest.approx(11.0) and d4["rank1_gain_std"] == pytest.approx(2**0.5)
    table = ablation.table_markdown(results, "market1501")
    d4_line = next(line for line in table.splitlines() if line.startswith("| D4 |"))
    cells = [c.strip() for c in d4_line.strip("|").split("|")]
    assert cells[:6] == ["D4", "2", "90.17", "96.38", "97.48", "73.87"]  # the paper's Table 1 row
    assert cells[6] == "72.00 ± 2.83" and cells[-2] == "+11.00 ± 1.41 (p 0.06)"
    # paired t-test by hand: gains 10 and 12 -> t = 11 / (sqrt(2) / sqrt(2)) = 11 on 1 degree of freedom, and the
    # t distribution with 1 dof is Cauchy: two-sided p = 1 - 2 atan(t) / pi
    assert d4["rank1_gain_p"] == pytest.approx(1 - 2 * math.atan(11.0) / math.pi)


def test_paired_p_value_edge_cases():
    row = [{"row": "D4", "seed": s, "rank1": 50.0 + s, "mAP": 40.0} for s in range(3)]
    base = [{"row": "baseline", "seed": s, "rank1": 50.0, "mAP": 40.0 + s} for s in range(3)]
    _, d4 = ablation.summarize(base + row, ("rank1", "mAP"))
    assert d4["rank1_gain"] == pytest.approx(1.0) and d4["rank1_gain_std"] == pytest.approx(1.0)
    # t = 1 / (1 / sqrt(3)) = sqrt(3) on 2 dof: two-sided p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(3/5)
    assert d4["rank1_gain_p"] == pytest.approx(1 - math.sqrt(3 / 5))
    _, one = ablation.summarize(base[:1] + row[:1], ("rank1",))
    assert math.isnan(one["rank1_gain_p"])  # one pair: no spread to test against
    same = [{**r, "rank1": r["rank1"] + 5.0 + 1e-13 * r["seed"]} for r in base]  # float noise is no spread
    _, constant = ablation.summarize(base + [{**r, "row": "D4"} for r in same], ("rank1",))
    assert constant["rank1_gain"] == pytest.approx(5.0) and math.isnan(constant["rank1_gain_p"])


def test_ablate_writes_results_table_figure_and_mass(study):
    _, out, calls = study
    assert len(calls) == 4
    assert [(c.depths, c.seed) for c in calls] == [((), 0), ((), 1), ((1,), 0), ((1,), 1)]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["row"], r["seed"]) for r in rows] == [("baseline", "0"), ("baseline", "1"), ("D1", "0"), ("D1", "1")]
    assert all(0.0 <= float(r["mAP"]) <= 100.0 for r in rows)
    assert rows[2]["run_dir"] == "D1/seed0" and (out / "D1" / "seed0" / "summary.json").is_file()
    table = (out / "table.md").read_text()
    assert "| baseline | 2 | 83.49 |" in table and "±" in table
    assert "test protocol: flip off, standard AP, averaged over all queries" in table  # --ap standard, paper's rest
    assert {(r["flip"], r["ap"], r["average"]) for r in rows} == {("False", "standard", "all")}
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "attention_mass.csv", newline="") as f:
        mass = list(csv.DictReader(f))
    assert {(m["row"], m["source"]) for m in mass} == {("baseline", "activation"), ("D1", "D1"), ("D1", "activation")}
    for m in mass:
        assert float(m["identity"]) + float(m["person"]) + float(m["background"]) == pytest.approx(1.0, abs=1e-3)
        assert 0 < float(m["identity_area"]) < 1
    assert (out / "attention_mass.png").is_file() and "lift" in (out / "attention_mass.md").read_text()
    manifest = json.loads((out / "ablation.json").read_text())
    assert manifest["rows"] == ["baseline", "D1"] and manifest["seeds"] == [0, 1]


def test_ablate_resumes_without_retraining(study, monkeypatch):
    root, out, _ = study
    calls = []
    real_train = sag.engine.train
    monkeypatch.setattr(sag.engine, "train", lambda config, *a, **k: calls.append(config) or real_train(config))
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/summary.json")}
    assert _ablate(root, out, "--mass-images", "0") == 0
    assert calls == []  # every run has its summary.json: nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/summary.json")} == stamps
    (out / "baseline" / "seed1" / "summary.json").unlink()  # a run that stopped before its final test
    assert _ablate(root, out, "--mass-images", "0") == 0
    assert [(c.depths, c.seed, c.resume, c.overwrite) for c in calls] == [((), 1, True, False)]
    assert (out / "baseline" / "seed1" / "summary.json").is_file()
    assert len(ablation.read_results_csv(out / "results.csv")) == 4


def test_ablate_refuses_other_training_options(study, capsys):
    root, out, _ = study
    assert _ablate(root, out, "--epochs", "2") == 2
    assert "other training options" in capsys.readouterr().err


def test_visualize_writes_grids_ranks_and_curves(study, tmp_path):
    _, out, _ = study
    figures = tmp_path / "figs"
    argv = ["visualize", "--checkpoint", str(out / "D1" / "seed0" / "best.pt"), "--out", str(figures)]
    assert main([*argv, "--what", "grids", "ranks", "curves", "--num", "2", "--top-k", "3"]) == 0
    for name in ("attention_grids.png", "ranks.png", "training_curves.png"):
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
    baseline = ["visualize", "--checkpoint", str(out / "baseline" / "seed0" / "best.pt"), "--out", str(figures)]
    assert main([*baseline, "--what", "grids"]) == 2  # a baseline has no grid: a clear error, exit 2
