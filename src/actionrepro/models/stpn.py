"""STPN: Spatiotemporal Pyramid Network (Wang et al., CVPR 2017), reconstructed [recon].

An RGB frame and K flow stacks (through one shared flow ResNet) fused in a pyramid of compact
bilinear operators (STCB, actionrepro.models.bilinear): t = STCB(f_1..f_K); attention over the
spatial map from STCB(S_l, t); u = STCB(GAP(S), t, v) -> dropout -> FC; one loss for the whole.
Our backbone is a torchvision ResNet; the paper's was BN-Inception.
Options and anchors: docs/models.md ("STPN").
"""

from __future__ import annotations


import torch
from torch import nn

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import resnet2d, resolve_pretrained, rgb_and_flow_backbones, strip_classifier
from actionrepro.models.bilinear import CompactBilinear, CountSketch, FixedConv1x1
from actionrepro.models.i3d import resnet_features
from actionrepro.models.layers import check_dropout, check_posint, classifier
from actionrepro.models.registry import ModelInfo, Published, VideoModel, register

PAPER = {"backbone": "resnet50", "size": 224, "flow_len": 10, "d_temporal": 1024, "d_attention": 2048,
         "d_final": 4096, "attention_hidden": 64}
TINY = {"backbone": "tiny", "size": 32, "flow_len": 5, "d_temporal": 256, "d_attention": 512,
        "d_final": 1024, "attention_hidden": 16}

STPN_INFO = ModelInfo(
    name="stpn",
    title="STPN",
    reference="Wang, Long, Wan, Yu: Spatiotemporal Pyramid Network for Video Action Recognition, CVPR 2017",
    tag="recon",
    protocol="1 RGB frame + K=3 stacks of 10 TV-L1 flow frames (20 channels) spread over the video, 224x224; "
             "ResNet-50 spatial and (shared over the K stacks) temporal streams; STCB pyramid d=1024/2048/4096",
    published=(
        Published("ucf101", 94.6, "recalled", "3-split mean, BN-Inception backbone, ImageNet init; test views "
                  "not recorded here",
                  "Wang et al., CVPR 2017 (recalled, not verified: the abstract states no number)",
                  init="imagenet", backbone="BN-Inception", splits="mean3", views=None),
        Published("hmdb51", 68.9, "recalled", "3-split mean, BN-Inception backbone, ImageNet init; test views "
                  "not recorded here",
                  "Wang et al., CVPR 2017 (recalled, not verified: the abstract states no number)",
                  init="imagenet", backbone="BN-Inception", splits="mean3", views=None),
    ),
    notes="Structure confirmed by third-party notes, sizes from a re-implementation; the paper's backbone was "
          "BN-Inception, ours is a torchvision ResNet (ResNet-50 at paper scale), so the published numbers "
          "are not for this exact network. The STCB uses one fixed hash/sign per input.",
    modalities=("rgb", "flow"),
    backbone="ResNet-50",
)


