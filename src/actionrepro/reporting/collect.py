"""Read what the pipeline steps left on disk into tables: the report's only input.

Nothing here computes a result. Accuracies, costs and timings are copied from the files the steps
wrote (eval.json, metrics.json, model.json, history.csv of each run; summary.json and
quarantine.csv of the frame and flow stores; Snakemake's benchmark files), and every run the
params expect but the disk lacks is named with how far it got, never silently skipped. The one
addition is the uncertainty of top-1 (stats.top1_ci: a 95 % bootstrap interval over the test
videos), computed from the per-video predictions_<views>.csv the evaluate step wrote and given
only where that file reproduces the eval.json top-1 it qualifies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from actionrepro import config, paths, provenance, runs
from actionrepro.reporting import freshness, stats

log = logging.getLogger(__name__)

FAST_VIEWS = "1x1"
RESULT_COLUMNS = [
    "dataset", "split", "model", "variant", "ratio", "views", "protocol",
    "top1", "top1_ci_low", "top1_ci_high", "top5", "mean_class_acc", "reversed_pair_acc", "num_videos", "excluded",
    "params", "gflops", "latency_ms", "latency_device", "latency_device_name",
    "train_seconds", "epochs", "selected_epoch", "train_device", "pretrained", "seed",
    "commit", "torch", "cpu", "gpu", "environment", "params_hash", "run_dir", "reproduce", "environment_differs",
    "external",
]
STATUS_COLUMNS = ["dataset", "split", "model", "variant", "state", "detail", "run_dir"]
QUARANTINE_COLUMNS = ["dataset", "step", "video_id", "path", "reason", "detail"]
EVALUATED = "evaluated"
STALE = "stale"


class Unreadable(Exception):
    """A step's output exists but cannot be parsed; the report names it instead of stopping."""


# ---------------------------------------------------------------- identity of this build
def params_hash(params: dict) -> str:
    """sha256 of the canonical JSON of the (validated) params: sorted keys, no whitespace."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def environment() -> dict:
    """The machine building the report: CPU, cores, GPU, library versions."""
    import torch

    from actionrepro.profile import device_name

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": device_name("cpu"),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "gpus": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- what the params expect
def expected_runs(params: dict) -> list[tuple[str, int, str, str]]:
    """(dataset, split, model, variant) of every run the params ask for, in params order."""
    return [(ds, int(k), m, v) for ds in params["datasets"] for k in params["splits"]
            for m in params["models"] for v in runs.variant_names(params["prune"]["ratios"])]


# ---------------------------------------------------------------- one run
def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Unreadable(f"{path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise Unreadable(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def _optional_json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def run_state(run: Path) -> tuple[str, str]:
    """How far a run got, from the files present (without reading them)."""
    if (run / "eval.json").is_file():
        return EVALUATED, ""
    if (run / "metrics.json").is_file():
        return "trained, not evaluated", "metrics.json present, eval.json missing"
    if (run / "checkpoint.pt").is_file() or (run / "history.csv").is_file():
        return "training not finished", "checkpoint or history present, no metrics.json (re-run to resume)"
    if run.is_dir():
        return "not run", "directory exists but holds no step output"
    return "not run", "no run directory"


def _pct(value) -> float:
    """Fraction -> percent, rounded so float noise (0.57 * 100) does not leak into the CSV."""
    if value is None:
        return math.nan
    try:
        return round(float(value) * 100.0, 6)
    except (TypeError, ValueError):
        return math.nan


def _number(value) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _batch1_latency(costs: dict) -> float:
    latency = costs.get("latency_ms") or {}
    entry = latency.get("batch_1") or (next(iter(latency.values())) if latency else {})
    return _number(entry.get("median_ms")) if isinstance(entry, dict) else math.nan


def run_init(dataset: str, split: int, model: str, model_record: dict) -> str:
    """The weights a run started from. The recipe's init is loaded at build time and not written to
    model.json, so it is read from the train step's provenance (a pruned run starts from its dense
    parent); without one, the architecture's own `pretrained` option says it."""
    dense = runs.run_dir(dataset, split, model, runs.DENSE)
    settings = provenance.read_file(dense / provenance.STEP_FILE.format("train")).get("settings") or {}
    recipe = (settings.get("recipes") or {}).get(model) or {}
    init = config.recipe_init(recipe, dataset)
    return init if init != "none" else _pretrained(model_record, model)


