"""The paper's numbers as data: a few values checked against the PDF, and the structure every table relies on."""

from __future__ import annotations

import pytest

from sag import paper


def test_table1_has_every_row_dataset_and_metric():
    assert set(paper.TABLE1) == set(paper.TABLE1_DATASETS)
    for dataset in paper.TABLE1_DATASETS:
        assert tuple(paper.TABLE1[dataset]) == paper.TABLE1_ROWS
        for values in paper.TABLE1[dataset].values():
            assert tuple(values) == paper.METRICS
            assert all(0 < v <= 100 for v in values.values())
            assert values["rank1"] <= values["rank5"] <= values["rank10"]  # CMC is monotone


def test_table1_spot_values():
    assert paper.table1("market1501", "D4") == {"rank1": 90.17, "rank5": 96.38, "rank10": 97.48, "mAP": 73.87}
    assert paper.table1("market1501", "baseline")["mAP"] == 63.87
    assert paper.table1("cuhk03", "D3")["rank1"] == 81.41
    assert paper.table1("dukemtmc", "D1,2")["rank5"] == 84.96


def test_duke_typo_is_corrected_and_recorded():
    assert paper.table1("dukemtmc", "D1,2,3,4")["mAP"] == 48.76
    assert any("4876" in c and "48.76" in c for c in paper.CORRECTIONS)


def test_d4_is_the_papers_best_row_on_every_dataset():
    for dataset in paper.TABLE1_DATASETS:
        best = max(paper.TABLE1_ROWS, key=lambda row: paper.table1(dataset, row)["rank1"])
        assert best == "D4"


def test_row_depths_cover_table1():
    assert paper.ROW_DEPTHS["baseline"] == ()
    assert paper.ROW_DEPTHS["D1,2,3"] == (1, 2, 3)
    assert set(paper.ROW_DEPTHS) == set(paper.TABLE1_ROWS) == set(paper.ROW_LABELS)


def test_tidy_rows_structure_and_filters():
    rows = paper.table1_rows("cuhk03")
    assert len(rows) == 8 * 4
    assert {r["dataset"] for r in rows} == {"cuhk03"}
    d4_map = [r for r in rows if r["method"] == "D4" and r["metric"] == "mAP"]
    assert d4_map == [
        {
            "table": "1",
            "dataset": "cuhk03",
            "method": "D4",
            "depths": (4,),
            "label": "Basel.+ D4 (h=5,w=2)",
            "setting": "single_query",
            "metric": "mAP",
            "value": 88.64,
        }
    ]
    everything = paper.paper_rows()
    assert len(paper.paper_rows(table="1")) == 3 * 8 * 4
    assert {r["table"] for r in everything} == {"1", "3", "4", "5"}
    assert all(r["value"] is not None for r in everything)  # '-' cells are dropped
    assert {r["dataset"] for r in paper.paper_rows(dataset="dukemtmc")} == {"dukemtmc"}


def test_comparison_tables_with_reranking():
    market = {(r["method"], r["setting"], r["metric"]): r["value"] for r in paper.comparison_rows("3")}
    assert market[("SAG", "single_query", "rank1")] == 90.17
    assert market[("SAG+RR", "single_query", "mAP")] == 89.28
    assert market[("SAG+RR", "multi_query", "rank1")] == 94.60
    assert ("SVDNet", "multi_query", "rank1") not in market  # '-' in the paper
    assert paper.TABLE4["SAG"] == paper.table1("cuhk03", "D4")
    assert paper.TABLE5["SAG"] == paper.table1("dukemtmc", "D4")
    assert paper.TABLE5["SAG+RR"]["mAP"] == 81.05
    assert paper.TABLE5["LSRO"]["rank5"] is None


def test_sag_results_and_errors():
    market = paper.sag_results("market1501")
    assert market["SAG"]["rank1"] == 90.17 and market["SAG+RR"]["rank1"] == 92.04
    assert market["SAG multi-query"]["mAP"] == 80.15
    assert "SAG+RR" not in paper.sag_results("cuhk03")
    with pytest.raises(ValueError, match="valid datasets"):
        paper.table1("synthetic", "D4")
    with pytest.raises(ValueError, match="valid rows"):
        paper.table1("market1501", "D5")
    with pytest.raises(ValueError, match="valid tables"):
        paper.paper_rows(table="2")
