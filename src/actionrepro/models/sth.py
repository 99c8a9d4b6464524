"""STH: Spatio-Temporal Hybrid convolution (Li et al., arXiv 2003.08042), reconstructed [recon].

STH-Conv replaces the 3x3 conv of every bottleneck of res2-res5 (or MobileNetV2's depthwise convs):
channels are split into G groups and each output group sees part of its inputs through a temporal
3x1x1 kernel and the rest through a spatial 1x3x3 one. The groups travel as separate tensors so
that torch-pruning never has to map sliced channels.
Options and anchors: docs/models.md ("STH").
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv_mobilenet
from torchvision.models import resnet as tv_resnet
from torchvision.ops.misc import Conv2dNormActivation

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import (download_state_dict, init_like_torchvision, load_checked, read_state_file,
                                          resnet2d, resolve_pretrained, strip_classifier)
from actionrepro.models.layers import average_consensus, check_dropout, check_posint, check_rgb, classifier, fold_frames
from actionrepro.models.registry import ModelInfo, VideoModel, register

PAPER = {"backbone": "resnet50", "size": 224}
TINY = {"backbone": "tiny", "size": 32}
BACKBONES = ("resnet50", "resnet101", "tiny", "mobilenet_v2")
# Tiny bottleneck ResNet (CPU demo): 3x3/1 stem of 16, planes per stage, one block each (x4 out).
TINY_STEM, TINY_PLANES = 16, (12, 24, 48, 96)
# Reduced MobileNetV2 for the CPU demo: (expansion t, width c, repeats n, stride s) as torchvision.
TINY_MOBILENET_SETTING = [[1, 16, 1, 1], [6, 24, 1, 2], [6, 32, 1, 2], [6, 64, 1, 2]]
TINY_MOBILENET = {"width_mult": 0.5, "last_channel": 128}

STH_INFO = ModelInfo(
    name="sth",
    title="STH-R50",
    reference="Li et al., STH: Spatio-Temporal Hybrid Convolution for Efficient Action Recognition, "
              "arXiv 2003.08042 (abstract; layer reconstructed)",
    tag="recon",
    protocol="T=8 segments x 1 RGB frame, 224x224; ResNet-50 with the 3x3 conv of every bottleneck of res2-res5 "
             "an STH-Conv (G=4 groups, rho=1/4 temporal), dropout 0.5, FC, average consensus",
    published=(),
    notes="The abstract reports Something-Something V1/V2, Jester and HMDB-51 results but no number is "
          "available here, and there is none on UCF101; no published accuracy is claimed.",
    backbone="ResNet-50",
)


# ---------------------------------------------------------------- moving along time

def from_neighbour(z: torch.Tensor, segments: int, step: int) -> torch.Tensor:
    """Frames folded into the batch (N*T, ...): frame t receives frame t - step of the same clip
    (step=1: the previous frame, step=-1: the next), zeros where that frame is outside the clip.
    A roll of the batch axis times a 0/1 mask: no reshape, so torch-pruning sees an element-wise op."""
    nt = z.shape[0]
    if nt % segments:
        raise ValueError(f"STH: batch of {nt} frames is not a multiple of T={segments} segments")
    time = torch.arange(nt, device=z.device) % segments
    source = time - step
    inside = ((source >= 0) & (source < segments)).to(z.dtype).view((nt,) + (1,) * (z.ndim - 1))
    return torch.roll(z, step, 0) * inside


class TemporalTaps(nn.Module):
    """A depthwise 3x1x1 temporal kernel on folded frames: depthwise 1x1 convs for taps t-1 (`prev`),
    t (`centre`) and t+1 (`next`) with the layer's spatial stride; tap outputs are moved in time after
    the convolution (it commutes with moving whole frames, and there is no bias)."""

    def __init__(self, channels: int, stride: int, segments: int, device=None, dtype=None):
        super().__init__()
        self.segments = segments
        kwargs = dict(kernel_size=1, stride=stride, bias=False, groups=channels, device=device, dtype=dtype)
        self.prev = nn.Conv2d(channels, channels, **kwargs)
        self.centre = nn.Conv2d(channels, channels, **kwargs)
        self.next = nn.Conv2d(channels, channels, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.centre(x) + from_neighbour(self.prev(x), self.segments, 1)
                + from_neighbour(self.next(x), self.segments, -1))


def split_sizes(channels: int, groups: int) -> list[int]:
    """Near-equal group sizes (the first `channels % groups` groups one larger)."""
    if channels < groups:
        raise ValueError(f"cannot split {channels} channels into {groups} groups; use at most {channels} groups")
    base, extra = divmod(channels, groups)
    return [base + (i < extra) for i in range(groups)]


def offsets(sizes: list[int]) -> list[int]:
    """Channel offsets of consecutive groups: [0, s0, s0+s1, ...]."""
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return out


def _check_groups(groups: int, temporal_groups: int) -> None:
    if not 1 <= temporal_groups < groups:
        raise ValueError(f"STH needs 1 <= temporal groups < groups, got {temporal_groups} of {groups}")


def _check_replaceable(conv: nn.Conv2d) -> None:
    if (conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.dilation != (1, 1) or conv.bias is not None
            or conv.padding_mode != "zeros" or conv.stride[0] != conv.stride[1]):
        raise ValueError(f"STH replaces 3x3 convs with padding 1, no dilation, no bias, square stride; got {conv}")


# ---------------------------------------------------------------- the STH conv (dense)

class STHConv2d(nn.Module):
    """STH-Conv replacing a dense 3x3 conv (stride s, padding 1, no bias); list of G group tensors
    (B*T, C_i, H, W) in, list of G group tensors out.

    `spatial[g]`: 3x3 conv over the concatenated non-window groups of output group g.
    `temporal[g][j]`: 1x1 conv over [frame t-1, frame t, frame t+1] of input group window(g)[j]
    (the three taps of the 3x1x1 kernel as three column blocks of one weight).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, segments: int = 8, groups: int = 4,
                 temporal_groups: int = 1, device=None, dtype=None):
        super().__init__()
        _check_groups(groups, temporal_groups)
        self.stride, self.segments, self.groups, self.temporal_groups = stride, segments, groups, temporal_groups
        self.rho = temporal_groups / groups  # a plain attribute: tp.load_state_dict sets every public one
        in_sizes, out_sizes = split_sizes(in_channels, groups), split_sizes(out_channels, groups)
        kwargs = dict(device=device, dtype=dtype)
        self.spatial = nn.ModuleList(
            nn.Conv2d(sum(in_sizes[i] for i in self.others(g)), out_sizes[g], 3, stride, 1, bias=False, **kwargs)
            for g in range(groups))
        self.temporal = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(3 * in_sizes[i], out_sizes[g], 1, stride, bias=False, **kwargs)
                          for i in self.window(g))
            for g in range(groups))
        self.reset_parameters()

    def window(self, g: int) -> tuple[int, ...]:
        """The input groups output group g sees through its temporal kernel (g first)."""
        return tuple((g + j) % self.groups for j in range(self.temporal_groups))

    def others(self, g: int) -> tuple[int, ...]:
        """The input groups output group g sees through its spatial kernel, in channel order."""
        window = self.window(g)
        return tuple(i for i in range(self.groups) if i not in window)

    def in_sizes(self) -> list[int]:
        """Current input group sizes (read from the weights, so they follow pruning)."""
        return [self.temporal[i][0].weight.shape[1] // 3 for i in range(self.groups)]

    def out_sizes(self) -> list[int]:
        return [conv.weight.shape[0] for conv in self.spatial]

    def taps(self, g: int, j: int) -> list[torch.Tensor]:
        """Weights (out_g, C_i, 1, 1) of the temporal pair (g, window(g)[j]) for frames t-1, t, t+1."""
        return list(self.temporal[g][j].weight.chunk(3, dim=1))

    def extra_repr(self) -> str:
        return (f"{sum(self.in_sizes())}, {sum(self.out_sizes())}, stride={self.stride}, segments={self.segments}, "
                f"groups={self.groups}, rho={self.rho:g}")

    def reset_parameters(self) -> None:
        """Kaiming normal (fan-out, ReLU) over the layer's real connections, the same std for every tap."""
        fan_out = sum(self.out_sizes()) * ((1 - self.rho) * 9 + self.rho * 3)
        std = math.sqrt(2.0 / fan_out)
        for p in self.parameters():
            nn.init.normal_(p, 0.0, std)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != self.groups:
            raise ValueError(f"STHConv2d takes a list of {self.groups} group tensors, got {len(xs)}")
        # [t-1, t, t+1] of each group: rolls of the folded batch, concatenated for the 1x1 tap convs
        stacks = [torch.cat([from_neighbour(x, self.segments, 1), x, from_neighbour(x, self.segments, -1)], dim=1)
                  for x in xs]
        outs = []
        for g in range(self.groups):
            others = [xs[i] for i in self.others(g)]
            y = self.spatial[g](others[0] if len(others) == 1 else torch.cat(others, dim=1))
            for i, conv in zip(self.window(g), self.temporal[g]):
                y = y + conv(stacks[i])
            outs.append(y)
        return outs

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, segments: int, groups: int, temporal_groups: int,
                    copy_weights: bool = True) -> "STHConv2d":
        """The STH-Conv taking `conv`'s place; with `copy_weights`, spatial kernels are the 2D ones and
        each temporal kernel is [0, s, 0] with s the sum of the 2D kernel of that (out, in) pair."""
        _check_replaceable(conv)
        if conv.groups != 1:
            raise ValueError(f"STHConv2d replaces dense convs; got groups={conv.groups} (use STHDepthwise)")
        w = conv.weight
        sth = cls(conv.in_channels, conv.out_channels, conv.stride[0], segments, groups, temporal_groups,
                  device=w.device, dtype=w.dtype)
        if copy_weights:
            cin, cout = offsets(sth.in_sizes()), offsets(sth.out_sizes())
            with torch.no_grad():
                for g in range(groups):
                    rows = w[cout[g]:cout[g + 1]]
                    sth.spatial[g].weight.copy_(torch.cat([rows[:, cin[i]:cin[i + 1]] for i in sth.others(g)], 1))
                    for i, taps in zip(sth.window(g), sth.temporal[g]):
                        centre = rows[:, cin[i]:cin[i + 1]].sum((2, 3), keepdim=True)
                        taps.weight.copy_(torch.cat([torch.zeros_like(centre), centre, torch.zeros_like(centre)], 1))
        return sth


