"""USTN (TDN-style reconstruction): sizes counted by hand from MODELS.md, the 5-frame window split,
the short-range difference branch, the long-range difference module against a loop reference,
the learnable shift against TSM's shift and a depthwise Conv1d over T, order sensitivity, the
tiny cost budget and a torch-pruning smoke test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.errors import ConfigError
from actionrepro.models import build_model, model_info, model_options
from actionrepro.models.backbones import tiny_resnet
from actionrepro.models.layers import TemporalShift
from actionrepro.models.ustn import LearnableShift, LongRangeDifference, split_windows
from tests.tensors import n_params, clip_for


pytestmark = pytest.mark.usefixtures("one_thread")


def on_meta(*args, **kwargs):
    with torch.device("meta"):
        return build_model(*args, **kwargs)


def on_meta_resnet50():
    with torch.device("meta"):
        return torchvision.models.resnet50()


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode checks exercise batch-norm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


def long_range_params(c: int, r: int) -> int:
    """One long-range module (C -> r = C/16) plus its learnable shift, from the MODELS.md spec."""
    reduce = c * r + 2 * r             # 1x1 C->r, BN(r)
    depthwise = r * 9                  # depthwise 3x3 on r channels
    mix = 2 * (r * r * 9)              # 3x3 conv at full scale + 3x3 conv on the 2x pooled copy
    expand = r * c + 2 * c             # 1x1 r->C, BN(C)
    shift = 3 * c                      # depthwise Conv1d over T with kernel 3: 3 taps per channel
    return reduce + depthwise + mix + expand + shift


# ---------------------------------------------------------------- paper-scale sizes (meta device)

def test_paper_ustn_parameters_equal_resnet50_plus_difference_branch_plus_long_range_modules():
    resnet50 = 25_557_032                                   # torchvision resnet50, 1000 classes
    backbone = resnet50 - (2048 * 1000 + 1000) + (2048 * 101 + 101)
    diff_stem = 64 * 12 * 7 * 7 + 2 * 64                    # 7x7/2 conv 12->64 + fresh BN
    # bottleneck = 1x1 in->64 + BN, 3x3 64->64 + BN, 1x1 64->256 + BN; the first one has in=64 and a
    # 1x1 64->256 + BN downsample, the others have in=256
    res2_first = 64 * 64 + 2 * 64 + 64 * 64 * 9 + 2 * 64 + 64 * 256 + 2 * 256 + 64 * 256 + 2 * 256
    res2_other = 256 * 64 + 2 * 64 + 64 * 64 * 9 + 2 * 64 + 64 * 256 + 2 * 256
    diff_res2 = res2_first + 2 * res2_other                 # its own copy of res2 (3 bottlenecks)
    modules = 4 * long_range_params(128, 8) + 6 * long_range_params(256, 16) + 3 * long_range_params(512, 32)
    expected = backbone + diff_stem + diff_res2 + modules
    assert expected == 24_232_133
    model = on_meta("ustn", "paper", 101)
    assert n_params(model) == expected
    assert n_params(model.diff_res2) == n_params(on_meta_resnet50().layer1) == diff_res2


def test_paper_ustn_with_resnet18_puts_the_modules_after_conv1_of_every_basic_block_of_res3_to_res5():
    resnet18 = 11_689_512
    backbone = resnet18 - (512 * 1000 + 1000) + (512 * 51 + 51)
    diff_stem = 64 * 12 * 7 * 7 + 2 * 64
    diff_res2 = 2 * 2 * (64 * 64 * 9 + 2 * 64)              # 2 basic blocks x 2 (3x3 conv + BN)
    modules = 2 * long_range_params(128, 8) + 2 * long_range_params(256, 16) + 2 * long_range_params(512, 32)
    model = on_meta("ustn", "paper", 51, {"backbone": "resnet18"})
    assert n_params(model) == backbone + diff_stem + diff_res2 + modules
    for stage, width in zip((model.backbone.layer2, model.backbone.layer3, model.backbone.layer4), (128, 256, 512)):
        for block in stage:
            assert list(block.conv2._modules) == ["ldm", "shift", "conv"]
            assert block.conv2.ldm.reduce.in_channels == width and block.conv2.ldm.reduce.out_channels == width // 16
    assert not any(isinstance(m, (LongRangeDifference, LearnableShift))
                   for m in [*model.backbone.layer1.modules(), *model.diff_res2.modules()])


def test_paper_input_is_8_segments_of_5_consecutive_frames_at_224_with_equal_fusion_weights():
    model = on_meta("ustn", "paper", 101)
    spec = model.input_spec
    assert (spec.sampling, spec.segments, spec.frames_per_segment) == ("segments", 8, 5)
    assert (spec.frames, spec.size) == (40, 224)
    assert (model.alpha, model.beta) == (0.5, 0.5)
    assert model.backbone.conv1.kernel_size == model.diff_stem.conv.kernel_size == (7, 7)
    assert model.diff_stem.conv.stride == (2, 2) and model.diff_stem.conv.in_channels == 12


def test_sixteen_segments_default_to_tdn_fusion_weights_three_quarters_and_one_quarter():
    model = on_meta("ustn", "paper", 10, {"segments": 16})
    assert model.input_spec.frames == 80 and (model.alpha, model.beta) == (0.75, 0.25)
    model = on_meta("ustn", "paper", 10, {"segments": 16, "alpha": 0.6, "beta": 0.4})
    assert (model.alpha, model.beta) == (0.6, 0.4)


def test_options_are_the_documented_uncertain_choices_with_their_defaults():
    assert model_options("ustn") == {"pretrained": "none", "backbone": None, "segments": 8, "size": None,
                                     "dropout": 0.5, "alpha": None, "beta": None, "reduction": 16,
                                     "shift_div": 8, "mix_norm": False}


@pytest.mark.parametrize("options, match", [
    ({"alpha": 1.5}, "alpha = 1.5"),
    ({"beta": -0.1}, "beta = -0.1"),
    ({"shift_div": 1}, "shift_div = 1"),
    ({"reduction": 0}, "reduction = 0"),
    ({"size": 16}, "use size >= 32"),
    ({"segments": 0}, "segments = 0"),
    ({"backbone": "vgg16"}, "backbone = 'vgg16'"),
    ({"mix_norm": 1}, "mix_norm"),
])
def test_invalid_options_are_config_errors_naming_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("ustn", "tiny", 3, options)


def test_mix_norm_adds_a_batch_norm_after_each_mix_conv():
    plain, normed = on_meta("ustn", "paper", 10), on_meta("ustn", "paper", 10, {"mix_norm": True})
    reduced = 4 * 8 + 6 * 16 + 3 * 32                       # reduced widths of the 13 modules
    assert n_params(normed) - n_params(plain) == 2 * 2 * reduced


def test_model_info_is_a_reconstruction_whose_numbers_are_tdns():
    info = model_info("ustn")
    assert info.tag == "recon" and "TDN" in info.reference and "abstract" in info.reference
    assert {(p.dataset, p.top1) for p in info.published} == {("ucf101", 97.4), ("kinetics400", 76.6)}
    assert all("not USTN" in p.protocol for p in info.published)
    assert {p.dataset: p.tag for p in info.published} == {"ucf101": "recalled", "kinetics400": "code"}


# ---------------------------------------------------------------- tiny model: train, cost, order

def test_tiny_ustn_trains_forward_and_backward_on_its_declared_input():
    torch.manual_seed(0)
    model = build_model("ustn", "tiny", 6).train()
    spec = model.input_spec
    assert (spec.size, spec.segments, spec.frames_per_segment) == (32, 8, 5)
    logits = model(rgb=clip_for(model, batch=3))
    assert logits.shape == (3, 6)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


def test_tiny_ustn_costs_under_a_tenth_of_a_gigaflop_per_clip():
    model = build_model("ustn", "tiny", 10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(rgb=clip_for(model, batch=1))
    assert 0.01e9 < counter.get_total_flops() < 0.1e9


def test_reversing_the_frame_order_changes_the_output():
    torch.manual_seed(0)
    model = build_model("ustn", "tiny", 5).eval()
    randomise_bn(model)
    assert model.temporal is True
    clip = clip_for(model)
    with torch.no_grad():
        forward, backward = model(rgb=clip), model(rgb=clip.flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_reversing_only_the_segment_order_changes_the_output_through_the_long_range_modules():
    torch.manual_seed(0)
    model = build_model("ustn", "tiny", 5).eval()
    randomise_bn(model)
    clip = clip_for(model)
    segments_reversed = clip.unflatten(1, (8, 5)).flip(1).flatten(1, 2)  # windows keep their inner order
    with torch.no_grad():
        assert (model(rgb=clip) - model(rgb=segments_reversed)).abs().max() > 1e-4


def test_logits_are_the_mean_of_the_per_segment_logits():
    model = build_model("ustn", "tiny", 4).eval()
    clip = clip_for(model)
    with torch.no_grad():
        per_segment = model.segment_logits(clip).unflatten(0, (2, 8))
        torch.testing.assert_close(model(rgb=clip), per_segment.mean(dim=1))


def test_ustn_refuses_a_clip_of_another_length_and_flow_input():
    model = build_model("ustn", "tiny", 4)
    with pytest.raises(ValueError, match="built for T=40"):
        model(rgb=torch.randn(1, 8, 3, 32, 32))
    with pytest.raises(ValueError, match="no flow input"):
        model(rgb=clip_for(model, batch=1), flow=torch.randn(1, 1, 20, 32, 32))


# ---------------------------------------------------------------- short-range difference branch

def test_windows_split_into_the_centre_frame_and_four_successive_rgb_differences():
    rgb = torch.randn(2, 3 * 5, 3, 4, 4)
    centre, diffs = split_windows(rgb, segments=3)
    assert centre.shape == (6, 3, 4, 4) and diffs.shape == (6, 12, 4, 4)
    for b in range(2):
        for s in range(3):
            frames = rgb[b, 5 * s:5 * s + 5]
            torch.testing.assert_close(centre[3 * b + s], frames[2], rtol=0, atol=0)
            expected = torch.cat([frames[k + 1] - frames[k] for k in range(4)], dim=0)
            torch.testing.assert_close(diffs[3 * b + s], expected, rtol=0, atol=0)


def test_static_windows_give_zero_differences_so_the_branch_outputs_only_its_bias_path():
    torch.manual_seed(0)
    model = build_model("ustn", "tiny", 4).eval()
    randomise_bn(model)
    seen = {}
    model.diff_stem.conv.register_forward_hook(lambda m, i, o: seen.__setitem__("conv", o))
    frames = torch.randn(2, 8, 1, 3, 32, 32)
    static = frames.expand(-1, -1, 5, -1, -1, -1).flatten(1, 2)  # each window repeats one frame
    other = torch.randn(2, 8, 1, 3, 32, 32).expand(-1, -1, 5, -1, -1, -1).flatten(1, 2)
    with torch.no_grad():
        _, diffs = split_windows(static, 8)
        assert diffs.abs().max() == 0
        stem, res2 = model.short_range(diffs)
        assert seen["conv"].abs().max() == 0                  # the 12-channel stem sees nothing
        zero_stem, zero_res2 = model.short_range(torch.zeros_like(diffs))
        torch.testing.assert_close(stem, zero_stem, rtol=0, atol=0)
        torch.testing.assert_close(res2, zero_res2, rtol=0, atol=0)
        other_stem, _ = model.short_range(split_windows(other, 8)[1])
        torch.testing.assert_close(stem, other_stem, rtol=0, atol=0)  # content-free: the BN bias path
        assert stem.abs().max() > 0                           # ...which is not zero with a trained BN


def test_neighbour_frames_reach_the_main_stream_only_through_the_difference_branch():
    torch.manual_seed(0)
    clip = torch.randn(1, 40, 3, 32, 32)
    changed = clip.clone()
    changed.unflatten(1, (8, 5))[:, :, [0, 1, 3, 4]] += torch.randn(1, 8, 4, 3, 32, 32)  # centres untouched
    for beta, differs in ((0.0, False), (0.5, True)):
        torch.manual_seed(1)
        model = build_model("ustn", "tiny", 4, {"alpha": 1.0, "beta": beta}).eval()
        randomise_bn(model)
        with torch.no_grad():
            gap = (model(rgb=clip) - model(rgb=changed)).abs().max()
        assert bool(gap > 1e-5) is differs


def test_difference_stem_starts_as_the_loaded_rgb_stem_averaged_and_res2_as_a_separate_copy(tmp_path):
    torch.manual_seed(3)
    source = tiny_resnet()
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    model = build_model("ustn", "tiny", 4, {"pretrained": str(tmp_path / "tiny.pt")})
    expected = source.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 12, -1, -1)
    torch.testing.assert_close(model.diff_stem.conv.weight, expected)
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    for mine, theirs in zip(model.diff_res2.parameters(), source.layer1.parameters()):
        torch.testing.assert_close(mine, theirs)
    own = {id(p) for p in model.diff_res2.parameters()}
    assert not own & {id(p) for p in model.backbone.layer1.parameters()}


# ---------------------------------------------------------------- learnable temporal shift

def test_learnable_shift_initialised_equals_tsms_fixed_eighth_plus_eighth_shift():
    x = torch.randn(2 * 8, 64, 3, 3)
    shift = LearnableShift(64, segments=8, fold_div=8)
    with torch.no_grad():
        torch.testing.assert_close(shift(x), TemporalShift(8, 8)(x), rtol=0, atol=0)
    kernel = shift.kernel()
    assert kernel.shape == (64, 3)
    assert kernel[:8].tolist() == [[0, 0, 1]] * 8 and kernel[8:16].tolist() == [[1, 0, 0]] * 8
    assert kernel[16:].tolist() == [[0, 1, 0]] * 48


def test_learnable_shift_is_a_depthwise_conv1d_of_kernel_3_over_time():
    torch.manual_seed(0)
    t, c = 5, 6
    shift = LearnableShift(c, segments=t)
    with torch.no_grad():
        for tap in (shift.prev, shift.keep, shift.next):
            tap.weight.normal_()
    x = torch.randn(3 * t, c, 2, 4)
    # reference: (B*T, C, H, W) -> (B*H*W, C, T), Conv1d(C, C, 3, padding=1, groups=C), back
    seq = x.unflatten(0, (3, t)).permute(0, 3, 4, 2, 1).reshape(-1, c, t)
    out = F.conv1d(seq, shift.kernel().unsqueeze(1), padding=1, groups=c)
    expected = out.reshape(3, 2, 4, c, t).permute(0, 4, 3, 1, 2).reshape_as(x)
    with torch.no_grad():
        torch.testing.assert_close(shift(x), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- long-range difference module

def reference_long_range(m: LongRangeDifference, x: torch.Tensor, t: int) -> torch.Tensor:
    """MODELS.md's formula with explicit frame indexing on (B, T, ...) views."""
    r = m.reduce_bn(m.reduce(x)).unflatten(0, (-1, t))
    g = m.smooth(r.flatten(0, 1)).unflatten(0, (-1, t))
    fwd, bwd = torch.zeros_like(r), torch.zeros_like(r)
    for i in range(t):
        if i + 1 < t:
            fwd[:, i] = g[:, i + 1] - r[:, i]
        if i > 0:
            bwd[:, i] = g[:, i - 1] - r[:, i]

    def attention(d):
        d = d.flatten(0, 1)
        coarse = F.interpolate(m.mix_coarse(F.avg_pool2d(d, 2)), size=d.shape[-2:], mode="nearest")
        return torch.sigmoid(m.expand_bn(m.expand((d + m.mix_fine(d) + coarse) / 3))) - 0.5

    return x + x * (0.5 * attention(fwd) + 0.5 * attention(bwd))


