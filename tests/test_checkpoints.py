"""Checkpoint layouts (actionrepro.models.checkpoints): state dicts named as torchvision, mmaction2
(0.x/1.x: TSN, TSM, I3D, non-local I3D), TDN and the S2TF-Net authors' code name them, built here from
our models' tensors with reference-name tables written independently of the loader, must load into
our models and give the same outputs as the same tensors loaded under our own names; partial loads
and pickled code are refused.

Paper-scale models on tiny inputs (one clip, 32-64 px) so the real key sets and shapes are exercised.
"""

from __future__ import annotations

import copy
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision

from actionrepro.errors import ActionReproError
from actionrepro.models import build_model
from actionrepro.models.checkpoints import detect_layout, load_into, read_checkpoint
from actionrepro.models.s2tfnet import NONLOCAL_AFTER
from tests.tensors import clip_for, randomise_bn_stats

pytestmark = pytest.mark.usefixtures("one_thread")

PAPER_OPTIONS = {
    "tsn": {"segments": 2, "size": 32},
    "tsm": {"segments": 2, "size": 32},
    "i3d": {"size": 32},
    "s2tfnet": {"size": 64},
    "ustn": {"segments": 2, "size": 64, "mix_norm": True},
    "r3d": {"clip_len": 8, "size": 32},
    "r2plus1d": {"clip_len": 8, "size": 32},
}
NUM_CLASSES = 7


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter perturbed and every BN given non-trivial statistics (incl. the non-local BN that
    starts at zero), so a tensor loaded into the wrong slot changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        randomise_bn_stats(model, seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def paper():
    """name -> (pristine model, randomised source model), each built once for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            fresh = build_model(name, "paper", NUM_CLASSES, PAPER_OPTIONS[name]).eval()
            cache[name] = (fresh, randomise(copy.deepcopy(fresh), seed=1))
        fresh, src = cache[name]
        return copy.deepcopy(fresh), src

    return get


def same_outputs(a, b):
    x = clip_for(b, batch=1)
    with torch.no_grad():
        ya, yb = a(rgb=x), b(rgb=x)
    assert torch.isfinite(yb).all()
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-5)


def tv_keys(factory) -> list[str]:
    """A torchvision model's state-dict keys, built on the meta device (names only, no init cost)."""
    with torch.device("meta"):
        return list(factory().state_dict())


# ---------------------------------------------------------------- reference name tables (independent)

def mmaction2_resnet_name(tv: str, shift: bool = False) -> str:
    """torchvision ResNet name -> mmaction2 recognizer name (ConvModule conv/bn pairs, as mmaction2's
    _load_torchvision_checkpoint pairs them; TSM's shift wraps conv1.conv as `.net`)."""
    p = tv.split(".")
    if p[0] == "conv1":
        return f"backbone.conv1.conv.{p[1]}"
    if p[0] == "bn1":
        return f"backbone.conv1.bn.{p[1]}"
    if p[0] == "fc":
        return f"cls_head.fc_cls.{p[1]}"
    layer, block, module = p[0], p[1], p[2]
    if module == "downsample":
        return f"backbone.{layer}.{block}.downsample.{'conv' if p[3] == '0' else 'bn'}.{p[4]}"
    n = module[-1]
    if module.startswith("conv"):
        return f"backbone.{layer}.{block}.conv{n}.conv.{'net.' if shift and n == '1' else ''}{p[3]}"
    return f"backbone.{layer}.{block}.conv{n}.bn.{p[3]}"


def our_block_index(stage: int, j: int, after: tuple[tuple[int, ...], ...]) -> int:
    """Position of residual block j of layer{stage} in our Sequential, non-local blocks inserted."""
    return j + sum(1 for i in after[stage - 1] if i < j)


def our_resnet3d_key(tv: str, after) -> str:
    p = tv.split(".")
    if p[0].startswith("layer"):
        p[1] = str(our_block_index(int(p[0][-1]), int(p[1]), after))
    return "backbone." + ".".join(p)


# ---------------------------------------------------------------- torchvision and mmaction2 2D

def test_tsn_paper_from_torchvision_and_mmaction2_layouts(paper):
    fresh, src = paper("tsn")
    ours = src.state_dict()
    value = {k: ours[k if k.startswith("fc.") else "backbone." + k] for k in tv_keys(torchvision.models.resnet50)}
    tv_state = dict(value)
    mm_state = {mmaction2_resnet_name(k): v for k, v in value.items()}
    assert detect_layout(tv_state) == "torchvision" and detect_layout(mm_state) == "mmaction2"

    a, b = copy.deepcopy(fresh), copy.deepcopy(fresh)
    report_tv = load_into(a, tv_state)
    report_mm = load_into(b, mm_state)
    assert report_tv["layout"] == "torchvision" and report_mm["layout"] == "mmaction2"
    assert len(report_mm["loaded"]) == len(ours) and not report_mm["left_as_built"]
    same_outputs(a, b)
    same_outputs(b, src)


def test_tsm_paper_from_mmaction2_layout_with_shift_wrapped_conv(paper):
    fresh, src = paper("tsm")
    ours = src.state_dict()

    def our_key(tv):
        p = tv.split(".")
        if p[0].startswith("layer") and p[2] == "conv1":
            return f"backbone.{p[0]}.{p[1]}.conv1.1.{p[3]}"
        return tv if p[0] == "fc" else "backbone." + tv

    mm_state = {mmaction2_resnet_name(k, shift=True): ours[our_key(k)] for k in tv_keys(torchvision.models.resnet50)}
    assert "backbone.layer3.5.conv1.conv.net.weight" in mm_state
    model = copy.deepcopy(fresh)
    report = load_into(model, mm_state)
    assert len(report["loaded"]) == len(ours)
    same_outputs(model, src)


# ---------------------------------------------------------------- 3D: I3D, non-local I3D, inflation

def test_i3d_paper_from_mmaction2_layout(paper):
    fresh, src = paper("i3d")
    ours = src.state_dict()
    mm_state = {mmaction2_resnet_name(k): ours[k if k.startswith("fc.") else "backbone." + k]
                for k in tv_keys(torchvision.models.resnet50)}
    assert mm_state["backbone.conv1.conv.weight"].shape == (64, 3, 5, 7, 7)
    model = copy.deepcopy(fresh)
    load_into(model, mm_state)
    same_outputs(model, src)


def test_torchvision_2d_weights_inflate_into_i3d():
    tiny2d = build_model("tsn", "tiny", NUM_CLASSES)
    i3d = build_model("i3d", "tiny", NUM_CLASSES)
    state = {k[len("backbone."):]: v for k, v in tiny2d.state_dict().items() if k.startswith("backbone.")}
    report = load_into(i3d, state, layout="torchvision", allow_missing=("classifier",))
    assert "backbone.conv1.weight" in report["inflated"]
    w3 = i3d.backbone.conv1.weight
    torch.testing.assert_close(w3, state["conv1.weight"].unsqueeze(2).repeat(1, 1, w3.shape[2], 1, 1) / w3.shape[2])
    assert report["left_as_built"] == ["fc.weight", "fc.bias"]


def mmaction2_nonlocal_state(src) -> dict[str, torch.Tensor]:
    """Non-local I3D-R50 in mmaction2's names: blocks as ResNet3d, NonLocal3d(sub_sample=True,
    use_scale=False) inside the block it follows, conv_out without bias, head cls_head.fc_cls."""
    ours = src.state_dict()
    after = NONLOCAL_AFTER["paper"]
    out = {mmaction2_resnet_name(k): ours[our_resnet3d_key(k, after) if not k.startswith("fc.") else k]
           for k in tv_keys(torchvision.models.resnet50)}
    for stage, blocks in enumerate(after, start=1):
        for j in blocks:
            nl = f"backbone.layer{stage}.{our_block_index(stage, j, after) + 1}"
            mm = f"backbone.layer{stage}.{j}.non_local_block"
            inner = ours[f"{nl}.theta.weight"].shape[0]
            for name in ("weight", "bias"):
                out[f"{mm}.theta.conv.{name}"] = ours[f"{nl}.theta.{name}"] / inner ** 0.5  # unscaled affinities
                out[f"{mm}.phi.0.conv.{name}"] = ours[f"{nl}.phi.{name}"]
                out[f"{mm}.g.0.conv.{name}"] = ours[f"{nl}.g.{name}"]
            out[f"{mm}.conv_out.conv.weight"] = ours[f"{nl}.out.weight"]
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                out[f"{mm}.conv_out.bn.{name}"] = ours[f"{nl}.bn.{name}"]
    return out


def test_nonlocal_i3d_from_mmaction2_into_s2tfnet_paper(paper):
    fresh, src = paper("s2tfnet")
    with torch.no_grad():  # mmcv's conv_out has no bias: only a zero bias is representable
        for m in src.modules():
            if type(m).__name__ == "NonLocal":
                m.out.bias.zero_()
    mm_state = mmaction2_nonlocal_state(src)
    assert "backbone.layer3.5.non_local_block.g.0.conv.weight" in mm_state
    model = copy.deepcopy(fresh)
    with pytest.raises(ActionReproError, match="missing"):
        load_into(model, mm_state)  # the saliency branch is not in an I3D checkpoint
    report = load_into(model, mm_state, allow_missing=("saliency",))
    assert report["left_as_built"] and all(k.startswith(("ssf.", "saliency_bn.", "tsfp", "fusion."))
                                           for k in report["left_as_built"])
    assert any("zero bias" in n for n in report["notes"]) and any("sqrt" in n for n in report["notes"])
    heads = {k: v for k, v in src.state_dict().items() if not k.startswith(("backbone.", "fc."))}
    model.load_state_dict(heads, strict=False)
    same_outputs(model, src)


def s2tfnet_authors_state(src) -> dict[str, torch.Tensor]:
    """The S2TF-Net authors' PySlowFast names (s1..s5, pathway0_resY.branch1/branch2.{a,b,c}, nonlocal
    conv_theta/phi/g/out + bn, sidelayer convs, bn_one, TSPF_layer_K.x_edge_layerN, Conv3d fusion, fc)."""
    ours = src.state_dict()
    after = NONLOCAL_AFTER["paper"]
    branch = {"conv1": "branch2.a", "bn1": "branch2.a_bn", "conv2": "branch2.b", "bn2": "branch2.b_bn",
              "conv3": "branch2.c", "bn3": "branch2.c_bn"}
    out = {}
    for tv in tv_keys(torchvision.models.resnet50):
        p = tv.split(".")
        if p[0] == "fc":
            name = tv
        elif p[0] in ("conv1", "bn1"):
            name = f"s1.pathway0_stem.{'conv' if p[0] == 'conv1' else 'bn'}.{p[1]}"
        elif p[2] == "downsample":
            name = f"s{int(p[0][-1]) + 1}.pathway0_res{p[1]}.{'branch1' if p[3] == '0' else 'branch1_bn'}.{p[4]}"
        else:
            name = f"s{int(p[0][-1]) + 1}.pathway0_res{p[1]}.{branch[p[2]]}.{p[3]}"
        out[name] = ours[tv if p[0] == "fc" else our_resnet3d_key(tv, after)]
    for stage, blocks in enumerate(after, start=1):
        for j in blocks:
            nl = f"backbone.layer{stage}.{our_block_index(stage, j, after) + 1}"
            for ref, mine in (("conv_theta", "theta"), ("conv_phi", "phi"), ("conv_g", "g"), ("conv_out", "out")):
                for name in ("weight", "bias"):
                    out[f"s{stage + 1}.pathway0_nonlocal{j}.{ref}.{name}"] = ours[f"{nl}.{mine}.{name}"]
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                out[f"s{stage + 1}.pathway0_nonlocal{j}.bn.{name}"] = ours[f"{nl}.bn.{name}"]
    side = ["conv1", "conv_S_1", "conv_T_1", "conv2", "conv3", "conv_S_2", "conv_T_2", "conv4"]
    for k in range(3):
        for i, ref in enumerate(side):
            out[f"sidelayer{k + 1}.side_layer_3x3x3_{ref}.weight"] = ours[f"ssf.{k}.blocks.{i // 4}.{2 * (i % 4)}.weight"]
        out[f"sidelayer{k + 1}.side_layer_3x3x3_conv5.weight"] = ours[f"ssf.{k}.head.weight"]
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"bn_one.{name}"] = ours[f"saliency_bn.{name}"]
    for n in (1, 2):
        for i in range(7):
            out[f"TSPF_layer_{n}.x_edge_layer{i + 1}.weight"] = ours[f"tsfp{n}.mask.{2 * i}.weight"]
    out["fusion_temp_mask.fusion_1x1x1_1.weight"] = ours["fusion.reduce.weight"].unsqueeze(2)  # Conv3d there
    out["fusion_temp_mask.fusion_1x1x1_2.weight"] = ours["fusion.expand.weight"].unsqueeze(2)
    return out