# ---------------------------------------------------------------- the STH conv (depthwise)

class STHDepthwise(nn.Module):
    """STH for a depthwise 3x3 conv: [temporal channels, spatial channels] in and out; the first m of
    G channel groups get a depthwise 3x1x1 kernel, the rest a depthwise 1x3x3 one."""

    def __init__(self, channels: int, stride: int = 1, segments: int = 8, groups: int = 4, temporal_groups: int = 1,
                 device=None, dtype=None):
        super().__init__()
        _check_groups(groups, temporal_groups)
        self.stride, self.segments, self.groups, self.temporal_groups = stride, segments, groups, temporal_groups
        n_temporal, n_spatial = depthwise_sizes(channels, groups, temporal_groups)
        self.temporal = TemporalTaps(n_temporal, stride, segments, device=device, dtype=dtype)
        self.spatial = nn.Conv2d(n_spatial, n_spatial, 3, stride, 1, groups=n_spatial, bias=False,
                                 device=device, dtype=dtype)
        self.reset_parameters()

    def sizes(self) -> list[int]:
        """Current [temporal, spatial] channel counts (follow pruning)."""
        return [self.temporal.centre.weight.shape[0], self.spatial.weight.shape[0]]

    def extra_repr(self) -> str:
        t, s = self.sizes()
        return f"temporal={t}, spatial={s}, stride={self.stride}, segments={self.segments}"

    def reset_parameters(self) -> None:
        """Kaiming normal with a depthwise fan-out: 3 taps per temporal channel, 9 per spatial one."""
        for conv in (self.temporal.prev, self.temporal.centre, self.temporal.next):
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / 3))
        nn.init.normal_(self.spatial.weight, 0.0, math.sqrt(2.0 / 9))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        temporal, spatial = xs
        return [self.temporal(temporal), self.spatial(spatial)]

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, segments: int, groups: int, temporal_groups: int,
                    copy_weights: bool = True) -> "STHDepthwise":
        """The depthwise STH taking `conv`'s place (same weight rule as STHConv2d.from_conv2d)."""
        _check_replaceable(conv)
        if not conv.groups == conv.in_channels == conv.out_channels:
            raise ValueError("STHDepthwise replaces depthwise convs (groups == in == out channels)")
        w = conv.weight
        sth = cls(conv.in_channels, conv.stride[0], segments, groups, temporal_groups, device=w.device, dtype=w.dtype)
        if copy_weights:
            t = sth.sizes()[0]
            with torch.no_grad():
                sth.temporal.centre.weight.copy_(w[:t].sum((2, 3), keepdim=True))
                sth.temporal.prev.weight.zero_()
                sth.temporal.next.weight.zero_()
                sth.spatial.weight.copy_(w[t:])
        return sth


