"""STFN: Spatio-Temporal Fusion Networks (ACCV 2018, arXiv 1906.06822), reconstructed [recon].

Appearance (RGB) and motion (flow) backbones at T positions over the whole video, projected to D',
then Residual Inception blocks over time per stream with a fusion connection from motion into
appearance, and average+max temporal pooling. `features` / `forward_features` split the backbones
from the trainable head so that frozen-backbone features can be cached.
Options and anchors: docs/models.md ("STFN").
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import (load_pretrained, resnet2d, resolve_pretrained, rgb_and_flow_backbones,
                                          strip_classifier, tiny_resnet)
from actionrepro.models.layers import check_dropout, check_posint, classifier
from actionrepro.models.registry import ModelInfo, Published, VideoModel, register

PAPER = {"backbone": "resnet50", "size": 224, "segments": 25, "flow_len": 10, "width": 512}
TINY = {"backbone": "tiny", "size": 32, "segments": 8, "flow_len": 5, "width": 64}
TINY_BACKBONE_WIDTHS = (12, 24, 48, 96)
FUSIONS = ("multiplicative", "additive", "concat")

STFN_INFO = ModelInfo(
    name="stfn",
    title="STFN",
    reference="Spatio-Temporal Fusion Networks for Action Recognition, ACCV 2018 (arXiv 1906.06822)",
    tag="recon",
    protocol="T=25 positions over the whole video, each 1 RGB frame + 1 stack of 10 flow frames (20 channels), "
             "224x224; ResNet-50 appearance and motion backbones, D'=512, 2 Residual Inception blocks per "
             "stream, multiplicative fusion A + A*M before each appearance block, avg+max temporal pooling",
    published=(
        Published("ucf101", 94.1, "abstract",
                  "NOT STFN's own number: its nearest published relative (TS-LSTM / Temporal-Inception, "
                  "two-stream ResNet-101); init, split protocol and test views not stated in the abstract",
                  "Ma et al., TS-LSTM and Temporal-Inception, arXiv 1703.10667 (2017), abstract",
                  init=None, backbone="ResNet-101", splits=None, views=None),
        Published("hmdb51", 69.0, "abstract",
                  "NOT STFN's own number: its nearest published relative (TS-LSTM / Temporal-Inception, "
                  "two-stream ResNet-101); init, split protocol and test views not stated in the abstract",
                  "Ma et al., TS-LSTM and Temporal-Inception, arXiv 1703.10667 (2017), abstract",
                  init=None, backbone="ResNet-101", splits=None, views=None),
    ),
    notes="Only the abstract is public: block layout, widths, fusion placement and head are our "
          "reconstruction. The published numbers belong to a related model, not to this network.",
    modalities=("rgb", "flow"),
    backbone="ResNet-50",
)


# ---------------------------------------------------------------- temporal modules

class ResidualInception(nn.Module):
    """Inception over time on (B, D', T): four D'/4-wide branches (k1, k1->k3, k1->k5, maxpool3->k1),
    concatenated, BN, ReLU, plus the input. All stride 1 with same padding, so T is kept."""

    def __init__(self, width: int, branch_bn_relu: bool = False):
        super().__init__()
        if width % 4:
            raise ValueError(f"ResidualInception needs a width divisible by 4, got {width}")
        w = width // 4

        def reduce() -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv1d(width, w, 1, bias=False)]
            return layers + ([nn.BatchNorm1d(w), nn.ReLU(inplace=True)] if branch_bn_relu else [])

        self.branch1 = nn.Conv1d(width, w, 1, bias=False)
        self.branch3 = nn.Sequential(*reduce(), nn.Conv1d(w, w, 3, padding=1, bias=False))
        self.branch5 = nn.Sequential(*reduce(), nn.Conv1d(w, w, 5, padding=2, bias=False))
        self.branch_pool = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(width, w, 1, bias=False))
        self.bn = nn.BatchNorm1d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return x + self.relu(self.bn(torch.cat(branches, dim=1)))


class Fusion(nn.Module):
    """The fusion connection into the appearance stream: A + A*M, A + M, or a k=1 conv of [A, M]."""

    def __init__(self, mode: str, width: int):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"unknown fusion {mode!r}; use one of {', '.join(FUSIONS)}")
        self.mode = mode
        self.mix = nn.Conv1d(2 * width, width, 1) if mode == "concat" else None

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

    def forward(self, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.mode == "multiplicative":
            return a + a * m
        if self.mode == "additive":
            return a + m
        return self.mix(torch.cat([a, m], dim=1))


def projection(in_channels: int, width: int) -> nn.Sequential:
    """Backbone features to D' per position: Conv1d k=1, BN, ReLU."""
    return nn.Sequential(nn.Conv1d(in_channels, width, 1, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True))


# ---------------------------------------------------------------- the model

class STFN(VideoModel):
    """Appearance and motion backbones, temporal Residual Inception blocks with fusion, avg+max head."""

    temporal = True

    def __init__(self, rgb_backbone: nn.Module, flow_backbone: nn.Module, num_classes: int, input_spec: InputSpec, *,
                 width: int, blocks: int, fusion: str, branch_bn_relu: bool, dropout: float,
                 freeze_backbones: bool):
        super().__init__()
        self.input_spec = input_spec
        self.rgb_backbone = rgb_backbone
        self.flow_backbone = flow_backbone
        rgb_channels, flow_channels = strip_classifier(rgb_backbone), strip_classifier(flow_backbone)
        self.rgb_proj = projection(rgb_channels, width)
        self.flow_proj = projection(flow_channels, width)
        self.rgb_blocks = nn.ModuleList(ResidualInception(width, branch_bn_relu) for _ in range(blocks))
        self.flow_blocks = nn.ModuleList(ResidualInception(width, branch_bn_relu) for _ in range(blocks))
        self.fusions = nn.ModuleList(Fusion(fusion, width) for _ in range(blocks))
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(4 * width, num_classes)
        self.freeze_backbones = freeze_backbones
        if freeze_backbones:
            for backbone in self.backbones():
                backbone.requires_grad_(False)
                backbone.eval()

    def backbones(self) -> tuple[nn.Module, nn.Module]:
        return self.rgb_backbone, self.flow_backbone

    def train(self, mode: bool = True) -> "STFN":
        """As nn.Module.train, except that frozen backbones stay in eval mode (fixed batch-norm)."""
        super().train(mode)
        if self.freeze_backbones:
            for backbone in self.backbones():
                backbone.eval()
        return self

    # ------------------------------------------------------------ inputs

    def _check_inputs(self, rgb: torch.Tensor | None, flow: torch.Tensor | None) -> None:
        spec = self.input_spec
        if rgb is None or flow is None:
            raise ValueError("stfn needs rgb=(B, T, 3, H, W) and flow=(B, T, 2L, H, W); "
                             f"got rgb={'none' if rgb is None else tuple(rgb.shape)}, "
                             f"flow={'none' if flow is None else tuple(flow.shape)}")
        if rgb.ndim != 5 or rgb.shape[1] != spec.frames or rgb.shape[2] != 3:
            raise ValueError(f"stfn was built for rgb of shape (B, {spec.frames}, 3, H, W) (segments={spec.segments}), "
                             f"got {tuple(rgb.shape)}; build it with the matching segments option")
        channels = 2 * spec.flow_len
        if flow.ndim != 5 or flow.shape[1] != spec.flow_segments or flow.shape[2] != channels:
            raise ValueError(
                f"stfn was built for flow of shape (B, {spec.flow_segments}, {channels}, H, W) "
                f"(segments={spec.segments}, flow_len={spec.flow_len}), got {tuple(flow.shape)}; "
                "build it with the matching segments/flow_len options")
        if flow.shape[0] != rgb.shape[0]:
            raise ValueError(f"stfn: rgb batch {rgb.shape[0]} and flow batch {flow.shape[0]} differ")

    # ------------------------------------------------------------ backbones

    @staticmethod
    def _per_position(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in, H, W) -> pooled backbone features (B, C, T); time goes through the batch axis only."""
        pooled = backbone(x.flatten(0, 1))  # (B*T, C): torchvision's avgpool + flatten, fc = identity
        return pooled.unflatten(0, (x.shape[0], x.shape[1])).transpose(1, 2)

    def features(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A0, M0): appearance and motion backbone features, each (B, C, T), the tensors to cache."""
        self._check_inputs(rgb, flow)
        return self._per_position(self.rgb_backbone, rgb), self._per_position(self.flow_backbone, flow)

    # ------------------------------------------------------------ head

    def temporal_streams(self, appearance: torch.Tensor, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, M) after projection, fusion and the Residual Inception blocks, each (B, D', T)."""
        a, m = self.rgb_proj(appearance), self.flow_proj(motion)
        for fuse, rgb_block, flow_block in zip(self.fusions, self.rgb_blocks, self.flow_blocks):
            a = rgb_block(fuse(a, m))
            m = flow_block(m)
        return a, m

    def forward_features(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """Logits from backbone features (B, C, T) such as `features` returns (or a cache of them)."""
        if appearance.ndim != 3 or motion.ndim != 3 or appearance.shape[0] != motion.shape[0]:
            raise ValueError(f"stfn.forward_features needs appearance and motion features (B, C, T), "
                             f"got {tuple(appearance.shape)} and {tuple(motion.shape)}")
        t = self.input_spec.segments
        if appearance.shape[2] != t or motion.shape[2] != t:
            raise ValueError(f"stfn was built for T={t} positions and got features over "
                             f"{appearance.shape[2]} and {motion.shape[2]}")
        a, m = self.temporal_streams(appearance, motion)
        pooled = torch.cat([a.mean(dim=2), a.amax(dim=2), m.mean(dim=2), m.amax(dim=2)], dim=1)
        return self.fc(self.dropout(pooled))

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_features(*self.features(rgb, flow))

    def prune_ignored_layers(self) -> list[nn.Module]:
        """The classifier and both input stems (3-channel RGB, 2L-channel flow); with frozen backbones
        the whole backbones, which are fixed feature extractors (and whose cached features a pruned
        backbone would no longer produce)."""
        if self.freeze_backbones:
            return [self.fc, *self.backbones()]
        return [self.fc, self.rgb_backbone.conv1, self.flow_backbone.conv1]


# ---------------------------------------------------------------- builder

def stfn_backbone(arch: str, pretrained: str | Path) -> tv_resnet.ResNet:
    """A torchvision 2D ResNet; "tiny" is the STFN-width tiny ResNet (TINY_BACKBONE_WIDTHS)."""
    if arch != "tiny":
        return resnet2d(arch, pretrained, "stfn")
    if pretrained != "none" and not isinstance(pretrained, Path):
        raise ConfigError(f"architectures.stfn.pretrained = {pretrained!r}: torchvision has no weights "
                          "for the tiny ResNet; use none or a state-dict file")
    net = tiny_resnet(TINY_BACKBONE_WIDTHS)
    load_pretrained(net, "tiny", pretrained, "stfn")
    return net


def stfn_backbones(arch: str, pretrained: str, flow_channels: int) -> tuple[nn.Module, nn.Module]:
    """RGB backbone and flow backbone with a `flow_channels` stem (see rgb_and_flow_backbones)."""
    resolved = resolve_pretrained("stfn", pretrained, ("imagenet",))
    return rgb_and_flow_backbones(lambda weights: stfn_backbone(arch, weights), resolved, flow_channels)


@register("stfn", info=STFN_INFO)
def build_stfn(scale: str, num_classes: int, *, pretrained: str = "none", backbone: str | None = None,
               size: int | None = None, segments: int | None = None, flow_len: int | None = None,
               width: int | None = None, blocks: int = 2, fusion: str = "multiplicative",
               branch_bn_relu: bool = False, dropout: float = 0.5, freeze_backbones: bool = False) -> STFN:
    """STFN; options in docs/models.md ("STFN")."""
    defaults = PAPER if scale == "paper" else TINY
    given = dict(backbone=backbone, size=size, segments=segments, flow_len=flow_len, width=width)
    o = {key: defaults[key] if value is None else value for key, value in given.items()}
    t = check_posint("stfn", "segments", o["segments"])
    spec = InputSpec(rgb=True, flow=True, sampling="segments", segments=t, frames_per_segment=1,
                     flow_segments=t, flow_len=check_posint("stfn", "flow_len", o["flow_len"]),
                     size=check_posint("stfn", "size", o["size"]))
    d = check_posint("stfn", "width", o["width"])
    if d % 4:
        raise ConfigError(f"architectures.stfn.width = {d!r}; D' must be a multiple of 4 "
                          "(four Inception branches of D'/4 channels each; 512 at paper scale)")
    if fusion not in FUSIONS:
        raise ConfigError(f"architectures.stfn.fusion = {fusion!r}; use one of {', '.join(FUSIONS)}")
    rgb, flow = stfn_backbones(o["backbone"], pretrained, 2 * spec.flow_len)
    return STFN(rgb, flow, num_classes, spec, width=d, blocks=check_posint("stfn", "blocks", blocks), fusion=fusion,
                branch_bn_relu=branch_bn_relu, dropout=check_dropout("stfn", dropout),
                freeze_backbones=freeze_backbones)
