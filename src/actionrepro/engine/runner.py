"""Training one model on one split's TRAIN list into its run directory: what the train step runs,
and the pruning step's fine-tune.

Resolves names (dataset, model, run directory, validation subset) and hands a built model and
datasets to the training loop (actionrepro.engine.loop.fit). Model selection never looks at the
test split: val_fraction 0 keeps the last epoch; otherwise the best epoch on a validation subset
carved from the TRAIN split (actionrepro.data.validation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from torch import nn
from torch.utils.data import Dataset

from actionrepro import runs
from actionrepro.data import gpu_clips, manifests, sources
from actionrepro.data.validation import carve_validation
from actionrepro.engine import determinism, distributed
from actionrepro.engine.loop import Init, train_model
from actionrepro.engine.settings import TrainSettings
from actionrepro.errors import DataError
from actionrepro.io import atomic_write_json

log = logging.getLogger(__name__)


def train(dataset: str, split: int, model_name: str, params: dict, variant: str = "dense",
          init: Init | None = None, *, model: nn.Module | None = None, epochs: int | None = None,
          lr: float | None = None, model_record: dict | None = None,
          on_epoch_end: Callable[[int], None] | None = None, build_options: dict | None = None) -> Path:
    """Train `model_name` (or the given, already built `model`, e.g. a pruned one) on the official
    TRAIN list of `dataset` split `split`; returns its run directory.

    epochs / lr override params["train"] (the pruning fine-tune); `init` is a state dict or a
    callable applied to the fresh model; `model_record` adds keys to model.json (e.g. the pruned
    structure). `build_options` are added to the architecture's options when building only, not
    recorded (the init's `pretrained` file). Resumes from the run directory's checkpoint when its settings match. TensorBoard
    event files go to <run dir>/tb unless train.tensorboard is false.
    """
    from actionrepro.models.registry import build_model

    settings = TrainSettings.from_params(params, epochs=epochs, lr=lr)
    ctx = distributed.setup(settings.device)
    try:
        out_dir = runs.run_dir(dataset, split, model_name, variant)
        options = dict(params["architectures"].get(model_name) or {})  # a model without options: none
        num_classes = len(manifests.read_classes(dataset))
        determinism.seed_everything(settings.seed)  # the model's initial weights
        if model is None:
            model = build_model(model_name, params["scale"], num_classes, {**options, **(build_options or {})})
        spec = model.input_spec

        train_set, val_set, bookkeeping = _datasets(dataset, split, spec, params, settings=settings,
                                                    num_classes=num_classes, decode_device=ctx.device)
        meta = {"dataset": dataset, "split": split, "model": model_name, "variant": variant, **bookkeeping}
        if ctx.is_main:
            record = {"name": model_name, "scale": params["scale"], "options": options,
                      "input_spec": spec.to_dict(), "num_classes": num_classes, "variant": variant,
                      "dataset": dataset, "split": split, **(model_record or {})}
            atomic_write_json(out_dir / "model.json", record)
        train_model(model, train_set, val_set, settings, out_dir, init=init, meta=meta, ctx=ctx,
                    on_epoch_end=on_epoch_end, tb_dir=out_dir / "tb" if settings.tensorboard else None)
        return out_dir
    finally:
        distributed.teardown(ctx)


def _datasets(dataset: str, split: int, spec, params: dict, *, settings: TrainSettings,
              num_classes: int, decode_device) -> tuple[Dataset, Dataset | None, dict]:
    """The training set (less a validation subset carved from it when val_fraction > 0), that
    subset (or None) and their bookkeeping for metrics.json (excluded_videos, val_by)."""
    from actionrepro.data.dataset import VideoClipDataset

    device = gpu_clips.dataset_options(decode_device)
    full = VideoClipDataset(dataset, split, "train", spec, params, mode="train", **device)
    if int(getattr(full, "num_classes", num_classes)) != num_classes:
        raise DataError(f"data/manifests/{dataset}/classes.csv lists {num_classes} classes but the "
                        f"{dataset} training set reports {full.num_classes}; re-run `actionrepro splits {dataset}`")
    excluded = getattr(full, "excluded", None)
    meta = {"excluded_videos": 0 if excluded is None else len(excluded)}
    if settings.val_fraction <= 0:
        return full, None, meta
    by_group = sources.get(dataset, params=params).grouped
    train_ids, val_ids = carve_validation(full.videos, settings.val_fraction, settings.seed, by_group)
    train_set = VideoClipDataset(dataset, split, "train", spec, params, mode="train", video_ids=train_ids, **device)
    val_set = VideoClipDataset(dataset, split, "train", spec, params, mode="test", views=(1, 1), video_ids=val_ids,
                               **device)
    meta["val_by"] = "whole UCF101 groups" if by_group else "stratified by class"
    log.info("validation: %d videos carved from the train split (%s), %d left to train on",
             len(val_ids), meta["val_by"], len(train_ids))
    return train_set, val_set, meta
