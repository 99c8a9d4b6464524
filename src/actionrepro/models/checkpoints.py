"""Checkpoints from other code bases: read them without running code, detect whose layout their
keys follow, map the keys onto our models and load only what fits, completely.

Layouts (key patterns read from each project's source; docs/checkpoints.md has the table):

  torchvision  conv1/bn1/layerX.Y.{convN,bnN,downsample.0/1}/fc (resnet18..101), stem.N/layerX.Y.convN.M/fc
               (r3d_18, r2plus1d_18): our backbone names, so the identity mapping.
  mmaction2    0.x and 1.x recognizers: backbone.conv1.{conv,bn}, backbone.layerX.Y.convN.{conv,bn}
               (ConvModule), TSM's backbone.layerX.Y.conv1.conv.net (shift wrapping the conv), I3D's 3D
               convs under the same names, non-local blocks backbone.layerX.Y.non_local_block.{theta,phi,g,
               conv_out} (mmcv ConvModules; phi/g as `.0.conv` when sub-sampled), TSM's NL3DWrapper
               (layerX.Y.block.*), the head cls_head.fc_cls.
  tdn          MCG-NJU/TDN: (module.)base_model.{conv1,bn1,conv1_5,resnext_layer1,layerN_bak,...} and
               new_fc; every ResNet conv there has a bias (folded into the next BN's running mean).
  s2tfnet      the S2TF-Net authors' PySlowFast code: s1.pathway0_stem, sN.pathway0_resY.branch{1,2},
               sN.pathway0_nonlocalY.conv_{theta,phi,g,out}/bn, sidelayerK, bn_one, TSPF_layer_K,
               fusion_temp_mask, fc.
  ours         a state_dict() of one of our models.

Every layout is first renamed into one canonical naming (torchvision's block names, non-local
blocks as `layerX.Y.nonlocal.*` after residual block Y, TDN modules as `layerX.Y.ldm.*` /
`layerX.Y.shift.*`); our model's own keys are put in the same naming by walking its modules, and
the two are matched name by name and shape by shape.

Reading never unpickles arbitrary objects: torch.load(weights_only=True) first; a file whose
metadata needs more (mmaction2 1.x / mmengine: numpy scalars and arrays, HistoryBuffer, ConfigDict)
is read by a restricted unpickler that resolves only an explicit allow-list of harmless globals,
turns a short list of known metadata classes into inert placeholders without importing them, and
refuses everything else.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import re
import types
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from actionrepro.errors import ActionReproError

LAYOUTS = ("ours", "torchvision", "mmaction2", "tdn", "s2tfnet")

# ---------------------------------------------------------------- reading without running code

# Metadata classes of known training frameworks, replaced by an inert placeholder (never imported).
OPAQUE_GLOBALS = frozenset({
    "mmengine.logging.history_buffer.HistoryBuffer",
    "mmengine.logging.message_hub.MessageHub",
    "mmengine.config.config.ConfigDict",
    "mmengine.config.config.Config",
    "mmcv.utils.config.ConfigDict",
    "mmcv.utils.config.Config",
    "addict.addict.Dict",
    "yacs.config.CfgNode",
    "fvcore.common.config.CfgNode",
})


class OpaqueObject:
    """Stand-in for an allow-listed metadata object whose class is never imported: it keeps what the
    pickle stream handed it (state, items) as plain data and runs no code of the original class."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state = None
        self.items: dict = {}
        self.elements: list = []

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items, obj.elements = args, None, {}, []
        return obj

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _numpy_globals() -> dict[str, object]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a torch dependency here
        return {}
    core = getattr(np, "_core", None) or np.core
    allowed: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{module}.scalar"] = core.multiarray.scalar
        allowed[f"{module}._reconstruct"] = core.multiarray._reconstruct
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if name.endswith("DType") and isinstance(cls, type) and issubclass(cls, np.dtype):
                allowed[f"numpy.dtypes.{name}"] = cls
    return allowed


