"""Evaluation primitives: views folded into the batch, every test video predicted exactly once
(sharded over ranks without padding), scores averaged over views, and the metrics of one protocol.

A video's score is the mean over its views of the per-view softmax probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from actionrepro.data import gpu_clips
from actionrepro.engine import inflight
from actionrepro.errors import ActionReproError

SCORE_AVERAGING = "mean over views of per-view softmax probabilities"


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
            inputs, videos, views = fold_views(gpu_clips.on_device(batch, torch.device(device)), device)
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
                desc: str = "evaluate", max_clips: int | None = None, *,
                loader_memory_gb: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict every item of `data` exactly once over `world` ranks; every rank gets all of them,
    sorted by dataset index. The loader's prefetched batches stay within loader_memory_gb."""
    device = torch.device(device)
    plan = inflight.plan_for(data, batch_size, num_workers, loader_memory_gb, desc)
    loader = DataLoader(data, batch_size=batch_size, sampler=shard_indices(len(data), rank, world),
                        **plan.kwargs(), drop_last=False, pin_memory=device.type == "cuda",
                        collate_fn=gpu_clips.collate_for(data))
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
