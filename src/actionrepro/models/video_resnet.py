"""torchvision's video ResNets on dense clips, permuted to (B, 3, T, H, W): the body of R(2+1)D-18
(r2plus1d.py) and R3D-18 (r3d.py).

Paper scale is torchvision's r2plus1d_18 / r3d_18 exactly (Kinetics-400 weights on request);
tiny scale is the same classes at reduced widths (backbones.tiny_video_resnet).
Options and anchors: docs/models.md ("R(2+1)D-18", "R3D-18").
"""

from __future__ import annotations

import torch
from torch import nn

from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import resolve_pretrained, strip_classifier, video_resnet
from actionrepro.models.layers import check_rgb, classifier, to_clip
from actionrepro.models.layers import check_dropout, check_posint
from actionrepro.models.registry import VideoModel

PAPER = {"clip_len": 16, "size": 112}
TINY = {"clip_len": 8, "size": 32}

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


def build_video_resnet(model: str, arch: str, scale: str, num_classes: int, pretrained: str, clip_len: int | None,
           stride: int, size: int | None, dropout: float) -> VideoResNetClassifier:
    defaults = PAPER if scale == "paper" else TINY
    spec = InputSpec(rgb=True, sampling="dense",
                     clip_len=check_posint(model, "clip_len", clip_len or defaults["clip_len"]),
                     stride=check_posint(model, "stride", stride),
                     size=check_posint(model, "size", size or defaults["size"]))
    net = video_resnet(arch, scale, resolve_pretrained(model, pretrained, ("kinetics",)), model)
    return VideoResNetClassifier(net, num_classes, spec, check_dropout(model, dropout), model)
