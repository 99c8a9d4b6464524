"""The training loop: epochs over a built model and datasets into a run directory, resumable.

Run directory (rank 0 writes, every file atomically):
  checkpoint.pt  after every epoch: model, optimizer, scheduler, scaler, RNG states (every rank),
                 history, epoch. A re-run with the same settings resumes from it; on CPU the
                 resumed run ends bit-identical to an uninterrupted one. When the run completes,
                 its "model" is the *selected* epoch's weights (what evaluate and prune load).
                 With validation it also holds the best epoch's weights so far ("best_model").
  history.csv    one row per epoch.  metrics.json  the final summary.

A checkpoint is resumed only when its fingerprint matches (settings that change the numbers, data
sizes, starting weights); otherwise the run starts over with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from actionrepro.data import gpu_clips
from actionrepro.engine import checkpoint, determinism, distributed, inflight, optim
from actionrepro.engine.monitor import Monitor, open_writer
from actionrepro.engine.settings import RESUME_IRRELEVANT, TrainSettings  # noqa: F401  (re-exported)
from actionrepro.engine.step import INPUT_KEYS, autocast_for, backward_pass, model_inputs, optimizer_step
from actionrepro.errors import ConfigError, DataError
from actionrepro.io import atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

Init = Mapping[str, torch.Tensor] | Callable[[nn.Module], nn.Module | None]
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "clips_per_s", "epoch_seconds"]


def freeze_partial_bn(model: nn.Module) -> list[nn.Module]:
    """TSN partial BN: every BatchNorm but the first stops learning and stops updating its statistics.

    Returns the frozen layers; `set_train_mode` keeps them in eval mode for the whole run.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in norms[1:]:
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
    return norms[1:]


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()


