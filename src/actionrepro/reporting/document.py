"""The report as a document: the figures drawn from the results and every block of report.md/html
(what was run, hardware, timing, problems, how to reproduce), from the tables the report step collects."""

from __future__ import annotations

import datetime as dt
import logging
import math

from pathlib import Path

import pandas as pd

from actionrepro import paths, runs
from actionrepro.errors import ActionReproError
from actionrepro.reporting import collect, figures, tables

log = logging.getLogger(__name__)

TITLE = "actionrepro benchmark report"
QUARANTINE_SHOWN = 200


def model_infos(models: list[str]) -> dict:
    """Registry facts (title, provenance, published numbers) per model; None where not registered."""
    from actionrepro.models.registry import model_info

    infos = {}
    for model in models:
        try:
            infos[model] = model_info(model)
        except ActionReproError as err:
            log.warning("report: no registry entry for %s (%s); its published numbers stay empty", model, err)
            infos[model] = None
    return infos


# ---------------------------------------------------------------- figures
def make_figures(results: pd.DataFrame, params: dict, paper: str) -> list[tuple[str, object, str]]:
    """(name, Figure, caption) of every figure there is data for."""
    models = list(params["models"])
    summary = tables.split_summary(results, paper)
    out = []
    fig = figures.accuracy_vs_gflops(summary, models, paper)
    if fig is not None:
        out.append(("accuracy_vs_gflops", fig,
                    f"Top-1 ({paper}, mean over the splits run) against GFLOPs per clip. Circles: dense; "
                    "triangles: pruned (labelled with the ratio); lines join the variants of one model; "
                    "dashed: the Pareto front over all points."))
    fig = figures.accuracy_vs_ratio(summary, models, paper)
    if fig is not None:
        out.append(("accuracy_vs_pruning_ratio", fig,
                    f"Top-1 ({paper}) against the pruning ratio (0 = dense); error bars: sample std over splits."))
    for ds in params["datasets"]:
        split, histories = first_split_histories(ds, params)
        fig = figures.training_curves(ds, histories, models, split) if histories else None
        if fig is not None:
            out.append((f"training_curves_{ds}", fig,
                        f"{ds}, split {split}, dense: training loss and accuracy per epoch (from history.csv); "
                        "dashed lines are the validation subset carved from the training split, if any."))
        panels = best_worst_confusions(results, ds, paper)
        fig = figures.confusion_matrices(ds, panels) if panels else None
        if fig is not None:
            out.append((f"confusion_{ds}", fig,
                        f"{ds}: confusion matrices ({paper}, row-normalised, counts in cells) of the best and the "
                        "worst dense model by top-1 on the first split run."))
    return out


def first_split_histories(dataset: str, params: dict) -> tuple[int, dict[str, pd.DataFrame]]:
    """Dense training histories of the first split (in params order) that has any."""
    for split in params["splits"]:
        histories = {}
        for model in params["models"]:
            history = collect.read_history(dataset, split, model)
            if history is not None:
                histories[model] = history
        if histories:
            return split, histories
    return 0, {}


def best_worst_confusions(results: pd.DataFrame, dataset: str, views: str) -> list[tuple[str, list, list]]:
    if results.empty:
        return []
    rows = results[(results["dataset"] == dataset) & (results["variant"] == "dense") & (results["views"] == views)]
    if rows.empty:
        return []
    split = int(rows["split"].min())
    rows = rows[rows["split"] == split].sort_values(["top1", "model"], ascending=[False, True])
    picks = [("best", rows.iloc[0])] + ([("worst", rows.iloc[-1])] if len(rows) > 1 else [])
    panels = []
    for label, row in picks:
        found = collect.read_confusion(dataset, split, row["model"], "dense", views)
        if found is not None:
            panels.append((f"{label}: {row['model']} (top-1 {row['top1']:.2f}%, split {split})", *found))
    return panels


# ---------------------------------------------------------------- the document
PRUNING_CAPTION = ("Structured pruning, per dataset, model and ratio, over the n splits where both the dense and "
                   "the pruned run were evaluated (paper view protocol). Δ top-1 = pruned − dense in points "
                   "(mean ± sample std); reductions are 1 − pruned/dense of FLOPs per clip and parameters; "
                   "speed-up = dense / pruned median batch-1 latency, on the device kind it was measured on "
                   "(empty: not measured there). p: exact paired McNemar test of pruned against dense on the "
                   "per-video top-1 outcomes of the same test videos, pooled over the n splits (each split's own "
                   "p-value and both protocols are in pruning.csv); n.s.: not significant at 0.05.")