def test_s2tfnet_paper_from_the_authors_checkpoint_file(paper, tmp_path):
    fresh, src = paper("s2tfnet")
    state = s2tfnet_authors_state(src)
    path = tmp_path / "checkpoint_epoch_00030.pyth"
    torch.save({"epoch": 30, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []},
                "cfg": "MODEL:\n  NUM_CLASSES: 7\n"}, path)
    file = read_checkpoint(path)
    assert file.container == "model_state" and detect_layout(file.state_dict) == "s2tfnet"
    model = copy.deepcopy(fresh)
    report = load_into(model, path)
    assert report["layout"] == "s2tfnet" and len(report["loaded"]) == len(src.state_dict())
    same_outputs(model, src)


# ---------------------------------------------------------------- TDN

TDN_MSE = {"reduce": "conv1", "reduce_bn": "bn1", "smooth": "conv2", "expand": "conv3", "expand_bn": "bn3",
           "mix_coarse.0": "conv3_smallscale2", "mix_coarse.1": "bn3_smallscale2",
           "mix_fine.0": "conv3_smallscale4", "mix_fine.1": "bn3_smallscale4"}


def tdn_state(src, seed: int = 3) -> dict[str, torch.Tensor]:
    """TDN's DDP checkpoint names (module.base_model.* / module.new_fc.*). TDN's fbresnet convs carry a
    bias: each gets a random one and the BN after it the running mean that makes it equivalent."""
    g = torch.Generator().manual_seed(seed)
    ours = src.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        p = key.split(".")
        if key.startswith("fc."):
            name = "new_fc." + p[1]
        elif key.startswith("diff_stem."):
            name = f"base_model.conv1_5.{'0' if p[1] == 'conv' else '1'}.{p[2]}"
        elif key.startswith("diff_res2."):
            name = "base_model.resnext_layer1." + ".".join(p[1:])
        elif p[1] in ("conv1", "bn1"):
            name = "base_model." + ".".join(p[1:])
        elif p[3:5] == ["conv2", "ldm"]:
            inner = ".".join(p[5:-1])
            name = f"base_model.{p[1]}_bak.{p[2]}.mse.{TDN_MSE[inner]}.{p[-1]}"
        elif p[3:5] == ["conv2", "shift"]:
            continue  # stacked below
        elif p[3:5] == ["conv2", "conv"]:
            name = f"base_model.{p[1]}_bak.{p[2]}.conv2.{p[-1]}"
        else:
            name = f"base_model.{p[1]}_bak.{p[2]}." + ".".join(p[3:])
        out[name] = value.clone()
    for key in ours:
        if key.endswith("conv2.shift.prev.weight"):
            base = key[:-len("prev.weight")]
            taps = [ours[base + t + ".weight"].reshape(-1, 1) for t in ("prev", "keep", "next")]
            p = key.split(".")
            out[f"base_model.{p[1]}_bak.{p[2]}.shift.conv.weight"] = torch.stack(taps, dim=2)  # (C, 1, 3)
    for name in list(out):
        conv = name[:-len(".weight")]
        bn = None
        if name.endswith(".weight") and out[name].ndim == 4 and ".mse." not in name and "conv1_5" not in name:
            last = conv.split(".")[-1]
            if last.startswith("conv") and last[-1].isdigit():
                bn = conv[:-len(last)] + "bn" + last[-1]
            elif conv.endswith("downsample.0"):
                bn = conv[:-1] + "1"
        if bn is not None:
            bias = torch.randn(out[name].shape[0], generator=g) * 0.1
            out[conv + ".bias"] = bias
            out[bn + ".running_mean"] = out[bn + ".running_mean"] + bias
    stem = out["base_model.conv1.weight"]
    for unused in ("conv1_temp", "conv1_temp1"):  # registered by TDN_Net, never used in its forward
        out[f"base_model.{unused}.weight"] = torch.randn(stem.shape, generator=g)
        out[f"base_model.{unused}.bias"] = torch.randn(stem.shape[0], generator=g)
    return {"module." + k: v for k, v in out.items()}