def apply_init(model: nn.Module, init: Init | None) -> nn.Module:
    """Start from a state dict (strict) or let a callable modify / replace the model."""
    if init is None:
        return model
    if callable(init) and not isinstance(init, Mapping):
        result = init(model)
        return model if result is None else result
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in init.items()}
    model.load_state_dict(state)
    return model


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def _to_channels_last(model: nn.Module) -> None:
    """channels_last for 4D weights, channels_last_3d for 5D (Module.to only knows one format)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)


# ---------------------------------------------------------------- what a run trains with
@dataclass
class Parts:
    """The model and everything that steps it, built once per fit() call."""

    core: nn.Module      # the plain model: what is saved, validated and counted
    wrapped: nn.Module   # what the step calls: DDP and/or torch.compile around core
    ddp: nn.Module       # the DDP wrapper (core itself in one process): its no_sync skips all-reduces
    frozen: list[nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    amp_dtype: torch.dtype | None
    amp_name: str


@dataclass
class RunState:
    """What a checkpoint carries from one epoch to the next."""

    epoch: int = 0  # epochs done
    history: list[dict] | None = None
    best: dict | None = None
    best_weights: dict | None = None
    wall: float = 0.0


@dataclass(frozen=True)
class Batches:
    """How the training set is cut on this rank."""

    per_rank: int   # batch size per process
    per_epoch: int  # batches per epoch per process
    accumulate: int


def _resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    if amp == "off":
        return None, "off"
    if device.type != "cuda":
        log.info("train.amp=%s ignored on %s: mixed precision is used on GPUs only; training in float32", amp, device)
        return None, "off"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("train.amp=bf16 but %s has no bfloat16 support; using fp16 with a GradScaler", device)
        amp = "fp16"
    return (torch.bfloat16 if amp == "bf16" else torch.float16), amp


def _prepare_model(core: nn.Module, settings: TrainSettings, device: torch.device) -> list[nn.Module]:
    """Move to the device, set the memory layout, freeze partial BN; returns the frozen layers."""
    core.to(device)
    if settings.channels_last:
        if device.type == "cuda":
            _to_channels_last(core)
        else:
            log.info("train.channels_last ignored on %s (a GPU memory layout)", device)
    frozen = freeze_partial_bn(core) if settings.partial_bn else []
    if frozen:
        log.info("partial BN: %d BatchNorm layers frozen, the first one trains", len(frozen))
    return frozen


def build_parts(core: nn.Module, settings: TrainSettings, ctx: distributed.Context, steps_per_epoch: int) -> Parts:
    """Model on its device, optimizer, per-step schedule, scaler, loss, DDP / compile wrappers."""
    device = ctx.device
    amp_dtype, amp_name = _resolve_amp(settings.amp, device)
    frozen = _prepare_model(core, settings, device)
    optimizer = optim.optimizer_for(core, settings)
    scheduler = optim.scheduler_for(optimizer, settings, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_name == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    wrapped: nn.Module = core
    if ctx.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(core, device_ids=device_ids)
    ddp = wrapped
    if settings.compile:
        wrapped = torch.compile(wrapped)
    return Parts(core, wrapped, ddp, frozen, optimizer, scheduler, scaler, loss_fn, amp_dtype, amp_name)


# ---------------------------------------------------------------- data
def _epoch_loader(train_set: Dataset, sampler: DistributedSampler, batches: Batches, *, settings: TrainSettings,
                  plan: inflight.LoaderPlan, ctx: distributed.Context, epoch: int) -> DataLoader:
    """A fresh loader per epoch: its generator (worker base seeds) derives from (seed, epoch, rank),
    so nothing about data order or augmentation depends on the global RNG or on restarts."""
    sampler.set_epoch(epoch)
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    return DataLoader(
        train_set, batch_size=batches.per_rank, sampler=sampler, **plan.kwargs(),
        pin_memory=ctx.device.type == "cuda", drop_last=False, collate_fn=gpu_clips.collate_for(train_set),
        worker_init_fn=determinism.worker_init_fn if plan.num_workers else None,
        generator=torch.Generator().manual_seed(determinism.derive_seed(settings.seed, epoch, ctx.rank)),
    )


def validation_loader(val_set: Dataset | None, batch_size: int, *, num_workers: int, memory_gb: float,
                      ctx: distributed.Context) -> DataLoader | None:
    """This rank's shard of the validation subset (every rank-th video, no padding); None without one."""
    if val_set is None or not len(val_set):
        return None
    shard = Subset(val_set, list(range(ctx.rank, len(val_set), ctx.world_size)))
    plan = inflight.plan_for(shard, batch_size, num_workers, memory_gb, "validation loader")
    return DataLoader(shard, batch_size=batch_size, shuffle=False, **plan.kwargs(),
                      pin_memory=ctx.device.type == "cuda", collate_fn=gpu_clips.collate_for(val_set),
                      worker_init_fn=determinism.worker_init_fn if plan.num_workers else None)


