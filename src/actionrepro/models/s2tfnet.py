"""S2TF-Net: salient spatio-temporal features on a 3D ResNet [code], structure read from the
authors' released code (github.com/xiaoxiAries/S2TFNet).

A non-local I3D-R50 whose res2-res4 outputs give SSF saliency volumes, pooled through two TSFP
modules into a time-as-channels mask that multiplies the res5 features before the classifier.
Shapes are computed at build time on a meta-device copy.
Options and anchors: docs/models.md ("S2TF-Net").
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import (TINY_WIDTHS_3D, init_like_torchvision, load_checked, read_state_file,
                                          resolve_pretrained, strip_classifier, tiny_resnet, video_resnet)
from actionrepro.models.i3d import i3d_backbone, inflate_resnet
from actionrepro.models.layers import check_dropout, check_posint, check_rgb, classifier, to_clip
from actionrepro.models.registry import ModelInfo, Published, VideoModel, register

NAME = "s2tfnet"
BACKBONES = ("i3d_r50_nl", "r3d_18")
LOSSES = ("ce", "ce_l1", "ce_l1_mse")
# Input protocol per (scale, backbone): clip_len, stride, size.
INPUTS = {
    ("paper", "i3d_r50_nl"): (8, 8, 224),
    ("paper", "r3d_18"): (16, 1, 112),
    ("tiny", "i3d_r50_nl"): (8, 2, 32),
    ("tiny", "r3d_18"): (8, 2, 32),
}
# Non-local blocks after these (0-based) blocks of res2..res5 (released code: res3 1,3; res4 1,3,5).
NONLOCAL_AFTER = {"paper": ((), (1, 3), (1, 3, 5), ()), "tiny": ((), (0,), (0,), ())}
# TSFP conv stack: kernel sizes and output widths (the last conv maps to the 1-channel mask).
TSFP_KERNELS = (9, 7, 3, 1, 5, 3, 1)
TSFP_WIDTHS = {"paper": (16, 32, 64, 32, 16, 4), "tiny": (4, 4, 8, 4, 4, 4)}
STRIDED_TSFP_CONV = 5  # the 1x3x3 conv that carries the pooling stride

S2TF_INFO = ModelInfo(
    name=NAME,
    title="S2TF-Net (non-local I3D-R50)",
    reference="Liu et al., S2TF-Net, Signal Processing: Image Communication 138 (2025); structure from the "
              "authors' code github.com/xiaoxiAries/S2TFNet (an earlier version of its README named the method "
              "SaliNet, Knowledge-Based Systems 2022)",
    tag="code",
    protocol="8 frames at stride 8, 224x224; non-local I3D-R50; SSF on res2-res4, two TSFP modules, "
             "time-as-channels mask on res5, dropout 0.5, FC; test 10 clips x 3 crops",
    published=(
        Published("kinetics400", 74.8, "abstract",
                  "non-local I3D-R50 backbone, 8x8; test 10 clips x 3 crops as in the released Kinetics config "
                  "(xiaoxiAries/S2TFNet models/Nonlocal_I3D_R50.yaml @ 57139c27916d); init not stated",
                  "Liu et al., S2TF-Net, Signal Processing: Image Communication 138 (2025) 117381, doi:10.1016/j.image.2025.117381, abstract",
                  init=None, backbone="non-local I3D ResNet-50", splits=None, views="10x3"),
        Published("ucf101", 95.1, "abstract",
                  "non-local I3D-R50 backbone, Kinetics-400 init (our reading; the abstract does not say); "
                  "split protocol and test views not stated",
                  "Liu et al., S2TF-Net, Signal Processing: Image Communication 138 (2025) 117381, doi:10.1016/j.image.2025.117381, abstract",
                  init="kinetics400", backbone="non-local I3D ResNet-50", splits=None, views=None),
        Published("hmdb51", 80.9, "abstract",
                  "non-local I3D-R50 backbone, Kinetics-400 init (our reading; the abstract does not say); "
                  "split protocol and test views not stated",
                  "Liu et al., S2TF-Net, Signal Processing: Image Communication 138 (2025) 117381, doi:10.1016/j.image.2025.117381, abstract",
                  init="kinetics400", backbone="non-local I3D ResNet-50", splits=None, views=None),
    ),
    notes="Which loss variant (CE, CE + L1 on the mask, CE + L1 + TSFP MSE terms) gave the published numbers "
          "is unknown; the released config trains with plain CE, our default. The gains quoted (+4.1 / +3.0 / "
          "+4.6 over the plain backbone) put the backbone at 70.7 / 92.1 / 76.3. The r3d_18 backbone and the "
          "tiny configuration are our reconstruction.",
    backbone="non-local I3D ResNet-50",
)


# ---------------------------------------------------------------- building blocks

class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018) in the released code's form:
    theta/phi/g 1x1x1 convs to C/2, phi and g on a 1x2x2 max-pooled input, softmax attention
    scaled by (C/2)^-1/2, 1x1x1 projection back to C, BN (gamma = 0 at init: starts as identity),
    residual. The attention is torch's scaled_dot_product_attention over the flattened positions;
    the scale is fixed at construction so a pruned block keeps the trained temperature."""

    def __init__(self, channels: int, pool: bool = True):
        super().__init__()
        inner = channels // 2
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.pool = nn.MaxPool3d((1, 2, 2), (1, 2, 2)) if pool else nn.Identity()
        self.out = nn.Conv3d(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels)
        self.scale = inner ** -0.5
        init_like_torchvision(self)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.theta(x).flatten(2).transpose(1, 2)          # (N, THW, C/2)
        pooled = self.pool(x)
        key = self.phi(pooled).flatten(2).transpose(1, 2)         # (N, THW', C/2)
        value = self.g(pooled).flatten(2).transpose(1, 2)
        y = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        y = y.transpose(1, 2).unflatten(2, x.shape[2:])           # (N, C/2, T, H, W)
        return x + self.bn(self.out(y))