TEMPORAL_CAPTION = ("Temporal order on the synthetic datasets: every class has a time-reversed twin; reversed-pair "
                    "accuracy restricts each decision to the video's pair, so a model blind to frame order scores "
                    "the chance level of 50%. Mean ± sample std over splits. Δ and p vs tsn: each model against tsn "
                    "(same variant) over the splits both were evaluated on; p is the exact paired McNemar test on the "
                    "per-video reversed-pair decisions, pooled over those splits; n.s.: not significant at 0.05.")


def main_caption(params: dict) -> str:
    return (f"Top-1 accuracy (%) of the dense models: split 1 and mean ± sample std (ddof=1) over the splits "
            f"run (n; '—' when n=1), for the fast 1x1 and the paper {tables.paper_views(params)} view protocol. "
            "Published numbers come from the model registry with their provenance (code: the authors' released "
            "code or model zoo; abstract; reconstruction; recalled: quoted from memory, not re-checked) and the "
            "protocol they were measured under. 'ours − published' compares like with like only: our runs "
            "must match the published number's init, backbone (a tiny-scale network never does), split "
            "protocol (split 1, or the mean of all three splits) and test views (clips x crops; ours at that "
            "protocol if we evaluated it, else at the paper protocol); otherwise the cell says 'not compared' "
            "and names every difference, a fact the source does not state counting as one. Empty: nothing "
            "published, or no run yet. 'init' is what our runs started from (the recipe's init, else the "
            "pretrained option).")