def depthwise_sizes(channels: int, groups: int, temporal_groups: int) -> list[int]:
    """[temporal, spatial] channel counts of a depthwise STH layer: the first m of G groups temporal."""
    n_temporal = sum(split_sizes(channels, groups)[:temporal_groups])
    return [n_temporal, channels - n_temporal]


# ---------------------------------------------------------------- the reference form

def reference_mask(conv: STHConv2d | STHDepthwise) -> torch.Tensor:
    """Bool (C_out, C_in/groups, 3, 3, 3) mask of the equivalent Conv3d weight: the centre plane
    (t = centre) for spatial (out, in) pairs, the centre line (y, x = centre) for temporal ones."""
    plane = torch.zeros(3, 3, 3, dtype=torch.bool)
    plane[1] = True
    line = torch.zeros(3, 3, 3, dtype=torch.bool)
    line[:, 1, 1] = True
    if isinstance(conv, STHDepthwise):
        t, s = conv.sizes()
        return torch.cat([line.expand(t, 1, 3, 3, 3), plane.expand(s, 1, 3, 3, 3)])
    cin, cout = offsets(conv.in_sizes()), offsets(conv.out_sizes())
    mask = torch.zeros(cout[-1], cin[-1], 3, 3, 3, dtype=torch.bool)
    for g in range(conv.groups):
        for i in range(conv.groups):
            mask[cout[g]:cout[g + 1], cin[i]:cin[i + 1]] = line if i in conv.window(g) else plane
    return mask