def _ssf_body(channels: int) -> nn.Sequential:
    half = channels // 2
    return nn.Sequential(
        nn.Conv3d(channels, half, 1, bias=False), nn.ReLU(inplace=True),
        nn.Conv3d(half, half, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.ReLU(inplace=True),
        nn.Conv3d(half, half, (3, 1, 1), padding=(1, 0, 0), bias=False), nn.ReLU(inplace=True),
        nn.Conv3d(half, channels, 1, bias=False),
    )


class SSF(nn.Module):
    """Salient semantic features of one scale: two residual (C -> C/2 -> C, factorised 1x3x3 + 3x1x1)
    sub-blocks without BN, then a 1x1x1 C -> 1 head with ReLU (the shared BN and sigmoid follow)."""

    def __init__(self, channels: int):
        super().__init__()
        self.blocks = nn.ModuleList([_ssf_body(channels), _ssf_body(channels)])
        self.head = nn.Conv3d(channels, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for body in self.blocks:
            x = F.relu(x + body(x))
        return F.relu(self.head(x))


class TSFP(nn.Module):
    """Two-branch salient feature preserving pooling of a one-channel volume P: average pooling by
    (time_stride, 2, 2), and a conv stack whose strided 1x3x3 conv matches that pooling, ending in a
    sigmoid mask M. Returns (Pool(P) * M, M)."""

    def __init__(self, time_stride: int, widths: tuple[int, ...]):
        super().__init__()
        stride = (time_stride, 2, 2)
        self.time_stride = time_stride
        self.pool = nn.AvgPool3d(stride, stride)
        channels = (1, *widths, 1)
        layers: list[nn.Module] = []
        for i, k in enumerate(TSFP_KERNELS):
            layers.append(nn.Conv3d(channels[i], channels[i + 1], (1, k, k), padding=(0, k // 2, k // 2),
                                    stride=stride if i == STRIDED_TSFP_CONV else 1, bias=False))
            layers.append(nn.ReLU(inplace=True) if i < len(TSFP_KERNELS) - 1 else nn.Sigmoid())
        self.mask = nn.Sequential(*layers)

    def forward(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mask(p)
        return self.pool(p) * m, m


class MaskFusion(nn.Module):
    """The final spatial mask: the T' frames of a one-channel volume (B, 1, T', h, w) read as
    channels, 1x1 conv T' -> T'/2, ReLU, 1x1 conv -> 1; returns (B, 1, 1, h, w), no sigmoid."""

    def __init__(self, frames: int):
        super().__init__()
        inner = max(1, frames // 2)
        self.reduce = nn.Conv2d(frames, inner, 1, bias=False)
        self.expand = nn.Conv2d(inner, 1, 1, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.expand(F.relu(self.reduce(v.flatten(1, 2)))).unsqueeze(2)


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two (B, C, T, H, W) volumes -> (B, C, 2T, H, W) in the order a0, b0, a1, b1, ... (time only)."""
    if a.shape != b.shape:
        raise ValueError(f"s2tfnet: cannot interleave saliency volumes of shapes {tuple(a.shape)} and {tuple(b.shape)}; "
                         "the input clip does not have the size the model was built for")
    return torch.stack((a, b), dim=3).flatten(2, 3)


# ---------------------------------------------------------------- backbones

def _inflated_tiny(pretrained: str | Path) -> tv_resnet.ResNet:
    """The tiny I3D: torchvision's ResNet class at TINY_WIDTHS_3D, inflated (3-frame kernels); a file
    may hold the 2D tiny ResNet (inflated on load) or its inflation."""
    state = read_state_file(pretrained, NAME) if isinstance(pretrained, Path) else None
    is_3d = state is not None and state.get("conv1.weight", torch.empty(0)).ndim == 5
    net2d = tiny_resnet(TINY_WIDTHS_3D)
    if state is not None and not is_3d:
        load_checked(net2d, state, str(pretrained), NAME)
    net = inflate_resnet(net2d, stem_t=3, inflate=None, inplace=True)
    if state is None:
        init_like_torchvision(net)  # own 3D kernels from scratch, as i3d_backbone does
    elif is_3d:
        load_checked(net, state, str(pretrained), NAME)
    return net


def insert_nonlocal(net: nn.Module, after: tuple[tuple[int, ...], ...], pool: bool) -> list[NonLocal]:
    """Rebuild layer1..layer4 with a NonLocal block after the listed blocks (module names of the
    following blocks shift by the inserted blocks)."""
    added = []
    for i, indices in enumerate(after):
        stage = getattr(net, f"layer{i + 1}")
        blocks = list(stage)
        residual = [b for b in blocks if not isinstance(b, nn.MaxPool3d)]
        if any(j >= len(residual) for j in indices):
            raise ValueError(f"layer{i + 1} has {len(residual)} blocks; cannot place non-local blocks after {indices}")
        layers: list[nn.Module] = []
        for j, block in enumerate(blocks):
            layers.append(block)
            if j in indices and not isinstance(block, nn.MaxPool3d):
                last = block.conv3 if hasattr(block, "conv3") else block.conv2  # Bottleneck / BasicBlock
                nl = NonLocal(last.out_channels, pool)
                layers.append(nl)
                added.append(nl)
        setattr(net, f"layer{i + 1}", nn.Sequential(*layers))
    return added


def build_backbone(kind: str, scale: str, pretrained: str | Path, nonlocal_pool: bool) -> nn.Module:
    """The 3D ResNet under the saliency branch, classifier stripped later by the model."""
    if kind == "r3d_18":
        return video_resnet("r3d_18", scale, pretrained, NAME)
    if scale == "paper":
        net = i3d_backbone("paper", pretrained, NAME)
    else:
        if pretrained not in ("none",) and not isinstance(pretrained, Path):
            raise ConfigError(f"architectures.{NAME}.pretrained = {pretrained!r}: torchvision has no weights for the "
                              "tiny backbone; use none or a state-dict file")
        net = _inflated_tiny(pretrained)
    insert_nonlocal(net, NONLOCAL_AFTER[scale], nonlocal_pool)
    return net


def run_stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stem of a torchvision VideoResNet (`stem`) or of an inflated ResNet (conv1..maxpool)."""
    if hasattr(net, "stem"):
        return net.stem(x)
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def stages(net: nn.Module) -> list[nn.Module]:
    return [net.layer1, net.layer2, net.layer3, net.layer4]


def stage_shapes(net: nn.Module, clip_len: int, size: int) -> list[tuple[int, int, int, int]]:
    """(C, T, H, W) after res2 (incl. its pool), res3, res4, res5 for one clip, computed on a meta copy."""
    probe = copy.deepcopy(net).to("meta")
    x = run_stem(probe, torch.empty(1, 3, clip_len, size, size, device="meta"))
    shapes = []
    for stage in stages(probe):
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def pooling_plan(shapes: list[tuple[int, int, int, int]], clip_len: int, size: int) -> tuple[int, int, int]:
    """Temporal strides of TSFP1 and TSFP2 and the frames T' the mask fusion reads, checking that every
    saliency volume meets the next scale (the released code assumes 8 frames at 224)."""
    (_, t1, h1, w1), (_, t2, h2, w2), (_, t3, h3, w3), (_, _, h4, w4) = shapes
    hint = (f"architectures.{NAME}: clip_len={clip_len}, size={size} give stage maps (T, H, W) "
            f"{[s[1:] for s in shapes]}; ")
    if (h1, w1) != (2 * h2, 2 * w2) or (h2, w2) != (2 * h3, 2 * w3) or (h3 // 2, w3 // 2) != (h4, w4):
        multiple = round(size / max(h1, 1)) * 8  # the stride of res4, times 2 for res5's map
        raise ConfigError(hint + f"each saliency map must be twice the next one; use a size that is a multiple "
                                 f"of {multiple} for this backbone")
    if t1 % t2 or (2 * t2) % t3 or t3 < 1:
        raise ConfigError(hint + "the frames of each scale must divide the previous ones; use a clip_len that is a "
                                 "multiple of 8 (the released code uses 8)")
    return t1 // t2, 2 * t2 // t3, t3


# ---------------------------------------------------------------- the model

class S2TFNet(VideoModel):
    """3D ResNet + SSF saliency on res2-res4 + TSFP pooling pyramid + time-as-channels mask on res5."""

    def __init__(self, backbone: nn.Module, kind: str, scale: str, num_classes: int, input_spec: InputSpec,
                 dropout: float, loss: str, lam: float, gamma: float, theta: float, positive_init: bool = True):
        super().__init__()
        self.input_spec = input_spec
        self.kind = kind
        shapes = stage_shapes(backbone, input_spec.clip_len, input_spec.size)
        t_stride1, t_stride2, frames = pooling_plan(shapes, input_spec.clip_len, input_spec.size)
        self.backbone = backbone
        width = strip_classifier(backbone)
        self.ssf = nn.ModuleList([SSF(c) for c, *_ in shapes[:3]])
        self.saliency_bn = nn.BatchNorm3d(1)  # one BN for all three scales, as released
        self.tsfp1 = TSFP(t_stride1, TSFP_WIDTHS[scale])
        self.tsfp2 = TSFP(t_stride2, TSFP_WIDTHS[scale])
        self.pool = nn.AvgPool3d(2, 2)
        self.fusion = MaskFusion(frames)
        init_like_torchvision(nn.ModuleList([self.ssf, self.saliency_bn, self.tsfp1, self.tsfp2, self.fusion]))
        if positive_init:
            with torch.no_grad():
                for conv in (*[s.head for s in self.ssf], self.fusion.reduce, self.fusion.expand):
                    conv.weight.abs_()
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(width, num_classes)
        self.loss, self.lam, self.gamma, self.theta = loss, lam, gamma, theta
        self._aux: torch.Tensor | None = None

    def __getstate__(self):
        # The last auxiliary loss holds the autograd graph: never pickle or deep-copy it.
        return {**super().__getstate__(), "_aux": None}

    def saliency(self, scale: int, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.saliency_bn(self.ssf[scale](features)))

    def forward_maps(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate the method defines, for tests and visualisation: saliency volumes s1-s3,
        TSFP outputs p1, p2 and masks m1, m2, the final mask and the logits."""
        rgb = check_rgb(rgb, NAME, frames=self.input_spec.clip_len)
        layer1, layer2, layer3, layer4 = stages(self.backbone)
        f = layer1(run_stem(self.backbone, to_clip(rgb)))
        out = {"s1": self.saliency(0, f)}
        out["p1"], out["m1"] = self.tsfp1(out["s1"])
        f = layer2(f)
        out["s2"] = self.saliency(1, f)
        out["p2"], out["m2"] = self.tsfp2(interleave(out["p1"], out["s2"]))
        f = layer3(f)
        out["s3"] = self.saliency(2, f)
        out["mask"] = self.fusion(self.pool(interleave(out["p2"], out["s3"])))
        f = layer4(f) * out["mask"]
        out["logits"] = self.fc(self.dropout(self.backbone.avgpool(f).flatten(1)))
        return out

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        if flow is not None:
            raise ValueError(f"{NAME} is an RGB model and takes no flow input")
        maps = self.forward_maps(rgb)
        self._aux = self._mask_loss(maps)
        return maps["logits"]

    def _mask_loss(self, maps: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.loss == "ce":
            return None
        aux = self.lam * maps["mask"].abs().sum()
        if self.loss == "ce_l1_mse":
            aux = aux + self.gamma * F.mse_loss(maps["p1"], maps["m1"]) + self.theta * F.mse_loss(maps["p2"], maps["m2"])
        return aux

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The mask terms of the chosen loss variant from the last forward; None for plain CE."""
        return self._aux

    def prune_ignored_layers(self) -> list[nn.Module]:
        stem = self.backbone.stem if hasattr(self.backbone, "stem") else self.backbone.conv1
        heads = [s.head for s in self.ssf]
        return [self.fc, stem, *heads, self.tsfp1, self.tsfp2, self.fusion]


def _check_weight(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"architectures.{NAME}.{key} = {value!r}; use a non-negative number (the paper uses 1e-4)")
    return float(value)


@register(NAME, info=S2TF_INFO)
def build_s2tfnet(scale: str, num_classes: int, *, backbone: str = "i3d_r50_nl", pretrained: str = "none",
                  clip_len: int | None = None, stride: int | None = None, size: int | None = None,
                  dropout: float = 0.5, nonlocal_pool: bool = True, positive_init: bool = True, loss: str = "ce",
                  lam: float = 1e-4, gamma: float = 1e-4, theta: float = 1e-4) -> S2TFNet:
    """S2TF-Net at `scale`; options in docs/models.md ("S2TF-Net")."""
    if backbone not in BACKBONES:
        raise ConfigError(f"architectures.{NAME}.backbone = {backbone!r}; use one of {', '.join(BACKBONES)}")
    if loss not in LOSSES:
        raise ConfigError(f"architectures.{NAME}.loss = {loss!r}; use one of {', '.join(LOSSES)}")
    for key, value in (("nonlocal_pool", nonlocal_pool), ("positive_init", positive_init)):
        if not isinstance(value, bool):
            raise ConfigError(f"architectures.{NAME}.{key} = {value!r}; use true or false")
    default_len, default_stride, default_size = INPUTS[(scale, backbone)]
    spec = InputSpec(rgb=True, sampling="dense",
                     clip_len=check_posint(NAME, "clip_len", clip_len or default_len),
                     stride=check_posint(NAME, "stride", stride or default_stride),
                     size=check_posint(NAME, "size", size or default_size))
    allowed = ("imagenet",) if backbone == "i3d_r50_nl" else ("kinetics",)
    net = build_backbone(backbone, scale, resolve_pretrained(NAME, pretrained, allowed), nonlocal_pool)
    return S2TFNet(net, backbone, scale, num_classes, spec, check_dropout(NAME, dropout), loss,
                   _check_weight("lam", lam), _check_weight("gamma", gamma), _check_weight("theta", theta),
                   positive_init)
