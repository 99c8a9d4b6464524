"""TSN: a 2D ResNet applied to each of T sparsely sampled frames, per-segment scores averaged.

Frames are folded into the batch; dropout and a fresh FC give per-segment logits and the average
consensus over T gives the clip's. Order-free by construction: the appearance-only reference.
Options and anchors: docs/models.md ("TSN").
"""

from __future__ import annotations

import torch
from torch import nn

from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import resnet2d, resolve_pretrained, strip_classifier
from actionrepro.models.layers import average_consensus, check_dropout, check_posint, check_rgb, classifier, fold_frames
from actionrepro.models.registry import ModelInfo, Published, VideoModel, register

PAPER = {"backbone": "resnet50", "size": 224}
TINY = {"backbone": "tiny", "size": 32}

TSN_INFO = ModelInfo(
    name="tsn",
    title="TSN-R50",
    reference="Wang et al., Temporal Segment Networks, ECCV 2016; ResNet-50 recipe of the mmaction2 model zoo",
    tag="code",
    protocol="T=8 segments x 1 RGB frame, 224x224, ResNet-50 per frame, dropout 0.5, FC, average consensus",
    published=(
        Published("ucf101", 83.03, "code",
                  "ImageNet init, split 1, 3 segments; test 25 frames x 3 crops (tsn_r50_1x1x3_75e_ucf101_rgb)",
                  "open-mmlab/mmaction2 configs/recognition/tsn/README.md @ 8d8014526a42 (model zoo row and its "
                  "config tsn_r50_1x1x3_75e_ucf101_rgb.py)",
                  init="imagenet", backbone="ResNet-50", splits="split1", views="25x3"),
        Published("hmdb51", 48.95, "code",
                  "ImageNet init, split 1, 8 segments; test 8 segments x centre crop "
                  "(tsn_r50_1x1x8_50e_hmdb51_imagenet_rgb)",
                  "open-mmlab/mmaction2 configs/recognition/tsn/README.md @ 8d8014526a42 (model zoo row); config "
                  "tsn_r50_1x1x8_50e_hmdb51_imagenet_rgb.py @ ef5ab3c4757c",
                  init="imagenet", backbone="ResNet-50", splits="split1", views="1x1"),
        Published("hmdb51", 56.08, "code",
                  "Kinetics-400 init, split 1, 8 segments; test 8 segments x centre crop "
                  "(tsn_r50_1x1x8_50e_hmdb51_kinetics400_rgb)",
                  "open-mmlab/mmaction2 configs/recognition/tsn/README.md @ 8eb44f7dd08e (model zoo row and its "
                  "config tsn_r50_1x1x8_50e_hmdb51_kinetics400_rgb.py)",
                  init="kinetics400", backbone="ResNet-50", splits="split1", views="1x1"),
    ),
    backbone="ResNet-50",
)


class TSN(VideoModel):
    """2D backbone per frame + dropout + FC + average consensus."""

    temporal = False

    def __init__(self, backbone: nn.Module, num_classes: int, input_spec: InputSpec, dropout: float, name: str = "tsn"):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(strip_classifier(backbone), num_classes)
        self.input_spec = input_spec

    def frame_logits(self, rgb: torch.Tensor) -> torch.Tensor:
        """Per-segment logits (B*T, K)."""
        return self.fc(self.dropout(self.backbone(fold_frames(rgb))))

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        if flow is not None:
            raise ValueError(f"{self.name} is an RGB model and takes no flow input")
        rgb = check_rgb(rgb, self.name)
        return average_consensus(self.frame_logits(rgb), rgb.shape[1])

    def prune_ignored_layers(self) -> list[nn.Module]:
        return [self.fc, self.backbone.conv1]


def tsn_parts(model: str, scale: str, pretrained: str, backbone: str | None, segments: int, size: int | None):
    """The backbone and InputSpec shared by TSN and TSM."""
    defaults = PAPER if scale == "paper" else TINY
    arch = backbone or defaults["backbone"]
    spec = InputSpec(rgb=True, sampling="segments", segments=check_posint(model, "segments", segments),
                     size=check_posint(model, "size", size or defaults["size"]))
    net = resnet2d(arch, resolve_pretrained(model, pretrained, ("imagenet",)), model)
    return net, spec


@register("tsn", info=TSN_INFO)
def build_tsn(scale: str, num_classes: int, *, pretrained: str = "none", backbone: str | None = None,
              segments: int = 8, size: int | None = None, dropout: float = 0.5) -> TSN:
    """TSN; backbone resnet18/34/50/101 or tiny (default: resnet50 at paper scale, tiny at tiny)."""
    net, spec = tsn_parts("tsn", scale, pretrained, backbone, segments, size)
    return TSN(net, num_classes, spec, check_dropout("tsn", dropout))