def _fold_views(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Eval datasets may add a views axis (B, V, ...): fold it into the batch."""
    if x.dim() == 6:
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), x.shape[1]
    return x, 1


# ---------------------------------------------------------------- one epoch
def train_one_epoch(parts: Parts, loader: DataLoader, batches: Batches, *, ctx: distributed.Context,
                    clip_grad_norm: float | None, monitor: Monitor) -> dict:
    """One pass over this rank's shard; returns the epoch's train loss/accuracy (over every rank),
    lr and clips/s. An optimizer step every `accumulate` batches (the last group may be shorter)."""
    device = ctx.device
    set_train_mode(parts.wrapped, parts.frozen)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    started = end = time.perf_counter()
    for i, batch in enumerate(loader):
        batch = gpu_clips.on_device(batch, device)
        data_s = time.perf_counter() - end
        group_start = i - i % batches.accumulate
        group_len = min(batches.accumulate, batches.per_epoch - group_start)
        last_in_group = i + 1 == group_start + group_len
        labels = batch["label"].to(device, non_blocking=True)
        sync = parts.ddp.no_sync() if ctx.distributed and not last_in_group else contextlib.nullcontext()
        with sync:
            loss, hits = backward_pass(parts.wrapped, parts.core, model_inputs(batch, device), labels, parts.loss_fn,
                                       scale=1.0 / group_len, scaler=parts.scaler, amp_dtype=parts.amp_dtype)
        if last_in_group:
            optimizer_step(parts.optimizer, parts.scheduler, parts.scaler, clip_grad_norm)
        n = labels.shape[0]
        loss_sum += loss.double() * n
        correct += hits
        seen += n
        monitor.iteration(i, loss_sum=loss_sum, correct=correct, seen=seen, lr=parts.optimizer.param_groups[0]["lr"],
                          data_s=data_s, step_s=time.perf_counter() - end - data_s)
        end = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - started
    total_loss, total_correct, total_seen = distributed.all_reduce_sum(
        ctx, [loss_sum.item(), float(correct.item()), float(seen)])
    return {"train_loss": total_loss / total_seen, "train_acc": total_correct / total_seen,
            "lr": parts.optimizer.param_groups[0]["lr"], "clips_per_s": total_seen / train_seconds}


@torch.no_grad()
def validate(core: nn.Module, loader, ctx: distributed.Context, amp_dtype: torch.dtype | None) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy over the validation subset, sharded
    without padding over ranks. Views of one video, if any, are averaged as probabilities."""
    core.eval()
    loss_sum = correct = count = 0.0
    for batch in loader:
        batch = gpu_clips.on_device(batch, ctx.device)
        inputs, views = {}, 1
        for key in INPUT_KEYS:
            if key in batch and batch[key] is not None:
                inputs[key], views = _fold_views(batch[key].to(ctx.device, non_blocking=True))
        labels = batch["label"].to(ctx.device, non_blocking=True)
        with autocast_for(ctx.device, amp_dtype):
            logits = core(**inputs)
        logits = logits.float()
        if views > 1:
            probs = logits.softmax(-1).reshape(labels.shape[0], views, -1).mean(1)
            loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
        else:
            probs, loss = logits, nn.functional.cross_entropy(logits, labels, reduction="sum")
        loss_sum += float(loss)
        correct += float((probs.argmax(-1) == labels).sum())
        count += labels.shape[0]
    loss_sum, correct, count = distributed.all_reduce_sum(ctx, [loss_sum, correct, count])
    return loss_sum / max(count, 1), correct / max(count, 1)


def run_epoch(parts: Parts, loader: DataLoader, val_loader: DataLoader | None, batches: Batches, *, epoch: int,
              ctx: distributed.Context, clip_grad_norm: float | None, monitor: Monitor) -> dict:
    """Train one epoch, then validate (if a subset was carved): the epoch's history row."""
    started = time.perf_counter()
    monitor.start_epoch(epoch)
    stats = train_one_epoch(parts, loader, batches, ctx=ctx, clip_grad_norm=clip_grad_norm, monitor=monitor)
    row = {"epoch": epoch + 1, **stats}
    if val_loader is not None:
        row["val_loss"], row["val_acc"] = validate(parts.core, val_loader, ctx, parts.amp_dtype)
    row["epoch_seconds"] = time.perf_counter() - started
    monitor.end_epoch(row)
    return row


# ---------------------------------------------------------------- checkpoints
def weights_digest(model: nn.Module) -> str:
    """sha256 over names, shapes and bytes of the state dict: the exact starting point of a run."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_resumable(ckpt_path: Path, fingerprint: str) -> dict | None:
    """The checkpoint to resume from, or None (no checkpoint, or one written with other settings)."""
    if not ckpt_path.is_file():
        return None
    state = checkpoint.load(ckpt_path)
    if state.get("fingerprint") != fingerprint:
        log.warning("%s was written with other settings (params, epochs, data or starting weights); "
                    "starting this run over", ckpt_path)
        return None
    return state


def resume(state: dict, parts: Parts, *, settings: TrainSettings, ctx: distributed.Context) -> RunState:
    """Load model, optimizer, schedule, scaler and this rank's RNG states from a checkpoint."""
    parts.core.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    run = RunState(int(state["epoch"]), list(state["history"]), dict(state["best"]), state.get("best_model"),
                   float(state["wall_seconds"]))
    rngs = state["rng"]
    if len(rngs) == ctx.world_size:
        determinism.set_rng_state(rngs[ctx.rank], ctx.device)
    else:
        log.warning("checkpoint has RNG states of %d processes, this run has %d: reseeding (the resumed run "
                    "is valid but not bit-identical to an uninterrupted one)", len(rngs), ctx.world_size)
        determinism.seed_everything(determinism.derive_seed(settings.seed, run.epoch, ctx.rank))
    return run


def fresh_start(settings: TrainSettings, ctx: distributed.Context) -> RunState:
    determinism.seed_everything(determinism.derive_seed(settings.seed, ctx.rank))
    return RunState(0, [], {"epoch": 0, "val_acc": -1.0}, None, 0.0)


def record_epoch(run: RunState, row: dict, parts: Parts, *, ctx: distributed.Context, with_val: bool) -> None:
    """Append the epoch's row; keep the best validation epoch's weights (ties: the earlier epoch)."""
    run.epoch = row["epoch"]
    run.wall += row["epoch_seconds"]
    run.history.append(row)
    if with_val and row["val_acc"] > run.best["val_acc"]:
        run.best = {"epoch": row["epoch"], "val_acc": row["val_acc"]}
        if ctx.is_main:
            run.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in parts.core.state_dict().items()}


