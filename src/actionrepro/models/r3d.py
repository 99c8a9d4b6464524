"""R3D-18: torchvision's r3d_18 on dense clips (actionrepro.models.video_resnet).

Its anchor numbers are Hara et al.'s 3D-ResNet-18, a different network.
Options and anchors: docs/models.md ("R3D-18").
"""

from __future__ import annotations

from actionrepro.models.registry import ModelInfo, Published, register
from actionrepro.models.video_resnet import VideoResNetClassifier, build_video_resnet

R3D_INFO = ModelInfo(
    name="r3d",
    title="R3D-18",
    reference="Hara et al., Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?, CVPR 2018; torchvision r3d_18",
    tag="code",
    protocol="16 contiguous frames, 112x112, torchvision r3d_18",
    published=(
        Published("ucf101", 84.4, "recalled",
                  "Hara et al.'s 3D-ResNet-18 (shortcut A, not torchvision's r3d_18), Kinetics-400 init, "
                  "mean of 3 splits; test views not recorded here",
                  "Hara et al., CVPR 2018, results table (recalled: not in the abstract, which gives only "
                  "ResNeXt-101's numbers, nor in kenshohara/3D-ResNets-PyTorch README.md @ 540a0ea1abae)",
                  init="kinetics400", backbone="3D-ResNet-18 (shortcut A)", splits="mean3", views=None),
        Published("hmdb51", 56.4, "recalled",
                  "Hara et al.'s 3D-ResNet-18 (shortcut A, not torchvision's r3d_18), Kinetics-400 init, "
                  "mean of 3 splits; test views not recorded here",
                  "Hara et al., CVPR 2018, results table (recalled: not in the abstract, which gives only "
                  "ResNeXt-101's numbers, nor in kenshohara/3D-ResNets-PyTorch README.md @ 540a0ea1abae)",
                  init="kinetics400", backbone="3D-ResNet-18 (shortcut A)", splits="mean3", views=None),
    ),
    backbone="R3D-18 (torchvision)",
)


@register("r3d", info=R3D_INFO)
def build_r3d(scale: str, num_classes: int, *, pretrained: str = "none", clip_len: int | None = None,
              stride: int = 1, size: int | None = None, dropout: float = 0.0) -> VideoResNetClassifier:
    """R3D-18; pretrained none | kinetics | state-dict file."""
    return build_video_resnet("r3d", "r3d_18", scale, num_classes, pretrained, clip_len, stride, size, dropout)