class STPN(VideoModel):
    """Spatial stream, shared temporal stream and the STCB pyramid (structure in docs/models.md, "STPN")."""

    temporal = True

    def __init__(self, rgb_backbone: nn.Module, flow_backbone: nn.Module, num_classes: int, input_spec: InputSpec, *,
                 d_temporal: int, d_attention: int, d_final: int, attention_hidden: int, dropout: float,
                 sketch_seed: int, aux_heads: bool):
        super().__init__()
        self.input_spec = input_spec
        self.rgb_backbone = rgb_backbone
        self.flow_backbone = flow_backbone
        width = strip_classifier(rgb_backbone)
        if strip_classifier(flow_backbone) != width:
            raise ValueError("the RGB and flow backbones must have the same feature width")
        k = input_spec.flow_segments
        generator = torch.Generator().manual_seed(sketch_seed)
        self.temporal_fusion = CompactBilinear([width] * k, d_temporal, generator)
        self.attention_fusion = CompactBilinear([width, d_temporal], d_attention, generator)
        self.attention = nn.Sequential(nn.Conv2d(d_attention, attention_hidden, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(attention_hidden, 1, 1))
        # a_l (1 channel) spread over S's channels by a fixed all-ones 1x1 conv: multiplying S by a
        # 1-channel map directly would make torch-pruning couple S's channels with the attention
        # logit's single channel (it treats broadcasting products as element-wise) and refuse to
        # prune the spatial stream's last stage; a conv's outputs follow S, its input stays 1.
        self.attention_spread = FixedConv1x1(1, width, torch.ones(width, 1), persistent=False)
        self.final_fusion = CompactBilinear([width, d_temporal, width], d_final, generator)
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(d_final, num_classes)
        self.rgb_head = classifier(width, num_classes) if aux_heads else None
        self.flow_head = classifier(d_temporal, num_classes) if aux_heads else None
        # The fixed 1x1 weights are rebuilt identically on every rank from the seed: DistributedDataParallel
        # need not broadcast them with the batch-norm buffers at every step (34 M floats at paper scale).
        self._ddp_params_and_buffers_to_ignore = [
            f"{prefix}.{name}" for prefix, module in self.named_modules() if isinstance(module, FixedConv1x1)
            for name, _ in module.named_buffers(recurse=False)]

    # ------------------------------------------------------------ inputs

    def _check_inputs(self, rgb: torch.Tensor | None, flow: torch.Tensor | None) -> None:
        spec = self.input_spec
        if rgb is None or flow is None:
            raise ValueError("stpn needs rgb=(B, 1, 3, H, W) and flow=(B, K, 2L, H, W); "
                             f"got rgb={'none' if rgb is None else tuple(rgb.shape)}, "
                             f"flow={'none' if flow is None else tuple(flow.shape)}")
        if rgb.ndim != 5 or rgb.shape[1] != spec.frames or rgb.shape[2] != 3:
            raise ValueError(f"stpn needs rgb of shape (B, {spec.frames}, 3, H, W), got {tuple(rgb.shape)}")
        channels = 2 * spec.flow_len
        if flow.ndim != 5 or flow.shape[1] != spec.flow_segments or flow.shape[2] != channels:
            raise ValueError(
                f"stpn was built for flow of shape (B, {spec.flow_segments}, {channels}, H, W) "
                f"(flow_segments={spec.flow_segments}, flow_len={spec.flow_len}), got {tuple(flow.shape)}; "
                "build it with the matching flow_segments/flow_len options")
        if flow.shape[0] != rgb.shape[0]:
            raise ValueError(f"stpn: rgb batch {rgb.shape[0]} and flow batch {flow.shape[0]} differ")

    # ------------------------------------------------------------ streams

    def spatial_map(self, rgb: torch.Tensor) -> torch.Tensor:
        """S: (B, C, h, w) from the one RGB frame of (B, 1, 3, H, W)."""
        return resnet_features(self.rgb_backbone, rgb.flatten(0, 1))

    def flow_features(self, flow: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """f_1..f_K, each (B, C, 1, 1): the K stacks folded into the batch of the shared backbone."""
        features = self.flow_backbone.avgpool(resnet_features(self.flow_backbone, flow.flatten(0, 1)))
        return features.unflatten(0, (flow.shape[0], flow.shape[1])).unbind(1)

    def attention_weights(self, spatial: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """a: (B, 1, h, w), softmax over the h*w locations of the attention logits of STCB(S_l, t)."""
        logits = self.attention(self.attention_fusion(spatial, t))
        return torch.softmax(logits.flatten(2), dim=-1).view_as(logits)

    def fused(self, rgb: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, GAP(S), t): the final STCB features and the two stream summaries, all (B, *, 1, 1)."""
        spatial = self.spatial_map(rgb)
        t = self.temporal_fusion(*self.flow_features(flow))
        weights = self.attention_spread(self.attention_weights(spatial, t))
        attended = (spatial * weights).sum(dim=(2, 3), keepdim=True)
        pooled = spatial.mean(dim=(2, 3), keepdim=True)
        return self.final_fusion(pooled, t, attended), pooled, t

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(rgb, flow)
        u, pooled, t = self.fused(rgb, flow)
        logits = self.fc(self.dropout(u.flatten(1)))
        if self.rgb_head is not None:
            logits = logits + self.rgb_head(self.dropout(pooled.flatten(1))) + self.flow_head(self.dropout(t.flatten(1)))
        return logits

    def sketches(self) -> list[CountSketch]:
        return [m for m in self.modules() if isinstance(m, CountSketch)]

    def prune_ignored_layers(self) -> list[nn.Module]:
        """Classifier(s), both input stems (RGB, 2L-channel flow), the attention logit conv (its one
        output is the attention map) and every count sketch: a sketch's d outputs are hash buckets
        mixed by the FFT, not features. A sketch's inputs are still pruned with the channels feeding
        it (torch-pruning drops its columns); attention_spread follows S and must stay prunable."""
        heads = [h for h in (self.rgb_head, self.flow_head) if h is not None]
        return [self.fc, *heads, self.rgb_backbone.conv1, self.flow_backbone.conv1, self.attention[2], *self.sketches()]


def _scale_default(options: dict, scale: str) -> dict:
    defaults = PAPER if scale == "paper" else TINY
    return {key: defaults[key] if value is None else value for key, value in options.items()}


def _check_sketch_dim(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError(f"architectures.stpn.{key} = {value!r}; use an integer >= 2 "
                          "(docs/models.md: 1024/2048/4096 at paper scale)")
    return value


def stpn_backbones(arch: str, pretrained: str, flow_channels: int) -> tuple[nn.Module, nn.Module]:
    """RGB backbone and flow backbone with a `flow_channels` stem (see rgb_and_flow_backbones)."""
    resolved = resolve_pretrained("stpn", pretrained, ("imagenet",))
    return rgb_and_flow_backbones(lambda weights: resnet2d(arch, weights, "stpn"), resolved, flow_channels)


@register("stpn", info=STPN_INFO)
def build_stpn(scale: str, num_classes: int, *, pretrained: str = "none", backbone: str | None = None,
               size: int | None = None, flow_segments: int = 3, flow_len: int | None = None,
               d_temporal: int | None = None, d_attention: int | None = None, d_final: int | None = None,
               attention_hidden: int | None = None, dropout: float = 0.5, sketch_seed: int = 0,
               aux_heads: bool = False) -> STPN:
    """STPN; options in docs/models.md ("STPN")."""
    o = _scale_default(dict(backbone=backbone, size=size, flow_len=flow_len, d_temporal=d_temporal,
                            d_attention=d_attention, d_final=d_final, attention_hidden=attention_hidden), scale)
    spec = InputSpec(rgb=True, flow=True, sampling="segments", segments=1, frames_per_segment=1,
                     flow_segments=check_posint("stpn", "flow_segments", flow_segments),
                     flow_len=check_posint("stpn", "flow_len", o["flow_len"]),
                     size=check_posint("stpn", "size", o["size"]))
    dims = {key: _check_sketch_dim(key, o[key]) for key in ("d_temporal", "d_attention", "d_final")}
    if isinstance(sketch_seed, bool) or sketch_seed < 0:
        raise ConfigError(f"architectures.stpn.sketch_seed = {sketch_seed!r}; use a non-negative integer")
    rgb, flow = stpn_backbones(o["backbone"], pretrained, 2 * spec.flow_len)
    return STPN(rgb, flow, num_classes, spec, **dims,
                attention_hidden=check_posint("stpn", "attention_hidden", o["attention_hidden"]),
                dropout=check_dropout("stpn", dropout), sketch_seed=sketch_seed, aux_heads=aux_heads)