def to_conv3d(conv: STHConv2d | STHDepthwise) -> nn.Conv3d:
    """The reference form: a 3x3x3 Conv3d on the concatenated groups in (B, C, T, H, W) layout
    computing what `conv` computes on folded frames, its weight zero outside `reference_mask(conv)`.
    Works on pruned layers too."""
    depthwise = isinstance(conv, STHDepthwise)
    if depthwise:
        c_in = c_out = sum(conv.sizes())
    else:
        c_in, c_out = sum(conv.in_sizes()), sum(conv.out_sizes())
    weight = conv.temporal.centre.weight if depthwise else conv.spatial[0].weight
    ref = nn.Conv3d(c_in, c_out, 3, stride=(1, conv.stride, conv.stride), padding=1, bias=False,
                    groups=c_in if depthwise else 1, device=weight.device, dtype=weight.dtype)
    w = torch.zeros_like(ref.weight)

    def put_taps(rows: slice, cols: slice, taps: list[torch.Tensor]) -> None:
        for k, tap in enumerate(taps):  # kernel index 0 reads frame t-1
            w[rows, cols, k, 1, 1] = tap[:, :, 0, 0]

    with torch.no_grad():
        if depthwise:
            t = conv.sizes()[0]
            put_taps(slice(0, t), slice(0, 1), [conv.temporal.prev.weight, conv.temporal.centre.weight,
                                                conv.temporal.next.weight])
            w[t:, :, 1] = conv.spatial.weight
        else:
            cin, cout = offsets(conv.in_sizes()), offsets(conv.out_sizes())
            for g in range(conv.groups):
                rows = slice(cout[g], cout[g + 1])
                at = 0
                for i in conv.others(g):
                    n = cin[i + 1] - cin[i]
                    w[rows, cin[i]:cin[i + 1], 1] = conv.spatial[g].weight[:, at:at + n]
                    at += n
                for j, i in enumerate(conv.window(g)):
                    put_taps(rows, slice(cin[i], cin[i + 1]), conv.taps(g, j))
        ref.weight.copy_(w)
    return ref