def save_checkpoint(out_dir: Path, run: RunState, parts: Parts, *, ctx: distributed.Context, fingerprint: str,
                    with_val: bool) -> None:
    """Every rank's RNG states are gathered; rank 0 writes checkpoint.pt and history.csv."""
    rngs = distributed.all_gather(ctx, determinism.rng_state(ctx.device))
    if ctx.is_main:
        checkpoint.save(out_dir / "checkpoint.pt", {
            "model": parts.core.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(), "rng": rngs,
            "epoch": run.epoch, "history": run.history, "best": run.best, "best_model": run.best_weights,
            "wall_seconds": run.wall, "fingerprint": fingerprint, "complete": False, "model_epoch": run.epoch,
        })
        atomic_write_csv(out_dir / "history.csv", _history_frame(run.history, with_val))
    distributed.barrier(ctx)


def _history_frame(history: list[dict], with_val: bool) -> pd.DataFrame:
    columns = [c for c in HISTORY_COLUMNS if with_val or not c.startswith("val_")]
    return pd.DataFrame(history, columns=columns)


# ---------------------------------------------------------------- the run
def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, params: dict, out_dir: str | Path, *,
        epochs: int | None = None, lr: float | None = None, init: Init | None = None, meta: dict | None = None,
        ctx: distributed.Context | None = None, on_epoch_end: Callable[[int], None] | None = None,
        progress: bool = True, tb_dir: str | Path | None = None) -> dict:
    """Train `model` on `train_set` (selecting on `val_set` if given) into `out_dir`; resumable.

    params: the validated params (TrainSettings.from_params reads params["seed"] and params["train"]);
    epochs / lr override params["train"]. The other arguments: see train_model.
    """
    settings = TrainSettings.from_params(params, epochs=epochs, lr=lr)
    return train_model(model, train_set, val_set, settings, out_dir, init=init, meta=meta, ctx=ctx,
                       on_epoch_end=on_epoch_end, progress=progress, tb_dir=tb_dir)


def train_model(model: nn.Module, train_set: Dataset, val_set: Dataset | None, settings: TrainSettings,
                out_dir: str | Path, *, init: Init | None = None, meta: dict | None = None,
                ctx: distributed.Context | None = None, on_epoch_end: Callable[[int], None] | None = None,
                progress: bool = True, tb_dir: str | Path | None = None) -> dict:
    """fit() with resolved settings.

    meta: identity and bookkeeping copied into metrics.json (dataset, split, model, variant,
    excluded_videos, selection_note). on_epoch_end(epoch) runs after each epoch's checkpoint is on
    disk. progress: live progress (a bar on a terminal, a line every train.log_every iterations in
    a log file). tb_dir: TensorBoard event files go there (rank 0). Returns the metrics dict (also
    written to metrics.json on rank 0).
    """
    own_ctx = ctx is None
    ctx = ctx or distributed.setup(settings.device)
    try:
        with determinism.deterministic(ctx.device):
            return _fit(model, train_set, val_set, settings, Path(out_dir), init=init, meta=dict(meta or {}),
                        ctx=ctx, on_epoch_end=on_epoch_end, progress=progress,
                        tb_dir=None if tb_dir is None else Path(tb_dir))
    finally:
        if own_ctx:
            distributed.teardown(ctx)


