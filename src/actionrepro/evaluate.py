"""Evaluate a trained (dense or pruned) model on the official test list of one split.

Two view protocols: "1x1" (one clip, centre crop: fast) and "{clips}x{crops}" from
params["evaluate"] (the paper protocol, 10x3). A video's score is the mean over its views of the
per-view softmax probabilities. Every test video that survived quarantine is predicted exactly
once: no padding, no dropped last batch, also when sharded over torchrun ranks; the count is
checked, not assumed, and the quarantined videos are counted and listed in the output.

evaluate.batch_size counts videos; their clips x crops views go through the model at most
train.batch_size clips at a time (a size that fits training, so it fits inference).

Outputs in the run dir (written atomically, by rank 0 only):
  eval_<views>.json, predictions_<views>.csv, scores_<views>.npy (rows in CSV order) per protocol,
  and eval.json (both protocols + params, GFLOPs, latency). metrics.json belongs to train.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from actionrepro import paths, profile
from actionrepro.engine import checkpoint, distributed
from actionrepro.errors import ActionReproError, DataError
from actionrepro.inputs import InputSpec
from actionrepro.io import atomic_path, atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

SCORE_AVERAGING = "mean over views of per-view softmax probabilities"
PAIR_COLUMNS = ("class_a", "class_b", "label_a", "label_b")


# ---------------------------------------------------------------- loading the model
def load_model_for_eval(run_dir: str | Path) -> nn.Module:
    """The run's model in eval mode on CPU: dense runs are rebuilt from model.json and their
    state dict; pruned-* runs are rebuilt by actionrepro.prune.load_pruned (recorded structure)."""
    run_dir = Path(run_dir)
    if run_dir.name.startswith("pruned-"):
        from actionrepro import prune

        model = prune.load_pruned(run_dir)
    else:
        model = _load_dense(run_dir)
    if not isinstance(getattr(model, "input_spec", None), InputSpec):
        raise ActionReproError(f"the model loaded from {run_dir} declares no input_spec (InputSpec); "
                               "the registry must attach one to every model")
    return model.eval()


def _train_command(run_dir: Path) -> str:
    """`actionrepro train DS SPLIT MODEL` for a runs/<ds>/split<k>/<model>/dense directory."""
    parts = run_dir.parts
    if len(parts) >= 4 and parts[-3].startswith("split"):
        return f"actionrepro train {parts[-4]} {parts[-3].removeprefix('split')} {parts[-2]}"
    return "actionrepro train DATASET SPLIT MODEL"


def _load_dense(run_dir: Path) -> nn.Module:
    meta_path, ckpt_path = run_dir / "model.json", run_dir / "checkpoint.pt"
    for path in (meta_path, ckpt_path):
        if not path.is_file():
            raise ActionReproError(f"{path} not found: train the model first ({_train_command(run_dir)}) "
                                   "or check the run directory")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ActionReproError(f"{meta_path} is not valid JSON ({err}); re-run training to rewrite it") from err
    missing = [k for k in ("name", "scale", "num_classes") if k not in meta]
    if missing:
        raise ActionReproError(f"{meta_path} lacks key(s) {', '.join(missing)}; re-run training to rewrite it")

    from actionrepro.models.registry import build_model

    model = build_model(meta["name"], meta["scale"], int(meta["num_classes"]), meta.get("options") or {})
    state = checkpoint.load(ckpt_path)  # weights_only=True; a damaged file is a clear error
    if state.get("complete") is not True:
        raise ActionReproError(f"{ckpt_path} is from a training run that has not finished "
                               f"(epoch {state.get('epoch', '?')}); re-run `actionrepro train` to resume it")
    if not isinstance(state.get("model"), dict):
        raise ActionReproError(f"{ckpt_path} holds no 'model' state dict; delete it and re-run training")
    weights = {k.removeprefix("_orig_mod."): v for k, v in state["model"].items()}  # torch.compile prefix
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ActionReproError(f"{ckpt_path} does not fit model {meta['name']!r} built from {meta_path} "
                               f"(the model code or its options changed since training): {err}") from err
    recorded = meta.get("input_spec")
    if recorded is not None and getattr(model, "input_spec", None) is not None:
        if dict(recorded) != model.input_spec.to_dict():
            raise ActionReproError(f"{meta_path} records input_spec {recorded} but model {meta['name']!r} now "
                                   f"declares {model.input_spec.to_dict()}; re-train or restore the options")
    return model


# ---------------------------------------------------------------- predicting
def fold_views(batch: dict, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], int, int]:
    """(B, V, ...) view tensors -> model inputs (B*V, ...), video-major, plus B and V."""
    inputs, shapes = {}, set()
    for key in ("rgb", "flow"):
        if key in batch:
            x = batch[key]
            shapes.add(tuple(x.shape[:2]))
            inputs[key] = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]).to(device, non_blocking=True)
    if len(shapes) != 1:
        raise ValueError(f"a test batch needs rgb and/or flow with the same (videos, views); got {shapes}")
    videos, views = shapes.pop()
    return inputs, videos, views


def average_view_scores(logits: torch.Tensor, videos: int, views: int) -> torch.Tensor:
    """(videos*views, C) logits, video-major -> (videos, C) mean of per-view softmax probabilities."""
    probs = logits.float().softmax(dim=-1)
    return probs.reshape(videos, views, probs.shape[-1]).mean(dim=1)


def forward_in_chunks(model: nn.Module, inputs: dict[str, torch.Tensor], max_clips: int | None) -> torch.Tensor:
    """Logits of all clips, at most max_clips per forward (10x3 views multiply the batch by 30;
    eval-mode outputs do not depend on what else is in the batch)."""
    total = next(iter(inputs.values())).shape[0]
    step = total if not max_clips else max(1, int(max_clips))
    return torch.cat([model(**{k: v[i:i + step] for k, v in inputs.items()}) for i in range(0, total, step)])


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device | str = "cpu", progress: bool = True,
            desc: str = "evaluate", max_clips: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the model over a test loader: (dataset indices, labels, view-averaged scores)."""
    model.eval()
    indices, labels, scores = [], [], []
    total = len(loader.sampler) if hasattr(loader.sampler, "__len__") else None
    with tqdm(total=total, desc=desc, unit="video", disable=not progress, leave=False) as bar:
        for batch in loader:
            inputs, videos, views = fold_views(batch, device)
            logits = forward_in_chunks(model, inputs, max_clips)
            scores.append(average_view_scores(logits, videos, views).cpu().numpy())
            indices.append(torch.as_tensor(batch["index"]).reshape(-1).numpy())
            labels.append(torch.as_tensor(batch["label"]).reshape(-1).numpy())
            bar.update(videos)
    if not scores:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return (np.concatenate(indices).astype(np.int64), np.concatenate(labels).astype(np.int64),
            np.concatenate(scores).astype(np.float32))


