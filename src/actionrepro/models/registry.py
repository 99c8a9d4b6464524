"""The model registry: one name per architecture, one builder per name, one contract for all.

A builder is a function `builder(scale, num_classes, *, opt1=default1, ...) -> VideoModel`; its
keyword-only parameters ARE the architecture's options (params["architectures"][name]), so the
allowed keys, their defaults and the error for an unknown key come from one place.

Every built model honours the contract the train/evaluate/prune engines rely on:
  model.input_spec            InputSpec: what the dataset must feed (actionrepro.inputs)
  model(rgb=..., flow=...)    logits (B, num_classes)
  model.prune_ignored_layers() modules torch-pruning must never prune (classifier, input stems)
  model.auxiliary_loss()      extra loss term of the last forward, or None
  model.temporal              True if the output depends on frame order
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from actionrepro.errors import ConfigError
from actionrepro.inputs import InputSpec

SCALES = ("paper", "tiny")
TAGS = ("code", "abstract", "recon", "recalled")
INITS = ("none", "imagenet", "kinetics400")   # what a published number's network started from
SPLITS = ("split1", "mean3")                  # split 1 alone, or the mean over the three official splits
# The `backbone` option values of our builders, named as papers name their backbones.
BACKBONE_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
                  "resnet101": "ResNet-101", "mobilenet_v2": "MobileNetV2", "tiny": "tiny ResNet",
                  "i3d_r50_nl": "non-local I3D ResNet-50", "r3d_18": "R3D-18 (torchvision)"}

Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}
_INFO: dict[str, "ModelInfo"] = {}


class VideoModel(nn.Module):
    """Base of every registered model: defaults for the contract; subclasses set the rest."""

    input_spec: InputSpec
    temporal: bool = True

    def prune_ignored_layers(self) -> list[nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} must list its classifier and input stems")

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Extra training loss computed during the last forward (S2TF-Net's mask terms); None here."""
        return None


@dataclass(frozen=True)
class Published:
    """One published top-1 accuracy, where it comes from and what it was measured under: the report
    puts our number beside it only where init, backbone, splits and test views are all ours too."""

    dataset: str                      # ucf101 | hmdb51 | kinetics400 | ...
    top1: float                       # percent
    tag: Literal["code", "abstract", "recon", "recalled"]
    protocol: str                     # the same facts in words, for readers
    source: str                       # repository + file (+ commit), or paper, it comes from
    _: KW_ONLY
    init: str | None                  # none | imagenet | kinetics400; None: the source does not say
    backbone: str                     # the network under the number, named like ModelInfo.backbone
    splits: str | None                # split1 | mean3; None: the source does not say
    views: str | None                 # test views "CxV" (clips x crops); None: the source does not say

    def __post_init__(self):
        if self.tag not in TAGS:
            raise ValueError(f"provenance tag {self.tag!r} is not one of {TAGS}")
        if self.init is not None and self.init not in INITS:
            raise ValueError(f"init {self.init!r} is not one of {INITS} (or None: not stated)")
        if self.splits is not None and self.splits not in SPLITS:
            raise ValueError(f"splits {self.splits!r} is not one of {SPLITS} (or None: not stated)")
        if self.views is not None and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", self.views):
            raise ValueError(f"views {self.views!r} is not 'CxV' (clips x crops, e.g. 10x3) or None")


@dataclass(frozen=True)
class ModelInfo:
    """What the report says about an architecture: origin, input protocol, published numbers."""

    name: str
    title: str                        # human name, e.g. "TSN-R50"
    reference: str                    # paper / code the architecture follows
    tag: Literal["code", "abstract", "recon", "recalled"]  # how faithful our structure is
    protocol: str                     # input protocol at paper scale
    published: tuple[Published, ...] = ()
    notes: str = ""
    modalities: tuple[str, ...] = ("rgb",)  # ("rgb", "flow") for two-stream models: the DAG schedules flow from this
    backbone: str = ""                # what the builder builds at paper scale with its default options

    def __post_init__(self):
        if self.tag not in TAGS:
            raise ValueError(f"provenance tag {self.tag!r} is not one of {TAGS}")

    def built_backbone(self, scale: str, options: dict) -> str:
        """The backbone a run was built with, named as papers name theirs. A tiny-scale network is
        never the published one, so its name says so."""
        chosen = options.get("backbone")
        name = BACKBONE_NAMES.get(chosen, str(chosen)) if chosen else (self.backbone or "unknown")
        return name if scale == "paper" else f"{scale}-scale {name}"


