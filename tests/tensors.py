"""Tensor helpers shared by the model tests: parameter counts, random clips in the layout
actionrepro.inputs documents, and non-trivial batch-norm statistics.

Not a test module (no test_ prefix); import it as `from tests.tensors import clip_for`.
"""

from __future__ import annotations

import torch
from torch import nn


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def clip_for(model, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """An rgb clip (B, T, 3, H, W) for `model.input_spec`."""
    spec = model.input_spec
    return torch.randn(batch, spec.frames, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(seed))


def inputs_for(model, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """rgb (B, T, 3, H, W) and flow (B, K, 2L, H, W) for a two-stream `model.input_spec`."""
    spec = model.input_spec
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(batch, spec.frames, 3, spec.size, spec.size, generator=g),
            "flow": torch.randn(batch, spec.flow_segments, 2 * spec.flow_len, spec.size, spec.size, generator=g)}


def randomise_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so eval-mode comparisons exercise batch-norm too."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            nn.init.normal_(m.weight, 1.0, 0.1)
            nn.init.normal_(m.bias, 0.0, 0.1)