def _check_inputs(settings: TrainSettings, train_set: Dataset, meta: dict, ctx: distributed.Context) -> None:
    if settings.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size={settings.batch_size} is the global batch and must divide evenly "
                          f"over {ctx.world_size} processes")
    if len(train_set) == 0:
        raise DataError(f"no training clips for {meta.get('dataset', 'this dataset')} split {meta.get('split', '?')}; "
                        "check the manifest and the frame store (did decode quarantine every video?)")


def _fit(model, train_set, val_set, settings: TrainSettings, out_dir: Path, *, init, meta: dict,
         ctx: distributed.Context, on_epoch_end, progress: bool, tb_dir: Path | None) -> dict:
    _check_inputs(settings, train_set, meta, ctx)
    core = apply_init(model, init)
    sizes = (len(train_set), len(val_set) if val_set is not None else 0)
    fingerprint = settings.fingerprint(meta, sizes, weights_digest(core))
    state = load_resumable(out_dir / "checkpoint.pt", fingerprint)
    if state is not None and state.get("complete") and (out_dir / "metrics.json").is_file():
        log.info("%s: training already complete (%d epochs); nothing to do", out_dir, state["epoch"])
        return json.loads((out_dir / "metrics.json").read_text())

    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=settings.seed)
    per_rank = settings.batch_size // ctx.world_size
    batches = Batches(per_rank, math.ceil(len(sampler) / per_rank), settings.accumulate)
    parts = build_parts(core, settings, ctx, steps_per_epoch=math.ceil(batches.per_epoch / batches.accumulate))
    train_plan = inflight.plan_for(train_set, per_rank, settings.num_workers, settings.loader_memory_gb,
                                   "training loader")  # sized once: an item's bytes do not change by epoch
    val_loader = validation_loader(val_set, per_rank, num_workers=settings.num_workers,
                                   memory_gb=settings.loader_memory_gb, ctx=ctx)
    monitor = _open_monitor(settings, batches, ctx=ctx, progress=progress,
                            tb_dir=tb_dir, start_epoch=0 if state is None else int(state["epoch"]))
    try:
        run = resume(state, parts, settings=settings, ctx=ctx) if state is not None else fresh_start(settings, ctx)
        if state is not None:
            log.info("resuming %s from epoch %d/%d", out_dir, run.epoch, settings.epochs)
        for epoch in range(run.epoch, settings.epochs):
            loader = _epoch_loader(train_set, sampler, batches, settings=settings, plan=train_plan, ctx=ctx,
                                   epoch=epoch)
            row = run_epoch(parts, loader, val_loader, batches, epoch=epoch, ctx=ctx,
                            clip_grad_norm=settings.clip_grad_norm, monitor=monitor)
            record_epoch(run, row, parts, ctx=ctx, with_val=val_loader is not None)
            save_checkpoint(out_dir, run, parts, ctx=ctx, fingerprint=fingerprint, with_val=val_loader is not None)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    finally:
        monitor.close()
    metrics = finalize(parts, run, out_dir, settings=settings, ctx=ctx, meta=meta, sizes=sizes,
                       with_val=val_loader is not None, fingerprint=fingerprint)
    distributed.barrier(ctx)
    return metrics