@pytest.mark.parametrize("mix_norm", [False, True])
def test_long_range_module_matches_the_frame_indexed_reference(mix_norm):
    torch.manual_seed(0)
    m = LongRangeDifference(32, segments=4, mix_norm=mix_norm).eval()
    randomise_bn(m)
    x = torch.randn(2 * 4, 32, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_long_range(m, x, 4), rtol=1e-5, atol=1e-6)
        fwd, bwd = m.differences(x)
        assert fwd.unflatten(0, (2, 4))[:, -1].abs().max() == 0 and bwd.unflatten(0, (2, 4))[:, 0].abs().max() == 0


def static_clip_features(t: int = 6) -> torch.Tensor:
    return torch.randn(2, 1, 32, 6, 6).expand(-1, t, -1, -1, -1).flatten(0, 1)


def test_long_range_module_is_the_identity_on_a_static_clip_when_its_depthwise_conv_is_the_identity():
    """Static clip: G - R = 0 exactly iff the depthwise conv reproduces R; then A = sigmoid(BN(0)) - 0.5,
    which is 0 when the expand BN's bias path (beta - gamma * mean / std) is 0."""
    torch.manual_seed(0)
    m = LongRangeDifference(32, segments=6).eval()
    with torch.no_grad():
        m.smooth.weight.zero_()
        m.smooth.weight[:, :, 1, 1] = 1.0
        x = static_clip_features()
        torch.testing.assert_close(m(x), x, rtol=0, atol=0)
        m.expand_bn.bias.fill_(0.3)  # a non-zero bias path: the same gain for every frame and position
        gain = 1.0 + torch.sigmoid(torch.tensor(0.3)) - 0.5
        torch.testing.assert_close(m(x), x * gain, rtol=1e-6, atol=1e-6)


