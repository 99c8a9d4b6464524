"""Layers shared by the architectures: frame folding, consensus, temporal shift, 2D->3D inflation,
stem adaptation and the classifier head.

Everything here is written so torch-pruning can trace it: no channel slicing of reshaped tensors,
channel counts read from the input at run time (so a pruned layer keeps working).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from actionrepro.errors import ConfigError


def check_rgb(rgb: torch.Tensor | None, model: str, frames: int | None = None) -> torch.Tensor:
    """Validate an rgb batch (B, T, 3, H, W); `frames` pins T for models built for one T."""
    if rgb is None:
        raise ValueError(f"{model} needs rgb=(B, T, 3, H, W) and got none")
    if rgb.ndim != 5 or rgb.shape[2] != 3:
        raise ValueError(f"{model} needs rgb of shape (B, T, 3, H, W), got {tuple(rgb.shape)}")
    if frames is not None and rgb.shape[1] != frames:
        raise ValueError(
            f"{model} was built for T={frames} frames per clip and got T={rgb.shape[1]}; "
            "build it with the matching segments/clip_len option"
        )
    return rgb


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B*T, C, H, W): frames become batch items of a 2D network."""
    return x.flatten(0, 1)


def to_clip(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, C, T, H, W): the layout of 3D convolutions."""
    return x.permute(0, 2, 1, 3, 4)


def average_consensus(per_frame: torch.Tensor, frames: int) -> torch.Tensor:
    """TSN consensus: (B*T, K) per-segment scores -> (B, K) mean over the T segments."""
    return per_frame.unflatten(0, (-1, frames)).mean(dim=1)


def classifier(in_features: int, num_classes: int, std: float = 0.01) -> nn.Linear:
    """A fresh classification layer, N(0, std) weights and zero bias (TSN/mmaction2 head init)."""
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, 0.0, std)
    nn.init.zeros_(fc.bias)
    return fc


class TemporalShift(nn.Module):
    """TSM's temporal shift on frames folded into the batch, (N*T, C, H, W) -> same shape.

    Channels [0, C/d) take the next frame's values, [C/d, 2C/d) the previous frame's, the rest stay;
    the ends of each clip receive zeros. Written as rolls along the folded batch axis times 0/1
    masks (no reshape, no channel slicing), so torch-pruning sees only element-wise ops; the fold
    is recomputed from C at run time, so it stays 1/d of whatever channels pruning leaves.
    `enabled = False` turns it into the identity (see `shifts_disabled`).
    """

    def __init__(self, segments: int, fold_div: int = 8):
        super().__init__()
        if segments < 1 or fold_div < 2:
            raise ValueError(f"TemporalShift needs segments >= 1 and fold_div >= 2, got {segments}, {fold_div}")
        self.segments = segments
        self.fold_div = fold_div
        self.enabled = True

    def extra_repr(self) -> str:
        return f"segments={self.segments}, fold_div={self.fold_div}, enabled={self.enabled}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        nt, c = x.shape[0], x.shape[1]
        t = self.segments
        if nt % t:
            raise ValueError(f"TemporalShift: batch of {nt} frames is not a multiple of T={t} segments")
        fold = c // self.fold_div
        time = torch.arange(nt, device=x.device) % t
        chan = torch.arange(c, device=x.device)
        shape = (nt, c) + (1,) * (x.ndim - 2)
        from_next = ((chan < fold)[None, :] & (time < t - 1)[:, None]).to(x.dtype).view(shape)
        from_prev = (((chan >= fold) & (chan < 2 * fold))[None, :] & (time > 0)[:, None]).to(x.dtype).view(shape)
        keep = (chan >= 2 * fold).to(x.dtype).view((1, c) + (1,) * (x.ndim - 2))
        return x * keep + torch.roll(x, -1, 0) * from_next + torch.roll(x, 1, 0) * from_prev


@contextmanager
def shifts_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily make every TemporalShift the identity (e.g. while torch-pruning traces)."""
    shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
    before = [m.enabled for m in shifts]
    for m in shifts:
        m.enabled = False
    try:
        yield model
    finally:
        for m, state in zip(shifts, before):
            m.enabled = state


def inflate_conv(conv: nn.Conv2d, time_kernel: int = 1, time_stride: int = 1, time_padding: int | None = None) -> nn.Conv3d:
    """Conv2d -> Conv3d with the 2D kernel repeated over `time_kernel` frames and divided by it,
    so a clip of identical frames gives the 2D response (I3D inflation)."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("inflate_conv supports numeric zero padding only")
    pad_t = time_kernel // 2 if time_padding is None else time_padding
    out = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=(time_kernel, *conv.kernel_size),
        stride=(time_stride, *conv.stride),
        padding=(pad_t, *conv.padding),
        dilation=(1, *conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(conv.weight.unsqueeze(2).expand_as(out.weight) / time_kernel)
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


def inflate_batchnorm(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    """BatchNorm2d -> BatchNorm3d with the same affine parameters and running statistics."""
    out = nn.BatchNorm3d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
    state = bn.state_dict()
    out.load_state_dict(state)
    return out.to(next(iter(state.values())).device) if state else out


def inflate_maxpool(pool: nn.MaxPool2d, time_kernel: int = 1, time_stride: int = 1) -> nn.MaxPool3d:
    """MaxPool2d -> MaxPool3d pooling `time_kernel` frames (1: per frame, as in the I3D stem)."""
    pair = nn.modules.utils._pair
    return nn.MaxPool3d(
        kernel_size=(time_kernel, *pair(pool.kernel_size)),
        stride=(time_stride, *pair(pool.stride)),
        padding=(0, *pair(pool.padding)),
        ceil_mode=pool.ceil_mode,
    )


def adapt_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of an RGB stem taking `in_channels` inputs (flow stacks, RGB differences), each
    initialised with the RGB kernel averaged over its input channels (TSN cross-modality init)."""
    out = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        out.weight.copy_(mean.expand(-1, in_channels // conv.groups, -1, -1))
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


# ---------------------------------------------------------------- option checks
def check_dropout(model: str, dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"architectures.{model}.dropout = {dropout!r}; use a probability in [0, 1)")
    return float(dropout)


def check_posint(model: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"architectures.{model}.{key} = {value!r}; use a positive integer")
    return value