# ---------------------------------------------------------------- exact group splits of 2D layers

def split_rows(conv: nn.Conv2d, sizes: list[int]) -> nn.ModuleList:
    """A bias-free dense conv as len(sizes) convs producing consecutive output channel groups."""
    at, w = offsets(sizes), conv.weight
    parts = nn.ModuleList()
    for i, n in enumerate(sizes):
        part = nn.Conv2d(conv.in_channels, n, conv.kernel_size, conv.stride, conv.padding, bias=False,
                         device=w.device, dtype=w.dtype)
        with torch.no_grad():
            part.weight.copy_(w[at[i]:at[i + 1]])
        parts.append(part)
    return parts


def split_batchnorm(bn: nn.BatchNorm2d, sizes: list[int]) -> nn.ModuleList:
    """A batch-norm as one batch-norm per channel group, affine parameters and statistics copied."""
    at = offsets(sizes)
    parts = nn.ModuleList()
    for i, n in enumerate(sizes):
        part = nn.BatchNorm2d(n, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                              track_running_stats=bn.track_running_stats, device=bn.weight.device, dtype=bn.weight.dtype)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(part, name).copy_(getattr(bn, name)[at[i]:at[i + 1]])
            part.num_batches_tracked.copy_(bn.num_batches_tracked)
        parts.append(part)
    return parts


def _check_no_bias(*convs: nn.Conv2d) -> None:
    for conv in convs:
        if conv.bias is not None or conv.kernel_size != (1, 1) or conv.groups != 1:
            raise ValueError(f"expected a bias-free dense 1x1 conv around the 3x3 conv, got {conv}")


# ---------------------------------------------------------------- blocks

class STHBottleneck(nn.Module):
    """A torchvision Bottleneck with conv2 an STH-Conv, conv1/bn1/bn2 split into the G channel groups
    and conv3 reading their concatenation (exactly the 2D block's function with that conv2)."""

    def __init__(self, block: tv_resnet.Bottleneck, segments: int, groups: int, temporal_groups: int,
                 copy_weights: bool):
        super().__init__()
        _check_no_bias(block.conv1, block.conv3)
        width = block.conv2.in_channels
        self.conv1 = split_rows(block.conv1, split_sizes(width, groups))
        self.bn1 = split_batchnorm(block.bn1, split_sizes(width, groups))
        self.conv2 = STHConv2d.from_conv2d(block.conv2, segments, groups, temporal_groups, copy_weights)
        out_sizes = split_sizes(block.conv2.out_channels, groups)
        self.bn2 = split_batchnorm(block.bn2, out_sizes)
        self.conv3 = block.conv3
        self.bn3 = block.bn3
        self.relu = nn.ReLU(inplace=True)
        self.downsample = block.downsample
        self.stride = block.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        hs = [self.relu(bn(conv(x))) for conv, bn in zip(self.conv1, self.bn1)]
        hs = [self.relu(bn(h)) for bn, h in zip(self.bn2, self.conv2(hs))]
        return self.relu(self.bn3(self.conv3(torch.cat(hs, dim=1))) + identity)