def test_long_range_module_on_a_static_clip_treats_all_inner_frames_alike_but_not_the_ends():
    """With a general depthwise conv, G - R != 0 even for a static clip: the output is not the input,
    but every frame with both neighbours gets the same attention; the end frames differ."""
    torch.manual_seed(0)
    m = LongRangeDifference(32, segments=6).eval()
    randomise_bn(m)
    x = static_clip_features()
    with torch.no_grad():
        out = m(x).unflatten(0, (2, 6))
    assert (out[:, 2] - x.unflatten(0, (2, 6))[:, 2]).abs().max() > 1e-4
    for i in range(2, 5):
        torch.testing.assert_close(out[:, i], out[:, 1], rtol=1e-6, atol=1e-6)
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-4 and (out[:, 5] - out[:, 1]).abs().max() > 1e-4


# ---------------------------------------------------------------- pruning smoke test (torch-pruning)

def kept_indices(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Positions in `original` of the values left in `pruned` (values are distinct random numbers)."""
    return [int((original == value).nonzero()[0]) for value in pruned]


def test_pruning_smoke_metapruner_halves_channels_keeps_stems_classes_and_consistent_shift_taps():
    """Smoke test only (the pruning step is its own module): torch-pruning's dependency graph must
    follow USTN's time moves, shift taps and long-range modules, and leave the stems and classes alone."""
    torch.manual_seed(0)
    model = build_model("ustn", "tiny", 7).eval()
    randomise_bn(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LearnableShift):
                for tap in (m.prev, m.keep, m.next):
                    tap.weight.normal_()
    example = {"rgb": clip_for(model, batch=2)}
    block = model.backbone.layer3[0]
    before_bn1, before_kernel = block.bn1.weight.detach().clone(), block.conv2.shift.kernel().detach().clone()
    before_bn = block.conv2.ldm.expand_bn.weight.detach().clone()
    stems = [m.weight.shape for m in model.prune_ignored_layers()[1:]]
    before = n_params(model)
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=model.prune_ignored_layers())
    pruner.step()
    assert n_params(model) < 0.5 * before
    with torch.no_grad():
        assert model(**example).shape == (2, 7)
    assert model.fc.out_features == 7 and [m.weight.shape for m in model.prune_ignored_layers()[1:]] == stems
    kept = kept_indices(before_bn1, block.bn1.weight.detach())  # channels of conv1's output that survive
    assert len(kept) == 32  # 64 -> 32 channels in res4
    torch.testing.assert_close(block.conv2.shift.kernel().detach(), before_kernel[kept], rtol=0, atol=0)
    torch.testing.assert_close(block.conv2.ldm.expand_bn.weight.detach(), before_bn[kept], rtol=0, atol=0)
    assert block.conv2.ldm.reduce.out_channels == 2 and block.conv2.conv.in_channels == 32