def register(name: str, info: ModelInfo | None = None) -> Callable[[Builder], Builder]:
    """Decorator: make `builder` buildable as `name`; its keyword-only parameters are its options."""

    def decorate(builder: Builder) -> Builder:
        params = list(inspect.signature(builder).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) != 2 or any(p.kind is p.VAR_KEYWORD for p in params):
            raise TypeError(f"builder for {name!r} must be f(scale, num_classes, *, option=default, ...)")
        if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
            raise TypeError(f"every option of {name!r} needs a default")
        old = _BUILDERS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (builder.__module__, builder.__qualname__):
            raise ValueError(f"model name {name!r} registered twice ({old.__module__} and {builder.__module__})")
        _BUILDERS[name] = builder
        if info is not None:
            if info.name != name:
                raise ValueError(f"ModelInfo for {name!r} is named {info.name!r}")
            _INFO[name] = info
        return builder

    return decorate


def _discover() -> None:
    """Import every module of actionrepro.models so that their @register calls run."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")


def model_names() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def model_options(name: str) -> dict:
    """The options `name` accepts, with their defaults (None = depends on the scale)."""
    builder = _builder(name)
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }


def model_info(name: str) -> ModelInfo:
    _builder(name)
    if name not in _INFO:
        raise ConfigError(f"model {name!r} has no ModelInfo; pass info= to @register({name!r}) in its module")
    return _INFO[name]


def needs_flow(name: str) -> bool:
    """Whether `name` consumes optical flow, known without building it (the DAG asks at parse time)."""
    return "flow" in model_info(name).modalities


def _builder(name: str) -> Builder:
    _discover()
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_BUILDERS)) or '(none)'}")
    return _BUILDERS[name]


def _check_option_types(name: str, options: dict, defaults: dict) -> None:
    """Reject values whose type cannot be what the default's type says (None defaults: builder checks)."""
    for key, value in options.items():
        default = defaults[key]
        if default is None or value is None:
            continue
        expected: tuple[type, ...] = (type(default),)
        if isinstance(default, float):
            expected = (int, float)
        bad = not isinstance(value, expected) or (isinstance(value, bool) and not isinstance(default, bool))
        if bad:
            raise ConfigError(
                f"architectures.{name}.{key} = {value!r} ({type(value).__name__}); "
                f"expected {' or '.join(t.__name__ for t in expected)} like the default {default!r}"
            )


def build_model(
    name: str,
    scale: Literal["paper", "tiny"],
    num_classes: int,
    options: dict | None = None,
) -> nn.Module:
    """Build `name` at `scale` with a `num_classes` head; `options` = params["architectures"].get(name, {})."""
    builder = _builder(name)
    if scale not in SCALES:
        raise ConfigError(f"scale {scale!r} is not one of {', '.join(SCALES)} (key 'scale' in the params file)")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    options = dict(options or {})
    defaults = model_options(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r} "
            f"(architectures.{name} in the params file); allowed keys: {', '.join(sorted(defaults)) or '(none)'}"
        )
    _check_option_types(name, options, defaults)
    model = builder(scale, num_classes, **options)
    _check_contract(name, model)
    return model


def _check_contract(name: str, model: nn.Module) -> None:
    """Catch a builder that forgets part of the contract at build time, not mid-training."""
    problems = []
    if not isinstance(getattr(model, "input_spec", None), InputSpec):
        problems.append("input_spec is not an InputSpec")
    if not isinstance(getattr(model, "temporal", None), bool):
        problems.append("temporal is not a bool")
    if not callable(getattr(model, "auxiliary_loss", None)):
        problems.append("auxiliary_loss() missing")
    try:
        ignored = model.prune_ignored_layers()
    except (AttributeError, NotImplementedError) as err:
        problems.append(f"prune_ignored_layers() failed: {err}")
    else:
        owned = {id(m) for m in model.modules()}
        if not ignored or any(id(m) not in owned for m in ignored):
            problems.append("prune_ignored_layers() must return a non-empty list of the model's own modules")
    if problems:
        raise TypeError(f"model {name!r} built by {type(model).__name__} breaks the registry contract: " + "; ".join(problems))
