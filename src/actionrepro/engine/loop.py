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
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from actionrepro.engine import checkpoint, determinism, distributed, optim
from actionrepro.engine.step import INPUT_KEYS, autocast_for, backward_pass, model_inputs, optimizer_step
from actionrepro.errors import ConfigError, DataError
from actionrepro.io import atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

Init = Mapping[str, torch.Tensor] | Callable[[nn.Module], nn.Module | None]
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "clips_per_s", "epoch_seconds"]
# Settings that do not change the numbers a run produces: a resume may differ in them.
RESUME_IRRELEVANT = ("num_workers", "device", "compile")


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


# ---------------------------------------------------------------- epochs
def _fold_views(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Eval datasets may add a views axis (B, V, ...): fold it into the batch."""
    if x.dim() == 6:
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), x.shape[1]
    return x, 1


@torch.no_grad()
def validate(core: nn.Module, loader, ctx: distributed.Context, amp_dtype: torch.dtype | None) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy over the validation subset, sharded
    without padding over ranks. Views of one video, if any, are averaged as probabilities."""
    core.eval()
    loss_sum = correct = count = 0.0
    for batch in loader:
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


def _epoch_loader(train_set: Dataset, sampler: DistributedSampler, batch_size: int, num_workers: int,
                  device: torch.device, seed: int, epoch: int, rank: int) -> DataLoader:
    """A fresh loader per epoch: its generator (worker base seeds) derives from (seed, epoch, rank),
    so nothing about data order or augmentation depends on the global RNG or on restarts."""
    sampler.set_epoch(epoch)
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    return DataLoader(
        train_set, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=device.type == "cuda", drop_last=False,
        worker_init_fn=determinism.worker_init_fn if num_workers else None,
        generator=torch.Generator().manual_seed(determinism.derive_seed(seed, epoch, rank)),
    )


def weights_digest(model: nn.Module) -> str:
    """sha256 over names, shapes and bytes of the state dict: the exact starting point of a run."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _fingerprint(train_cfg: dict, seed: int, epochs: int, lr: float, meta: dict, sizes: tuple[int, int],
                 start_weights: str) -> str:
    """What the run's numbers depend on (settings, data sizes, starting weights); a checkpoint with
    another fingerprint is not resumed."""
    relevant = {k: v for k, v in train_cfg.items() if k not in RESUME_IRRELEVANT}
    relevant.update(seed=seed, epochs=epochs, lr=lr, sizes=list(sizes), start_weights=start_weights,
                    identity={k: meta.get(k) for k in ("dataset", "split", "model", "variant")})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resolve_amp(train_cfg: dict, device: torch.device) -> tuple[torch.dtype | None, str]:
    amp = train_cfg.get("amp", "off")
    if amp == "off":
        return None, "off"
    if device.type != "cuda":
        log.info("train.amp=%s ignored on %s: mixed precision is used on GPUs only; training in float32", amp, device)
        return None, "off"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("train.amp=bf16 but %s has no bfloat16 support; using fp16 with a GradScaler", device)
        amp = "fp16"
    return (torch.bfloat16 if amp == "bf16" else torch.float16), amp


def _history_frame(history: list[dict], with_val: bool) -> pd.DataFrame:
    columns = [c for c in HISTORY_COLUMNS if with_val or not c.startswith("val_")]
    return pd.DataFrame(history, columns=columns)


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, params: dict, out_dir: str | Path, *,
        epochs: int | None = None, lr: float | None = None, init: Init | None = None, meta: dict | None = None,
        ctx: distributed.Context | None = None, on_epoch_end: Callable[[int], None] | None = None,
        progress: bool = True) -> dict:
    """Train `model` on `train_set` (selecting on `val_set` if given) into `out_dir`; resumable.

    params: the validated params (uses params["seed"] and params["train"]); epochs / lr override
    params["train"]. meta: identity and bookkeeping copied into metrics.json (dataset, split, model,
    variant, excluded_videos, selection_note). on_epoch_end(epoch) runs after each epoch's
    checkpoint is on disk. Returns the metrics dict (also written to metrics.json on rank 0).
    """
    own_ctx = ctx is None
    ctx = ctx or distributed.setup(params["train"].get("device", "auto"))
    try:
        with determinism.deterministic(ctx.device):
            return _fit(model, train_set, val_set, params, Path(out_dir), epochs, lr, init, dict(meta or {}),
                        ctx, on_epoch_end, progress)
    finally:
        if own_ctx:
            distributed.teardown(ctx)


def _fit(model, train_set, val_set, params, out_dir, epochs, lr, init, meta, ctx, on_epoch_end, progress) -> dict:
    cfg = params["train"]
    seed = int(params["seed"])
    epochs = int(epochs if epochs is not None else cfg["epochs"])
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    lr = float(lr if lr is not None else cfg["lr"])
    device = ctx.device
    ckpt_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "metrics.json"
    if int(cfg["batch_size"]) % ctx.world_size:
        raise ConfigError(f"train.batch_size={cfg['batch_size']} is the global batch and must divide evenly "
                          f"over {ctx.world_size} processes")
    if len(train_set) == 0:
        raise DataError(f"no training clips for {meta.get('dataset', 'this dataset')} split {meta.get('split', '?')}; "
                        "check the manifest and the frame store (did decode quarantine every video?)")
    per_rank_batch = int(cfg["batch_size"]) // ctx.world_size
    accumulate = int(cfg.get("accumulate", 1))
    core = apply_init(model, init)
    fingerprint = _fingerprint(cfg, seed, epochs, lr, meta, (len(train_set), len(val_set) if val_set else 0),
                               weights_digest(core))

    state = None
    if ckpt_path.is_file():
        state = checkpoint.load(ckpt_path)
        if state.get("fingerprint") != fingerprint:
            log.warning("%s was written with other settings (params, epochs, data or starting weights); "
                        "starting this run over", ckpt_path)
            state = None
        elif state.get("complete") and metrics_path.is_file():
            log.info("%s: training already complete (%d epochs); nothing to do", out_dir, state["epoch"])
            return json.loads(metrics_path.read_text())

    core.to(device)
    amp_dtype, amp_name = _resolve_amp(cfg, device)
    if cfg.get("channels_last", False):
        if device.type == "cuda":
            _to_channels_last(core)
        else:
            log.info("train.channels_last ignored on %s (a GPU memory layout)", device)
    frozen = freeze_partial_bn(core) if cfg.get("partial_bn", False) else []
    if frozen:
        log.info("partial BN: %d BatchNorm layers frozen, the first one trains", len(frozen))

    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    batches_per_epoch = math.ceil(len(sampler) / per_rank_batch)
    steps_per_epoch = math.ceil(batches_per_epoch / accumulate)
    optimizer = optim.build_optimizer(core, cfg, lr=lr)
    scheduler = optim.build_scheduler(optimizer, cfg, epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_name == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(cfg.get("label_smoothing", 0.0)))

    wrapped: nn.Module = core
    if ctx.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(core, device_ids=device_ids)
    ddp = wrapped
    if cfg.get("compile", False):
        wrapped = torch.compile(wrapped)

    val_loader = None
    if val_set is not None and len(val_set):
        shard = Subset(val_set, list(range(ctx.rank, len(val_set), ctx.world_size)))
        val_loader = DataLoader(shard, batch_size=per_rank_batch, shuffle=False,
                                num_workers=int(cfg.get("num_workers", 0)), pin_memory=device.type == "cuda",
                                worker_init_fn=determinism.worker_init_fn if cfg.get("num_workers", 0) else None)

    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        best = dict(state["best"])
        best_weights = state.get("best_model")
        wall = float(state["wall_seconds"])
        rngs = state["rng"]
        if len(rngs) == ctx.world_size:
            determinism.set_rng_state(rngs[ctx.rank], device)
        else:
            log.warning("checkpoint has RNG states of %d processes, this run has %d: reseeding (the resumed run "
                        "is valid but not bit-identical to an uninterrupted one)", len(rngs), ctx.world_size)
            determinism.seed_everything(determinism.derive_seed(seed, start_epoch, ctx.rank))
        log.info("resuming %s from epoch %d/%d", out_dir, start_epoch, epochs)
    else:
        start_epoch, history, wall = 0, [], 0.0
        best, best_weights = {"epoch": 0, "val_acc": -1.0}, None
        determinism.seed_everything(determinism.derive_seed(seed, ctx.rank))

    num_workers = int(cfg.get("num_workers", 0))
    clip = cfg.get("clip_grad_norm")
    for epoch in range(start_epoch, epochs):
        loader = _epoch_loader(train_set, sampler, per_rank_batch, num_workers, device, seed, epoch, ctx.rank)
        set_train_mode(wrapped, frozen)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        started = time.perf_counter()
        bar = tqdm(loader, total=batches_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not (progress and ctx.is_main), dynamic_ncols=True, mininterval=1.0)
        for i, batch in enumerate(bar):
            group_start = i - i % accumulate
            group_len = min(accumulate, batches_per_epoch - group_start)
            last_in_group = i + 1 == group_start + group_len
            labels = batch["label"].to(device, non_blocking=True)
            sync = ddp.no_sync() if ctx.distributed and not last_in_group else contextlib.nullcontext()
            with sync:
                loss, hits = backward_pass(wrapped, core, model_inputs(batch, device), labels, loss_fn,
                                           scale=1.0 / group_len, scaler=scaler, amp_dtype=amp_dtype)
            if last_in_group:
                optimizer_step(optimizer, scheduler, scaler, clip)
            n = labels.shape[0]
            loss_sum += loss.double() * n
            correct += hits
            seen += n
            if ctx.is_main and progress and (i % 10 == 0 or i + 1 == batches_per_epoch):
                elapsed = time.perf_counter() - started
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", clips_s=f"{seen * ctx.world_size / elapsed:.1f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - started
        total_loss, total_correct, total_seen = distributed.all_reduce_sum(
            ctx, [loss_sum.item(), float(correct.item()), float(seen)])
        row = {
            "epoch": epoch + 1,
            "train_loss": total_loss / total_seen,
            "train_acc": total_correct / total_seen,
            "lr": optimizer.param_groups[0]["lr"],
            "clips_per_s": total_seen / train_seconds,
        }
        if val_loader is not None:
            row["val_loss"], row["val_acc"] = validate(core, val_loader, ctx, amp_dtype)
        row["epoch_seconds"] = time.perf_counter() - started
        wall += row["epoch_seconds"]
        history.append(row)
        log.info("epoch %d/%d: loss %.4f acc %.3f%s | lr %.3g | %.1f clips/s | %.1f s", epoch + 1, epochs,
                 row["train_loss"], row["train_acc"],
                 f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}" if "val_acc" in row else "",
                 row["lr"], row["clips_per_s"], row["epoch_seconds"])

        if val_loader is not None and row["val_acc"] > best["val_acc"]:
            best = {"epoch": epoch + 1, "val_acc": row["val_acc"]}
            if ctx.is_main:
                best_weights = {k: v.detach().to("cpu", copy=True) for k, v in core.state_dict().items()}
        rngs = distributed.all_gather(ctx, determinism.rng_state(device))
        if ctx.is_main:
            checkpoint.save(ckpt_path, {
                "model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rngs, "epoch": epoch + 1, "history": history,
                "best": best, "best_model": best_weights, "wall_seconds": wall, "fingerprint": fingerprint,
                "complete": False, "model_epoch": epoch + 1,
            })
            atomic_write_csv(out_dir / "history.csv", _history_frame(history, val_loader is not None))
        distributed.barrier(ctx)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)

    metrics = _finalize(core, out_dir, history, best, val_loader is not None, epochs, lr, seed, ctx, amp_name,
                        cfg, wall, meta, len(train_set), len(val_set) if val_set is not None else 0, fingerprint)
    distributed.barrier(ctx)
    return metrics


def _finalize(core, out_dir, history, best, with_val, epochs, lr, seed, ctx, amp_name, cfg, wall, meta,
              num_train, num_val, fingerprint) -> dict:
    """Put the selected epoch's weights into checkpoint.pt and write metrics.json (rank 0).

    epochs=0 (e.g. prune.finetune_epochs: 0) trains nothing: the given weights are the result."""
    ckpt_path = out_dir / "checkpoint.pt"
    selected = best["epoch"] if with_val and best["epoch"] > 0 else epochs
    row = next((r for r in history if r["epoch"] == selected), {})
    last = history[-1] if history else {}
    total, trainable = count_params(core)
    val_fraction = float(cfg.get("val_fraction", 0.0))
    if with_val:
        rule = (f"best validation accuracy (ties: earlier epoch) on a validation subset carved from the TRAIN "
                f"split ({meta.get('val_by', 'given')}, val_fraction={val_fraction}); the test split is never "
                "used for selection")
    else:
        rule = "last epoch (val_fraction=0: no validation subset; the test split is never used for selection)"
    metrics = {
        **{k: meta[k] for k in ("dataset", "split", "model", "variant") if k in meta},
        "epochs": epochs,
        "selection": "best_val_acc" if with_val else "last_epoch",
        "selection_rule": rule,
        "selected_epoch": selected,
        "train_loss": row.get("train_loss"),
        "train_acc": row.get("train_acc"),
        "val_loss": row.get("val_loss"),
        "val_acc": row.get("val_acc"),
        "last_epoch_train_acc": last.get("train_acc"),
        "last_epoch_val_acc": last.get("val_acc"),
        "num_train_videos": num_train,
        "num_val_videos": num_val,
        "excluded_videos": int(meta.get("excluded_videos", 0)),
        "seed": seed,
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "amp": amp_name,
        "optimizer": cfg["optimizer"],
        "lr": lr,
        "batch_size": int(cfg["batch_size"]),
        "wall_time_s": wall,
        "mean_clips_per_s": sum(r["clips_per_s"] for r in history) / len(history) if history else None,
        "params": total,
        "trainable_params": trainable,
    }
    if ctx.is_main:
        if epochs == 0:
            state = {"model": core.state_dict(), "epoch": 0, "history": [], "best": best, "best_model": None,
                     "fingerprint": fingerprint, "model_epoch": 0, "wall_seconds": 0.0, "rng": []}
        else:
            state = checkpoint.load(ckpt_path)
        if state.get("model_epoch") != selected:
            state["model"], state["model_epoch"] = state["best_model"], selected
        state["best_model"] = None  # the selected weights are "model" now
        state["complete"] = True
        checkpoint.save(ckpt_path, state)
        atomic_write_csv(out_dir / "history.csv", _history_frame(history, with_val))
        atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
