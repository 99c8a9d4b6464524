"""R(2+1)D-18 and R3D-18: torchvision's video ResNets on dense clips, permuted to (B, 3, T, H, W).

Paper scale is torchvision's r2plus1d_18 / r3d_18 exactly (Kinetics-400 weights on request);
tiny scale is the same classes at reduced widths (backbones.tiny_video_resnet).
"""

from __future__ import annotations

import torch
from torch import nn

from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import resolve_pretrained, strip_classifier, video_resnet
from actionrepro.models.layers import check_rgb, classifier, to_clip
from actionrepro.models.registry import ModelInfo, Published, VideoModel, register
from actionrepro.models.tsn import check_dropout, check_posint

PAPER = {"clip_len": 16, "size": 112}
TINY = {"clip_len": 8, "size": 32}

R2PLUS1D_INFO = ModelInfo(
    name="r2plus1d",
    title="R(2+1)D-18",
    reference="Tran et al., A Closer Look at Spatiotemporal Convolutions, CVPR 2018; torchvision r2plus1d_18",
    tag="code",
    protocol="16 contiguous frames, 112x112, torchvision r2plus1d_18",
    published=(),
    notes="No official R(2+1)D-18 number on UCF101/HMDB51.",
)
R3D_INFO = ModelInfo(
    name="r3d",
    title="R3D-18",
    reference="Hara et al., Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?, CVPR 2018; torchvision r3d_18",
    tag="code",
    protocol="16 contiguous frames, 112x112, torchvision r3d_18",
    published=(
        Published("ucf101", 84.4, "recalled", "Kinetics-400 init, mean of 3 splits", "Hara et al. 2018"),
        Published("hmdb51", 56.4, "recalled", "Kinetics-400 init, mean of 3 splits", "Hara et al. 2018"),
    ),
)


class VideoResNetClassifier(VideoModel):
    """A torchvision VideoResNet body, dropout and a fresh FC."""

    def __init__(self, net: nn.Module, num_classes: int, input_spec: InputSpec, dropout: float, name: str):
        super().__init__()
        self.name = name
        self.backbone = net
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(strip_classifier(net), num_classes)
        self.input_spec = input_spec

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        if flow is not None:
            raise ValueError(f"{self.name} is an RGB model and takes no flow input")
        return self.fc(self.dropout(self.backbone(to_clip(check_rgb(rgb, self.name)))))

    def prune_ignored_layers(self) -> list[nn.Module]:
        return [self.fc, self.backbone.stem]


def _build(model: str, arch: str, scale: str, num_classes: int, pretrained: str, clip_len: int | None,
           stride: int, size: int | None, dropout: float) -> VideoResNetClassifier:
    defaults = PAPER if scale == "paper" else TINY
    spec = InputSpec(rgb=True, sampling="dense",
                     clip_len=check_posint(model, "clip_len", clip_len or defaults["clip_len"]),
                     stride=check_posint(model, "stride", stride),
                     size=check_posint(model, "size", size or defaults["size"]))
    net = video_resnet(arch, scale, resolve_pretrained(model, pretrained, ("kinetics",)), model)
    return VideoResNetClassifier(net, num_classes, spec, check_dropout(model, dropout), model)


@register("r2plus1d", info=R2PLUS1D_INFO)
def build_r2plus1d(scale: str, num_classes: int, *, pretrained: str = "none", clip_len: int | None = None,
                   stride: int = 1, size: int | None = None, dropout: float = 0.0) -> VideoResNetClassifier:
    """R(2+1)D-18; pretrained none | kinetics | state-dict file."""
    return _build("r2plus1d", "r2plus1d_18", scale, num_classes, pretrained, clip_len, stride, size, dropout)


@register("r3d", info=R3D_INFO)
def build_r3d(scale: str, num_classes: int, *, pretrained: str = "none", clip_len: int | None = None,
              stride: int = 1, size: int | None = None, dropout: float = 0.0) -> VideoResNetClassifier:
    """R3D-18; pretrained none | kinetics | state-dict file."""
    return _build("r3d", "r3d_18", scale, num_classes, pretrained, clip_len, stride, size, dropout)