def _allowed_globals() -> dict[str, object]:
    """Callables a checkpoint may name: torch's tensor rebuilders, plain containers, numpy values."""
    import torch._tensor
    import torch._utils

    allowed: dict[str, object] = {
        "collections.OrderedDict": OrderedDict,
        "collections.defaultdict": defaultdict,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
        "builtins.slice": slice, "builtins.bytearray": bytearray, "builtins.range": range,
        "_codecs.encode": __import__("codecs").encode,  # bytes under pickle protocol 2
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch.nn.parameter.Parameter": nn.Parameter,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):
            allowed[f"torch._utils.{name}"] = getattr(torch._utils, name)
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[f"torch.{name}"] = getattr(torch, name)
    allowed.update(_numpy_globals())
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle stream names a global outside the allow-list."""


def _restricted_pickle_module(opaque_seen: list[str]) -> types.ModuleType:
    """A pickle-module look-alike for torch.load whose Unpickler resolves allow-listed globals only."""
    allowed = _allowed_globals()

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            # Protocol-2 streams name Python 2 modules (__builtin__.set); map them as pickle itself does.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            qualified = f"{module}.{name}"
            if qualified in allowed:
                return allowed[qualified]
            if qualified in OPAQUE_GLOBALS:
                opaque_seen.append(qualified)
                return type(name, (OpaqueObject,), {"qualname": qualified})
            raise RefusedGlobal(f"the file names {qualified}, which is not on the allow-list of harmless types")

    module = types.ModuleType("actionrepro_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
    module.loads = lambda b, **kw: RestrictedUnpickler(io.BytesIO(b), **kw).load()
    module.__dict__["UnpicklingError"] = pickle.UnpicklingError
    return module


@dataclass
class CheckpointFile:
    """What a checkpoint file holds: the tensors of the model and everything else, as plain data."""

    state_dict: dict[str, torch.Tensor]
    extras: dict = field(default_factory=dict)   # other top-level entries (meta, epoch, optimizer, cfg...)
    container: str | None = None                 # the key the state dict was found under, if any
    reader: str = "weights_only"                 # "weights_only" or "restricted"
    opaque: tuple[str, ...] = ()                 # metadata classes replaced by placeholders


STATE_KEYS = ("state_dict", "model_state", "model", "module", "net")


def unwrap_state_dict(obj, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str | None, dict]:
    """The tensor dict inside `obj` (a bare state dict or one of the usual containers), the container
    key, and the other top-level entries. DataParallel's "module." prefix is removed."""
    container, extras = None, {}
    if isinstance(obj, Mapping) and not _is_state(obj):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), Mapping) and _is_state(obj[key]):
                container = key
                extras = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not _is_state(obj):
        found = type(obj).__name__ if not isinstance(obj, Mapping) else f"a dict with keys {sorted(map(str, obj))[:8]}"
        raise ActionReproError(f"{source}: no state dict of tensors found ({found}); expected a state dict or a "
                               f"checkpoint holding one under one of {', '.join(STATE_KEYS)}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, container, extras


def _is_state(obj) -> bool:
    return bool(obj) and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | Path) -> CheckpointFile:
    """Read a checkpoint without unpickling arbitrary objects (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ActionReproError(f"checkpoint {path} does not exist")
    reader, opaque = "weights_only", []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        reader = "restricted"
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False,
                             pickle_module=_restricted_pickle_module(opaque))
        except RefusedGlobal as err:
            raise ActionReproError(
                f"checkpoint {path} refused: {err}. Nothing in it was executed. Only tensors, plain containers, "
                "numpy values and known training metadata (mmengine/mmcv configs, history buffers) are read; "
                "re-save the weights with torch.save(model.state_dict(), path)") from err
        except Exception as err:
            raise ActionReproError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}; "
                                   f"weights_only reader: {str(first).splitlines()[0]})") from err
    except Exception as err:  # truncated zip, not a torch file, ...
        first_line = (str(err).splitlines() or ["no detail"])[0]
        raise ActionReproError(f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line})") from err
    state, container, extras = unwrap_state_dict(obj, str(path))
    return CheckpointFile(state, extras, container, reader, tuple(sorted(set(opaque))))


# ---------------------------------------------------------------- layout detection

def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Which code base's names `state` follows: one of LAYOUTS; an unknown layout is an error."""
    keys = list(state)
    if not keys:
        raise ActionReproError("empty state dict: nothing to detect a layout from")
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    has = set(keys).__contains__
    any_start = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if any_start("base_model.") and (any_start("base_model.conv1_5.") or any_start("base_model.layer1_bak.")):
        return "tdn"
    if has("s1.pathway0_stem.conv.weight") or any(re.match(r"s\d\.pathway0_res\d+\.", k) for k in keys):
        return "s2tfnet"
    if (has("backbone.conv1.weight") or has("backbone.stem.0.weight")) and not any_start("cls_head."):
        return "ours"
    if any_start("cls_head.") or has("backbone.conv1.conv.weight") or any(
            re.match(r"backbone\.layer\d\.\d+\.(block\.)?conv\d\.conv\.", k) for k in keys):
        return "mmaction2"
    if (has("conv1.weight") and any_start("layer1.")) or has("stem.0.weight"):
        return "torchvision"
    raise ActionReproError(f"unknown checkpoint layout (first keys: {', '.join(keys[:6])}); known layouts: "
                           f"{', '.join(LAYOUTS)}. Pass layout=... if the names follow one of them")


