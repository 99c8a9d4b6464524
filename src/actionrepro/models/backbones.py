"""Backbone builders: torchvision's 2D ResNets and video ResNets at paper scale, reduced-width
versions of the same classes for the CPU demo ("tiny"), and loading of pretrained weights.

Pretrained weights come from torchvision's weights API ("imagenet", "kinetics"; fetched into the
torch hub cache on first use) or from a local state-dict file checked key by key and shape by shape.
Classifier weights ("fc.*") are never loaded: every model puts its own num_classes head on top.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.video import resnet as tv_video

from actionrepro.errors import ActionReproError, ConfigError
from actionrepro.models.layers import adapt_stem

RESNETS_2D: dict[str, tuple[Callable[..., tv_resnet.ResNet], type]] = {
    "resnet18": (tv_resnet.resnet18, tv_resnet.ResNet18_Weights),
    "resnet34": (tv_resnet.resnet34, tv_resnet.ResNet34_Weights),
    "resnet50": (tv_resnet.resnet50, tv_resnet.ResNet50_Weights),
    "resnet101": (tv_resnet.resnet101, tv_resnet.ResNet101_Weights),
}
VIDEO_RESNETS: dict[str, tuple[Callable[..., tv_video.VideoResNet], type]] = {
    "r3d_18": (tv_video.r3d_18, tv_video.R3D_18_Weights),
    "r2plus1d_18": (tv_video.r2plus1d_18, tv_video.R2Plus1D_18_Weights),
}
# Named torchvision weights per source: V1 ImageNet weights are the "torchvision://resnet50"
# checkpoints TSN/TSM/I3D recipes (mmaction2) start from.
TORCHVISION_WEIGHTS = {"imagenet": "IMAGENET1K_V1", "kinetics": "KINETICS400_V1"}

TINY_WIDTHS = (16, 32, 64, 128)
TINY_WIDTHS_3D = (12, 24, 48, 96)
CLASSIFIER_PREFIX = "fc."


# ---------------------------------------------------------------- pretrained option

def resolve_pretrained(model: str, value: str, allowed: tuple[str, ...]) -> str | Path:
    """'none' or a name in `allowed` (torchvision weights), else the path of an existing file."""
    if value == "none" or value in allowed:
        return value
    if value in TORCHVISION_WEIGHTS:
        raise ConfigError(
            f"architectures.{model}.pretrained = {value!r} is not available for {model}; "
            f"use one of: none, {', '.join(allowed) or '(no torchvision weights)'}, or the path of a state-dict file"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"architectures.{model}.pretrained = {value!r}: not one of none, {', '.join(allowed)} "
            f"and no file at {path}; give a torchvision weights name or the path of a state-dict file"
        )
    return path


def torchvision_weights(arch: str, source: str):
    """The torchvision weights enum member for `arch` pretrained on `source` (imagenet|kinetics)."""
    table = RESNETS_2D if arch in RESNETS_2D else VIDEO_RESNETS
    if arch not in table or source not in TORCHVISION_WEIGHTS:
        raise ConfigError(f"no torchvision weights for {arch!r} from {source!r}")
    enum = table[arch][1]
    member = TORCHVISION_WEIGHTS[source]
    if member not in enum.__members__:
        raise ConfigError(f"torchvision has no {source} weights for {arch} (available: {', '.join(enum.__members__)})")
    return enum[member]


def download_state_dict(weights, model: str) -> dict[str, torch.Tensor]:
    """Fetch torchvision weights into the torch hub cache (or read them from it)."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise ActionReproError(
            f"could not fetch {weights!r} for {model} from {weights.url}: {err}. "
            f"Download that file by hand into {cache}/ or pass its path as architectures.{model}.pretrained"
        ) from err