class GroupedStem(nn.Module):
    """MobileNetV2's stem (conv, BN, ReLU6) producing [temporal, spatial] channel groups for a first
    block without expand conv; an exact row split of the 2D stem."""

    def __init__(self, stem: Conv2dNormActivation, sizes: list[int]):
        super().__init__()
        conv, bn, act = stem
        if conv.bias is not None or conv.groups != 1:
            raise ValueError(f"expected MobileNetV2's bias-free dense stem conv, got {conv}")
        self.conv = split_rows(conv, sizes)
        self.bn = split_batchnorm(bn, sizes)
        self.act = act

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.act(bn(conv(x))) for conv, bn in zip(self.conv, self.bn)]


class STHInvertedResidual(nn.Module):
    """A torchvision InvertedResidual with its depthwise conv an STHDepthwise; the expand conv and the
    batch-norms around the depthwise conv split into [temporal, spatial] groups, concatenated for the
    project conv.
    A block without expand conv takes the [temporal, spatial] list a GroupedStem produces."""

    def __init__(self, block: tv_mobilenet.InvertedResidual, segments: int, groups: int, temporal_groups: int,
                 copy_weights: bool):
        super().__init__()
        layers = list(block.conv)
        expand = layers[0] if len(layers) == 4 else None
        dw_conv, dw_bn, dw_act = layers[-3]
        project, project_bn = layers[-2], layers[-1]
        sizes = depthwise_sizes(dw_conv.in_channels, groups, temporal_groups)
        if expand is not None:
            _check_no_bias(expand[0])
            self.expand = split_rows(expand[0], sizes)
            self.expand_bn = split_batchnorm(expand[1], sizes)
            self.act = expand[2]
        else:
            self.expand = self.expand_bn = None
            self.act = dw_act
        self.dw = STHDepthwise.from_conv2d(dw_conv, segments, groups, temporal_groups, copy_weights)
        self.dw_bn = split_batchnorm(dw_bn, sizes)
        self.project = project
        self.project_bn = project_bn
        self.use_res_connect = block.use_res_connect
        if self.use_res_connect and expand is None:
            raise ValueError("an InvertedResidual without expand conv and with a residual is not supported")

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if self.expand is None:
            hs = x
        else:
            hs = [self.act(bn(conv(x))) for conv, bn in zip(self.expand, self.expand_bn)]
        hs = [self.act(bn(h)) for bn, h in zip(self.dw_bn, self.dw(hs))]
        out = self.project_bn(self.project(torch.cat(hs, dim=1)))
        return x + out if self.use_res_connect else out


# ---------------------------------------------------------------- backbones

def convert_backbone(net: nn.Module, segments: int, groups: int, temporal_groups: int,
                     copy_weights: bool) -> list[nn.Module]:
    """In place: every bottleneck of res2-res5 of a torchvision ResNet becomes an STHBottleneck, or
    every inverted residual of a torchvision MobileNetV2 an STHInvertedResidual (with a GroupedStem
    for a first block without expand conv). `copy_weights`: STH kernels from the 2D 3x3 kernels
    (else fresh init); the split 2D layers always keep their weights. Returns the new STH layers."""
    replaced: list[nn.Module] = []
    if isinstance(net, tv_resnet.ResNet):
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            for j, block in enumerate(stage):
                if not isinstance(block, tv_resnet.Bottleneck):
                    raise ValueError(f"STH converts bottleneck ResNets; found a {type(block).__name__}")
                stage[j] = STHBottleneck(block, segments, groups, temporal_groups, copy_weights)
                replaced.append(stage[j].conv2)
    elif isinstance(net, tv_mobilenet.MobileNetV2):
        for j, block in enumerate(net.features):
            if not isinstance(block, tv_mobilenet.InvertedResidual):
                continue
            new = STHInvertedResidual(block, segments, groups, temporal_groups, copy_weights)
            if new.expand is None:
                if j != 1:
                    raise ValueError("only the first MobileNetV2 block may lack an expand conv")
                net.features[0] = GroupedStem(net.features[0], new.dw.sizes())
            net.features[j] = new
            replaced.append(new.dw)
    else:
        raise TypeError(f"STH converts torchvision ResNets and MobileNetV2, not {type(net).__name__}")
    return replaced