def _open_monitor(settings: TrainSettings, batches: Batches, *, ctx: distributed.Context, progress: bool,
                  tb_dir: Path | None, start_epoch: int) -> Monitor:
    """Rank 0 shows progress; a resumed run's writer purges what follows its checkpoint."""
    writer = None
    if tb_dir is not None and ctx.is_main and start_epoch < settings.epochs:
        writer = open_writer(tb_dir, resumed_at=start_epoch * batches.per_epoch + 1 if start_epoch else None)
    return Monitor(epochs=settings.epochs, batches=batches.per_epoch, log_every=settings.log_every,
                   world_size=ctx.world_size, device=ctx.device, active=ctx.is_main, progress=progress,
                   writer=writer)


# ---------------------------------------------------------------- finalize
def selection_rule(with_val: bool, *, val_by: str, val_fraction: float) -> str:
    if with_val:
        return (f"best validation accuracy (ties: earlier epoch) on a validation subset carved from the TRAIN "
                f"split ({val_by}, val_fraction={val_fraction}); the test split is never used for selection")
    return "last epoch (val_fraction=0: no validation subset; the test split is never used for selection)"


def final_metrics(run: RunState, selected: int, core: nn.Module, *, settings: TrainSettings, amp_name: str,
                  ctx: distributed.Context, meta: dict, sizes: tuple[int, int], with_val: bool) -> dict:
    """metrics.json: identity, the selected epoch's numbers, the run's settings and costs."""
    row = next((r for r in run.history if r["epoch"] == selected), {})
    last = run.history[-1] if run.history else {}
    total, trainable = count_params(core)
    return {
        **{k: meta[k] for k in ("dataset", "split", "model", "variant") if k in meta},
        "epochs": settings.epochs,
        "selection": "best_val_acc" if with_val else "last_epoch",
        "selection_rule": selection_rule(with_val, val_by=meta.get("val_by", "given"),
                                         val_fraction=settings.val_fraction),
        "selected_epoch": selected,
        "train_loss": row.get("train_loss"), "train_acc": row.get("train_acc"),
        "val_loss": row.get("val_loss"), "val_acc": row.get("val_acc"),
        "last_epoch_train_acc": last.get("train_acc"), "last_epoch_val_acc": last.get("val_acc"),
        "num_train_videos": sizes[0], "num_val_videos": sizes[1],
        "excluded_videos": int(meta.get("excluded_videos", 0)),
        "seed": settings.seed, "device": str(ctx.device), "world_size": ctx.world_size, "amp": amp_name,
        "optimizer": settings.optimizer, "lr": settings.lr, "batch_size": settings.batch_size,
        "wall_time_s": run.wall,
        "mean_clips_per_s": (sum(r["clips_per_s"] for r in run.history) / len(run.history)
                             if run.history else None),
        "params": total, "trainable_params": trainable,
    }


def finalize(parts: Parts, run: RunState, out_dir: Path, *, settings: TrainSettings, ctx: distributed.Context,
             meta: dict, sizes: tuple[int, int], with_val: bool, fingerprint: str) -> dict:
    """Put the selected epoch's weights into checkpoint.pt and write metrics.json (rank 0).

    epochs=0 (e.g. prune.finetune_epochs: 0) trains nothing: the given weights are the result."""
    selected = run.best["epoch"] if with_val and run.best["epoch"] > 0 else settings.epochs
    metrics = final_metrics(run, selected, parts.core, settings=settings, amp_name=parts.amp_name, ctx=ctx,
                            meta=meta, sizes=sizes, with_val=with_val)
    if ctx.is_main:
        if settings.epochs == 0:
            state = {"model": parts.core.state_dict(), "epoch": 0, "history": [], "best": run.best,
                     "best_model": None, "fingerprint": fingerprint, "model_epoch": 0, "wall_seconds": 0.0, "rng": []}
        else:
            state = checkpoint.load(out_dir / "checkpoint.pt")
        if state.get("model_epoch") != selected:
            state["model"], state["model_epoch"] = state["best_model"], selected
        state["best_model"] = None  # the selected weights are "model" now
        state["complete"] = True
        checkpoint.save(out_dir / "checkpoint.pt", state)
        atomic_write_csv(out_dir / "history.csv", _history_frame(run.history, with_val))
        atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
