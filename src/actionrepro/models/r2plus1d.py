"""R(2+1)D-18: torchvision's r2plus1d_18 on dense clips (actionrepro.models.video_resnet).

Options and anchors: docs/models.md ("R(2+1)D-18").
"""

from __future__ import annotations

from actionrepro.models.registry import ModelInfo, register
from actionrepro.models.video_resnet import VideoResNetClassifier, build_video_resnet

R2PLUS1D_INFO = ModelInfo(
    name="r2plus1d",
    title="R(2+1)D-18",
    reference="Tran et al., A Closer Look at Spatiotemporal Convolutions, CVPR 2018; torchvision r2plus1d_18",
    tag="code",
    protocol="16 contiguous frames, 112x112, torchvision r2plus1d_18",
    published=(),
    notes="No official R(2+1)D-18 number on UCF101/HMDB51.",
    backbone="R(2+1)D-18 (torchvision)",
)


@register("r2plus1d", info=R2PLUS1D_INFO)
def build_r2plus1d(scale: str, num_classes: int, *, pretrained: str = "none", clip_len: int | None = None,
                   stride: int = 1, size: int | None = None, dropout: float = 0.0) -> VideoResNetClassifier:
    """R(2+1)D-18; pretrained none | kinetics | state-dict file."""
    return build_video_resnet("r2plus1d", "r2plus1d_18", scale, num_classes, pretrained, clip_len, stride, size, dropout)
