"""Evaluating one run directory on its split's official test list: the evaluate step's work, also
used by `actionrepro evaluate-checkpoint` for external checkpoints (steps never import each other).

Two view protocols: "1x1" (one clip, centre crop: fast) and "{clips}x{crops}" from
params["evaluate"] (the paper protocol, 10x3). Every test video that survived quarantine is
predicted exactly once; the quarantined videos are counted and listed in the output.
evaluate.batch_size counts videos; their views go through the model at most
evaluate.chunk_clips clips at a time.

Outputs in the run dir (written atomically, by rank 0 only):
  eval_<views>.json, predictions_<views>.csv, scores_<views>.npy (rows in CSV order) per protocol,
  and eval.json (both protocols + GFLOPs, latency), written last.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from actionrepro import config, dag, paths, profile, provenance, runs
from actionrepro.data import gpu_clips, manifests, sources
from actionrepro.engine import distributed
from actionrepro.engine.evaluation import (SCORE_AVERAGING, classification_metrics, predict_all,
                                           reversed_pair_accuracy)
from actionrepro.errors import ActionReproError, DataError
from actionrepro.io import atomic_path, atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("class_a", "class_b", "label_a", "label_b")


def load_reversal_pairs(dataset: str) -> pd.DataFrame | None:
    """data/manifests/<ds>/reversal_pairs.csv for synthetic datasets, else None."""
    path = paths.manifests_dir(dataset) / "reversal_pairs.csv"
    builtin = sources.REGISTRY.get(dataset)  # a custom dataset is never synthetic
    if builtin is None or not builtin.is_synthetic or not path.is_file():
        return None
    pairs = pd.read_csv(path, dtype={"class_a": str, "class_b": str}, keep_default_na=False)
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)} (expected {', '.join(PAIR_COLUMNS)}); "
                        f"re-run `actionrepro splits {dataset}`")
    return pairs


def _excluded_records(excluded: pd.DataFrame | None) -> list[dict]:
    if excluded is None or len(excluded) == 0:
        return []
    keep = [c for c in ("video_id", "label", "step", "reason") if c in excluded.columns] or list(excluded.columns)
    return json.loads(excluded[keep].to_json(orient="records"))


def write_protocol(run: Path, views: str, header: dict, videos: pd.DataFrame, labels: np.ndarray,
                    scores: np.ndarray, names: list[str], excluded: list[dict],
                    pairs: pd.DataFrame | None) -> dict:
    metrics = classification_metrics(labels, scores, names)
    pred = scores.argmax(axis=1)
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, : metrics["top5_k"]]
    rows = np.arange(len(labels))
    table = pd.DataFrame({
        "video_id": videos["video_id"].astype(str).to_numpy() if "video_id" in videos else rows.astype(str),
        "label": labels,
        "class_name": [names[i] for i in labels],
        "pred": pred,
        "pred_class": [names[i] for i in pred],
        "score": scores[rows, labels],
        "pred_score": scores[rows, pred],
        "top5": [" ".join(map(str, r)) for r in top5],
    })
    scores_file = f"scores_{views}.npy"
    with atomic_path(run / scores_file) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, scores.astype(np.float32))
    atomic_write_csv(run / f"predictions_{views}.csv", table)
    result = {**header, "views": views, "score": SCORE_AVERAGING, **metrics,
              "excluded": len(excluded), "excluded_videos": excluded,
              "predictions": f"predictions_{views}.csv",
              "scores_file": scores_file, "scores_rows": "rows of the predictions CSV, columns = classes"}
    if pairs is not None:
        pair_result = reversed_pair_accuracy(labels, scores, pairs)
        result["reversed_pair_acc"] = pair_result["reversed_pair_acc"]
        result["reversed_pairs"] = pair_result
    atomic_write_json(run / f"eval_{views}.json", result)
    return result


def evaluate(dataset: str, split: int, model_name: str, params: dict, variant: str = "dense",
             params_file: str | None = None, overrides: list[str] = ()) -> Path:
    """Evaluate runs/<ds>/split<k>/<model>/<variant> on the split's test list; return eval.json's path."""
    params = config.resolve(params, dataset, model_name)  # the model's recipe over the global blocks
    run = runs.run_dir(dataset, split, model_name, variant)
    inputs = runs.data_inputs(dataset, split, model_name in dag.TWO_STREAM_MODELS) + [run / "checkpoint.pt"]
    record = provenance.make_record("evaluate", params, params_file=params_file, model=model_name, inputs=inputs,
                                    overrides=overrides, dataset=dataset)
    runs.begin_step(run, "evaluate", record)
    ctx = distributed.setup(params["train"]["device"])  # torchrun ranks, GPU choice
    try:
        model = runs.load_model(run).to(ctx.device)
        eval_cfg = params["evaluate"]
        header = {"dataset": dataset, "split": split, "model": model_name, "variant": variant,
                  "precision": "float32"}
        pairs = load_reversal_pairs(dataset)
        paper = (int(eval_cfg["clips"]), int(eval_cfg["crops"]))
        summaries = {f"{c}x{k}": _evaluate_protocol(model, dataset, split, params, (c, k), run, header, pairs, ctx)
                     for c, k in dict.fromkeys([(1, 1), paper])}
        if ctx.is_main:
            costs = profile.model_costs(model, model.input_spec, ctx.device,
                                        batch_sizes=(1, int(eval_cfg["latency_batch"])),
                                        repeats=int(eval_cfg["latency_repeats"]))
            atomic_write_json(run / "eval.json", {**header, "score": SCORE_AVERAGING, "protocols": summaries,
                                                  "paper_protocol": f"{paper[0]}x{paper[1]}",
                                                  "fast_protocol": "1x1", "costs": costs})
            runs.finish_step(run, "evaluate", record, ["eval.json"])
            log.info("%s: %.3f M params, %.3f GFLOPs per clip, %.2f ms at batch 1 on %s", run,
                     costs["params"] / 1e6, costs["gflops"], costs["latency_ms"]["batch_1"]["median_ms"],
                     costs["device_name"])
        distributed.barrier(ctx)
    finally:
        distributed.teardown(ctx)
    return run / "eval.json"


def _evaluate_protocol(model: nn.Module, dataset: str, split: int, params: dict, views_: tuple[int, int],
                       run: Path, header: dict, pairs: pd.DataFrame | None, ctx) -> dict | None:
    """One view protocol: predict every test video once, write its files (rank 0), return its summary."""
    from actionrepro.data.dataset import VideoClipDataset

    clips, crops = views_
    views = f"{clips}x{crops}"
    data = VideoClipDataset(dataset, split, "test", model.input_spec, params, mode="test", views=views_,
                            **gpu_clips.dataset_options(ctx.device))
    videos = data.videos.reset_index(drop=True)
    if len(videos) == 0:
        raise DataError(f"{dataset} split {split}: no test videos left to evaluate "
                        f"({len(getattr(data, 'excluded', []))} quarantined); check "
                        f"{paths.manifests_dir(dataset)}/split{split}.csv and the decode step's log")
    if len(data) != len(videos):
        raise ActionReproError(f"{dataset} split {split}: the test dataset yields {len(data)} items for "
                               f"{len(videos)} test videos; each video must be one item")
    excluded = _excluded_records(getattr(data, "excluded", None))
    log.info("%s: %s, %d test videos (%d quarantined), %d views each, %d rank(s)",
             run, views, len(videos), len(excluded), clips * crops, ctx.world_size)
    indices, labels, scores = predict_all(
        model, data, int(params["evaluate"]["batch_size"]), ctx.device,
        num_workers=int(params["train"]["num_workers"]), rank=ctx.rank, world=ctx.world_size,
        desc=f"{header['model']} {views}", max_clips=int(params["evaluate"]["chunk_clips"]),
        loader_memory_gb=float(params["train"]["loader_memory_gb"]))
    if scores.shape[1] != data.num_classes:
        raise ActionReproError(f"{run}: the model outputs {scores.shape[1]} classes but {dataset} has "
                               f"{data.num_classes}; was it trained on another dataset?")
    if "label" in videos and not np.array_equal(videos["label"].to_numpy(dtype=np.int64)[indices], labels):
        raise ActionReproError(f"{dataset} split {split}: labels yielded by the test dataset disagree "
                               "with its videos table; rebuild the manifests")
    if not ctx.is_main:
        return None
    names = manifests.read_classes(dataset)
    result = write_protocol(run, views, header, videos.iloc[indices], labels, scores, names, excluded, pairs)
    pair_acc = result.get("reversed_pair_acc")
    log.info("%s: %s top1 %.4f top5 %.4f mean class acc %.4f%s", run, views, result["top1"], result["top5"],
             result["mean_class_acc"], f" reversed-pair acc {pair_acc:.4f}" if pair_acc is not None else "")
    summary = {k: result[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "excluded", "views")}
    summary.update(clips=clips, crops=crops, file=f"eval_{views}.json")
    if pairs is not None:
        summary["reversed_pair_acc"] = result["reversed_pair_acc"]
    return summary
