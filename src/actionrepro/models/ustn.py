"""USTN: Unified SpatioTemporal Network (ISCAS 2025), reconstructed [recon] on the Temporal
Difference Network design because only the paper's abstract is public.

T segments x 5 frames: a 2D ResNet on the centre frames, an RGB-difference branch fused after the
stem and res2, and a long-range difference module + learnable shift in every block of res3-res5;
kept traceable for structural pruning (time moves through the batch axis, channels never sliced).
Options and anchors: docs/models.md ("USTN").
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import resnet2d, resolve_pretrained, strip_classifier
from actionrepro.models.layers import adapt_stem, average_consensus, check_dropout, check_posint, check_rgb, classifier
from actionrepro.models.registry import ModelInfo, Published, VideoModel, register

WINDOW = 5                 # consecutive frames per segment
CENTRE = WINDOW // 2       # index of the main stream's frame inside a window
DIFF_CHANNELS = 3 * (WINDOW - 1)
PAPER = {"backbone": "resnet50", "size": 224}
TINY = {"backbone": "tiny", "size": 32}

USTN_INFO = ModelInfo(
    name="ustn",
    title="USTN-R50",
    reference="USTN (Unified SpatioTemporal Network with structural pruning), ISCAS 2025, abstract only; "
              "structure reconstructed after Wang et al., TDN: Temporal Difference Networks for Efficient "
              "Action Recognition, CVPR 2021",
    tag="recon",
    protocol="T=8 segments x 5 consecutive RGB frames, 224x224; ResNet-50 on the centre frame, 12-channel "
             "RGB-difference branch fused after the stem and res2, long-range difference module and learnable "
             "shift in every block of res3-res5, dropout 0.5, FC, average consensus",
    published=(
        Published("ucf101", 97.4, "recalled",
                  "TDN-R50 (the design this reconstruction follows, not USTN itself), Kinetics-400 init; "
                  "split protocol and test views not recorded here",
                  "Wang et al., TDN, CVPR 2021, results table (recalled: not in the abstract nor in MCG-NJU/TDN "
                  "README.md @ eaf2970a88b1, which lists Kinetics and Something-Something models only)",
                  init="kinetics400", backbone="ResNet-50", splits=None, views=None),
        Published("kinetics400", 76.6, "code",
                  "TDN-R50 (not USTN), 8 frames, ImageNet init (the code's default pretrain), Kinetics-400 val, "
                  "10 clips x 3 crops",
                  "MCG-NJU/TDN README.md @ eaf2970a88b1 (Kinetics400 model zoo row TDN-ResNet50 8x3x10)",
                  init="imagenet", backbone="ResNet-50", splits=None, views="10x3"),
    ),
    notes="USTN's paper publishes no code and no numbers here; the listed numbers are TDN-R50's.",
    backbone="ResNet-50",
)


# ---------------------------------------------------------------- moving along time

def _inside(segments: int, step: int, ndim: int, like: torch.Tensor) -> torch.Tensor:
    """(1, T, 1, ...) mask: 1 where frame t + step exists in the clip, 0 past its ends."""
    t = torch.arange(segments, device=like.device)
    valid = (t + step >= 0) & (t + step < segments)
    return valid.to(like.dtype).view((1, segments) + (1,) * (ndim - 1))


def neighbour(x: torch.Tensor, segments: int, step: int) -> torch.Tensor:
    """(B*T, C, ...) -> frame t + step of the same clip at position t, zeros past the clip's ends.

    Only the batch dimension is reshaped (to B, T) and the roll runs along T, so the channel
    dimension stays dim 1 throughout and torch-pruning sees element-wise ops."""
    clips = x.reshape((-1, segments) + x.shape[1:])
    moved = torch.roll(clips, -step, dims=1) * _inside(segments, step, x.ndim, x)
    return moved.reshape(x.shape)


def neighbour_difference(g: torch.Tensor, r: torch.Tensor, segments: int, step: int) -> torch.Tensor:
    """g[t + step] - r[t] within each clip of (B*T, C, ...) tensors; zero where t + step is outside."""
    gc = g.reshape((-1, segments) + g.shape[1:])
    rc = r.reshape((-1, segments) + r.shape[1:])
    diff = (torch.roll(gc, -step, dims=1) - rc) * _inside(segments, step, g.ndim, g)
    return diff.reshape(r.shape)


class LearnableShift(nn.Module):
    """A depthwise 1D conv of kernel 3 over the T segments, (B*T, C, H, W) -> same shape:
    out[t] = w_prev * x[t-1] + w_keep * x[t] + w_next * x[t+1] per channel, zero padding at the
    clip's ends. Initialised as TSM's shift: channels [0, C/d) take the next frame, [C/d, 2C/d) the
    previous one, the rest stay. Each tap is a depthwise 1x1 Conv2d, a layer torch-pruning knows:
    pruning a channel removes that channel from all three taps."""

    def __init__(self, channels: int, segments: int, fold_div: int = 8):
        super().__init__()
        if channels < 1 or segments < 1 or fold_div < 2:
            raise ValueError(f"LearnableShift needs channels, segments >= 1 and fold_div >= 2, got "
                             f"{channels}, {segments}, {fold_div}")
        self.segments = segments
        self.prev, self.keep, self.next = (
            nn.Conv2d(channels, channels, kernel_size=1, groups=channels, bias=False) for _ in range(3))
        fold = channels // fold_div
        chan = torch.arange(channels, dtype=torch.float32)
        with torch.no_grad():
            self.prev.weight.copy_(((chan >= fold) & (chan < 2 * fold)).float().view(-1, 1, 1, 1))
            self.keep.weight.copy_((chan >= 2 * fold).float().view(-1, 1, 1, 1))
            self.next.weight.copy_((chan < fold).float().view(-1, 1, 1, 1))

    def extra_repr(self) -> str:
        return f"segments={self.segments}"

    def kernel(self) -> torch.Tensor:
        """(C, 3) taps for t-1, t, t+1: the weight of the equivalent Conv1d(C, C, 3, groups=C)."""
        return torch.cat([self.prev.weight, self.keep.weight, self.next.weight], dim=1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.segments
        return self.keep(x) + self.prev(neighbour(x, t, -1)) + self.next(neighbour(x, t, 1))


def _conv3x3(channels: int, norm: bool) -> nn.Module:
    conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(channels)) if norm else conv


class LongRangeDifference(nn.Module):
    """Bidirectional feature-difference attention over the T segments, (B*T, C, H, W) -> same shape.

    R = BN(1x1 C->C/r), G = depthwise 3x3(R); forward difference G[t+1] - R[t], backward G[t-1] -
    R[t] (zero at the clip's ends); each goes through the same multi-scale mix (mean of itself, a
    3x3 conv of it and a 3x3 conv of its 2x average-pooled copy upsampled to full size), the same
    1x1 C/r->C + BN, then sigmoid - 0.5; out = F + F * (A_fwd + A_bwd) / 2."""

    def __init__(self, channels: int, segments: int, reduction: int = 16, mix_norm: bool = False):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.segments = segments
        self.reduce = nn.Conv2d(channels, reduced, kernel_size=1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(reduced)
        self.smooth = nn.Conv2d(reduced, reduced, kernel_size=3, padding=1, groups=reduced, bias=False)
        self.mix_fine = _conv3x3(reduced, mix_norm)
        self.mix_coarse = _conv3x3(reduced, mix_norm)
        self.expand = nn.Conv2d(reduced, channels, kernel_size=1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)

    def differences(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward feature differences (B*T, C/r, H, W)."""
        r = self.reduce_bn(self.reduce(x))
        g = self.smooth(r)
        return (neighbour_difference(g, r, self.segments, 1), neighbour_difference(g, r, self.segments, -1))

    def attention(self, diff: torch.Tensor) -> torch.Tensor:
        """sigmoid(BN(1x1(multi-scale mix of `diff`))) - 0.5, (B*T, C, H, W)."""
        coarse = self.mix_coarse(F.avg_pool2d(diff, kernel_size=2, stride=2))
        coarse = F.interpolate(coarse, size=diff.shape[-2:], mode="nearest")
        mixed = (diff + self.mix_fine(diff) + coarse) / 3.0
        return torch.sigmoid(self.expand_bn(self.expand(mixed))) - 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward, backward = self.differences(x)
        return x + x * (0.5 * self.attention(forward) + 0.5 * self.attention(backward))


