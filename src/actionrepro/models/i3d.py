"""I3D-R50: ResNet-50 inflated to 3D (Wang et al.'s 8x8 I3D baseline, without non-local blocks).

Temporal kernels of 3 on the first conv of the blocks marked in `I3D_R50_INFLATE`, a 2x1x1
temporal max-pool after res2; 2D kernels are repeated over t and divided by t. Also the backbone
under S2TF-Net (s2tfnet.py).
Options and anchors: docs/models.md ("I3D-R50").
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec
from actionrepro.models.backbones import (init_like_torchvision, load_checked, read_state_file, resnet2d, resolve_pretrained,
                                          strip_classifier)
from actionrepro.models.layers import (check_dropout, check_posint, check_rgb, classifier, inflate_batchnorm,
                                       inflate_conv, inflate_maxpool, to_clip)
from actionrepro.models.registry import ModelInfo, VideoModel, register

# Which blocks of res2..res5 get a temporal kernel of 3 on their first conv (non-local I3D-R50).
I3D_R50_INFLATE = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))
PAPER = {"backbone": "resnet50", "stem_t": 5, "clip_len": 8, "stride": 8, "size": 224, "inflate": I3D_R50_INFLATE}
TINY = {"backbone": "tiny", "stem_t": 3, "clip_len": 8, "stride": 4, "size": 32, "inflate": None}

I3D_INFO = ModelInfo(
    name="i3d",
    title="I3D-R50",
    reference="Carreira & Zisserman, Quo Vadis, Action Recognition?, CVPR 2017 (inflation); ResNet-50 layout "
              "of Wang et al., Non-local Neural Networks, CVPR 2018 (without the non-local blocks)",
    tag="recon",
    protocol="8 frames at stride 8, 224x224, ImageNet ResNet-50 inflated (kernel repeated over t, divided by t)",
    published=(),
    notes="No published UCF101/HMDB51 number for this exact configuration; S2TF-Net's paper implies "
          "92.1 / 76.3 for its non-local I3D-R50 backbone (Kinetics init).",
    backbone="I3D ResNet-50",
)


def inflate_resnet(net2d: tv_resnet.ResNet, stem_t: int = 5, inflate=None, temporal_pool: bool = True,
                   inplace: bool = False) -> tv_resnet.ResNet:
    """A 3D copy of a torchvision 2D ResNet (same class, same forward, same parameter names).

    `inflate[i][j]` = 1 gives block j of stage i a 3-frame kernel on its first conv (3x1x1 in a
    Bottleneck, 3x3x3 in a BasicBlock); every other conv gets one frame. Spatial strides are
    kept, time is never strided; `temporal_pool` halves T after stage 1. `inplace` converts
    `net2d` itself instead of a copy.
    """
    net = net2d if inplace else copy.deepcopy(net2d)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    inflate = inflate or tuple((1,) * len(stage) for stage in stages)
    if [len(f) for f in inflate] != [len(s) for s in stages]:
        raise ValueError(f"inflate pattern {inflate} does not match the blocks per stage {[len(s) for s in stages]}")
    net.conv1 = inflate_conv(net.conv1, stem_t)
    net.maxpool = inflate_maxpool(net.maxpool)
    for stage, flags in zip(stages, inflate):
        for block, flag in zip(stage, flags):
            block.conv1 = inflate_conv(block.conv1, 3 if flag else 1)
    _inflate_rest(net)
    net.avgpool = nn.AdaptiveAvgPool3d(1)
    if temporal_pool:
        net.layer1.append(nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1)))
    leftover = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d))]
    if leftover:
        raise TypeError(f"inflate_resnet left 2D modules: {leftover}")
    return net


def _inflate_rest(module: nn.Module) -> None:
    """Replace every remaining 2D conv (one frame), batch-norm and max-pool by its 3D version."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(module, name, inflate_conv(child, 1))
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, inflate_batchnorm(child))
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, inflate_maxpool(child))
        else:
            _inflate_rest(child)


def resnet_features(net: tv_resnet.ResNet, x: torch.Tensor) -> torch.Tensor:
    """The last stage's feature map of a (2D or inflated) torchvision ResNet, before pooling."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class I3D(VideoModel):
    """Inflated ResNet on (B, 3, T, H, W), global average pooling, dropout, FC."""

    def __init__(self, backbone: tv_resnet.ResNet, num_classes: int, input_spec: InputSpec, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(strip_classifier(backbone), num_classes)
        self.input_spec = input_spec

    def forward(self, rgb: torch.Tensor | None = None, flow: torch.Tensor | None = None) -> torch.Tensor:
        if flow is not None:
            raise ValueError("i3d is an RGB model and takes no flow input")
        return self.fc(self.dropout(self.backbone(to_clip(check_rgb(rgb, "i3d")))))

    def prune_ignored_layers(self) -> list[nn.Module]:
        return [self.fc, self.backbone.conv1]


def i3d_backbone(scale: str, pretrained: str | Path = "none", model: str = "i3d") -> tv_resnet.ResNet:
    """Inflated ResNet-50 (paper) or inflated tiny ResNet; a local state dict may be 2D (a torchvision
    ResNet, inflated on load) or 3D (an inflated backbone saved from this code)."""
    cfg = PAPER if scale == "paper" else TINY
    state = read_state_file(pretrained, model) if isinstance(pretrained, Path) else None
    is_3d = state is not None and state.get("conv1.weight", torch.empty(0)).ndim == 5
    net2d = resnet2d(cfg["backbone"], "none" if isinstance(pretrained, Path) else pretrained, model)
    if state is not None and not is_3d:
        load_checked(net2d, state, str(pretrained), model)
    net = inflate_resnet(net2d, cfg["stem_t"], cfg["inflate"], inplace=True)
    if pretrained == "none":
        # An inflated random 2D kernel is the same at every time offset, which makes the untrained
        # network blind to frame order; from scratch, 3D kernels get their own Kaiming init.
        init_like_torchvision(net)
    if is_3d:
        load_checked(net, state, str(pretrained), model)
    return net


@register("i3d", info=I3D_INFO)
def build_i3d(scale: str, num_classes: int, *, pretrained: str = "none", clip_len: int | None = None,
              stride: int | None = None, size: int | None = None, dropout: float = 0.5) -> I3D:
    """I3D-R50; pretrained none | imagenet (inflated) | state-dict file (2D or inflated)."""
    cfg = PAPER if scale == "paper" else TINY
    spec = InputSpec(rgb=True, sampling="dense",
                     clip_len=check_posint("i3d", "clip_len", clip_len or cfg["clip_len"]),
                     stride=check_posint("i3d", "stride", stride or cfg["stride"]),
                     size=check_posint("i3d", "size", size or cfg["size"]))
    if spec.clip_len < 2:
        raise ConfigError("architectures.i3d.clip_len must be >= 2 (the temporal pool after res2 halves T)")
    backbone = i3d_backbone(scale, resolve_pretrained("i3d", pretrained, ("imagenet",)))
    return I3D(backbone, num_classes, spec, check_dropout("i3d", dropout))