def _pretrained(model_record: dict, model: str) -> str:
    options = model_record.get("options") or {}
    if "pretrained" in options:
        return str(options["pretrained"])
    try:
        from actionrepro.models.registry import model_options

        return str(model_options(model).get("pretrained", "none"))
    except Exception:  # an architecture not registered yet: say so rather than guess
        return "unknown"


# ---------------------------------------------------------------- per-video outcomes
def read_predictions(run: Path, views: str) -> pd.DataFrame:
    """predictions_<views>.csv of a run (video ids read verbatim). Raises Unreadable."""
    path = Path(run) / f"predictions_{views}.csv"
    if not path.is_file():
        raise Unreadable(f"{path} is missing (evaluated before per-video predictions were written?)")
    try:
        table = pd.read_csv(path, dtype={"video_id": str}, keep_default_na=False, na_filter=False)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise Unreadable(f"{path} cannot be read ({type(err).__name__}: {err})") from err
    missing = [c for c in ("video_id", "label", "pred") if c not in table.columns]
    if missing:
        raise Unreadable(f"{path} lacks column(s) {', '.join(missing)}")
    return table


def top1_correct(run: Path, views: str) -> pd.Series:
    """Per-video top-1 correctness (pred == label) of a run at `views`, indexed by video_id. Raises Unreadable."""
    table = read_predictions(run, views)
    try:
        correct = table["pred"].astype(int).to_numpy() == table["label"].astype(int).to_numpy()
    except (TypeError, ValueError) as err:
        raise Unreadable(f"{Path(run) / f'predictions_{views}.csv'}: label/pred are not integers ({err})") from err
    series = pd.Series(correct, index=pd.Index(table["video_id"], name="video_id"), name="correct")
    return _matching(series, Path(run) / f"eval_{views}.json", "top1")