def insert_long_range(backbone: nn.Module, segments: int, reduction: int, shift_div: int,
                      mix_norm: bool) -> list[nn.Sequential]:
    """Wrap conv2 of every block of layer2..layer4 as Sequential(ldm, shift, conv): the modules act on
    the first conv's output after its BN and ReLU, on the residual branch only."""
    wrapped = []
    for stage in (backbone.layer2, backbone.layer3, backbone.layer4):
        for block in stage:
            channels = block.conv1.out_channels
            block.conv2 = nn.Sequential(OrderedDict(
                ldm=LongRangeDifference(channels, segments, reduction, mix_norm),
                shift=LearnableShift(channels, segments, shift_div),
                conv=block.conv2,
            ))
            wrapped.append(block.conv2)
    return wrapped


# ---------------------------------------------------------------- the network

def split_windows(rgb: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T*5, 3, H, W) segment-major -> centre frames (B*T, 3, H, W) and the 4 successive RGB
    differences of each window stacked as (B*T, 12, H, W): [f1-f0, f2-f1, f3-f2, f4-f3], RGB each."""
    b, _, c, h, w = rgb.shape
    windows = rgb.reshape(b * segments, WINDOW, c, h, w)
    return windows[:, CENTRE], windows.diff(dim=1).flatten(1, 2)


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class USTN(VideoModel):
    """Main 2D ResNet on centre frames + short-range difference branch + long-range modules."""

    temporal = True

    def __init__(self, backbone: nn.Module, num_classes: int, input_spec: InputSpec, dropout: float,
                 alpha: float, beta: float, reduction: int, shift_div: int, mix_norm: bool):
        super().__init__()
        self.input_spec = input_spec
        self.segments = input_spec.segments
        self.alpha, self.beta = float(alpha), float(beta)
        self.backbone = backbone
        self.diff_pool = nn.AvgPool2d(kernel_size=2, stride=2)
        width = backbone.conv1.out_channels
        self.diff_stem = nn.Sequential(OrderedDict(
            conv=adapt_stem(backbone.conv1, DIFF_CHANNELS),
            bn=nn.BatchNorm2d(width),
            relu=nn.ReLU(inplace=True),
            maxpool=copy.deepcopy(backbone.maxpool),
        ))
        self.diff_res2 = copy.deepcopy(backbone.layer1)
        insert_long_range(backbone, self.segments, reduction, shift_div, mix_norm)
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(strip_classifier(backbone), num_classes)

    def extra_repr(self) -> str:
        return f"segments={self.segments}, alpha={self.alpha}, beta={self.beta}"

    def short_range(self, differences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Difference-branch features fused after the stem and after res2 (before upsampling)."""
        stem = self.diff_stem(self.diff_pool(differences))
        return stem, self.diff_res2(stem)

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        """Per-segment pooled features (B*T, D)."""
        centre, differences = split_windows(rgb, self.segments)
        diff_stem, diff_res2 = self.short_range(differences)
        net = self.backbone
        x = net.maxpool(net.relu(net.bn1(net.conv1(centre))))
        x = self.alpha * x + self.beta * _upsample_to(diff_stem, x)
        x = net.layer1(x)
        x = self.alpha * x + self.beta * _upsample_to(diff_res2, x)
        x = net.layer4(net.layer3(net.layer2(x)))
        return torch.flatten(net.avgpool(x), 1)

    def segment_logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """Per-segment logits (B*T, K)."""
        return self.fc(self.dropout(self.features(rgb)))

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        if flow is not None:
            raise ValueError("ustn is an RGB model and takes no flow input")
        rgb = check_rgb(rgb, "ustn", frames=self.input_spec.frames)
        return average_consensus(self.segment_logits(rgb), self.segments)

    def prune_ignored_layers(self) -> list[nn.Module]:
        """Classifier (keeps num_classes), RGB stem and 12-channel difference stem (fixed inputs)."""
        return [self.fc, self.backbone.conv1, self.diff_stem.conv]


