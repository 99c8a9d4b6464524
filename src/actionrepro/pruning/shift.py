"""TSM's temporal shift made prunable: the channels that move in time must follow pruning.

`layers.TemporalShift` chooses its shifted channels from the channel count at run time: the first
C/d take the next frame, the next C/d the previous one. Once pruning has removed channels, that
rule would pick other channels than the network was trained with (a surviving channel trained to
read the next frame could stop moving, an unshifted one start to), so the pruned network would
not be the trained one minus some channels. Before pruning, every TemporalShift is therefore
replaced by a `ChannelShift`: the same function, bit for bit, with each channel's direction held
in a buffer that `ShiftPruner`, a torch-pruning pruner for this layer type, cuts together with
the channels around it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn

from actionrepro.models.layers import TemporalShift

FROM_NEXT, STAY, FROM_PREV = 1, 0, -1


class ChannelShift(TemporalShift):
    """A TemporalShift whose per-channel direction is stored (buffer `direction`, int8: 1 takes the
    next frame, -1 the previous one, 0 stays), so that pruning keeps each survivor's direction."""

    def __init__(self, segments: int, fold_div: int, channels: int):
        super().__init__(segments, fold_div)
        fold = channels // fold_div
        direction = torch.zeros(channels, dtype=torch.int8)
        direction[:fold] = FROM_NEXT
        direction[fold:2 * fold] = FROM_PREV
        self.register_buffer("direction", direction)

    @classmethod
    def replacing(cls, shift: TemporalShift, channels: int) -> "ChannelShift":
        out = cls(shift.segments, shift.fold_div, channels)
        out.enabled = shift.enabled
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", channels={self.direction.numel()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        nt, c = x.shape[0], x.shape[1]
        t = self.segments
        if nt % t:
            raise ValueError(f"ChannelShift: batch of {nt} frames is not a multiple of T={t} segments")
        if c != self.direction.numel():
            raise ValueError(f"ChannelShift holds directions for {self.direction.numel()} channels, got {c}")
        time = torch.arange(nt, device=x.device) % t
        direction = self.direction.to(x.device)
        shape = (nt, c) + (1,) * (x.ndim - 2)
        from_next = ((direction == FROM_NEXT)[None, :] & (time < t - 1)[:, None]).to(x.dtype).view(shape)
        from_prev = ((direction == FROM_PREV)[None, :] & (time > 0)[:, None]).to(x.dtype).view(shape)
        keep = (direction == STAY).to(x.dtype).view((1, c) + (1,) * (x.ndim - 2))
        return x * keep + torch.roll(x, -1, 0) * from_next + torch.roll(x, 1, 0) * from_prev


class ShiftPruner(tp.pruner.function.BasePruningFunc):
    """Cuts a ChannelShift's directions with its channels; input and output channels are the same
    channels (prune_in_channels is prune_out_channels), so torch-pruning passes groups through it."""

    TARGET_MODULES = (ChannelShift,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        removed = set(int(i) for i in idxs)
        keep = [i for i in range(layer.direction.numel()) if i not in removed]
        layer.direction = layer.direction[torch.tensor(keep, dtype=torch.long, device=layer.direction.device)]
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.direction.numel()

    get_in_channels = get_out_channels


def convert_shifts(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Replace every plain TemporalShift of `model` by an equivalent ChannelShift (in place); the
    channel counts are read from one forward pass on `inputs`. Returns how many were replaced."""
    plain = {name: m for name, m in model.named_modules() if type(m) is TemporalShift}
    if not plain:
        return 0
    channels: dict[str, int] = {}

    def record(name: str):
        def hook(module, args):
            channels.setdefault(name, int(args[0].shape[1]))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in plain.items()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    unused = sorted(set(plain) - set(channels))
    if unused:
        raise ValueError(f"temporal shift(s) {unused} did not run in a forward pass; cannot size their channels")
    for name, shift in plain.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ChannelShift.replacing(shift, channels[name]).to(next(iter(inputs.values())).device))
    return len(plain)