def test_ustn_paper_from_a_tdn_checkpoint_file(paper, tmp_path):
    fresh, src = paper("ustn")
    state = tdn_state(src)
    assert "module.base_model.layer1_bak.0.conv1.bias" in state
    path = tmp_path / "best.pth.tar"
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": state, "best_prec1": 97.4}, path)
    model = copy.deepcopy(fresh)
    report = load_into(model, path)
    assert report["layout"] == "tdn"
    assert {"base_model.conv1_temp.weight", "base_model.conv1_temp1.bias"} <= set(report["ignored"])
    assert report["ignored"]["base_model.layer3_bak.2.conv2.bias"].startswith("conv bias folded")
    same_outputs(model, src)


def test_tdn_checkpoint_needs_the_difference_branch_with_batch_norms(paper):
    """TDN's multi-scale convs have BNs: a USTN built without mix_norm cannot hold them."""
    _, src = paper("ustn")
    model = build_model("ustn", "tiny", NUM_CLASSES)
    with pytest.raises(ActionReproError, match="nothing was loaded"):
        load_into(model, tdn_state(src))


# ---------------------------------------------------------------- torchvision video ResNets

@pytest.mark.parametrize("name, factory", [("r3d", torchvision.models.video.r3d_18),
                                           ("r2plus1d", torchvision.models.video.r2plus1d_18)])