def shard_indices(n: int, rank: int, world: int) -> range:
    """This rank's share of n items, strided, without the padding DistributedSampler adds."""
    return range(rank, n, world)


def gather_predictions(indices: np.ndarray, labels: np.ndarray, scores: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rank's predictions on every rank (torch.distributed.all_gather_object)."""
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (indices, labels, scores))
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return indices, labels, scores
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def check_complete(indices: np.ndarray, n: int, what: str) -> np.ndarray:
    """Order that sorts predictions by index; raise unless each of the n videos appears exactly once."""
    counts = np.bincount(indices, minlength=n) if len(indices) else np.zeros(n, np.int64)
    if len(indices) != n or len(counts) != n or not (counts == 1).all():
        missing = np.flatnonzero(counts[:n] == 0)[:10].tolist()
        doubled = np.flatnonzero(counts > 1)[:10].tolist()
        raise ActionReproError(f"{what}: {len(indices)} predictions for {n} test videos "
                               f"(missing indices {missing}, repeated {doubled}); every test video must be "
                               "predicted exactly once - check the dataset's __len__/__getitem__ and the sampler")
    return np.argsort(indices, kind="stable")


def predict_all(model: nn.Module, data, batch_size: int, device: torch.device | str = "cpu",
                num_workers: int = 0, rank: int = 0, world: int = 1, progress: bool = True,
                desc: str = "evaluate", max_clips: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict every item of `data` exactly once over `world` ranks; every rank gets all of them,
    sorted by dataset index."""
    device = torch.device(device)
    loader = DataLoader(data, batch_size=batch_size, sampler=shard_indices(len(data), rank, world),
                        num_workers=num_workers, drop_last=False, pin_memory=device.type == "cuda")
    indices, labels, scores = predict(model, loader, device, progress=progress and rank == 0, desc=desc,
                                      max_clips=max_clips)
    if world > 1:
        indices, labels, scores = gather_predictions(indices, labels, scores)
    order = check_complete(indices, len(data), desc)
    return indices[order], labels[order], scores[order]


# ---------------------------------------------------------------- metrics
def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true, predicted], as sklearn.metrics.confusion_matrix(labels=range(num_classes)).

    One bincount instead of sklearn: importing sklearn costs ~1.3 s per evaluate job, a fifth of a
    tiny model's whole evaluation (tests/test_evaluate.py checks the two agree).
    """
    labels, pred = np.asarray(labels, np.int64), np.asarray(pred, np.int64)
    if len(labels) and (min(labels.min(), pred.min()) < 0 or max(labels.max(), pred.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes}); got labels "
                         f"{labels.min()}..{labels.max()}, predictions {pred.min()}..{pred.max()}")
    flat = labels * num_classes + pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def topk_accuracy(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of videos whose label is among the k highest scores (ties: lower label first)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(labels: np.ndarray, scores: np.ndarray, class_names: list[str]) -> dict:
    """top-1, top-5, mean class accuracy (mean recall over classes with test videos), per-class
    accuracy and the confusion matrix (rows = true class, columns = predicted, in class order)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores)
    num_classes = scores.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} score columns")
    pred = scores.argmax(axis=1)
    cm = confusion_matrix(labels, pred, num_classes)
    support = cm.sum(axis=1)
    recall = np.full(num_classes, np.nan)
    np.divide(np.diag(cm), support, out=recall, where=support > 0)
    k5 = min(5, num_classes)
    return {
        "top1": topk_accuracy(labels, scores, 1),
        "top5": topk_accuracy(labels, scores, k5),
        "top5_k": k5,
        "mean_class_acc": float(np.mean(recall[support > 0])) if (support > 0).any() else float("nan"),
        "per_class": {name: (None if s == 0 else float(r)) for name, r, s in zip(class_names, recall, support)},
        "per_class_support": {name: int(s) for name, s in zip(class_names, support)},
        "classes": list(class_names),
        "confusion_matrix": cm.tolist(),
        "num_videos": int(len(labels)),
    }


def reversed_pair_accuracy(labels: np.ndarray, scores: np.ndarray, pairs: pd.DataFrame) -> dict:
    """Accuracy on videos of paired classes when the decision is restricted to the two classes of
    the pair (argmax of their two scores; chance 0.5). Synthetic datasets pair each class with its
    time-reversed twin, so a model that ignores temporal order scores ~0.5 here."""
    labels = np.asarray(labels, dtype=np.int64)
    per_pair, correct_all, n_all = [], 0, 0
    for row in pairs.itertuples(index=False):
        a, b = int(row.label_a), int(row.label_b)
        mask = (labels == a) | (labels == b)
        n = int(mask.sum())
        choice = np.where(scores[mask, a] >= scores[mask, b], a, b)
        correct = int((choice == labels[mask]).sum())
        per_pair.append({"class_a": str(row.class_a), "class_b": str(row.class_b), "label_a": a, "label_b": b,
                         "num_videos": n, "acc": correct / n if n else None})
        correct_all, n_all = correct_all + correct, n_all + n
    return {"reversed_pair_acc": correct_all / n_all if n_all else None, "chance": 0.5,
            "num_videos": n_all, "pairs": per_pair}


# ---------------------------------------------------------------- dataset facts
def load_reversal_pairs(dataset: str) -> pd.DataFrame | None:
    """data/manifests/<ds>/reversal_pairs.csv for synthetic datasets, else None."""
    path = paths.manifests_dir(dataset) / "reversal_pairs.csv"
    if not dataset.startswith("synth_") or not path.is_file():
        return None
    pairs = pd.read_csv(path, dtype={"class_a": str, "class_b": str}, keep_default_na=False)
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)} (expected {', '.join(PAIR_COLUMNS)}); "
                        f"re-run `actionrepro splits {dataset}`")
    return pairs


def class_names(dataset: str, num_classes: int, videos: pd.DataFrame | None = None) -> list[str]:
    """Class names in label order: classes.csv (label, class_name) if present, else the manifest rows."""
    names: dict[int, str] = {}
    path = paths.manifests_dir(dataset) / "classes.csv"
    if path.is_file():
        table = pd.read_csv(path, dtype={"class_name": str}, keep_default_na=False)
        if {"label", "class_name"} <= set(table.columns):
            names = dict(zip(table["label"].astype(int), table["class_name"]))
    if not names and videos is not None and {"label", "class_name"} <= set(videos.columns):
        names = dict(zip(videos["label"].astype(int), videos["class_name"].astype(str)))
    return [names.get(i, str(i)) for i in range(num_classes)]


def _excluded_records(excluded: pd.DataFrame | None) -> list[dict]:
    if excluded is None or len(excluded) == 0:
        return []
    keep = [c for c in ("video_id", "label", "step", "reason") if c in excluded.columns] or list(excluded.columns)
    return json.loads(excluded[keep].to_json(orient="records"))


# ---------------------------------------------------------------- the step
def _write_protocol(run: Path, views: str, header: dict, videos: pd.DataFrame, labels: np.ndarray,
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


def evaluate(dataset: str, split: int, model_name: str, params: dict, variant: str = "dense") -> Path:
    """Evaluate runs/<ds>/split<k>/<model>/<variant> on the split's test list; return eval.json's path."""
    run = paths.run_dir(dataset, split, model_name, variant)
    ctx = distributed.setup(params["train"].get("device", "auto"))  # torchrun ranks, GPU choice
    try:
        model = load_model_for_eval(run).to(ctx.device)
        eval_cfg = params["evaluate"]
        header = {"dataset": dataset, "split": split, "model": model_name, "variant": variant,
                  "precision": "float32"}
        pairs = load_reversal_pairs(dataset)
        paper = (int(eval_cfg["clips"]), int(eval_cfg["crops"]))
        summaries = {f"{c}x{k}": _evaluate_protocol(model, dataset, split, params, (c, k), run, header, pairs, ctx)
                     for c, k in dict.fromkeys([(1, 1), paper])}
        if ctx.is_main:
            costs = profile.model_costs(model, model.input_spec, ctx.device,
                                        batch_sizes=(1, int(params["train"]["batch_size"])),
                                        repeats=int(eval_cfg.get("latency_repeats", 20)))
            atomic_write_json(run / "eval.json", {**header, "score": SCORE_AVERAGING, "protocols": summaries,
                                                  "paper_protocol": f"{paper[0]}x{paper[1]}",
                                                  "fast_protocol": "1x1", "costs": costs})
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
    data = VideoClipDataset(dataset, split, "test", model.input_spec, params, mode="test", views=views_)
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
        num_workers=int(params["train"].get("num_workers", 0)), rank=ctx.rank, world=ctx.world_size,
        desc=f"{header['model']} {views}", max_clips=int(params["train"]["batch_size"]))
    if scores.shape[1] != data.num_classes:
        raise ActionReproError(f"{run}: the model outputs {scores.shape[1]} classes but {dataset} has "
                               f"{data.num_classes}; was it trained on another dataset?")
    if "label" in videos and not np.array_equal(videos["label"].to_numpy(dtype=np.int64)[indices], labels):
        raise ActionReproError(f"{dataset} split {split}: labels yielded by the test dataset disagree "
                               "with its videos table; rebuild the manifests")
    if not ctx.is_main:
        return None
    names = class_names(dataset, data.num_classes, videos)
    result = _write_protocol(run, views, header, videos.iloc[indices], labels, scores, names, excluded, pairs)
    pair_acc = result.get("reversed_pair_acc")
    log.info("%s: %s top1 %.4f top5 %.4f mean class acc %.4f%s", run, views, result["top1"], result["top5"],
             result["mean_class_acc"], f" reversed-pair acc {pair_acc:.4f}" if pair_acc is not None else "")
    summary = {k: result[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "excluded", "views")}
    summary.update(clips=clips, crops=crops, file=f"eval_{views}.json")
    if pairs is not None:
        summary["reversed_pair_acc"] = result["reversed_pair_acc"]
    return summary
