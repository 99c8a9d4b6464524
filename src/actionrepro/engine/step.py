"""One optimisation step and its parts: the primitives the training loop, the pruning criteria and the
benchmarks share."""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch
from torch import nn

INPUT_KEYS = ("rgb", "flow")


def model_inputs(batch: Mapping, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's keyword inputs (rgb and/or flow) from a collated batch, on `device`."""
    return {k: batch[k].to(device, non_blocking=True) for k in INPUT_KEYS if k in batch and batch[k] is not None}


def autocast_for(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def backward_pass(model: nn.Module, core: nn.Module, inputs: dict, labels: torch.Tensor, loss_fn: nn.Module,
                  scale: float = 1.0, scaler: torch.amp.GradScaler | None = None,
                  amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss (+ the model's auxiliary loss), backward of loss*scale. Returns the detached
    loss and the number of correct predictions, both as tensors (no host sync)."""
    with autocast_for(labels.device, amp_dtype):
        logits = model(**inputs)
    loss = loss_fn(logits.float(), labels)
    aux = core.auxiliary_loss() if hasattr(core, "auxiliary_loss") else None
    if aux is not None:
        loss = loss + aux.float()
    scaled = loss * scale if scale != 1.0 else loss
    if scaler is not None and scaler.is_enabled():
        scaled = scaler.scale(scaled)
    scaled.backward()
    return loss.detach(), (logits.detach().argmax(dim=1) == labels).sum()


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler=None, scaler: torch.amp.GradScaler | None = None,
                   clip_grad_norm: float | None = None) -> None:
    """Clip (after unscaling), step, advance the per-step schedule, clear the gradients."""
    scaling = scaler is not None and scaler.is_enabled()
    if clip_grad_norm:
        if scaling:
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    if scaling:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


def train_step(model: nn.Module, batch: Mapping, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, *,
               device: torch.device, core: nn.Module | None = None, scheduler=None,
               scaler: torch.amp.GradScaler | None = None, clip_grad_norm: float | None = None,
               amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One whole optimisation step on one batch (what fit() does when accumulate=1)."""
    labels = batch["label"].to(device, non_blocking=True)
    loss, correct = backward_pass(model, core if core is not None else model, model_inputs(batch, device), labels,
                                  loss_fn, scaler=scaler, amp_dtype=amp_dtype)
    optimizer_step(optimizer, scheduler, scaler, clip_grad_norm)
    return loss, correct
