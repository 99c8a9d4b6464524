"""Optimizers and learning-rate schedules as the papers configure them.

Weight decay is not applied to normalisation layers and biases when asked (`no_decay_norm_bias`):
decaying BN scales toward zero fights the normalisation and costs accuracy. Schedules are stepped
per optimizer step (not per epoch) so the linear warmup is smooth even over one epoch.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import torch
from torch import nn

NORM_TYPES = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool = True) -> list[dict]:
    """Split trainable parameters into a decayed group and an undecayed one (norm layers, biases).

    Frozen parameters (requires_grad=False, e.g. partial BN) are left out of the optimizer.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            exempt = no_decay_norm_bias and (isinstance(module, NORM_TYPES) or name == "bias")
            (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, train: dict, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over param_groups(model), from params['train']."""
    lr = float(train["lr"] if lr is None else lr)
    groups = param_groups(model, float(train["weight_decay"]), bool(train.get("no_decay_norm_bias", True)))
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if train["optimizer"] == "sgd":
        momentum = float(train.get("momentum", 0.9))
        return torch.optim.SGD(groups, lr=lr, momentum=momentum,
                               nesterov=bool(train.get("nesterov", False)) and momentum > 0)
    if train["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {train['optimizer']!r}; expected 'sgd' or 'adamw'")


def lr_factor(schedule: str, total_steps: int, warmup_steps: int, steps_per_epoch: int,
              milestones: list[int] | tuple[int, ...] = (), gamma: float = 0.1) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step `s` (0-based): linear warmup, then the schedule.

    Warmup ramps (s+1)/warmup_steps so the very first step already moves. Cosine decays from 1 at
    the end of warmup to 0 after the last step; step multiplies by gamma at each milestone epoch.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps))
    milestones = sorted(int(m) for m in milestones)
    if schedule not in ("cosine", "step"):
        raise ValueError(f"unknown schedule {schedule!r}; expected 'cosine' or 'step'")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            span = total_steps - warmup_steps
            progress = min(1.0, (step - warmup_steps) / span) if span > 0 else 1.0
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        epoch = step // max(1, steps_per_epoch)
        return gamma ** bisect.bisect_right(milestones, epoch)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, train: dict, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR for params['train'] (schedule, warmup_epochs, step_milestones, step_gamma)."""
    factor = lr_factor(
        train["schedule"],
        total_steps=epochs * steps_per_epoch,
        warmup_steps=round(float(train.get("warmup_epochs", 0)) * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        milestones=train.get("step_milestones", ()),
        gamma=float(train.get("step_gamma", 0.1)),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