# ---------------------------------------------------------------- canonical names

@dataclass
class Canonical:
    """A source state dict renamed into the canonical naming, with where every entry came from."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)      # canonical key -> source key(s)
    ignored: dict[str, str] = field(default_factory=dict)     # source key -> why it is not needed
    unmapped: list[str] = field(default_factory=list)         # source keys with no canonical name
    notes: list[str] = field(default_factory=list)            # value conversions applied

    def put(self, key: str, value: torch.Tensor, origin: str) -> None:
        if key in self.tensors:
            raise ActionReproError(f"checkpoint keys {self.origin[key]} and {origin} both map to {key}")
        self.tensors[key], self.origin[key] = value, origin


def _rename(state: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]],
            ignore: Iterable[tuple[str, str]] = ()) -> Canonical:
    """Apply the first matching (regex, replacement) rule to each key; unmatched keys are unmapped."""
    out = Canonical()
    rules = [(re.compile(p), r) for p, r in rules]
    ignore = [(re.compile(p), why) for p, why in ignore]
    for key, value in state.items():
        why = next((w for p, w in ignore if p.fullmatch(key)), None)
        if why is not None:
            out.ignored[key] = why
            continue
        for pattern, repl in rules:
            if pattern.fullmatch(key):
                out.put(pattern.sub(repl, key), value, key)
                break
        else:
            out.unmapped.append(key)
    return out


_BLOCK = r"(layer\d\.\d+)"


def _mmaction2(state, nonlocal_use_scale: bool) -> Canonical:
    blk = rf"backbone\.{_BLOCK}\.(?:block\.)?"
    nl = rf"{blk}non_local_block\."
    canon = _rename(state, [
        (r"backbone\.conv1\.conv\.(\w+)", r"conv1.\1"),
        (r"backbone\.conv1\.bn\.(\w+)", r"bn1.\1"),
        (rf"{blk}conv(\d)\.conv\.(?:net\.)?(\w+)", r"\1.conv\2.\3"),
        (rf"{blk}conv(\d)\.bn\.(\w+)", r"\1.bn\2.\3"),
        (rf"{blk}downsample\.conv\.(\w+)", r"\1.downsample.0.\2"),
        (rf"{blk}downsample\.bn\.(\w+)", r"\1.downsample.1.\2"),
        (rf"{nl}(theta|phi|g)\.(?:0\.)?conv\.(\w+)", r"\1.nonlocal.\2.\3"),
        (rf"{nl}conv_out\.conv\.(\w+)", r"\1.nonlocal.out.\2"),
        (rf"{nl}conv_out\.(?:bn|norm)\.(\w+)", r"\1.nonlocal.bn.\2"),
        (r"cls_head\.fc_cls\.(\w+)", r"fc.\1"),
    ], ignore=[(r"data_preprocessor\..*", "input normalisation constants of mmaction2 1.x, not weights")])
    for key in [k for k in canon.tensors if k.endswith(".nonlocal.out.weight")]:
        bias = key[:-len("weight")] + "bias"
        if bias not in canon.tensors:  # ConvModule drops the bias when a norm follows: a zero bias is the same
            canon.put(bias, canon.tensors[key].new_zeros(canon.tensors[key].shape[0]), f"(zero: {canon.origin[key]})")
            canon.notes.append(f"{bias}: zero bias (mmcv's conv_out has none before its BN)")
        theta = key.replace(".out.", ".theta.")
        if not nonlocal_use_scale and theta in canon.tensors:
            # mmaction2's non-local configs use use_scale=False (no 1/sqrt(C') on the affinities); our block
            # scales by C'^-1/2, so theta carries sqrt(C') to give the same affinities.
            factor = canon.tensors[theta].shape[0] ** 0.5
            for part in ("weight", "bias"):
                k = theta[:-len("weight")] + part
                if k in canon.tensors:
                    canon.tensors[k] = canon.tensors[k] * factor
            canon.notes.append(f"{theta[:-len('.weight')]}: x sqrt({canon.tensors[theta].shape[0]}) "
                               "(mmaction2 use_scale=False vs our scaled softmax)")
    return canon


_TDN_MSE = {"conv1": "reduce", "bn1": "reduce_bn", "conv2": "smooth", "conv3": "expand", "bn3": "expand_bn",
            "conv3_smallscale2": "mix_coarse.conv", "bn3_smallscale2": "mix_coarse.bn",
            "conv3_smallscale4": "mix_fine.conv", "bn3_smallscale4": "mix_fine.bn"}


def _tdn(state) -> Canonical:
    mse = "|".join(sorted(_TDN_MSE, key=len, reverse=True))
    rules = [
        (r"base_model\.(conv1|bn1)\.(\w+)", r"\1.\2"),
        (r"base_model\.conv1_5\.0\.(\w+)", r"diff_stem.conv.\1"),
        (r"base_model\.conv1_5\.1\.(\w+)", r"diff_stem.bn.\1"),
        (r"base_model\.resnext_layer1\.(.+)", r"diff_res2.\1"),
        (rf"base_model\.layer(\d)_bak\.(\d+)\.mse\.({mse})\.(\w+)", r"layer\1.\2.ldm.@\3@.\4"),
        (r"base_model\.layer(\d)_bak\.(\d+)\.shift\.conv\.weight", r"layer\1.\2.shift.taps"),
        (r"base_model\.layer(\d)_bak\.(.+)", r"layer\1.\2"),
        (r"new_fc\.(\w+)", r"fc.\1"),
        (r"base_model\.fc\.(\w+)", r"fc.\1"),
    ]
    unused = "TDN_Net keeps the second ResNet's stem as conv1_temp/conv1_temp1; its forward never uses them"
    canon = _rename(state, rules, ignore=[(r"base_model\.conv1_temp1?\..*", unused)])
    renamed = Canonical(ignored=canon.ignored, unmapped=canon.unmapped, notes=canon.notes)
    for key, value in canon.tensors.items():
        origin = canon.origin[key]
        key = re.sub(r"@(\w+)@", lambda m: _TDN_MSE[m.group(1)], key)
        if key.endswith(".shift.taps"):
            # Conv1d(C, C, 3, groups=C) over time: taps t-1, t, t+1 -> our three depthwise 1x1 convs.
            base = key[:-len("taps")]
            for i, tap in enumerate(("prev", "keep", "next")):
                renamed.put(f"{base}{tap}.weight", value[:, :, i].reshape(-1, 1, 1, 1).clone(), origin)
            continue
        renamed.put(key, value, origin)
    _fold_conv_biases(renamed)
    return renamed


def _fold_conv_biases(canon: Canonical) -> None:
    """ResNet convs with a bias (TDN's fbresnet) into our bias-free convs: BN(conv(x) + b) equals
    BN(conv(x)) with running_mean - b in eval mode, and in training the batch mean absorbs b."""
    for key in [k for k in canon.tensors if k.endswith(".bias")]:
        m = re.fullmatch(r"(.*?)(conv(\d)|downsample\.0)\.bias", key)
        if not m or ".ldm." in key or ".shift." in key or key.startswith("diff_stem."):
            continue
        bn = m.group(1) + (f"bn{m.group(3)}" if m.group(3) else "downsample.1")
        if f"{bn}.running_mean" not in canon.tensors:
            continue
        bias = canon.tensors.pop(key)
        origin = canon.origin.pop(key)
        canon.tensors[f"{bn}.running_mean"] = canon.tensors[f"{bn}.running_mean"] - bias
        canon.ignored[origin] = f"conv bias folded into {bn}.running_mean"
    if any(v.startswith("conv bias folded") for v in canon.ignored.values()):
        canon.notes.append("conv biases folded into the following batch norms' running means")


_SIDE = {"conv1": "blocks.0.0", "conv_S_1": "blocks.0.2", "conv_T_1": "blocks.0.4", "conv2": "blocks.0.6",
         "conv3": "blocks.1.0", "conv_S_2": "blocks.1.2", "conv_T_2": "blocks.1.4", "conv4": "blocks.1.6",
         "conv5": "head"}
_BRANCH = {"branch1": "downsample.0", "branch1_bn": "downsample.1", "branch2.a": "conv1", "branch2.a_bn": "bn1",
           "branch2.b": "conv2", "branch2.b_bn": "bn2", "branch2.c": "conv3", "branch2.c_bn": "bn3"}
_NL = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out", "bn": "bn", "norm": "bn"}


def _s2tfnet(state) -> Canonical:
    out = Canonical()
    for key, value in state.items():
        new = None
        if m := re.fullmatch(r"s1\.pathway0_stem\.(conv|bn)\.(\w+)", key):
            new = f"{'conv1' if m.group(1) == 'conv' else 'bn1'}.{m.group(2)}"
        elif (m := re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.(.+)\.(\w+)", key)) and m.group(3) in _BRANCH:
            new = f"layer{int(m.group(1)) - 1}.{m.group(2)}.{_BRANCH[m.group(3)]}.{m.group(4)}"
        elif (m := re.fullmatch(r"s(\d)\.pathway0_nonlocal(\d+)\.(\w+)\.(\w+)", key)) and m.group(3) in _NL:
            new = f"layer{int(m.group(1)) - 1}.{m.group(2)}.nonlocal.{_NL[m.group(3)]}.{m.group(4)}"
        elif (m := re.fullmatch(r"sidelayer(\d)\.side_layer_3x3x3_(\w+?)\.weight", key)) and m.group(2) in _SIDE:
            new = f"ssf.{int(m.group(1)) - 1}.{_SIDE[m.group(2)]}.weight"
        elif m := re.fullmatch(r"bn_one\.(\w+)", key):
            new = f"saliency_bn.{m.group(1)}"
        elif m := re.fullmatch(r"TSPF_layer_(\d)\.x_edge_layer(\d)\.weight", key):
            new = f"tsfp{m.group(1)}.mask.{2 * (int(m.group(2)) - 1)}.weight"
        elif m := re.fullmatch(r"fusion_temp_mask\.fusion_1x1x1_(1|2)\.weight", key):
            new = f"fusion.{'reduce' if m.group(1) == '1' else 'expand'}.weight"
            if value.ndim == 5:  # a Conv3d over (T as channels, depth 1) is our Conv2d over T
                value = value.flatten(2, 3)
                out.notes.append(f"{key}: 1x1x1 Conv3d weight read as the equivalent 1x1 Conv2d")
        elif m := re.fullmatch(r"fc\.(\w+)", key):
            new = key
        if new is None:
            out.unmapped.append(key)
        else:
            out.put(new, value, key)
    return out


def _ours_to_canonical(keys: Iterable[str], ndims: Mapping[str, int]) -> dict[str, str]:
    """Canonical names for state-dict keys of our models, read from the keys alone (a file saved from
    another of our models): non-local blocks are the stage children with a theta conv."""
    keys = list(keys)
    stage_children: dict[str, set[int]] = defaultdict(set)
    nonlocal_children: dict[str, set[int]] = defaultdict(set)
    for k in keys:
        if m := re.match(r"backbone\.(layer\d)\.(\d+)\.(.+)", k):
            stage_children[m.group(1)].add(int(m.group(2)))
            if m.group(3).startswith("theta."):
                nonlocal_children[m.group(1)].add(int(m.group(2)))
    index: dict[tuple[str, int], str] = {}
    for stage, children in stage_children.items():
        block = -1
        for i in sorted(children):
            if i in nonlocal_children[stage]:
                index[(stage, i)] = f"{stage}.{block}.nonlocal"
            else:
                block += 1
                index[(stage, i)] = f"{stage}.{block}"
    mapping = {}
    for k in keys:
        new = k[len("backbone."):] if k.startswith("backbone.") else k
        if m := re.match(r"backbone\.(layer\d)\.(\d+)\.(.+)", k):
            rest = m.group(3)
            if (mm := re.fullmatch(r"conv1\.1\.(weight|bias)", rest)) and ndims.get(k, 0) >= 4:
                rest = f"conv1.{mm.group(1)}"  # TSM: Sequential(shift, conv)
            new = f"{index[(m.group(1), int(m.group(2)))]}.{rest}"
        mapping[k] = _canonical_block_internals(new)
    return mapping


def _canonical_block_internals(key: str) -> str:
    key = re.sub(r"\.conv2\.(ldm|shift)\.", r".\1.", key)       # USTN: Sequential(ldm, shift, conv)
    key = re.sub(r"\.conv2\.conv\.", ".conv2.", key)
    key = re.sub(r"\.ldm\.(mix_fine|mix_coarse)\.0\.", r".ldm.\1.conv.", key)
    key = re.sub(r"\.ldm\.(mix_fine|mix_coarse)\.1\.", r".ldm.\1.bn.", key)
    key = re.sub(r"\.ldm\.(mix_fine|mix_coarse)\.weight$", r".ldm.\1.conv.weight", key)
    return key


def model_canonical_names(model: nn.Module) -> dict[str, str]:
    """Our model's state-dict keys -> canonical names, from its modules: residual blocks counted without
    the non-local blocks and pools inserted between them, shift/difference wrappers looked through."""
    from actionrepro.models.layers import TemporalShift
    from actionrepro.models.s2tfnet import NonLocal

    prefixes: dict[str, str] = {}
    backbone = getattr(model, "backbone", None)
    for s in range(1, 5):
        stage = getattr(backbone, f"layer{s}", None) if backbone is not None else None
        if stage is None:
            continue
        block = -1
        for i, child in enumerate(stage):
            ours = f"backbone.layer{s}.{i}."
            if isinstance(child, NonLocal):
                prefixes[ours] = f"layer{s}.{block}.nonlocal."
                continue
            if not any(True for _ in child.parameters()):
                continue
            block += 1
            prefixes[ours] = f"layer{s}.{block}."
            conv1 = getattr(child, "conv1", None)
            if isinstance(conv1, nn.Sequential) and len(conv1) == 2 and isinstance(conv1[0], TemporalShift):
                prefixes[f"{ours}conv1.1."] = f"layer{s}.{block}.conv1."
    mapping = {}
    for key in model.state_dict():
        match = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
        if match is not None:
            new = prefixes[match] + key[len(match):]
        else:
            new = key[len("backbone."):] if key.startswith("backbone.") else key
        mapping[key] = _canonical_block_internals(new)
    return mapping


def to_canonical(state: Mapping[str, torch.Tensor], layout: str, *, nonlocal_use_scale: bool = False) -> Canonical:
    """Rename `state` (in `layout`) into the canonical naming, converting values where layouts differ."""
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if layout == "torchvision":
        out = Canonical()
        for k, v in state.items():
            out.put(k, v, k)
        return out
    if layout == "ours":
        names = _ours_to_canonical(state, {k: v.ndim for k, v in state.items()})
        out = Canonical()
        for k, v in state.items():
            out.put(names[k], v, k)
        return out
    if layout == "mmaction2":
        return _mmaction2(state, nonlocal_use_scale)
    if layout == "tdn":
        return _tdn(state)
    if layout == "s2tfnet":
        return _s2tfnet(state)
    raise ActionReproError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------- loading

PARTS: dict[str, Callable[[str], bool]] = {
    "classifier": lambda c: c.startswith("fc."),
    "nonlocal": lambda c: ".nonlocal." in c,
    "saliency": lambda c: c.startswith(("ssf.", "saliency_bn.", "tsfp1.", "tsfp2.", "fusion.")),
    "difference": lambda c: c.startswith(("diff_stem.", "diff_res2.")) or ".ldm." in c or ".shift." in c,
}


def _selector(parts: Iterable[str], what: str) -> Callable[[str, str], bool]:
    """A predicate over (our or source key, canonical key): named parts (PARTS) or key prefixes. A prefix
    that matches nothing relaxes nothing, so a misspelt name can only make a load stricter."""
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    if any(not isinstance(p, str) or not p for p in parts):
        raise ActionReproError(f"{what}: use part names ({', '.join(PARTS)}) or non-empty key prefixes, got {parts!r}")
    named = [PARTS[p] for p in parts if p in PARTS]
    prefixes = tuple(p for p in parts if p not in PARTS)
    return lambda key, canon: any(f(canon) for f in named) or key.startswith(prefixes) or canon.startswith(prefixes)


def _inflate(value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A 2D conv kernel (O, I, H, W) repeated over t and divided by t for a 3D (O, I, t, H, W) slot."""
    if value.ndim == 4 and len(shape) == 5 and tuple(value.shape) == (shape[0], shape[1], shape[3], shape[4]):
        return value.unsqueeze(2).repeat(1, 1, shape[2], 1, 1) / shape[2]
    return None


def load_into(model: nn.Module, source, layout: str | None = None, allow_missing: Iterable[str] = (), *,
              skip: Iterable[str] = (), allow_unexpected: Iterable[str] = (), nonlocal_use_scale: bool = False,
              inflate: bool = True) -> dict:
    """Load a checkpoint (path, CheckpointFile or state dict) in any supported layout into `model`.

    Every key of the model must receive a tensor of its shape and every tensor of the file must find a
    key, or nothing is loaded and an ActionReproError lists what is missing, unexpected or mis-shaped.
    Relaxations are explicit and named:
      allow_missing     parts that may stay as built: "classifier" (the head, typically replaced for another
                        num_classes: a file head of the wrong shape is then skipped), "nonlocal", "saliency",
                        "difference", or key prefixes (ours or canonical). Present, fitting tensors still load.
      skip              parts never taken from the file even when they fit (e.g. ("classifier",)).
      allow_unexpected  parts or source-key prefixes of the file that may be left unused.
      nonlocal_use_scale  mmaction2 only: whether the file's non-local blocks scaled their affinities
                        (mmcv use_scale; the mmaction2 model-zoo configs use False).
      inflate           read a 2D conv kernel into a 3D slot by repeating it over t and dividing by t.
    Returns the report (also attached to the error as `err.report`).
    """
    if isinstance(source, (str, Path)):
        file = read_checkpoint(source)
        name = str(source)
    elif isinstance(source, CheckpointFile):
        file, name = source, "checkpoint"
    else:
        state, container, extras = unwrap_state_dict(source, "state dict")
        file, name = CheckpointFile(state, extras, container, "in-memory"), "state dict"
    layout = layout or detect_layout(file.state_dict)
    canon = to_canonical(file.state_dict, layout, nonlocal_use_scale=nonlocal_use_scale)
    own = model.state_dict()
    names = model_canonical_names(model)
    by_canon: dict[str, str] = {}
    for ours, c in names.items():
        if c in by_canon:
            raise ActionReproError(f"{type(model).__name__}: keys {by_canon[c]} and {ours} share the canonical name {c}")
        by_canon[c] = ours
    may_miss = _selector(allow_missing, "allow_missing")
    never = _selector(skip, "skip")
    may_leave = _selector(allow_unexpected, "allow_unexpected")

    report = {"layout": layout, "model": type(model).__name__, "source": name, "reader": file.reader,
              "opaque": list(file.opaque), "loaded": [], "missing": [], "unexpected": [], "mismatched": [],
              "left_as_built": [], "skipped": [], "inflated": [], "defaulted": [], "ignored": dict(canon.ignored),
              "notes": list(canon.notes)}
    new_state = {}
    for ours, c in names.items():
        target = own[ours]
        value = canon.tensors.get(c)
        origin = canon.origin.get(c, c)
        if value is not None and never(ours, c):
            report["skipped"].append(origin)
            value = None
        elif value is not None and value.shape != target.shape:
            inflated = _inflate(value, target.shape) if inflate else None
            if inflated is not None:
                value = inflated
                report["inflated"].append(ours)
            elif may_miss(ours, c):
                report["skipped"].append(f"{origin}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
                value = None
            else:
                report["mismatched"].append(f"{ours} <- {origin}: file {tuple(value.shape)} vs model "
                                            f"{tuple(target.shape)}")
                continue
        if value is None:
            if ours.endswith("num_batches_tracked"):
                report["defaulted"].append(ours)
            elif may_miss(ours, c) or never(ours, c):
                report["left_as_built"].append(ours)
            else:
                report["missing"].append(f"{ours} (as {c})" if c != ours else ours)
            continue
        new_state[ours] = value.to(dtype=target.dtype)
        report["loaded"].append(ours)
    for c, value in canon.tensors.items():
        if c in by_canon:
            continue
        origin = canon.origin[c]
        if may_leave(origin, c):
            report["ignored"][origin] = "allowed unexpected"
        else:
            report["unexpected"].append(f"{origin} (as {c})" if c != origin else origin)
    for key in canon.unmapped:
        if may_leave(key, key):
            report["ignored"][key] = "allowed unexpected"
        else:
            report["unexpected"].append(f"{key} (no {layout} rule)")
    if report["missing"] or report["unexpected"] or report["mismatched"]:
        def few(items):
            return "; ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")
        parts = [f"{len(report[k])} {k}: {few(report[k])}" for k in ("missing", "unexpected", "mismatched") if report[k]]
        err = ActionReproError(
            f"{name} ({layout} layout) does not fit {type(model).__name__}; nothing was loaded. " + " | ".join(parts)
            + ". Name the parts that may stay as built with allow_missing=(...) (e.g. 'classifier') or unused file "
              "entries with allow_unexpected=(...)")
        err.report = report
        raise err
    model.load_state_dict({**own, **new_state}, strict=True)
    return report
