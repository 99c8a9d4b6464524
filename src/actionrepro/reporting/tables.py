"""The report's tables, as DataFrames of display strings (html.py renders them).

Numbers come from the results frame (collect.collect_results, accuracies in percent). Split
statistics: mean and *sample* standard deviation (ddof=1) over the splits found, with n shown;
"—" stands for the std of a single split. Published numbers come only from the model registry,
each with its provenance and protocol; where the registry has none, the cells stay empty. Ours is
put beside a published number ("ours − published") only like with like: the same init, backbone,
split protocol and test views; otherwise the cell names every difference.

Significance (stats.py): pruned against dense, and on the synthetic datasets every model against
tsn, are compared with the exact paired McNemar test on the per-video outcomes of the same test
videos (matched by video_id). With several splits the test is pooled: every (split, video) is one
matched pair and the discordant counts of all paired splits add up, giving one p-value per row
(the per-split p-values are listed beside it in the CSV). A split whose video sets differ, or whose
per-video files are missing, leaves the row untested rather than tested on fewer splits than its
Δ averages. Differences with p >= 0.05 are marked "n.s." in the Δ cell.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import pandas as pd

from actionrepro import config, runs
from actionrepro.reporting import collect, stats
from actionrepro.reporting.collect import FAST_VIEWS

DASH = "—"
MISSING = "missing"
NOT_COMPARED = "not compared"  # followed by ": " and every difference between the two protocols
UNKNOWN = "unknown"           # a published fact its source does not state
INIT_ALIASES = {"kinetics": "kinetics400"}  # the video ResNets' `pretrained` option name of the same weights
PROVENANCE = {"code": "code", "abstract": "abstract", "recon": "reconstruction", "recalled": "recalled"}
CHANCE_PAIR = 50.0  # a two-way decision between a class and its time-reversed twin (percent)
NOT_SIGNIFICANT = "n.s."  # appended to a Δ whose paired test gives p >= stats.ALPHA
REFERENCE_MODEL = "tsn"  # the temporal-order table tests every model against this one


# ---------------------------------------------------------------- number formats
def fmt(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_sig(value: float) -> str:
    """Three significant digits without exponents for the sizes in the tables (params M, GFLOPs)."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def fmt_p(p: float) -> str:
    """'<0.001', else three significant digits; '' when there is no p-value."""
    if p is None or math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def mark(cell: str, p: float) -> str:
    """Append the n.s. marker to a difference cell when its p-value is not below stats.ALPHA."""
    return f"{cell} {NOT_SIGNIFICANT}" if cell and stats.significant(p) is False else cell


def mean_std(values: list[float], expected: int | None = None, signed: bool = False) -> str:
    """'74.17 ± 5.20 (n=3)': mean, sample std (ddof=1), n; '—' as the std of n=1; 'n=2 of 3' if
    fewer splits were found than expected."""
    values = [float(v) for v in values if not math.isnan(float(v))]
    if not values:
        return ""
    n = len(values)
    mean = statistics.fmean(values) + 0.0  # no "-0.00"
    spread = DASH if n == 1 else f"{statistics.stdev(values):.2f}"
    short = f" of {expected}" if expected and expected > n else ""
    sign = "+" if signed else ""
    return f"{mean:{sign}.2f} ± {spread} (n={n}{short})"


def paper_views(params: dict) -> str:
    """The paper view protocol the evaluate step writes besides 1x1 (clips x crops)."""
    return f"{params['evaluate']['clips']}x{params['evaluate']['crops']}"


def view_protocols(params: dict, results: pd.DataFrame) -> list[str]:
    """1x1 first, then the paper protocol, then any other protocol found on disk."""
    found = sorted(results["views"].unique()) if len(results) else []
    return list(dict.fromkeys([FAST_VIEWS, paper_views(params), *found]))


def _select(results: pd.DataFrame, **where) -> pd.DataFrame:
    mask = pd.Series(True, index=results.index)
    for key, value in where.items():
        mask &= results[key] == value
    return results[mask]


def _top1_by_split(rows: pd.DataFrame) -> dict[int, float]:
    return {int(k): float(v) for k, v in zip(rows["split"], rows["top1"])}


# ---------------------------------------------------------------- main table
def arch_label(title: str, params: dict) -> str:
    """A registry title with the scale the runs were made at when it is not the paper's: a tiny
    model is not the published architecture ("TSN-R50 (tiny)")."""
    scale = str(params.get("scale") or "")
    return f"{title} ({scale})" if scale == "tiny" else title


