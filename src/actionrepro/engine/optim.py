"""Optimizers and learning-rate schedules as the papers configure them.

Weight decay is not applied to normalisation layers and biases when asked (`no_decay_norm_bias`):
decaying BN scales toward zero fights the normalisation and costs accuracy. Schedules are stepped
per optimizer step (not per epoch) so the linear warmup is smooth even over one epoch.
The classifier may train at a multiple of the base lr (`classifier_lr_mult`), as mmaction2's TSM
recipes do: a fresh head on a pretrained network catches up faster.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Mapping

import torch
from torch import nn

from actionrepro.engine.settings import TrainSettings
from actionrepro.errors import ConfigError

NORM_TYPES = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


# Every model names its classification layer `fc` (models.layers.classifier; models.checkpoints'
# "classifier" part); DDP and torch.compile put these prefixes before the names they wrap.
CLASSIFIER_PREFIX = "fc."
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def is_classifier(name: str) -> bool:
    """Whether a parameter name belongs to the classifier, also through DDP / torch.compile wrappers."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name.startswith(CLASSIFIER_PREFIX)


def named_trainable(model: nn.Module) -> list[tuple[str, nn.Module, nn.Parameter]]:
    """(full name, owning module, parameter) of each trainable parameter once; frozen ones (partial BN) left out."""
    found, seen = [], set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                found.append((f"{prefix}.{name}" if prefix else name, module, param))
    return found


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool = True,
                 classifier_lr_mult: float = 1.0) -> list[dict]:
    """Split trainable parameters into a decayed group and an undecayed one (norm layers, biases);
    with classifier_lr_mult != 1 the classifier's parameters form their own pair of groups carrying
    `lr_mult` (make_optimizer turns it into their lr). Frozen parameters are left out of the optimizer.
    """
    split = classifier_lr_mult != 1.0
    buckets = _buckets(model, no_decay_norm_bias, split_classifier=split)
    if split and not buckets["classifier_decay"] + buckets["classifier_no_decay"]:
        raise ConfigError(f"train.classifier_lr_mult = {classifier_lr_mult} but the model has no trainable "
                          f"classifier parameter (named {CLASSIFIER_PREFIX}*); set it to 1 for this model")
    return [_group(name, params, weight_decay, classifier_lr_mult) for name, params in buckets.items() if params]


def _buckets(model: nn.Module, no_decay_norm_bias: bool, *, split_classifier: bool) -> dict[str, list[nn.Parameter]]:
    """Parameters by group name: decay / no_decay, each with a classifier_ twin when split_classifier."""
    buckets: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "classifier_decay": [],
                                              "classifier_no_decay": []}
    for name, module, param in named_trainable(model):
        exempt = no_decay_norm_bias and (isinstance(module, NORM_TYPES) or name.rsplit(".", 1)[-1] == "bias")
        part = "no_decay" if exempt else "decay"
        buckets[f"classifier_{part}" if split_classifier and is_classifier(name) else part].append(param)
    return buckets


def _group(name: str, params: list[nn.Parameter], weight_decay: float, classifier_lr_mult: float) -> dict:
    group = {"params": params, "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay, "name": name}
    if name.startswith("classifier_"):
        group["lr_mult"] = classifier_lr_mult
    return group


def with_lrs(groups: list[dict], lr: float) -> list[dict]:
    """Each group's lr: the base lr times its lr_mult (the LambdaLR schedule then scales every group alike)."""
    return [{**g, "lr": lr * g.get("lr_mult", 1.0)} for g in groups]


def make_optimizer(model: nn.Module, *, name: str, lr: float, weight_decay: float, momentum: float,
                   nesterov: bool, no_decay_norm_bias: bool, classifier_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over param_groups(model), each group at its own lr."""
    groups = param_groups(model, float(weight_decay), bool(no_decay_norm_bias), float(classifier_lr_mult))
    if not groups:
        raise ValueError("the model has no trainable parameters")
    groups = with_lrs(groups, lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


def optimizer_for(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer a run's resolved settings ask for."""
    return make_optimizer(model, name=settings.optimizer, lr=settings.lr, weight_decay=settings.weight_decay,
                          momentum=settings.momentum, nesterov=settings.nesterov,
                          no_decay_norm_bias=settings.no_decay_norm_bias,
                          classifier_lr_mult=settings.classifier_lr_mult)


def build_optimizer(model: nn.Module, train: Mapping, lr: float | None = None) -> torch.optim.Optimizer:
    """From the validated params['train'] (every default filled); `lr` overrides train['lr']."""
    return make_optimizer(model, name=train["optimizer"], lr=float(train["lr"] if lr is None else lr),
                          weight_decay=float(train["weight_decay"]), momentum=float(train["momentum"]),
                          nesterov=bool(train["nesterov"]), no_decay_norm_bias=bool(train["no_decay_norm_bias"]),
                          classifier_lr_mult=float(train["classifier_lr_mult"]))


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


def make_scheduler(optimizer: torch.optim.Optimizer, *, schedule: str, epochs: int, steps_per_epoch: int,
                   warmup_epochs: float, milestones: tuple[int, ...] | list[int] = (),
                   gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR: linear warmup over warmup_epochs, then cosine or step (lr_factor)."""
    factor = lr_factor(
        schedule,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=round(float(warmup_epochs) * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        milestones=milestones,
        gamma=float(gamma),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def scheduler_for(optimizer: torch.optim.Optimizer, settings: TrainSettings,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule a run's resolved settings ask for, over settings.epochs."""
    return make_scheduler(optimizer, schedule=settings.schedule, epochs=settings.epochs,
                          steps_per_epoch=steps_per_epoch, warmup_epochs=settings.warmup_epochs,
                          milestones=settings.step_milestones, gamma=settings.step_gamma)


def build_scheduler(optimizer: torch.optim.Optimizer, train: Mapping, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """From the validated params['train'] (schedule, warmup_epochs, step_milestones, step_gamma)."""
    return make_scheduler(optimizer, schedule=train["schedule"], epochs=epochs, steps_per_epoch=steps_per_epoch,
                          warmup_epochs=train["warmup_epochs"], milestones=train["step_milestones"],
                          gamma=train["step_gamma"])