def reversed_pair_correct(run: Path, views: str) -> pd.Series:
    """Per-video correctness of the reversed-pair decision (the label's score against its time-reversed
    twin's, as evaluate.reversed_pair_accuracy decides: ties go to class_a) for the videos of paired
    classes, indexed by video_id. Reads predictions_<views>.csv, scores_<views>.npy (rows in CSV order)
    and the pairs recorded in eval_<views>.json. Raises Unreadable."""
    run = Path(run)
    table = read_predictions(run, views)
    evaluation = read_json(run / f"eval_{views}.json")
    pairs = (evaluation.get("reversed_pairs") or {}).get("pairs")
    if not pairs:
        raise Unreadable(f"{run / f'eval_{views}.json'} records no reversed pairs")
    try:
        scores = np.load(run / f"scores_{views}.npy", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise Unreadable(f"{run / f'scores_{views}.npy'} cannot be read ({type(err).__name__}: {err})") from err
    if scores.ndim != 2 or len(scores) != len(table):
        raise Unreadable(f"{run / f'scores_{views}.npy'} has shape {scores.shape}, the predictions CSV {len(table)} rows")
    labels = table["label"].astype(int).to_numpy()
    keep, correct = np.zeros(len(labels), bool), np.zeros(len(labels), bool)
    for pair in pairs:
        a, b = int(pair["label_a"]), int(pair["label_b"])
        mask = (labels == a) | (labels == b)
        choice = np.where(scores[mask, a] >= scores[mask, b], a, b)
        keep |= mask
        correct[mask] = choice == labels[mask]
    series = pd.Series(correct[keep], index=pd.Index(table["video_id"][keep], name="video_id"), name="correct")
    return _matching(series, run / f"eval_{views}.json", "reversed_pair_acc", evaluation)


def _matching(correct: pd.Series, eval_file: Path, key: str, evaluation: dict | None = None) -> pd.Series:
    """`correct` if its mean reproduces eval_file's `key` (when recorded); else Unreadable: a test or
    interval on per-video files that disagree with the reported number would qualify another number."""
    if evaluation is None:
        evaluation = read_json(eval_file) if eval_file.is_file() else {}
    recorded = _number(evaluation.get(key))
    found = float(correct.mean()) if len(correct) else math.nan
    if not math.isnan(recorded) and not abs(found - recorded) < 1e-9:
        raise Unreadable(f"the per-video files beside {eval_file} give {key} {found:.6f}, "
                         f"{eval_file.name} records {recorded:.6f} (stale predictions or scores?)")
    return correct


def _top1_ci(run: Path, views: str, summary: dict) -> dict:
    """top1_ci_low/high (percent) from the run's per-video predictions; empty (NaN) if the file is
    missing or does not reproduce eval.json's top-1 and video count (it would qualify another number)."""
    empty = {"top1_ci_low": math.nan, "top1_ci_high": math.nan}
    try:
        correct = top1_correct(run, views)
    except Unreadable as err:
        log.warning("report: no confidence interval for %s %s: %s", run, views, err)
        return empty
    top1, videos = _number(summary.get("top1")), _number(summary.get("num_videos"))
    if not (len(correct) and abs(correct.mean() - top1) < 1e-9 and (math.isnan(videos) or videos == len(correct))):
        log.warning("report: no confidence interval for %s %s: predictions_%s.csv (%d videos, top-1 %.6f) does "
                    "not match eval.json (%s videos, top-1 %s)", run, views, views, len(correct),
                    correct.mean() if len(correct) else math.nan, summary.get("num_videos"), summary.get("top1"))
        return empty
    low, high = stats.top1_ci(correct.to_numpy())
    return {"top1_ci_low": _pct(low), "top1_ci_high": _pct(high)}


def read_run(dataset: str, split: int, model: str, variant: str) -> list[dict]:
    """One row per view protocol of an evaluated run (accuracies in percent). Raises Unreadable."""
    run = runs.run_dir(dataset, split, model, variant)
    evaluation = read_json(run / "eval.json")
    metrics = _optional_json(run / "metrics.json")
    record = _optional_json(run / "model.json")
    if "options" not in record and variant != "dense":  # a pruned model keeps its dense parent's init
        record = _optional_json(runs.run_dir(dataset, split, model, "dense") / "model.json")
    protocols = evaluation.get("protocols")
    if not isinstance(protocols, dict) or not protocols:
        raise Unreadable(f"{run / 'eval.json'} has no 'protocols'; re-run `actionrepro evaluate`")
    costs = evaluation.get("costs") or {}
    paper = evaluation.get("paper_protocol")
    common = {
        "dataset": dataset, "split": split, "model": model, "variant": variant, "ratio": runs.variant_ratio(variant),
        "params": _number(costs.get("params")), "gflops": _number(costs.get("gflops")),
        "latency_ms": _batch1_latency(costs), "latency_device": str(costs.get("device", "")),
        "latency_device_name": str(costs.get("device_name", "")),
        "train_seconds": _number(metrics.get("wall_time_s")), "epochs": _number(metrics.get("epochs")),
        "selected_epoch": _number(metrics.get("selected_epoch")), "train_device": str(metrics.get("device", "")),
        "pretrained": run_init(dataset, split, model, record), "seed": _number(metrics.get("seed")),
        "run_dir": run.as_posix(),
    }
    rows = []
    for views, summary in protocols.items():
        if not isinstance(summary, dict) or "top1" not in summary:
            raise Unreadable(f"{run / 'eval.json'}: protocol {views!r} has no top1")
        rows.append({**common, "views": str(views),
                     "protocol": "fast" if views == FAST_VIEWS else ("paper" if views == paper else "other"),
                     "top1": _pct(summary.get("top1")), **_top1_ci(run, str(views), summary),
                     "top5": _pct(summary.get("top5")),
                     "mean_class_acc": _pct(summary.get("mean_class_acc")),
                     "reversed_pair_acc": _pct(summary.get("reversed_pair_acc")),
                     "num_videos": _number(summary.get("num_videos")), "excluded": _number(summary.get("excluded"))})
    return rows


def collect_results(params: dict, phash: str, params_file: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, status): one results row per evaluated run x view protocol; one status row per
    run the params expect, with its state (evaluated / trained, not evaluated / ... / unreadable)."""
    rows, status = [], []
    freshness.current_code.cache_clear()
    for ds, k, m, v in expected_runs(params):
        run = runs.run_dir(ds, k, m, v)
        state, detail = run_state(run)
        reasons = freshness.stale_reasons(runs.RunId(ds, k, m, v), params) if state == EVALUATED else []
        if reasons:
            state, detail = STALE, freshness.summary(reasons)
            log.warning("report: %s is %s", run, detail)
        if state == EVALUATED:
            try:
                found = read_run(ds, k, m, v)
            except Unreadable as err:
                state, detail, found = "unreadable", str(err), []
                log.warning("report: %s", err)
            made = run_provenance(runs.RunId(ds, k, m, v))
            for row in found:
                row.update(seed=params["seed"] if math.isnan(row["seed"]) else int(row["seed"]),
                           params_hash=phash, **made,
                           reproduce=runs.reproduce_command(runs.RunId(ds, k, m, v), params_file))
            rows += found
        status.append({"dataset": ds, "split": k, "model": m, "variant": v, "state": state, "detail": detail,
                       "run_dir": run.as_posix()})
    results = flag_environments(pd.DataFrame(rows, columns=RESULT_COLUMNS[:-2])).assign(external=False)
    return results[RESULT_COLUMNS], pd.DataFrame(status, columns=STATUS_COLUMNS)


def external_run_dirs() -> list[runs.RunId]:
    """Evaluated runs of external checkpoints: runs/*/split*/*/external-*/eval.json (never expected runs)."""
    if not runs.RUNS.is_dir():
        return []
    found = sorted(runs.RUNS.glob(f"*/split*/*/{runs.EXTERNAL_PREFIX}*/eval.json"))
    return [run for run in (runs.run_id_of(p.parent) for p in found) if run is not None]


def external_results(phash: str) -> pd.DataFrame:
    """One row per external run x view protocol, marked external=True; kept apart from the expected
    runs, so no dense/pruned table or figure ever aggregates them (they go to results.csv only)."""
    rows = []
    for run in external_run_dirs():
        try:
            found = read_run(run.dataset, run.split, run.model, run.variant)
        except Unreadable as err:
            log.warning("report: external run %s skipped: %s", run.dir, err)
            continue
        source = (_optional_json(run.dir / "model.json").get("external") or {})
        for row in found:
            row.update(seed=_number(row["seed"]), params_hash=phash, commit="", torch="", cpu="", gpu="",
                       environment="", environment_differs=False, external=True, pretrained="external",
                       reproduce=f"actionrepro evaluate-checkpoint {run.dataset} {run.split} {run.model} "
                                 f"{source.get('path', 'CHECKPOINT')} --name "
                                 f"{run.variant.removeprefix(runs.EXTERNAL_PREFIX)}")
        rows += found
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def run_provenance(run: runs.RunId) -> dict:
    """The code and environment a run's weights were made with (its train or prune record)."""
    record = provenance.read(run.dir).get("train" if run.variant == runs.DENSE else "prune") or {}
    git = record.get("git") or {}
    env = record.get("environment") or {}
    commit = git.get("commit", "unknown") + ("+dirty" if git.get("dirty") else "")
    return {"commit": commit, "torch": (env.get("packages") or {}).get("torch") or "",
            "cpu": (env.get("cpu") or {}).get("model") or "", "gpu": (env.get("gpu") or {}).get("name") or "",
            "environment": provenance.environment_key(env)[:12] if env else ""}


def flag_environments(results: pd.DataFrame) -> pd.DataFrame:
    """`environment_differs`: True for runs made in another environment than most runs were."""
    if results.empty:
        return results.assign(environment_differs=pd.Series(dtype=bool))
    usual = results.drop_duplicates("run_dir")["environment"].mode()
    return results.assign(environment_differs=results["environment"] != (usual.iloc[0] if len(usual) else ""))


def stray_runs(params: dict) -> list[str]:
    """Evaluated runs under runs/ that these params do not ask for (another config's leftovers)."""
    wanted = {runs.run_dir(*key).as_posix() for key in expected_runs(params)}
    if not runs.RUNS.is_dir():
        return []
    found = sorted(p.parent.as_posix() for p in runs.RUNS.glob("*/split*/*/*/eval.json")
                   if not p.parent.name.startswith(runs.EXTERNAL_PREFIX))  # external runs: rows of their own
    return [p for p in found if p not in wanted]


def read_history(dataset: str, split: int, model: str, variant: str = "dense") -> pd.DataFrame | None:
    """history.csv of a run (one row per epoch), or None if absent or unreadable."""
    path = runs.run_dir(dataset, split, model, variant) / "history.csv"
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except (OSError, ValueError) as err:
        log.warning("report: %s cannot be read (%s); no training curve for it", path, err)
        return None
    return history if "epoch" in history.columns and len(history) else None


def protocol_eval(dataset: str, split: int, model: str, variant: str, views: str) -> dict | None:
    """eval_<views>.json of a run; None (with a warning when unreadable) where there is none."""
    path = runs.run_dir(dataset, split, model, variant) / f"eval_{views}.json"
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except Unreadable as err:
        log.warning("report: %s", err)
        return None


def read_confusion(dataset: str, split: int, model: str, variant: str, views: str) -> tuple[list[str], list[list[int]]] | None:
    """(class names, confusion matrix rows=true, cols=predicted) from eval_<views>.json, or None."""
    data = protocol_eval(dataset, split, model, variant, views)
    if data is None:
        return None
    matrix, classes = data.get("confusion_matrix"), data.get("classes")
    if not matrix or not classes or len(matrix) != len(classes):
        return None
    return [str(c) for c in classes], matrix


def read_per_class(dataset: str, split: int, model: str, variant: str, views: str) -> pd.DataFrame | None:
    """Per-class accuracy (percent) and test videos per class from eval_<views>.json (written by
    engine.evaluation.classification_metrics), in class order; None if absent or unreadable."""
    data = protocol_eval(dataset, split, model, variant, views)
    if data is None:
        return None
    per_class = data.get("per_class")
    if not isinstance(per_class, dict) or not per_class:
        return None
    support = data.get("per_class_support") or {}
    classes = [str(c) for c in (data.get("classes") or per_class)]
    rows = [{"class": c, "test videos": support.get(c),
             "accuracy (%)": _pct(per_class.get(c)) if per_class.get(c) is not None else math.nan}
            for c in classes]
    return pd.DataFrame(rows, columns=["class", "test videos", "accuracy (%)"])


# ---------------------------------------------------------------- data steps
def store_summaries(datasets: list[str]) -> pd.DataFrame:
    """Per dataset and store (frames, flow): videos, stored, quarantined (total and per reason), seconds."""
    rows = []
    for ds in datasets:
        for step, root in (("decode", paths.frames_dir(ds)), ("flow", paths.flow_dir(ds))):
            summary_file = root / "summary.json"
            if not summary_file.is_file():
                if step == "decode":
                    rows.append({"dataset": ds, "step": step, "state": "not finished (no summary.json)"})
                continue
            try:
                summary = read_json(summary_file)
            except Unreadable as err:
                rows.append({"dataset": ds, "step": step, "state": f"unreadable: {err}"})
                continue
            reasons = summary.get("quarantined") or {}
            this_run = summary.get("this_run") or {}
            rows.append({
                "dataset": ds, "step": step, "state": "done",
                "videos": summary.get("videos"), "stored": summary.get("stored"),
                "quarantined": int(summary.get("quarantined_total", sum(int(v) for v in reasons.values()))),
                "reasons": ", ".join(f"{k} {v}" for k, v in reasons.items() if v) or "none",
                "seconds": this_run.get("seconds", this_run.get("wall_s")),
            })
    return pd.DataFrame(rows, columns=["dataset", "step", "state", "videos", "stored", "quarantined", "reasons", "seconds"])


def quarantined_videos(datasets: list[str]) -> pd.DataFrame:
    """Every video a data step set aside: dataset, step, video_id, path, reason, detail."""
    parts = []
    for ds in datasets:
        for step, root in (("decode", paths.frames_dir(ds)), ("flow", paths.flow_dir(ds))):
            path = root / "quarantine.csv"
            if not path.is_file():
                continue
            try:  # video names hold '#', '&', quotes: read verbatim, nothing is a comment or NA
                table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
            except (OSError, ValueError) as err:
                log.warning("report: %s cannot be read (%s)", path, err)
                continue
            if len(table):
                table = table.reindex(columns=["video_id", "path", "reason", "detail"], fill_value="")
                table.insert(0, "step", step)
                table.insert(0, "dataset", ds)
                parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=QUARANTINE_COLUMNS)


def benchmark_times(root: str | Path = "benchmarks") -> pd.DataFrame:
    """Wall seconds per Snakemake job from its `benchmark:` file (column s), by rule."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        try:
            table = pd.read_csv(path, sep="\t")
            seconds = float(table["s"].mean())
        except (OSError, ValueError, KeyError) as err:
            log.warning("report: benchmark file %s cannot be read (%s)", path, err)
            continue
        rule = path.parent.name if path.parent != root else path.stem
        rows.append({"rule": rule, "job": path.stem, "seconds": seconds})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds"])