def main_table(results: pd.DataFrame, params: dict, infos: dict) -> pd.DataFrame:
    """model x dataset (dense): split 1 and mean ± std per view protocol, params, GFLOPs, and each
    published number beside ours (one row per published number; a row without one if none)."""
    splits = list(params["splits"])
    views = view_protocols(params, results)
    dense = _select(results, variant="dense")
    rows = []
    for model in params["models"]:
        info = infos.get(model)
        for ds in params["datasets"]:
            mine = _select(dense, model=model, dataset=ds)
            row = {"model": model,
                   "architecture": f"{arch_label(info.title, params)} [{PROVENANCE[info.tag]}]" if info
                                   else "(not in the registry)",
                   "dataset": ds,
                   "init": ", ".join(sorted(set(mine["pretrained"].astype(str)))) if len(mine) else ""}
            for v in views:
                by_split = _top1_by_split(_select(mine, views=v))
                if 1 in splits:
                    row[f"split 1 ({v})"] = fmt(by_split[1]) if 1 in by_split else MISSING
                row[f"mean ± std ({v})"] = mean_std(list(by_split.values()), len(splits)) or MISSING
            first = mine.sort_values("split").iloc[0] if len(mine) else None
            row["params (M)"] = fmt_sig(first["params"] / 1e6) if first is not None else ""
            row["GFLOPs"] = fmt_sig(first["gflops"]) if first is not None else ""
            published = [p for p in (info.published if info else ()) if p.dataset == ds]
            ours = our_side(mine, params, info, ds, model) if published else None
            for pub in published or [None]:
                rows.append({**row, **_published_cells(pub, ours)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class OurSide:
    """What our dense runs of one model on one dataset were measured under, for the published comparison."""

    init: str                              # the init the runs started from ("a, b" if they differ)
    backbone: str                          # the backbone built at the runs' scale (ModelInfo.built_backbone)
    paper: str                             # our paper view protocol, compared when none matches the published
    top1: dict[str, dict[int, float]]      # view protocol -> split -> top-1 (percent)


def our_side(mine: pd.DataFrame, params: dict, info, dataset: str, model: str) -> OurSide:
    """Our side of the comparison from the runs' rows (init, views, top-1) and the resolved params
    (the architecture options the runs were built with at params' scale: a stale run gets no row)."""
    options = config.resolve(params, dataset, model)["architectures"][model]
    paper = sorted(set(mine.loc[mine["protocol"] == "paper", "views"])) if len(mine) else []
    inits = sorted({INIT_ALIASES.get(str(i), str(i)) for i in mine["pretrained"]}) if len(mine) else []
    return OurSide(init=", ".join(inits), backbone=info.built_backbone(params["scale"], options),
                   paper=paper[0] if len(paper) == 1 else paper_views(params),
                   top1={v: _top1_by_split(_select(mine, views=v)) for v in sorted(set(mine["views"]))})


def _splits_match(published: str | None, found: list[int]) -> bool:
    """Whether our splits give the published basis: split 1 itself, or all three for a mean."""
    return (published == "split1" and 1 in found) or (published == "mean3" and {1, 2, 3} <= set(found))


def differences(pub, ours: OurSide) -> tuple[str, list[str]]:
    """(the view protocol of ours to compare, every way our runs differ from what `pub` was measured
    under): init, backbone, split protocol, test views. A fact the source does not state differs."""
    views = pub.views if pub.views in ours.top1 else ours.paper
    found = sorted(ours.top1.get(views, {}))
    out = []
    if ours.init != pub.init:
        out.append(f"init {ours.init} vs {pub.init or UNKNOWN}")
    if ours.backbone != pub.backbone:
        out.append(f"backbone {ours.backbone} vs {pub.backbone}")
    if not _splits_match(pub.splits, found):
        out.append(f"splits {', '.join(map(str, found)) or 'none'} vs {pub.splits or UNKNOWN}")
    if views != pub.views:
        out.append(f"views {views} vs {pub.views or UNKNOWN}")
    return views, out


def _published_cells(pub, ours: OurSide | None) -> dict:
    cells = {"published top-1": "", "provenance": "", "published protocol": "", "source": "",
             "ours − published": ""}
    if pub is None:
        return cells
    cells.update({"published top-1": f"{pub.top1:.2f}", "provenance": PROVENANCE[pub.tag],
                  "published protocol": pub.protocol, "source": pub.source})
    if ours is None or not any(ours.top1.values()):
        return cells  # no run of ours yet: the row's own cells say "missing"
    views, unlike = differences(pub, ours)
    if unlike:
        cells["ours − published"] = f"{NOT_COMPARED}: " + "; ".join(unlike)
    elif pub.splits == "split1":
        cells["ours − published"] = f"{ours.top1[views][1] - pub.top1:+.2f} (ours: split 1, {views})"
    else:
        mean = statistics.fmean(ours.top1[views][k] for k in (1, 2, 3))
        cells["ours − published"] = f"{mean - pub.top1:+.2f} (ours: mean of n=3, {views})"
    return cells


# ---------------------------------------------------------------- pruning
def _device_kind(device: str) -> str:
    return "GPU" if str(device).startswith("cuda") else "CPU"


PRUNING_TEST_COLUMNS = [
    "dataset", "model", "ratio", "views", "n_splits", "splits", "top1_dense", "top1_pruned", "delta_top1",
    "delta_top1_std", "n_videos", "dense_only_correct", "pruned_only_correct", "p_value", "p_value_splits",
    "significant", "test_note",
]


def _split_pairs(rows: pd.DataFrame, key: str, a, b) -> list[tuple[int, object, object]]:
    """(split, row of a, row of b) for every split where both were evaluated, in split order."""
    first = {int(r.split): r for r in rows.itertuples() if getattr(r, key) == a}
    second = {int(r.split): r for r in rows.itertuples() if getattr(r, key) == b}
    return [(k, first[k], second[k]) for k in sorted(set(first) & set(second))]


def paired_test(pairs: list[tuple[int, object, object]], views: str, outcome=collect.top1_correct) -> dict:
    """Exact McNemar test of b against a (two results rows per split, with run_dir) on the per-video
    outcomes `outcome(run_dir, views)`, pooled over the splits. Returns n_videos, a_only, b_only
    (videos only a / only b got right), p_value, p_value_splits ('1:0.125; 2:1') and test_note,
    which names every split that could not be paired (then p_value is NaN: no test on fewer splits
    than the row's other numbers average)."""
    strata, per_split, problems = [], [], []
    for split, a, b in pairs:
        try:
            first, second = outcome(a.run_dir, views), outcome(b.run_dir, views)
            per_split.append((split, stats.mcnemar_exact(first, second)))
            strata.append((first, second))
        except (collect.Unreadable, stats.VideoSetMismatch) as err:
            problems.append(f"split {split}: {err}")
    out = {"n_videos": math.nan, "a_only": math.nan, "b_only": math.nan, "p_value": math.nan,
           "p_value_splits": "; ".join(f"{k}:{r.p_value:.4g}" for k, r in per_split), "test_note": ""}
    if problems or not pairs:
        out["test_note"] = "not tested: " + ("; ".join(problems) if problems else "no split with both runs")
        return out
    pooled = stats.pooled_mcnemar(strata)
    out.update(n_videos=pooled.n, a_only=pooled.only_a, b_only=pooled.only_b, p_value=pooled.p_value)
    return out


def pruning_tests(results: pd.DataFrame, params: dict) -> pd.DataFrame:
    """pruning.csv: per dataset, model, ratio and view protocol, over the splits where both the dense
    and the pruned run were evaluated: mean top-1 of each, Δ (pruned − dense, points, mean and sample
    std), and the exact McNemar test of pruned against dense pooled over those splits (n_videos paired
    test videos; dense_only_correct / pruned_only_correct: the discordant ones; p_value in [0, 1];
    p_value_splits: the test of each split alone)."""
    rows = []
    for views in view_protocols(params, results):
        at_views = _select(results, views=views)
        for ds in params["datasets"]:
            for model in params["models"]:
                mine = _select(at_views, dataset=ds, model=model)
                for ratio in params["prune"]["ratios"]:
                    pairs = _split_pairs(mine, "variant", "dense", f"pruned-{ratio:g}")
                    test = paired_test(pairs, views)
                    deltas = [p.top1 - d.top1 for _, d, p in pairs]
                    rows.append({
                        "dataset": ds, "model": model, "ratio": ratio, "views": views, "n_splits": len(pairs),
                        "splits": " ".join(str(k) for k, _, _ in pairs),
                        "top1_dense": statistics.fmean(d.top1 for _, d, _ in pairs) if pairs else math.nan,
                        "top1_pruned": statistics.fmean(p.top1 for _, _, p in pairs) if pairs else math.nan,
                        "delta_top1": statistics.fmean(deltas) if deltas else math.nan,
                        "delta_top1_std": statistics.stdev(deltas) if len(deltas) > 1 else math.nan,
                        "n_videos": test["n_videos"], "dense_only_correct": test["a_only"],
                        "pruned_only_correct": test["b_only"], "p_value": test["p_value"],
                        "p_value_splits": test["p_value_splits"], "significant": stats.significant(test["p_value"]),
                        "test_note": test["test_note"]})
    return _counts_as_int(pd.DataFrame(rows, columns=PRUNING_TEST_COLUMNS),
                          ["n_videos", "dense_only_correct", "pruned_only_correct"])


def _counts_as_int(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Video counts as integers in the CSVs (empty where not tested), not 600.0."""
    return frame.astype({c: "Int64" for c in columns}) if len(frame) else frame


def pruning_table(results: pd.DataFrame, params: dict, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset, model and ratio, over the splits where both the dense and the pruned run were
    evaluated: top-1 change (pruned − dense, points; "n.s." when the pooled McNemar p >= 0.05) and its
    p-value, FLOPs and parameter reduction, and the measured batch-1 latency speed-up (dense / pruned)
    per device kind it was measured on. tests: pruning_tests(results, params), computed if not given."""
    paper = paper_views(params)
    tests = pruning_tests(results, params) if tests is None else tests
    rows = []
    at_paper = _select(results, views=paper)
    for ds in params["datasets"]:
        for model in params["models"]:
            mine = _select(at_paper, dataset=ds, model=model)
            dense = {int(r.split): r for r in mine.itertuples() if r.variant == "dense"}
            for ratio in params["prune"]["ratios"]:
                pruned = {int(r.split): r for r in mine.itertuples() if r.variant == f"pruned-{ratio:g}"}
                pairs = [(dense[k], pruned[k]) for k in sorted(set(dense) & set(pruned))]
                test = tests[(tests["dataset"] == ds) & (tests["model"] == model) & (tests["ratio"] == ratio)
                             & (tests["views"] == paper)] if len(tests) else tests
                rows.append(_pruning_row(ds, model, ratio, pairs, test.iloc[0] if len(test) else None))
    return pd.DataFrame(rows)


def _test_cell(test) -> str:
    """The p-value cell of a display table: the pooled p, or why there is none."""
    if test is None:
        return ""
    if test["test_note"]:
        return "not tested (see the CSV)"
    return fmt_p(test["p_value"])


def _pruning_row(ds: str, model: str, ratio: float, pairs: list, test=None) -> dict:
    row = {"dataset": ds, "model": model, "ratio": f"{ratio:g}", "n": str(len(pairs))}
    if not pairs:
        return {**row, "top-1 dense": MISSING, "top-1 pruned": MISSING, "Δ top-1": "", "p (McNemar)": "",
                "FLOPs reduction": "", "params reduction": "", "speed-up CPU": "", "speed-up GPU": ""}
    row["top-1 dense"] = fmt(statistics.fmean(d.top1 for d, _ in pairs))
    row["top-1 pruned"] = fmt(statistics.fmean(p.top1 for _, p in pairs))
    p_value = math.nan if test is None else float(test["p_value"])
    row["Δ top-1"] = mark(mean_std([p.top1 - d.top1 for d, p in pairs], signed=True), p_value)
    row["p (McNemar)"] = _test_cell(test)
    row["FLOPs reduction"] = _reduction([(d.gflops, p.gflops) for d, p in pairs])
    row["params reduction"] = _reduction([(d.params, p.params) for d, p in pairs])
    for kind in ("CPU", "GPU"):
        ratios = [d.latency_ms / p.latency_ms for d, p in pairs
                  if _device_kind(d.latency_device) == kind == _device_kind(p.latency_device)
                  and d.latency_ms > 0 and p.latency_ms > 0]
        row[f"speed-up {kind}"] = f"{statistics.fmean(ratios):.2f}×" if ratios else ""
    return row


def _reduction(pairs: list[tuple[float, float]]) -> str:
    values = [100.0 * (1.0 - after / before) for before, after in pairs if before > 0 and not math.isnan(after)]
    return f"{statistics.fmean(values):.1f}%" if values else ""


# ---------------------------------------------------------------- temporal order (synthetic)
def temporal_order(results: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, CSV frame) of reversed-pair accuracy per synthetic dataset, model and variant
    at the paper view protocol: each class against its time-reversed twin, chance 50%.

    Every model is tested against tsn (REFERENCE_MODEL, the same variant) on what the table
    measures: the per-video reversed-pair decision (right or wrong) on the paired-class test videos,
    exact McNemar pooled over the splits where both were evaluated. Δ vs tsn = model − tsn
    reversed-pair accuracy over those splits (points), marked "n.s." when p >= 0.05."""
    paper = paper_views(params)
    display, data = [], []
    synthetic = [ds for ds in params["datasets"] if ds.startswith("synth_")]
    at_paper = _select(results, views=paper)
    variants = runs.variant_names(params["prune"]["ratios"])
    reference = REFERENCE_MODEL if REFERENCE_MODEL in params["models"] else None
    for ds in synthetic:
        for model in params["models"]:
            for variant in variants:
                mine = _select(at_paper, dataset=ds, model=model, variant=variant)
                pairs = [float(v) for v in mine["reversed_pair_acc"] if not math.isnan(float(v))]
                delta, test = _versus_reference(at_paper, ds, model, variant, reference, paper)
                display.append({"dataset": ds, "model": model, "variant": variant,
                                f"reversed-pair acc ({paper})": mean_std(pairs, len(params["splits"])) or MISSING,
                                "chance": fmt(CHANCE_PAIR),
                                f"Δ vs {REFERENCE_MODEL}": delta, f"p vs {REFERENCE_MODEL} (McNemar)": test.pop("cell"),
                                f"top-1 ({paper})": mean_std(list(mine["top1"]), len(params["splits"])) or MISSING})
                if pairs:
                    data.append({"dataset": ds, "model": model, "variant": variant, "views": paper,
                                 "n_splits": len(pairs), "reversed_pair_acc": round(statistics.fmean(pairs), 6),
                                 "reversed_pair_acc_std": round(statistics.stdev(pairs), 6) if len(pairs) > 1 else math.nan,
                                 "chance": CHANCE_PAIR, "top1": round(statistics.fmean(mine["top1"]), 6),
                                 "reference": reference or "", **test})
    columns = ["dataset", "model", "variant", "views", "n_splits", "reversed_pair_acc", "reversed_pair_acc_std",
               "chance", "top1", *TEMPORAL_TEST_COLUMNS]
    data = _counts_as_int(pd.DataFrame(data, columns=columns),
                          ["n_pair_videos", "reference_only_correct", "model_only_correct"])
    return pd.DataFrame(display), data


TEMPORAL_TEST_COLUMNS = ["reference", "delta_vs_reference", "test_splits", "n_pair_videos", "reference_only_correct",
                         "model_only_correct", "p_value", "p_value_splits", "significant", "test_note"]


def _versus_reference(at_paper: pd.DataFrame, ds: str, model: str, variant: str, reference: str | None,
                      views: str) -> tuple[str, dict]:
    """(Δ cell, test fields + display 'cell') of `model` against the reference model, same variant."""
    empty = {"delta_vs_reference": math.nan, "test_splits": "", "n_pair_videos": math.nan,
             "reference_only_correct": math.nan, "model_only_correct": math.nan, "p_value": math.nan,
             "p_value_splits": "", "significant": None, "test_note": ""}
    if reference is None:
        return "", {**empty, "test_note": f"{REFERENCE_MODEL} is not among the models", "cell": ""}
    if model == reference:
        return "", {**empty, "test_note": "the reference", "cell": "(reference)"}
    rows = _select(at_paper, dataset=ds, variant=variant)
    pairs = [(k, r, m) for k, r, m in _split_pairs(rows, "model", reference, model)
             if not (math.isnan(float(r.reversed_pair_acc)) or math.isnan(float(m.reversed_pair_acc)))]
    if not pairs:
        return "", {**empty, "test_note": f"no split where both {reference} and {model} were evaluated",
                    "cell": ""}
    diffs = [float(m.reversed_pair_acc) - float(r.reversed_pair_acc) for _, r, m in pairs]
    test = paired_test(pairs, views, collect.reversed_pair_correct)
    fields = {"delta_vs_reference": round(statistics.fmean(diffs), 6),
              "test_splits": " ".join(str(k) for k, _, _ in pairs), "n_pair_videos": test["n_videos"],
              "reference_only_correct": test["a_only"], "model_only_correct": test["b_only"],
              "p_value": test["p_value"], "p_value_splits": test["p_value_splits"],
              "significant": stats.significant(test["p_value"]), "test_note": test["test_note"]}
    return mark(mean_std(diffs, signed=True), test["p_value"]), {**fields, "cell": _test_cell(test)}


# ---------------------------------------------------------------- per-model summaries for the figures
def split_summary(results: pd.DataFrame, views: str) -> pd.DataFrame:
    """Mean and std of top-1 over splits per dataset, model and variant at `views`, with costs."""
    rows = _select(results, views=views)
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "model", "variant", "ratio", "top1", "top1_std", "n", "gflops", "params"])
    grouped = rows.groupby(["dataset", "model", "variant"], sort=False)
    summary = grouped.agg(ratio=("ratio", "first"), top1=("top1", "mean"), top1_std=("top1", "std"),
                          n=("top1", "size"), gflops=("gflops", "mean"), params=("params", "mean"))
    return summary.reset_index()
