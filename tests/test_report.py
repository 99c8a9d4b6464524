"""The benchmark report: built from a fixture runs/ tree (tests/fixtures/runs_tree.py) with chosen
accuracies, a missing run, a trained-but-unevaluated run and a quarantined video; cells are
checked against strings computed by hand."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actionrepro import cli, provenance
from actionrepro.reporting import collect, figures, stats, tables
from actionrepro.steps import report as report_step
from fixtures.runs_tree import PARAMS_FILE, QUARANTINED, build_runs_tree

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- parsing what was written
class _Tables(HTMLParser):
    """Every <table> of an HTML page as rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(text: str) -> list[list[dict]]:
    parser = _Tables()
    parser.feed(text)
    return [[dict(zip(t[0], row)) for row in t[1:]] for t in parser.tables if t]


def markdown_tables(text: str) -> list[list[dict]]:
    out, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("| "):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            current.append(cells)
        elif current:
            out.append([dict(zip(current[0], row)) for row in current[2:]])
            current = []
    return out


def table_with(tables: list[list[dict]], column: str) -> list[dict]:
    found = [t for t in tables if t and column in t[0]]
    assert found, f"no table with a column {column!r}"
    return found[0]


def row(table: list[dict], **where) -> dict:
    rows = [r for r in table if all(r.get(k) == v for k, v in where.items())]
    assert len(rows) == 1, f"{len(rows)} rows match {where}"
    return rows[0]


