"""The report's tables, as DataFrames of display strings (html.py renders them).

Numbers come from the results frame (collect.collect_results, accuracies in percent). Split
statistics: mean and *sample* standard deviation (ddof=1) over the splits found, with n shown;
"—" stands for the std of a single split. Published numbers come only from the model registry,
each with its provenance and protocol; where the registry has none, the cells stay empty.
"""

from __future__ import annotations

import math
import re
import statistics

import pandas as pd

from actionrepro import runs
from actionrepro.reporting.collect import FAST_VIEWS

DASH = "—"
MISSING = "missing"
NOT_COMPARED = "not compared: the published protocol names neither split 1 nor a split mean"
PROVENANCE = {"code": "code", "abstract": "abstract", "recon": "reconstruction", "recalled": "recalled"}
CHANCE_PAIR = 50.0  # a two-way decision between a class and its time-reversed twin (percent)


# ---------------------------------------------------------------- number formats
def fmt(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_sig(value: float) -> str:
    """Three significant digits without exponents for the sizes in the tables (params M, GFLOPs)."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.3g}"


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


def published_basis(protocol: str) -> str | None:
    """Which of our numbers a published one compares with: 'split1' or 'mean' (over splits)."""
    text = protocol.lower()
    if re.search(r"\b(3|three)[- ]splits?\b|\bmean of (3|three)\b|\bsplits? 1[-–]3\b", text):
        return "mean"
    if re.search(r"\bsplit ?1\b", text):
        return "split1"
    return None


def _select(results: pd.DataFrame, **where) -> pd.DataFrame:
    mask = pd.Series(True, index=results.index)
    for key, value in where.items():
        mask &= results[key] == value
    return results[mask]


def _top1_by_split(rows: pd.DataFrame) -> dict[int, float]:
    return {int(k): float(v) for k, v in zip(rows["split"], rows["top1"])}


# ---------------------------------------------------------------- main table
def main_table(results: pd.DataFrame, params: dict, infos: dict) -> pd.DataFrame:
    """model x dataset (dense): split 1 and mean ± std per view protocol, params, GFLOPs, and each
    published number beside ours (one row per published number; a row without one if none)."""
    splits = list(params["splits"])
    views = view_protocols(params, results)
    paper = paper_views(params)
    dense = _select(results, variant="dense")
    rows = []
    for model in params["models"]:
        info = infos.get(model)
        for ds in params["datasets"]:
            mine = _select(dense, model=model, dataset=ds)
            row = {"model": model,
                   "architecture": f"{info.title} [{PROVENANCE[info.tag]}]" if info else "(not in the registry)",
                   "dataset": ds,
                   "init": ", ".join(sorted(set(mine["pretrained"].astype(str)))) if len(mine) else ""}
            by_views = {}
            for v in views:
                by_split = _top1_by_split(_select(mine, views=v))
                by_views[v] = by_split
                if 1 in splits:
                    row[f"split 1 ({v})"] = fmt(by_split[1]) if 1 in by_split else MISSING
                row[f"mean ± std ({v})"] = mean_std(list(by_split.values()), len(splits)) or MISSING
            first = mine.sort_values("split").iloc[0] if len(mine) else None
            row["params (M)"] = fmt_sig(first["params"] / 1e6) if first is not None else ""
            row["GFLOPs"] = fmt_sig(first["gflops"]) if first is not None else ""
            published = [p for p in (info.published if info else ()) if p.dataset == ds]
            for pub in published or [None]:
                rows.append({**row, **_published_cells(pub, by_views.get(paper, {}), paper)})
    return pd.DataFrame(rows)


def _published_cells(pub, ours: dict[int, float], paper: str) -> dict:
    cells = {"published top-1": "", "provenance": "", "published protocol": "", "source": "",
             "ours − published": ""}
    if pub is None:
        return cells
    cells.update({"published top-1": f"{pub.top1:.2f}", "provenance": PROVENANCE[pub.tag],
                  "published protocol": pub.protocol, "source": pub.source})
    basis = published_basis(pub.protocol)
    if basis == "split1" and 1 in ours:
        cells["ours − published"] = f"{ours[1] - pub.top1:+.2f} (ours: split 1, {paper})"
    elif basis == "mean" and ours:
        mean = statistics.fmean(ours.values())
        cells["ours − published"] = f"{mean - pub.top1:+.2f} (ours: mean of n={len(ours)}, {paper})"
    elif basis is None:
        cells["ours − published"] = NOT_COMPARED
    return cells


# ---------------------------------------------------------------- pruning
def _device_kind(device: str) -> str:
    return "GPU" if str(device).startswith("cuda") else "CPU"


def pruning_table(results: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Per dataset, model and ratio, over the splits where both the dense and the pruned run were
    evaluated: top-1 change (pruned − dense, points), FLOPs and parameter reduction, and the
    measured batch-1 latency speed-up (dense / pruned) per device kind it was measured on."""
    paper = paper_views(params)
    rows = []
    at_paper = _select(results, views=paper)
    for ds in params["datasets"]:
        for model in params["models"]:
            mine = _select(at_paper, dataset=ds, model=model)
            dense = {int(r.split): r for r in mine.itertuples() if r.variant == "dense"}
            for ratio in params["prune"]["ratios"]:
                pruned = {int(r.split): r for r in mine.itertuples() if r.variant == f"pruned-{ratio:g}"}
                pairs = [(dense[k], pruned[k]) for k in sorted(set(dense) & set(pruned))]
                rows.append(_pruning_row(ds, model, ratio, pairs))
    return pd.DataFrame(rows)


def _pruning_row(ds: str, model: str, ratio: float, pairs: list) -> dict:
    row = {"dataset": ds, "model": model, "ratio": f"{ratio:g}", "n": str(len(pairs))}
    if not pairs:
        return {**row, "top-1 dense": MISSING, "top-1 pruned": MISSING, "Δ top-1": "", "FLOPs reduction": "",
                "params reduction": "", "speed-up CPU": "", "speed-up GPU": ""}
    row["top-1 dense"] = fmt(statistics.fmean(d.top1 for d, _ in pairs))
    row["top-1 pruned"] = fmt(statistics.fmean(p.top1 for _, p in pairs))
    row["Δ top-1"] = mean_std([p.top1 - d.top1 for d, p in pairs], signed=True)
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
    at the paper view protocol: each class against its time-reversed twin, chance 50%."""
    paper = paper_views(params)
    display, data = [], []
    synthetic = [ds for ds in params["datasets"] if ds.startswith("synth_")]
    at_paper = _select(results, views=paper)
    variants = runs.variant_names(params["prune"]["ratios"])
    for ds in synthetic:
        for model in params["models"]:
            for variant in variants:
                mine = _select(at_paper, dataset=ds, model=model, variant=variant)
                pairs = [float(v) for v in mine["reversed_pair_acc"] if not math.isnan(float(v))]
                display.append({"dataset": ds, "model": model, "variant": variant,
                                f"reversed-pair acc ({paper})": mean_std(pairs, len(params["splits"])) or MISSING,
                                "chance": fmt(CHANCE_PAIR),
                                f"top-1 ({paper})": mean_std(list(mine["top1"]), len(params["splits"])) or MISSING})
                if pairs:
                    data.append({"dataset": ds, "model": model, "variant": variant, "views": paper,
                                 "n_splits": len(pairs), "reversed_pair_acc": round(statistics.fmean(pairs), 6),
                                 "reversed_pair_acc_std": round(statistics.stdev(pairs), 6) if len(pairs) > 1 else math.nan,
                                 "chance": CHANCE_PAIR, "top1": round(statistics.fmean(mine["top1"]), 6)})
    columns = ["dataset", "model", "variant", "views", "n_splits", "reversed_pair_acc", "reversed_pair_acc_std",
               "chance", "top1"]
    return pd.DataFrame(display), pd.DataFrame(data, columns=columns)


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
