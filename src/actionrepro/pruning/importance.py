"""Which channels matter: the importance criteria params["prune"]["importance"] names.

  l1, l2    tp.importance.GroupMagnitudeImportance(p=1 | 2): weight norms over the whole group
  taylor    tp.importance.GroupTaylorImportance: |weight x gradient| of the training loss, so it
            needs `accumulate_gradients` on training batches before each pruning step
  bn_scale  tp.importance.BNScaleImportance: |gamma| of the group's batch-norms (network slimming);
            groups without a batch-norm get no score and are left whole by torch-pruning
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch_pruning as tp
from torch import nn

from actionrepro.errors import ConfigError

IMPORTANCES = ("l1", "l2", "taylor", "bn_scale")


def make_importance(name: str) -> tp.importance.Importance:
    """The torch-pruning importance estimator for `name` (one of IMPORTANCES)."""
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    raise ConfigError(f"prune.importance = {name!r}; use one of {', '.join(IMPORTANCES)}")


def needs_gradients(name: str) -> bool:
    return name == "taylor"


def accumulate_gradients(model: nn.Module, batches: Iterable[Mapping], device: torch.device | str = "cpu") -> int:
    """Sum into every `.grad` the gradients of the training loss (cross-entropy plus the model's
    auxiliary loss, engine.step.backward_pass) over `batches`; returns the number of clips seen.

    Eval mode: batch-norm uses its running statistics and dropout is off, so the gradients are
    those of the trained network that is about to be pruned, not of a noisy training-mode copy.
    """
    from actionrepro.engine.step import backward_pass, model_inputs

    device = torch.device(device)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss()
    clips = 0
    try:
        with torch.enable_grad():
            for batch in batches:
                labels = batch["label"].to(device)
                backward_pass(model, model, model_inputs(batch, device), labels, loss_fn)
                clips += int(labels.shape[0])
    finally:
        model.train(was_training)
    if clips == 0:
        raise ConfigError("prune.importance = 'taylor' needs training clips for its gradients and got none; "
                          "check the training split, or use l1, l2 or bn_scale")
    return clips