# ---------------------------------------------------------------- builds
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture tree (3 splits) and its report, built once for the module."""
    root = tmp_path_factory.mktemp("project")
    params = build_runs_tree(root)
    old = os.getcwd()
    os.chdir(root)
    try:
        written = report_step.build_report(params, out=Path("reports"))
    finally:
        os.chdir(old)
    out = root / "reports"
    return {"root": root, "params": params, "written": written, "out": out,
            "results": pd.read_csv(out / "results.csv"),
            "md": (out / "report.md").read_text(), "html": (out / "report.html").read_text()}


@pytest.fixture(scope="module")
def single_split(tmp_path_factory):
    """Split 1 only, built through `actionrepro report`, over a stale figure of an earlier build."""
    root = tmp_path_factory.mktemp("single")
    build_runs_tree(root, splits=(1,))
    stale = root / "reports" / "figures" / "confusion_dropped_dataset.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    old = os.getcwd()
    os.chdir(root)
    try:
        code = cli.main(["report", "--params", PARAMS_FILE, "--out", "reports"])
    finally:
        os.chdir(old)
    return {"root": root, "code": code, "stale": stale, "md": (root / "reports" / "report.md").read_text()}


def main_rows(text: str, markdown: bool = True) -> list[dict]:
    return table_with(markdown_tables(text) if markdown else html_tables(text), "published top-1")


# ---------------------------------------------------------------- results.csv
def test_results_csv_has_one_row_per_evaluated_run_and_view_protocol(built):
    results = built["results"]
    # 2 datasets x 3 splits x 3 models x 2 variants = 36 expected, 3 not evaluated; 2 protocols each
    assert len(results) == 33 * 2
    assert set(results["views"]) == {"1x1", "10x3"}
    assert not results.duplicated(["dataset", "split", "model", "variant", "views"]).any()
    for column in ["dataset", "split", "model", "variant", "views", "top1", "top5", "mean_class_acc", "params",
                   "gflops", "latency_ms", "train_seconds", "pretrained", "seed", "commit", "params_hash"]:
        assert column in results.columns


def test_results_csv_accuracies_are_percent_and_costs_come_from_eval_json(built):
    r = built["results"].set_index(["dataset", "split", "model", "variant", "views"])
    tsn = r.loc[("ucf101", 3, "tsn", "dense", "10x3")]
    assert tsn["top1"] == 72.5                      # 145 of 200 right
    assert r.loc[("ucf101", 3, "tsn", "dense", "1x1"), "top1"] == 67.5
    assert tsn["top5"] == 100.0 and tsn["mean_class_acc"] == 72.5
    assert tsn["params"] == 2_000_000 and tsn["gflops"] == 4.0 and tsn["latency_ms"] == 10.0
    assert tsn["train_seconds"] == 100.0 and tsn["pretrained"] == "imagenet"
    assert r.loc[("ucf101", 1, "r3d", "dense", "10x3"), "pretrained"] == "none"  # registry default
    assert r.loc[("synth_hmdb51", 1, "r3d", "pruned-0.5", "10x3"), "reversed_pair_acc"] == 88.0
    assert r.loc[("synth_hmdb51", 1, "r3d", "pruned-0.5", "10x3"), "excluded"] == 1


def test_results_csv_carries_commit_seed_and_sha256_of_canonical_params(built):
    results, params = built["results"], built["params"]
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert set(results["params_hash"]) == {hashlib.sha256(canonical.encode()).hexdigest()}
    assert set(results["seed"]) == {0}
    assert set(results["commit"]) == {"unknown"}  # the fixture project is not a git checkout


# ---------------------------------------------------------------- main table
def test_main_table_shows_split1_and_mean_with_sample_std_over_splits(built):
    for text, markdown in ((built["md"], True), (built["html"], False)):
        rows = main_rows(text, markdown)
        tsn = row(rows, model="tsn", dataset="ucf101")
        # 80, 70, 72.5: mean 74.1667; sample std sqrt(((5.833)^2 + (4.167)^2 + (1.667)^2) / 2) = 5.204
        # (the population std would print 4.25)
        assert tsn["split 1 (10x3)"] == "80.00"
        assert tsn["mean ± std (10x3)"] == "74.17 ± 5.20 (n=3)"
        assert tsn["split 1 (1x1)"] == "75.00"
        assert tsn["mean ± std (1x1)"] == "69.17 ± 5.20 (n=3)"
        assert tsn["params (M)"] == "2.00" and tsn["GFLOPs"] == "4.00"
        # i3d on ucf101 has no split 3: 60, 65 -> 62.50 ± 3.54, and the gap is named
        assert row(rows, model="i3d", dataset="ucf101")["mean ± std (10x3)"] == "62.50 ± 3.54 (n=2 of 3)"


def test_main_table_with_one_split_prints_a_dash_for_the_std(single_split):
    assert single_split["code"] == 0
    tsn = row(main_rows(single_split["md"]), model="tsn", dataset="ucf101")
    assert tsn["mean ± std (10x3)"] == "80.00 ± — (n=1)"
    assert tsn["split 1 (10x3)"] == "80.00"


def test_published_numbers_carry_provenance_and_protocol_and_the_tiny_demo_is_never_compared(built):
    for text, markdown in ((built["md"], True), (built["html"], False)):
        rows = main_rows(text, markdown)
        tsn = row(rows, model="tsn", dataset="ucf101")  # mmaction2 zoo, ImageNet, split 1, 25 frames x 3 crops
        assert tsn["published top-1"] == "83.03" and tsn["provenance"] == "code"
        assert "split 1" in tsn["published protocol"] and "ImageNet" in tsn["published protocol"]
        assert "configs/recognition/tsn/README.md" in tsn["source"]
        assert tsn["ours − published"] == "not compared: backbone tiny-scale ResNet-50 vs ResNet-50; views 10x3 vs 25x3"
        r3d = row(rows, model="r3d", dataset="ucf101")  # Hara et al.: another network, Kinetics-400, 3-split mean
        assert r3d["published top-1"] == "84.40" and r3d["provenance"] == "recalled"
        assert r3d["ours − published"] == ("not compared: init none vs kinetics400; backbone tiny-scale R3D-18 "
                                           "(torchvision) vs 3D-ResNet-18 (shortcut A); views 10x3 vs unknown")
        assert r3d["architecture"] == "R3D-18 (tiny) [code]"  # the fixture runs at scale tiny


def test_nothing_published_leaves_the_published_cells_empty(built):
    rows = main_rows(built["md"])
    for where in ({"model": "i3d", "dataset": "ucf101"}, {"model": "tsn", "dataset": "synth_hmdb51"}):
        r = row(rows, **where)
        assert [r[c] for c in ("published top-1", "provenance", "published protocol", "ours − published")] == [""] * 4


def test_the_caption_states_the_like_for_like_rule(built):
    assert "compares like with like only" in built["md"] and "never does" in built["md"]


def test_mean_std_uses_the_sample_std_and_names_short_counts():
    assert tables.mean_std([80.0, 70.0, 72.5]) == "74.17 ± 5.20 (n=3)"
    assert tables.mean_std([61.0], expected=3) == "61.00 ± — (n=1 of 3)"
    assert tables.mean_std([-2.0, -1.0], signed=True) == "-1.50 ± 0.71 (n=2)"
    assert tables.mean_std([]) == ""


# ---------------------------------------------------------------- pruning and temporal order
def test_pruning_table_gives_accuracy_change_reductions_and_measured_speedups(built):
    for text, markdown in ((built["md"], True), (built["html"], False)):
        rows = table_with(markdown_tables(text) if markdown else html_tables(text), "speed-up CPU")
        tsn = row(rows, dataset="ucf101", model="tsn", ratio="0.5")
        # pruned - dense: 78-80, 69-70, 70-72.5 = -2, -1, -2.5 -> mean -1.83, sample std 0.76
        assert tsn["Δ top-1"] == "-1.83 ± 0.76 (n=3)"
        assert (tsn["top-1 dense"], tsn["top-1 pruned"]) == ("74.17", "72.33")
        assert (tsn["FLOPs reduction"], tsn["params reduction"]) == ("60.0%", "60.0%")  # 4 -> 1.6 GFLOPs
        assert (tsn["speed-up CPU"], tsn["speed-up GPU"]) == ("2.00×", "")             # 10 ms -> 5 ms on CPU
        r3d = row(rows, dataset="ucf101", model="r3d", ratio="0.5")
        assert (r3d["speed-up CPU"], r3d["speed-up GPU"]) == ("", "1.25×")             # 4 ms -> 3.2 ms on GPU
        # split 2 of the pruned r3d was never evaluated: only the 2 paired splits count
        assert row(rows, dataset="synth_hmdb51", model="r3d", ratio="0.5")["n"] == "2"


def test_temporal_order_csv_and_table_hold_reversed_pair_accuracy_per_synthetic_model(built):
    csv = pd.read_csv(built["out"] / "temporal_order.csv")
    assert set(csv["dataset"]) == {"synth_hmdb51"}
    assert {"dataset", "model", "variant", "reversed_pair_acc", "chance"} <= set(csv.columns)
    tsn = csv[(csv.model == "tsn") & (csv.variant == "dense")].iloc[0]
    assert (tsn["reversed_pair_acc"], tsn["chance"]) == (50.0, 50.0)
    r3d = csv[(csv.model == "r3d") & (csv.variant == "dense")].iloc[0]
    assert r3d["reversed_pair_acc"] == 90.0 and r3d["n_splits"] == 3
    rows = table_with(markdown_tables(built["md"]), "reversed-pair acc (10x3)")
    assert row(rows, model="r3d", variant="pruned-0.5")["reversed-pair acc (10x3)"] == "84.00 ± 5.66 (n=2 of 3)"


# ---------------------------------------------------------------- uncertainty and significance
def test_results_csv_has_a_bootstrap_ci_of_top1_in_percent_around_every_top1(built):
    results = built["results"]
    assert results.columns.get_loc("top1_ci_low") == results.columns.get_loc("top1") + 1
    assert results[["top1_ci_low", "top1_ci_high"]].notna().all().all()
    assert (results["top1_ci_low"] < results["top1"]).all() and (results["top1"] < results["top1_ci_high"]).all()
    one = results.set_index(["dataset", "split", "model", "variant", "views"]).loc[("ucf101", 1, "tsn", "dense", "10x3")]
    # 160 of 200 right: the same interval from stats on the same outcomes, in percent (~ 80 ± 5.5)
    low, high = stats.top1_ci(np.arange(200) < 160)
    assert (one["top1_ci_low"], one["top1_ci_high"]) == (round(100 * low, 6), round(100 * high, 6))
    assert 74.0 < one["top1_ci_low"] < 75.5 and 84.5 < one["top1_ci_high"] <= 86.0


def pruning_csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "pruning.csv", keep_default_na=False, na_values=[""])


def test_pruning_csv_has_mcnemar_p_values_pooled_over_splits_per_protocol(built):
    csv = pruning_csv(built["out"])
    assert len(csv) == 2 * 6 and set(csv["views"]) == {"1x1", "10x3"}  # 2 datasets x 3 models, 2 protocols
    assert csv["p_value"].between(0.0, 1.0).all() and csv["test_note"].isna().all()
    tsn = csv[(csv.dataset == "ucf101") & (csv.model == "tsn") & (csv.views == "10x3")].iloc[0]
    # dense 160, 140, 145 right; pruned 156, 138, 140: 4 + 2 + 5 = 11 videos only dense got right
    assert (tsn["n_videos"], tsn["dense_only_correct"], tsn["pruned_only_correct"]) == (600, 11, 0)
    assert tsn["p_value"] == pytest.approx(2 * 0.5 ** 11)
    assert tsn["p_value_splits"] == "1:0.125; 2:0.5; 3:0.0625"
    assert tsn["delta_top1"] == pytest.approx(-11 / 6) and bool(tsn["significant"]) is True
    # r3d on synth_hmdb51: split 2 of the pruned run was never evaluated -> only splits 1 and 3 pair
    r3d = csv[(csv.dataset == "synth_hmdb51") & (csv.model == "r3d") & (csv.views == "10x3")].iloc[0]
    assert (r3d["splits"], r3d["n_videos"], r3d["dense_only_correct"]) == ("1 3", 400, 4 + 10)
    same = csv[(csv.dataset == "synth_hmdb51") & (csv.model == "tsn")]
    assert (same["p_value"] == 1.0).all() and not same["significant"].astype(bool).any()


def test_differences_that_are_not_significant_are_marked_with_a_legend(built, single_split):
    for text, markdown in ((built["md"], True), (built["html"], False)):
        rows = table_with(markdown_tables(text) if markdown else html_tables(text), "speed-up CPU")
        assert row(rows, dataset="synth_hmdb51", model="tsn")["Δ top-1"] == "+0.00 ± 0.00 (n=3) n.s."
        assert row(rows, dataset="synth_hmdb51", model="tsn")["p (McNemar)"] == "1"
        assert row(rows, dataset="ucf101", model="tsn")["p (McNemar)"] == "<0.001"
        assert row(rows, dataset="ucf101", model="r3d")["p (McNemar)"] == "0.00195"  # 2 * 0.5 ** 9
        assert "n.s.: not significant at 0.05" in text
    # split 1 alone: 4 videos apart, p = 0.125 -> the same 2-point drop is no longer significant
    tsn = row(table_with(markdown_tables(single_split["md"]), "speed-up CPU"), dataset="ucf101", model="tsn")
    assert (tsn["Δ top-1"], tsn["p (McNemar)"]) == ("-2.00 ± — (n=1) n.s.", "0.125")


def test_temporal_order_tests_each_model_against_tsn_on_reversed_pair_decisions(built):
    csv = pd.read_csv(built["out"] / "temporal_order.csv", keep_default_na=False, na_values=[""])
    r3d = csv[(csv.model == "r3d") & (csv.variant == "dense")].iloc[0]
    # r3d 180, 190, 170 of 200 pair decisions right, tsn 100 each: 240 videos only r3d got right
    assert (r3d["reference"], r3d["n_pair_videos"], r3d["reference_only_correct"], r3d["model_only_correct"]) == \
        ("tsn", 600, 0, 240)
    assert r3d["p_value"] == pytest.approx(2 * 0.5 ** 240, rel=1e-9, abs=0) and r3d["delta_vs_reference"] == 40.0
    tested = csv[csv.model != "tsn"]
    assert tested["p_value"].between(0.0, 1.0).all() and len(tested) == 4
    assert set(csv.loc[csv.model == "tsn", "test_note"]) == {"the reference"}
    rows = table_with(markdown_tables(built["md"]), "reversed-pair acc (10x3)")
    assert row(rows, model="r3d", variant="pruned-0.5")["Δ vs tsn"] == "+34.00 ± 5.66 (n=2)"
    assert row(rows, model="tsn", variant="dense")["p vs tsn (McNemar)"] == "(reference)"


def test_reversed_pair_outcomes_are_the_pair_decisions_not_top1(tmp_path):
    from actionrepro.steps import evaluate as evaluate_step

    pairs = pd.DataFrame({"class_a": ["a", "c"], "class_b": ["b", "d"], "label_a": [0, 2], "label_b": [1, 3]})
    labels = np.array([0, 1, 2, 3, 4])
    scores = np.array([[0.3, 0.1, 0.0, 0.0, 0.6],   # top-1 wrong (e), pair right (a > b)
                       [0.5, 0.4, 0.0, 0.0, 0.1],   # both wrong
                       [0.0, 0.0, 0.2, 0.2, 0.6],   # top-1 wrong, pair tie -> class_a: right
                       [0.0, 0.0, 0.0, 0.9, 0.1],   # both right
                       [0.1, 0.0, 0.0, 0.0, 0.9]])  # class e has no twin: not a pair decision
    videos = pd.DataFrame({"video_id": ["v0", "v1", "v2", "v3", "v4"]})
    evaluate_step.write_protocol(tmp_path, "1x1", {}, videos, labels, scores, list("abcde"), [], pairs)
    assert collect.reversed_pair_correct(tmp_path, "1x1").to_dict() == {"v0": True, "v1": False, "v2": True, "v3": True}
    assert collect.top1_correct(tmp_path, "1x1").to_dict() == {"v0": False, "v1": False, "v2": False, "v3": True,
                                                               "v4": True}


def test_different_video_sets_are_not_tested_and_stale_predictions_give_no_ci(tmp_path, monkeypatch):
    params = build_runs_tree(tmp_path, splits=(1,))
    pruned = tmp_path / "runs/ucf101/split1/tsn/pruned-0.5/predictions_10x3.csv"
    table = pd.read_csv(pruned, dtype={"video_id": str})
    table.loc[0, "video_id"] = "v_not_in_the_dense_run"
    table.to_csv(pruned, index=False)
    stale = tmp_path / "runs/ucf101/split1/r3d/dense/predictions_10x3.csv"
    table = pd.read_csv(stale, dtype={"video_id": str})
    table.loc[0, "pred"] = (table.loc[0, "label"] + 1) % 4  # now 169 of 200 right, eval.json says 170
    table.to_csv(stale, index=False)
    monkeypatch.chdir(tmp_path)
    report_step.build_report(params, out=Path("reports"))
    csv = pruning_csv(tmp_path / "reports").set_index(["dataset", "model", "views"])
    refused = csv.loc[("ucf101", "tsn", "10x3")]
    assert math.isnan(refused["p_value"]) and "test videos differ" in refused["test_note"]
    assert csv.loc[("ucf101", "tsn", "1x1"), "p_value"] == pytest.approx(0.125)  # the other protocol is intact
    assert "stale" in csv.loc[("ucf101", "r3d", "10x3"), "test_note"]
    results = pd.read_csv(tmp_path / "reports" / "results.csv").set_index(["model", "variant", "views", "dataset"])
    assert math.isnan(results.loc[("r3d", "dense", "10x3", "ucf101"), "top1_ci_low"])
    assert results.loc[("tsn", "pruned-0.5", "10x3", "ucf101"), "top1_ci_low"] < 78.0  # ids differ, numbers agree
    md = (tmp_path / "reports" / "report.md").read_text()
    tsn = row(table_with(markdown_tables(md), "speed-up CPU"), dataset="ucf101", model="tsn")
    assert tsn["p (McNemar)"] == "not tested (see the CSV)" and not tsn["Δ top-1"].endswith("n.s.")


# ---------------------------------------------------------------- what is missing or set aside
def test_partial_run_names_every_expected_run_that_is_missing(built):
    status = pd.read_csv(built["out"] / "run_status.csv")
    assert len(status) == 36
    missing = status[status.state != "evaluated"].set_index(["dataset", "split", "model", "variant"])["state"]
    assert missing.to_dict() == {("ucf101", 3, "i3d", "dense"): "not run",
                                 ("ucf101", 3, "i3d", "pruned-0.5"): "not run",
                                 ("synth_hmdb51", 2, "r3d", "pruned-0.5"): "trained, not evaluated"}
    assert "33 of 36 expected runs evaluated" in built["md"]
    rows = table_with(markdown_tables(built["md"]), "state")
    assert row(rows, dataset="synth_hmdb51", split="2", model="r3d")["state"] == "trained, not evaluated"


def test_quarantined_video_is_listed_with_its_reason(built):
    quarantine = pd.read_csv(built["out"] / "quarantine.csv", dtype=str, keep_default_na=False)
    assert quarantine[["dataset", "step", "video_id", "reason"]].values.tolist() == [
        ["synth_hmdb51", "decode", QUARANTINED["video_id"], "truncated"]]
    for text, markdown in ((built["md"], True), (built["html"], False)):
        rows = table_with(markdown_tables(text) if markdown else html_tables(text), "video_id")
        assert row(rows, video_id=QUARANTINED["video_id"])["reason"] == "truncated"


def test_report_without_any_run_names_every_expected_run_missing(tmp_path, monkeypatch):
    params = build_runs_tree(tmp_path / "elsewhere")  # only for the params
    monkeypatch.chdir(tmp_path)
    report_step.build_report(params, out=Path("reports"))
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "0 of 36 expected runs evaluated" in text
    assert pd.read_csv(tmp_path / "reports" / "results.csv").empty
    assert row(main_rows(text), model="tsn", dataset="ucf101")["mean ± std (10x3)"] == "missing"
    assert "not finished (no summary.json)" in text


def test_unreadable_eval_json_is_reported_and_the_rest_still_builds(tmp_path, monkeypatch):
    params = build_runs_tree(tmp_path, splits=(1,))
    (tmp_path / "runs/ucf101/split1/tsn/dense/eval.json").write_text("{ truncated")
    monkeypatch.chdir(tmp_path)
    report_step.build_report(params, out=Path("reports"))
    status = pd.read_csv(tmp_path / "reports" / "run_status.csv").set_index(["dataset", "split", "model", "variant"])
    assert status.loc[("ucf101", 1, "tsn", "dense"), "state"] == "unreadable"
    assert "eval.json cannot be read" in status.loc[("ucf101", 1, "tsn", "dense"), "detail"]
    results = pd.read_csv(tmp_path / "reports" / "results.csv")
    assert len(results) == 2 * (6 * 2 - 1)  # 12 runs at split 1, one unreadable; 2 protocols each


# ---------------------------------------------------------------- figures and the HTML page
EXPECTED_FIGURES = {"accuracy_vs_gflops", "accuracy_vs_pruning_ratio", "training_curves_ucf101",
                    "training_curves_synth_hmdb51", "confusion_ucf101", "confusion_synth_hmdb51"}


def test_every_figure_is_written_as_png_and_svg_and_shown_in_both_reports(built):
    import matplotlib.image as mpimg

    out = built["out"]
    assert {p.stem for p in (out / "figures").glob("*.png")} == EXPECTED_FIGURES
    assert {p.stem for p in (out / "figures").glob("*.svg")} == EXPECTED_FIGURES
    for name in EXPECTED_FIGURES:
        pixels = mpimg.imread(out / "figures" / f"{name}.png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0
        assert (out / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert f"](figures/{name}.png)" in built["md"]
        assert f'id="fig-{name}"' in built["html"]
    assert built["html"].count('<img src="data:image/png;base64,') == len(EXPECTED_FIGURES)


def test_figures_of_an_earlier_build_that_no_longer_apply_are_removed(single_split):
    assert not single_split["stale"].exists()
    assert (single_split["root"] / "reports" / "figures" / "confusion_ucf101.png").is_file()


def test_html_report_requests_nothing_outside_itself(built):
    refs = re.findall(r"""\b(?:src|href|action|poster)\s*=\s*["']([^"']*)["']""", built["html"], re.I)
    # only <a> links (followed on a click, never fetched) may point at files: the runs' folders and logs
    links = set(re.findall(r"""<a\s+href\s*=\s*["']([^"']*)["']""", built["html"], re.I))
    assert links and all(r.startswith(("../runs/", "../logs/")) for r in links), sorted(links)[:5]
    refs = [r for r in refs if r not in links]
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]
    assert not re.search(r"@import|url\(\s*['\"]?(?!data:)", built["html"])
    assert "<link" not in built["html"]


def test_pareto_front_keeps_exactly_the_undominated_points():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    acc = [50.0, 70.0, 60.0, 65.0, 80.0, 40.0]
    # (2, 60) is beaten by (2, 70); (3, 65) by (2, 70); the rest trade cost for accuracy
    assert figures.pareto_front(cost, acc) == [5, 0, 1, 4]


def test_reproduce_commands_name_the_run_and_the_params_file(built):
    assert ("snakemake --cores all --configfile config/fixture.yaml runs/ucf101/split1/tsn/dense/eval.json"
            in built["md"])
    assert "actionrepro prune ucf101 1 tsn 0.5 --params config/fixture.yaml" in built["md"]
    results = built["results"]
    one = results[(results.dataset == "synth_hmdb51") & (results.split == 2) & (results.model == "i3d")
                  & (results.variant == "pruned-0.5")]
    assert set(one["reproduce"]) == {
        "snakemake --cores all --configfile config/fixture.yaml runs/synth_hmdb51/split2/i3d/pruned-0.5/eval.json"}


def test_git_commit_is_the_checkout_head_or_unknown(tmp_path):
    assert provenance.git_state(tmp_path)["commit"] == "unknown"
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the checkout has no commit yet")
    assert provenance.git_state(REPO)["commit"] == head.stdout.strip()


# ---------------------------------------------------------------- in a real browser
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is required under CI: apt-get update && apt-get install -y chromium")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


def run_chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def images_loaded(dom: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[-500:]
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    assert total and loaded, f"the page's load check did not run: {body.group(0)}"
    return int(loaded.group(1)), int(total.group(1))


def test_html_opens_in_headless_chromium_with_every_figure_loaded(built, tmp_path):
    import matplotlib.image as mpimg

    page = built["out"] / "report.html"
    dump = run_chromium(page, tmp_path, "--dump-dom")
    assert dump.returncode == 0, dump.stderr[-2000:]
    assert images_loaded(dump.stdout) == (len(EXPECTED_FIGURES), len(EXPECTED_FIGURES))

    shot = tmp_path / "report.png"
    done = run_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert (pixels[..., :3] < 0.5).mean() > 0.002  # text and tables drawn, not a blank page

    # the check itself catches a figure that does not decode
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r'src="data:image/png;base64,[^"]*"', 'src="data:image/png;base64,AAAA"',
                             built["html"], count=1))
    dump = run_chromium(broken, tmp_path, "--dump-dom")
    assert images_loaded(dump.stdout) == (len(EXPECTED_FIGURES) - 1, len(EXPECTED_FIGURES))
    assert 'class="broken"' in dump.stdout


# ---------------------------------------------------------------- per-class, links, labels, legends
def test_per_class_accuracy_of_every_run_is_folded_in_the_report_at_the_paper_protocol(built):
    evaluation = json.loads((built["root"] / "runs/ucf101/split1/tsn/dense/eval_10x3.json").read_text())
    expected = tables.fmt(100 * evaluation["per_class"]["ApplyEyeMakeup"])
    block = re.search(r"<details><summary>ucf101 split 1 tsn dense</summary>(.*?)</details>", built["html"], re.S)
    assert block, "no folded per-class table for ucf101 split 1 tsn dense"
    assert re.search(rf"<td>ApplyEyeMakeup</td><td[^>]*>{evaluation['per_class_support']['ApplyEyeMakeup']}</td>"
                     rf"<td[^>]*>{re.escape(expected)}</td>", block.group(1)), block.group(1)[:600]
    assert "eval_10x3.json" in block.group(1)
    evaluated = built["results"].drop_duplicates(["dataset", "split", "model", "variant"])
    assert built["html"].count("<details><summary>") == len(evaluated)
    assert "**ucf101 split 1 tsn dense**" in built["md"] and f"| ApplyEyeMakeup |" in built["md"]


def test_every_reproduce_row_links_its_run_folder_and_log(built, tmp_path, monkeypatch):
    rows = table_with(html_tables(built["html"]), "command")
    evaluated = built["results"].drop_duplicates(["dataset", "split", "model", "variant"])
    assert len(rows) == len(evaluated)
    assert '<a href="../runs/ucf101/split1/tsn/dense/">runs/ucf101/split1/tsn/dense/</a>' in built["html"]
    assert "[runs/synth_hmdb51/split2/i3d/pruned-0.5/](../runs/synth_hmdb51/split2/i3d/pruned-0.5/)" in built["md"]
    assert "logs/train/ucf101-split1-tsn.log (none)" in built["md"]  # the fixture wrote no logs
    # a log that exists is linked: train log for dense, prune log (with the ratio) for pruned
    from actionrepro.reporting import document

    monkeypatch.chdir(tmp_path)
    for log in ("logs/train/ucf101-split1-tsn.log", "logs/prune/ucf101-split1-tsn-0.5.log"):
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text("log\n")
    picked = built["results"][(built["results"]["dataset"] == "ucf101") & (built["results"]["split"] == 1)
                              & (built["results"]["model"] == "tsn")]
    table = document.reproduce(PARAMS_FILE, picked)[-1][1]
    assert list(table["log"]) == ["[logs/train/ucf101-split1-tsn.log](../logs/train/ucf101-split1-tsn.log)",
                                  "[logs/prune/ucf101-split1-tsn-0.5.log](../logs/prune/ucf101-split1-tsn-0.5.log)"]


def test_architecture_label_names_the_tiny_scale(built):
    assert built["params"]["scale"] == "tiny"
    rows = main_rows(built["md"])
    assert row(rows, model="tsn", dataset="ucf101")["architecture"].startswith("TSN-R50 (tiny) [")
    assert all("(tiny) [" in r["architecture"] for r in rows)
    assert tables.arch_label("TSN-R50", {"scale": "full"}) == "TSN-R50"


def test_figure_legends_sit_outside_the_axes():
    summary = pd.DataFrame({"dataset": "ucf101", "model": ["tsn", "tsn", "r3d", "r3d"],
                            "variant": ["dense", "pruned-0.5"] * 2, "ratio": [0.0, 0.5] * 2,
                            "top1": [80.0, 78.0, 70.0, 65.0], "top1_std": [1.0, 2.0, 1.0, 2.0],
                            "gflops": [4.0, 2.0, 8.0, 4.0]})
    for fig in (figures.accuracy_vs_gflops(summary, ["tsn", "r3d"], "10x3"),
                figures.accuracy_vs_ratio(summary, ["tsn", "r3d"], "10x3")):
        figures.render(fig)  # lays the figure out
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None
            assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