def read_state_file(path: Path, model: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file (tensors only: weights_only=True), unwrapping the usual
    {"state_dict": ...} / {"model": ...} containers and DataParallel's "module." prefix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip files, non-tensor payloads
        raise ActionReproError(
            f"{path}: cannot read pretrained weights for {model} ({type(err).__name__}: {err}); "
            "it must be a state dict saved with torch.save(module.state_dict(), path)"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ActionReproError(f"{path}: expected a state dict of tensors for {model}, found {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str, model: str) -> None:
    """Load `state` into `module` (classifier excluded) after a strict key and shape check whose
    error lists what is missing, unexpected or mis-shaped."""
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(CLASSIFIER_PREFIX)}
    given = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(given)) if given[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = [f"{len(missing)} missing keys: {few(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected keys: {few(unexpected)}" if unexpected else "",
                 f"{len(shapes)} shape mismatches: {few(shapes)}" if shapes else ""]
        raise ActionReproError(
            f"pretrained weights {source} do not fit {model}'s backbone ({type(module).__name__}): "
            + "; ".join(p for p in parts if p)
            + ". Use a state dict of the same architecture and scale (torchvision key names)"
        )
    module.load_state_dict({**module.state_dict(), **given}, strict=True)


def load_pretrained(module: nn.Module, arch: str, pretrained: str | Path, model: str) -> None:
    """Apply the resolved `pretrained` choice to a freshly built backbone (classifier untouched)."""
    if pretrained == "none":
        return
    if isinstance(pretrained, Path):
        load_checked(module, read_state_file(pretrained, model), str(pretrained), model)
    else:
        weights = torchvision_weights(arch, pretrained)
        load_checked(module, download_state_dict(weights, model), repr(weights), model)


# ---------------------------------------------------------------- 2D ResNets

def _stage2d(block: type, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(tv_resnet.conv1x1(inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_like_torchvision(module: nn.Module) -> None:
    """torchvision's ResNet initialisation (Kaiming fan-out convs, unit batch-norm) for new modules."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def tiny_resnet(widths: tuple[int, ...] = TINY_WIDTHS, blocks: tuple[int, ...] = (1, 1, 1, 1)) -> tv_resnet.ResNet:
    """torchvision's ResNet class with BasicBlocks of reduced widths for 32x32 inputs: a 3x3/1 stem
    conv then the usual 3x3/2 max-pool (so stage 1 sees 16x16 and stage 4 2x2). Same module names
    as resnet18/50 (conv1, bn1, maxpool, layer1..4, avgpool, fc), so all code paths are shared."""
    if len(widths) != 4 or len(blocks) != 4:
        raise ValueError("tiny_resnet needs four stage widths and four block counts")
    net = tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], num_classes=1)
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    inplanes = widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        setattr(net, f"layer{i + 1}", _stage2d(tv_resnet.BasicBlock, inplanes, width, n, 1 if i == 0 else 2))
        inplanes = width
    net.fc = nn.Linear(inplanes, 1000)
    net.inplanes = inplanes
    init_like_torchvision(net)
    return net


def resnet2d(arch: str, pretrained: str | Path = "none", model: str = "") -> tv_resnet.ResNet:
    """A torchvision 2D ResNet ("resnet18/34/50/101" or "tiny"), optionally pretrained."""
    if arch == "tiny":
        net = tiny_resnet()
        if pretrained not in ("none",) and not isinstance(pretrained, Path):
            raise ConfigError(f"architectures.{model}.pretrained = {pretrained!r}: torchvision has no weights "
                              "for the tiny ResNet; use none or a state-dict file")
    elif arch in RESNETS_2D:
        net = RESNETS_2D[arch][0](weights=None)
    else:
        raise ConfigError(f"architectures.{model}.backbone = {arch!r}: use one of tiny, {', '.join(RESNETS_2D)}")
    load_pretrained(net, arch, pretrained, model or arch)
    return net


# ---------------------------------------------------------------- video ResNets

def _tiny_r2plus1d_stem(width: int) -> nn.Sequential:
    """R(2+1)D's factorised stem (1x7x7 spatial, then 3x1x1 temporal) at reduced width; the
    intermediate width keeps torchvision's 45:64 ratio."""
    mid = max(1, round(width * 45 / 64))
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True),
    )


def _tiny_r3d_stem(width: int) -> nn.Sequential:
    """R3D's stem (3x7x7 conv, stride 1x2x2) at reduced width."""
    return nn.Sequential(
        nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True),
    )


def _stage3d(conv_builder: type, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    block = tv_video.BasicBlock
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv3d(inplanes, planes, kernel_size=1, stride=conv_builder.get_downsample_stride(stride), bias=False),
            nn.BatchNorm3d(planes),
        )
    layers = [block(inplanes, planes, conv_builder, stride, downsample)]
    layers += [block(planes, planes, conv_builder) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def tiny_video_resnet(arch: str, widths: tuple[int, ...] = TINY_WIDTHS_3D,
                      blocks: tuple[int, ...] = (1, 1, 1, 1)) -> tv_video.VideoResNet:
    """torchvision's VideoResNet with its own block types (BasicBlock + Conv3DSimple for r3d_18,
    Conv2Plus1D for r2plus1d_18) and stems, at reduced widths (VideoResNet fixes 64..512)."""
    if arch == "r3d_18":
        conv, stem = tv_video.Conv3DSimple, _tiny_r3d_stem
    elif arch == "r2plus1d_18":
        conv, stem = tv_video.Conv2Plus1D, _tiny_r2plus1d_stem
    else:
        raise ConfigError(f"no tiny video ResNet {arch!r}; use one of {', '.join(VIDEO_RESNETS)}")
    net = tv_video.VideoResNet(tv_video.BasicBlock, [conv] * 4, [1, 1, 1, 1], lambda: stem(widths[0]), num_classes=1)
    inplanes = widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        setattr(net, f"layer{i + 1}", _stage3d(conv, inplanes, width, n, 1 if i == 0 else 2))
        inplanes = width
    net.fc = nn.Linear(inplanes, 400)
    net.inplanes = inplanes
    init_like_torchvision(net)
    return net


def video_resnet(arch: str, scale: str, pretrained: str | Path = "none", model: str = "") -> tv_video.VideoResNet:
    """torchvision's r3d_18 / r2plus1d_18 (paper) or its tiny version, optionally pretrained."""
    if arch not in VIDEO_RESNETS:
        raise ConfigError(f"unknown video ResNet {arch!r}; use one of {', '.join(VIDEO_RESNETS)}")
    if scale == "tiny":
        net = tiny_video_resnet(arch)
        if pretrained != "none" and not isinstance(pretrained, Path):
            raise ConfigError(f"architectures.{model}.pretrained = {pretrained!r}: torchvision has no weights "
                              "for the tiny video ResNet; use none or a state-dict file")
    else:
        net = VIDEO_RESNETS[arch][0](weights=None)
    load_pretrained(net, arch, pretrained, model or arch)
    return net


def strip_classifier(net: nn.Module) -> int:
    """Replace a torchvision network's `fc` by the identity; return its feature width."""
    width = net.fc.in_features
    net.fc = nn.Identity()
    return width


def rgb_and_flow_backbones(build: Callable[[object], nn.Module], pretrained,
                           flow_channels: int) -> tuple[nn.Module, nn.Module]:
    """An RGB backbone and a flow backbone whose stem takes `flow_channels` (two-stream models).

    With weights, the flow network is a copy of the RGB one with the stem averaged over its input
    channels (cross-modality init). From scratch it gets its own Kaiming-initialised stem: averaging a
    random kernel would give every flow channel the same weights, blind to frame order and to x vs y.
    `build(pretrained)` makes one backbone; `pretrained` is already resolved ("none", a name or a path).
    """
    rgb = build(pretrained)
    if pretrained == "none":
        flow = build("none")
        flow.conv1 = adapt_stem(flow.conv1, flow_channels)
        init_like_torchvision(flow.conv1)
    else:
        flow = copy.deepcopy(rgb)
        flow.conv1 = adapt_stem(rgb.conv1, flow_channels)
    return rgb, flow