def tiny_bottleneck_resnet(stem: int = TINY_STEM, planes: tuple[int, ...] = TINY_PLANES) -> tv_resnet.ResNet:
    """torchvision's ResNet class with one Bottleneck per stage at reduced widths, for 32x32 inputs:
    a 3x3/1 stem conv then the usual 3x3/2 max-pool (stage 1 sees 16x16, stage 4 2x2). Same module
    names as resnet50, so the STH conversion and weight loading are shared."""
    net = tv_resnet.ResNet(tv_resnet.Bottleneck, [1, 1, 1, 1])
    net.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(stem)
    inplanes = stem
    for i, width in enumerate(planes):
        stride = 1 if i == 0 else 2
        out = width * tv_resnet.Bottleneck.expansion
        downsample = nn.Sequential(tv_resnet.conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        setattr(net, f"layer{i + 1}", nn.Sequential(tv_resnet.Bottleneck(inplanes, width, stride, downsample)))
        inplanes = out
    net.fc = nn.Linear(inplanes, 1000)
    init_like_torchvision(net)
    return net


def tiny_mobilenet_v2() -> tv_mobilenet.MobileNetV2:
    """torchvision's MobileNetV2 class at half width with four inverted-residual stages and a
    128-wide last 1x1 conv: the CPU-demo version of the same structure (32x32 input -> 2x2)."""
    net = tv_mobilenet.MobileNetV2(width_mult=TINY_MOBILENET["width_mult"],
                                   inverted_residual_setting=TINY_MOBILENET_SETTING)
    width = TINY_MOBILENET["last_channel"]
    last = Conv2dNormActivation(net.features[-1][0].in_channels, width, kernel_size=1, activation_layer=nn.ReLU6)
    init_like_torchvision(last)
    net.features[-1] = last
    net.classifier = nn.Sequential(nn.Dropout(0.2), classifier(width, 1000))
    net.last_channel = width
    return net


def _load(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_checked, ignoring the classifier of either family (ResNet 'fc.', MobileNetV2 'classifier.')."""
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    state.update({k: v for k, v in own.items() if k.startswith("classifier.")})
    load_checked(net, state, source, "sth")


def _is_sth_state(state: dict[str, torch.Tensor]) -> bool:
    return any(".temporal." in k for k in state)


def backbone_2d(arch: str, scale: str, pretrained: str | Path) -> nn.Module:
    """The 2D network STH is derived from, with 2D weights loaded ('none', 'imagenet' or a file)."""
    if arch in ("resnet50", "resnet101"):
        return resnet2d(arch, pretrained, "sth")
    if arch == "tiny" or (arch == "mobilenet_v2" and scale == "tiny"):
        net = tiny_bottleneck_resnet() if arch == "tiny" else tiny_mobilenet_v2()
        if pretrained == "imagenet":
            raise ConfigError(f"architectures.sth.pretrained = 'imagenet': torchvision has no weights for the tiny "
                              f"{arch} backbone; use none or a state-dict file")
    elif arch == "mobilenet_v2":
        net = tv_mobilenet.mobilenet_v2(weights=None)
        if pretrained == "imagenet":
            weights = tv_mobilenet.MobileNet_V2_Weights.IMAGENET1K_V1
            _load(net, download_state_dict(weights, "sth"), repr(weights))
    else:
        raise ConfigError(f"architectures.sth.backbone = {arch!r}: use one of {', '.join(BACKBONES)} "
                          "(BasicBlock ResNets have no bottleneck to split into channel groups)")
    if isinstance(pretrained, Path):
        _load(net, read_state_file(pretrained, "sth"), str(pretrained))
    return net


def sth_backbone(arch: str, scale: str, pretrained: str | Path, segments: int, groups: int,
                 temporal_groups: int) -> nn.Module:
    """The STH network for `arch`: 2D weights converted, STH weights (a file with temporal taps)
    loaded as they are, or fresh STH init for 'none'."""
    state = read_state_file(pretrained, "sth") if isinstance(pretrained, Path) else None
    sth_state = state if state is not None and _is_sth_state(state) else None
    weights_2d = "none" if sth_state is not None else pretrained
    net = backbone_2d(arch, scale, weights_2d)
    try:
        convert_backbone(net, segments, groups, temporal_groups, copy_weights=weights_2d != "none")
    except ValueError as err:
        raise ConfigError(f"architectures.sth.groups = {groups} does not fit the {arch} backbone: {err}") from err
    if sth_state is not None:
        _load(net, sth_state, str(pretrained))
    return net


def stem_convs(net: nn.Module) -> list[nn.Conv2d]:
    """The RGB input conv(s) of a converted ResNet or MobileNetV2 backbone."""
    if isinstance(net, tv_resnet.ResNet):
        return [net.conv1]
    stem = net.features[0]
    return list(stem.conv) if isinstance(stem, GroupedStem) else [stem[0]]


def strip_head(net: nn.Module) -> int:
    """Replace the backbone's classifier by the identity; return the feature width."""
    if isinstance(net, tv_resnet.ResNet):
        return strip_classifier(net)
    width = net.classifier[-1].in_features
    net.classifier = nn.Identity()
    return width


# ---------------------------------------------------------------- the model

class STH(VideoModel):
    """STH backbone on frames folded into the batch + dropout + FC + average consensus over T."""

    temporal = True

    def __init__(self, backbone: nn.Module, num_classes: int, input_spec: InputSpec, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(strip_head(backbone), num_classes)
        self.input_spec = input_spec

    def frame_logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """Per-segment logits (B*T, K); the STH layers mix the T frames of each clip."""
        return self.fc(self.dropout(self.backbone(fold_frames(rgb))))

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        if flow is not None:
            raise ValueError("sth is an RGB model and takes no flow input")
        rgb = check_rgb(rgb, "sth", frames=self.input_spec.frames)
        return average_consensus(self.frame_logits(rgb), rgb.shape[1])

    def prune_ignored_layers(self) -> list[nn.Module]:
        return [self.fc, *stem_convs(self.backbone)]


def temporal_groups_for(groups: int, rho) -> int:
    """m = rho * G, checked to be a whole number of groups in [1, G-1] (rho None: 1/G)."""
    if rho is None:
        return 1
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise ConfigError(f"architectures.sth.rho = {rho!r}; use a number such as {1 / groups:g} (1/groups)")
    m = round(rho * groups)
    if abs(rho * groups - m) > 1e-6 or not 1 <= m <= groups - 1:
        raise ConfigError(
            f"architectures.sth.rho = {rho!r} with groups = {groups}: rho must be a multiple of 1/groups between "
            f"{1 / groups:g} and {(groups - 1) / groups:g} (the temporal window is a whole number of channel groups)"
        )
    return m


@register("sth", info=STH_INFO)
def build_sth(scale: str, num_classes: int, *, pretrained: str = "none", backbone: str | None = None,
              segments: int = 8, size: int | None = None, dropout: float = 0.5, groups: int = 4,
              rho: float | None = None) -> STH:
    """STH on a bottleneck ResNet (default resnet50 / tiny) or MobileNetV2; options in docs/models.md ("STH")."""
    cfg = PAPER if scale == "paper" else TINY
    groups = check_posint("sth", "groups", groups)
    if groups < 2:
        raise ConfigError(f"architectures.sth.groups = {groups}; use at least 2 (STH uses 4)")
    m = temporal_groups_for(groups, rho)
    spec = InputSpec(rgb=True, sampling="segments", segments=check_posint("sth", "segments", segments),
                     size=check_posint("sth", "size", size or cfg["size"]))
    arch = backbone or cfg["backbone"]
    if arch not in BACKBONES:
        raise ConfigError(f"architectures.sth.backbone = {arch!r}: use one of {', '.join(BACKBONES)} "
                          "(BasicBlock ResNets have no bottleneck to split into channel groups)")
    weights = resolve_pretrained("sth", pretrained, ("imagenet",))
    net = sth_backbone(arch, scale, weights, spec.segments, groups, m)
    return STH(net, num_classes, spec, check_dropout("sth", dropout))