def test_video_resnets_paper_from_torchvision_layout(paper, name, factory):
    fresh, src = paper(name)
    ours = src.state_dict()
    keys = tv_keys(factory)
    state = {k: ours[k if k.startswith("fc.") else "backbone." + k] for k in keys}
    assert detect_layout(state) == "torchvision"
    model = copy.deepcopy(fresh)
    report = load_into(model, state)
    assert len(report["loaded"]) == len(ours)
    same_outputs(model, src)


# ---------------------------------------------------------------- refusals

def test_partial_load_is_refused_and_leaves_the_model_untouched():
    model = build_model("tsn", "tiny", NUM_CLASSES)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    donor = build_model("tsn", "tiny", 400).state_dict()
    state = {k[len("backbone."):]: v for k, v in donor.items() if k.startswith("backbone.")}
    state["fc.weight"], state["fc.bias"] = donor["fc.weight"], donor["fc.bias"]  # a 400-class head
    with pytest.raises(ActionReproError, match="mismatched") as err:
        load_into(model, state, layout="torchvision")
    assert err.value.report["mismatched"][0].startswith("fc.weight")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    report = load_into(model, state, layout="torchvision", allow_missing=("classifier",))
    assert report["left_as_built"] == ["fc.weight", "fc.bias"] and len(report["skipped"]) == 2
    assert torch.equal(model.fc.weight, before["fc.weight"])
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])

    del state["layer2.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ActionReproError) as err:
        load_into(build_model("tsn", "tiny", NUM_CLASSES), state, allow_missing=("classifier",))
    assert err.value.report["missing"] == ["backbone.layer2.0.conv1.weight (as layer2.0.conv1.weight)"]
    assert err.value.report["unexpected"] == ["layer9.0.conv1.weight"]


def test_skip_keeps_a_fitting_classifier_as_built():
    model, donor = build_model("tsn", "tiny", NUM_CLASSES), build_model("tsn", "tiny", NUM_CLASSES)
    head = model.fc.weight.clone()
    report = load_into(model, donor.state_dict(), skip=("classifier",))
    assert torch.equal(model.fc.weight, head) and report["skipped"] == ["fc.weight", "fc.bias"]
    assert torch.equal(model.backbone.conv1.weight, donor.backbone.conv1.weight)


def test_nonlocal_blocks_stay_random_only_when_named(paper):
    """An I3D checkpoint (no non-local blocks) into S2TF-Net's non-local backbone."""
    _, i3d = paper("i3d")
    state = {mmaction2_resnet_name(k): v for k, v in
             ((k, i3d.state_dict()[k if k.startswith("fc.") else "backbone." + k])
              for k in tv_keys(torchvision.models.resnet50))}
    fresh, _ = paper("s2tfnet")
    with pytest.raises(ActionReproError, match="nonlocal"):
        load_into(fresh, state, allow_missing=("saliency",))
    report = load_into(fresh, state, allow_missing=("saliency", "nonlocal"))
    assert any(".theta." in k for k in report["left_as_built"])


RAN = []


def _record_execution(*args):
    RAN.append(args)
    return "pwned"


class Payload:
    """Unpickling this would call _record_execution: the reader must refuse before resolving it."""

    def __reduce__(self):
        return (_record_execution, ("ran",))


def test_a_pickled_object_is_refused_and_never_runs(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": build_model("tsn", "tiny", NUM_CLASSES).state_dict(), "meta": {"x": Payload()}}, path)
    with pytest.raises(ActionReproError, match=r"refused: the file names .*_record_execution"):
        read_checkpoint(path)
    with pytest.raises(ActionReproError, match="refused"):
        load_into(build_model("tsn", "tiny", NUM_CLASSES), path)
    assert RAN == []


def test_mmaction2_1x_file_with_non_tensor_meta_loads(tmp_path, monkeypatch):
    """An mmengine checkpoint: {meta: numpy scalars and arrays, OrderedDict, torch.Size, a HistoryBuffer},
    state_dict in mmaction2 names, data_preprocessor buffers, message_hub. mmengine is not installed:
    its classes are written from a stand-in module and come back as inert placeholders."""
    class HistoryBuffer:
        def __init__(self):
            self._log_history, self._count_history, self.max_length = np.arange(3.0), np.ones(3), 1000

        def __setstate__(self, state):  # would run on a real unpickle; the reader must not call it
            RAN.append("HistoryBuffer.__setstate__")
            self.__dict__.update(state)

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = "mmengine.logging.history_buffer", "HistoryBuffer"
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer

    donor = build_model("tsn", "tiny", NUM_CLASSES)
    tv = {k[len("backbone."):]: v for k, v in donor.state_dict().items() if k.startswith("backbone.")}
    tv.update({"fc.weight": donor.fc.weight.detach(), "fc.bias": donor.fc.bias.detach()})
    state = OrderedDict((mmaction2_resnet_name(k), v) for k, v in tv.items())
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    meta = {"epoch": 50, "iter": np.int64(12345), "seed": np.int32(0), "lr": np.float64(0.01),
            "dataset_meta": OrderedDict(classes=("a", "b")), "input_size": torch.Size([1, 3, 8, 32, 32]),
            "cfg": "model = dict(type='Recognizer2D')", "mmengine_version": "0.10.3", "tags": {"tsn", "r50"}}
    path = tmp_path / "tsn_mmaction2_1x.pth"
    torch.save({"meta": meta, "state_dict": state,
                "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}, "runtime_info": {"epoch": 50}}}, path)
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.delitem(sys.modules, name)

    file = read_checkpoint(path)
    assert file.reader == "restricted" and file.opaque == ("mmengine.logging.history_buffer.HistoryBuffer",)
    assert file.extras["meta"]["iter"] == 12345 and file.extras["meta"]["input_size"] == torch.Size([1, 3, 8, 32, 32])
    buffer = file.extras["message_hub"]["log_scalars"]["train/loss"]
    assert repr(buffer) == "<opaque mmengine.logging.history_buffer.HistoryBuffer>"
    np.testing.assert_array_equal(buffer.state["_log_history"], np.arange(3.0))
    model = build_model("tsn", "tiny", NUM_CLASSES).eval()
    report = load_into(model, path)
    assert report["layout"] == "mmaction2" and "data_preprocessor.mean" in report["ignored"]
    assert RAN == []
    donor.eval()
    same_outputs(model, donor)


def test_unknown_layout_is_an_error():
    with pytest.raises(ActionReproError, match="unknown checkpoint layout"):
        detect_layout({"encoder.blocks.0.weight": torch.zeros(1)})