def _check_weight(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"architectures.ustn.{key} = {value!r}; use a fusion weight in [0, 1] "
                          "(TDN: 0.5/0.5 for 8 segments, 0.75/0.25 otherwise)")
    return float(value)


def _feature_stride(net: nn.Module) -> int:
    """Input pixels per res5 pixel: stem stride x max-pool stride x the three stride-2 stages."""
    pool = net.maxpool.stride if isinstance(net.maxpool.stride, int) else net.maxpool.stride[0]
    return net.conv1.stride[0] * pool * 8


@register("ustn", info=USTN_INFO)
def build_ustn(scale: str, num_classes: int, *, pretrained: str = "none", backbone: str | None = None,
               segments: int = 8, size: int | None = None, dropout: float = 0.5, alpha: float | None = None,
               beta: float | None = None, reduction: int = 16, shift_div: int = 8, mix_norm: bool = False) -> USTN:
    """USTN at `scale`; options in docs/models.md ("USTN")."""
    defaults = PAPER if scale == "paper" else TINY
    segments = check_posint("ustn", "segments", segments)
    size = check_posint("ustn", "size", size or defaults["size"])
    reduction = check_posint("ustn", "reduction", reduction)
    if isinstance(shift_div, bool) or not isinstance(shift_div, int) or shift_div < 2:
        raise ConfigError(f"architectures.ustn.shift_div = {shift_div!r}; use an integer >= 2 (TDN/TSM use 8)")
    if not isinstance(mix_norm, bool):
        raise ConfigError(f"architectures.ustn.mix_norm = {mix_norm!r}; use true or false")
    alpha = _check_weight("alpha", (0.5 if segments == 8 else 0.75) if alpha is None else alpha)
    beta = _check_weight("beta", (0.5 if segments == 8 else 0.25) if beta is None else beta)
    arch = backbone or defaults["backbone"]
    net = resnet2d(arch, resolve_pretrained("ustn", pretrained, ("imagenet",)), "ustn")
    stride = _feature_stride(net)
    if size < 2 * stride:
        raise ConfigError(f"architectures.ustn.size = {size}: the {arch} backbone reduces it {stride}x and the "
                          f"long-range module's 2x pooling needs res5 maps of at least 2x2; use size >= {2 * stride}")
    spec = InputSpec(rgb=True, sampling="segments", segments=segments, frames_per_segment=WINDOW, size=size)
    return USTN(net, num_classes, spec, check_dropout("ustn", dropout), alpha, beta, reduction, shift_div, mix_norm)