def _duration(seconds: float) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _runs(results: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated run (the results frame has one per view protocol)."""
    return results.drop_duplicates(["dataset", "split", "model", "variant"]) if len(results) else results


def report_blocks(params, params_file, git, phash, results, status, main, pruning, temporal, stores,
                  quarantine, figure_blocks, root_link: str = "../") -> list[tuple]:
    """root_link: the project root as seen from the report folder (links to runs/ and logs/)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    evaluated = int((status["state"] == collect.EVALUATED).sum())
    blocks: list[tuple] = [
        ("h1", TITLE),
        ("p", f"Built {now} from commit `{git['commit']}`" + (" (with uncommitted changes)" if git["dirty"] else "")
         + f", params `{params_file}` (sha256 of the canonical JSON `{phash[:16]}…`)."),
        ("p", f"**{evaluated} of {len(status)} expected runs evaluated** "
              f"({len(params['datasets'])} dataset(s) × {len(params['splits'])} split(s) × "
              f"{len(params['models'])} model(s) × {len(runs.variant_names(params['prune']['ratios']))} variant(s)); "
              "every number below comes from the files under `runs/` and `data/`; nothing is filled in."),
    ]
    blocks += what_was_run(params, params_file)
    blocks += hardware(results)
    blocks += timing(results, stores)
    blocks += problems(params, results, status, stores, quarantine)
    blocks += [("h2", "Results"), ("table", main, main_caption(params))]
    if len(pruning):
        blocks += [("h3", "Pruning"), ("table", pruning, PRUNING_CAPTION)]
    if len(temporal):
        blocks += [("h3", "Temporal order (synthetic datasets)"), ("table", temporal, TEMPORAL_CAPTION)]
    blocks += per_class(results, tables.paper_views(params))
    blocks += [("h2", "Figures")]
    blocks += figure_blocks or [("p", "No figures: no run has been evaluated yet.")]
    blocks += reproduce(params_file, results, root_link)
    return blocks


def what_was_run(params: dict, params_file: str) -> list[tuple]:
    train, ev, prune = params["train"], params["evaluate"], params["prune"]
    options = params.get("architectures") or {}
    items = [
        f"params file: `{params_file}`; scale: `{params['scale']}`; seed: {params['seed']}",
        f"datasets: {', '.join(params['datasets'])}; official splits: {', '.join(map(str, params['splits']))}",
        f"models: {', '.join(params['models'])}",
        f"training: {train['epochs']} epochs, batch {train['batch_size']}, {train['optimizer']} lr {train['lr']}, "
        f"{train['schedule']} schedule, weight decay {train['weight_decay']}, amp {train.get('amp', 'off')}, "
        f"model selection: {'last epoch' if not train.get('val_fraction') else 'best on a validation subset of the train split'}",
        f"evaluation: 1x1 and {ev['clips']}x{ev['crops']} views (clips x crops), scores = mean of per-view softmax",
        f"pruning: ratios {', '.join(f'{r:g}' for r in prune['ratios']) or 'none'}, importance {prune['importance']}, "
        f"{'global' if prune['global_pruning'] else 'per-layer'}, fine-tune {prune['finetune_epochs']} epochs "
        f"at lr {prune['finetune_lr']}",
    ]
    items += [f"architecture options for {m}: `{options[m]}`" for m in params["models"] if options.get(m)]
    return [("h2", "What was run"), ("ul", items)]


def hardware(results: pd.DataFrame) -> list[tuple]:
    env = collect.environment()
    items = [f"CPU: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable by this process)",
             f"GPU: {', '.join(env['gpus']) if env['gpus'] else 'none'}",
             f"torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, {env['platform']}"]
    blocks = [("h2", "Hardware"), ("p", "The machine that built this report:"), ("ul", items)]
    run_rows = _runs(results)
    if len(run_rows):
        devices = (run_rows.assign(train_device=run_rows["train_device"].replace("", "unknown"),
                                   latency_device_name=run_rows["latency_device_name"].replace("", "unknown"))
                   .groupby(["train_device", "latency_device_name"]).size().reset_index(name="runs")
                   .rename(columns={"train_device": "trained on", "latency_device_name": "latency measured on"}))
        blocks.append(("table", devices, "Devices recorded by the runs themselves (metrics.json, eval.json)."))
    return blocks


def timing(results: pd.DataFrame, stores: pd.DataFrame) -> list[tuple]:
    blocks: list[tuple] = [("h2", "How long")]
    run_rows = _runs(results)
    if len(run_rows):
        rows = []
        for ds, part in run_rows.groupby("dataset", sort=False):
            dense, pruned = part[part["variant"] == "dense"], part[part["variant"] != "dense"]
            rows.append({"dataset": ds, "runs": len(part),
                         "training (dense)": _duration(dense["train_seconds"].sum(min_count=1)),
                         "fine-tuning (pruned)": _duration(pruned["train_seconds"].sum(min_count=1))})
        dense_rows = run_rows["variant"] == "dense"
        rows.append({"dataset": "all", "runs": len(run_rows),
                     "training (dense)": _duration(run_rows.loc[dense_rows, "train_seconds"].sum(min_count=1)),
                     "fine-tuning (pruned)": _duration(run_rows.loc[~dense_rows, "train_seconds"].sum(min_count=1))})
        blocks.append(("table", pd.DataFrame(rows), "Training wall time (sum of metrics.json wall_time_s)."))
    done = stores[stores["state"] == "done"] if len(stores) else stores
    if len(done):
        frame = done[["dataset", "step", "videos"]].assign(**{"wall time": done["seconds"].map(_duration)})
        blocks.append(("table", frame, "Data steps: wall time of their last run (videos reused from an earlier "
                                       "run are not re-timed)."))
    bench = collect.benchmark_times()
    if len(bench):
        per_rule = bench.groupby("rule", sort=True).agg(jobs=("job", "size"), seconds=("seconds", "sum")).reset_index()
        per_rule.loc[len(per_rule)] = ["all", int(per_rule["jobs"].sum()), per_rule["seconds"].sum()]
        per_rule["wall time"] = per_rule.pop("seconds").map(_duration)
        blocks.append(("table", per_rule, "Snakemake jobs: summed wall time per rule (benchmarks/)."))
    if len(blocks) == 1:
        blocks.append(("p", "No timings recorded yet."))
    return blocks


def problems(params, results, status, stores, quarantine) -> list[tuple]:
    blocks: list[tuple] = [("h2", "Missing, failed and quarantined")]
    not_done = status[status["state"] != collect.EVALUATED]
    if len(not_done):
        counts = not_done["state"].value_counts()
        blocks.append(("p", f"{len(not_done)} of {len(status)} expected runs have no evaluation: "
                            + ", ".join(f"{n} {state}" for state, n in counts.items())
                            + ". Their cells in the tables read 'missing' or count fewer splits (n=… of …)."))
        blocks.append(("table", not_done[["dataset", "split", "model", "variant", "state", "detail"]],
                       "Expected runs (from the params) without an eval.json."))
    else:
        blocks.append(("p", f"All {len(status)} expected runs were evaluated."))
    if len(stores):
        blocks.append(("table", stores.drop(columns="seconds"),
                       "Frame store (decode) and flow store per dataset: videos set aside by reason."))
    if len(quarantine):
        shown = quarantine.head(QUARANTINE_SHOWN)
        more = (f" The first {QUARANTINE_SHOWN} of {len(quarantine)} are shown; all are in quarantine.csv."
                if len(quarantine) > QUARANTINE_SHOWN else "")
        counts = quarantine.groupby(["dataset", "step"]).size()
        blocks.append(("p", "Quarantined videos: " + ", ".join(f"{ds} ({step}) {n}" for (ds, step), n in counts.items())
                       + ". They are excluded from training and testing and counted, never silently dropped." + more))
        shown = shown.assign(detail=shown["detail"].map(_shorten))
        blocks.append(("table", shown[["dataset", "step", "video_id", "reason", "detail"]],
                       "Quarantined videos (details shortened; quarantine.csv has them whole)."))
    else:
        blocks.append(("p", "No video was quarantined."))
    run_rows = _runs(results)
    dense = run_rows[run_rows["variant"] == "dense"] if len(run_rows) else run_rows
    if len(dense) and dense["excluded"].fillna(0).gt(0).any():
        excluded = (dense.groupby(["dataset", "split"]).agg(test_videos=("num_videos", "max"),
                                                             excluded=("excluded", "max")).reset_index())
        excluded = excluded.astype({"test_videos": "Int64", "excluded": "Int64"})
        blocks.append(("table", excluded, "Test videos evaluated and test videos excluded (quarantined) per split."))
    stray = collect.stray_runs(params)
    if stray:
        blocks.append(("p", f"{len(stray)} evaluated run(s) under `runs/` are not asked for by these params and are "
                            "left out of this report: " + ", ".join(f"`{s}`" for s in stray)))
    return blocks


def per_class(results: pd.DataFrame, views: str) -> list[tuple]:
    """One folded per-class accuracy table per evaluated run, at the paper view protocol."""
    run_rows = _runs(results)
    blocks = []
    for r in run_rows.itertuples() if len(run_rows) else []:
        frame = collect.read_per_class(r.dataset, r.split, r.model, r.variant, views)
        if frame is None:
            continue
        frame = frame.assign(**{"test videos": frame["test videos"].astype("Int64"),
                                "accuracy (%)": frame["accuracy (%)"].map(lambda v: tables.fmt(v) if pd.notna(v) else "")})
        blocks.append(("details", f"{r.dataset} split {r.split} {r.model} {r.variant}", frame,
                       f"eval_{views}.json; empty accuracy: no test video of that class."))
    if not blocks:
        return []
    return [("h3", f"Per-class accuracy ({views})"),
            ("p", f"Top-1 accuracy per class (recall) of every evaluated run at the paper {views} view protocol, "
                  "from its eval_<views>.json; click a run to unfold its table.")] + blocks


def log_file(run: runs.RunId) -> str:
    """The Snakemake log of the step that made a run's weights (train for dense, prune for pruned)."""
    if run.variant == runs.DENSE:
        return f"{paths.LOGS.as_posix()}/train/{run.dataset}-split{run.split}-{run.model}.log"
    ratio = run.variant.removeprefix(runs.PRUNED_PREFIX)
    return f"{paths.LOGS.as_posix()}/prune/{run.dataset}-split{run.split}-{run.model}-{ratio}.log"


def reproduce(params_file: str, results: pd.DataFrame, root_link: str = "../") -> list[tuple]:
    config = "" if params_file == "params.yaml" else f" --configfile {params_file}"
    blocks: list[tuple] = [
        ("h2", "How to reproduce"),
        ("ul", [f"everything (download → report): `snakemake --cores all{config}`",
                f"this report from the runs on disk: `actionrepro report --params {params_file}`",
                "one number: the command in its row below (Snakemake builds whatever that run needs)"]),
    ]
    run_rows = _runs(results)
    if len(run_rows):
        rows = []
        for r in run_rows.itertuples():
            run = runs.RunId(r.dataset, r.split, r.model, r.variant)
            logged = log_file(run)
            rows.append({"run": f"{r.dataset} split {r.split} {r.model} {r.variant}",
                         "folder": f"[{r.run_dir}/]({root_link}{r.run_dir}/)",
                         "log": f"[{logged}]({root_link}{logged})" if Path(logged).is_file() else f"{logged} (none)",
                         "command": f"`{r.reproduce}`",
                         "steps": " && ".join(f"`{c}`" for c in runs.step_commands(run, params_file))})
        blocks.append(("table", pd.DataFrame(rows), "One command per run (its eval.json holds both view protocols); "
                                                    "folder and log link to the run's files, relative to this report."))
    return blocks
