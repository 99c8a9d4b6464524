"""STH (sth): parameter counts by hand from the spec, the efficient layer against the masked-Conv3d
reference, the 2D-weight init on static clips, order sensitivity, the tiny cost budget, options,
weight files and prunability with torch-pruning (smoke test and an exact dead-channel test)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.errors import ConfigError
from actionrepro.models import build_model, model_info, model_names, model_options
from actionrepro.models.sth import (STHConv2d, STHDepthwise, convert_backbone, from_neighbour, reference_mask,
                                    tiny_bottleneck_resnet, tiny_mobilenet_v2, to_conv3d)
from tests.tensors import n_params, clip_for

BACKBONES = ["tiny", "mobilenet_v2"]  # at tiny scale: the bottleneck ResNet and the reduced MobileNetV2


pytestmark = pytest.mark.usefixtures("one_thread")


def on_meta(build, *args, **kwargs):
    with torch.device("meta"):
        return build(*args, **kwargs)


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Random values in every STH tap (the 2D init zeroes some) and non-trivial batch-norm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (STHConv2d, STHDepthwise)):
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


def fold(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W)."""
    return x.permute(0, 2, 1, 3, 4).flatten(0, 1)


def unfold(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W)."""
    return x.unflatten(0, (-1, frames)).permute(0, 2, 1, 3, 4)


def run_layer(conv, x: torch.Tensor) -> torch.Tensor:
    """Apply an STH layer (list of groups in/out) to a (B, C, T, H, W) clip; result in the same layout."""
    sizes = conv.sizes() if isinstance(conv, STHDepthwise) else conv.in_sizes()
    out = conv(list(torch.split(fold(x), sizes, dim=1)))
    return unfold(torch.cat(out, dim=1), x.shape[2])


# ---------------------------------------------------------------- parameter counts by hand

R50_3X3 = [(3, 64), (4, 128), (6, 256), (3, 512)]  # (bottlenecks, width of the 3x3 conv) in res2..res5


@pytest.mark.parametrize("groups, rho", [(4, None), (4, 0.5), (2, 0.5), (8, 0.25)])
def test_paper_sth_r50_parameter_count_is_resnet50_with_sth_convs_counted_by_hand(groups, rho):
    options = {"groups": groups} if rho is None else {"groups": groups, "rho": rho}
    r = 1 / groups if rho is None else rho
    resnet50 = 25_557_032                       # torchvision resnet50, 1000 classes
    expected = resnet50 - (2048 * 1000 + 1000) + (2048 * 101 + 101)
    for blocks, c in R50_3X3:                   # STH-Conv = C_out * C_in * ((1 - rho) * 9 + rho * 3)
        expected += blocks * (c * c * ((1 - r) * 9 + r * 3) - c * c * 9)
    model = on_meta(build_model, "sth", "paper", 101, options)
    assert n_params(model) == expected
    layers = [m for m in model.modules() if isinstance(m, STHConv2d)]
    assert len(layers) == 16
    for layer, c in zip(layers, [c for blocks, c in R50_3X3 for _ in range(blocks)]):
        assert n_params(layer) == c * c * ((1 - r) * 9 + r * 3)


def test_paper_sth_conv_is_five_sixths_of_the_2d_conv_at_rho_a_quarter():
    model = on_meta(build_model, "sth", "paper", 10)
    layer = model.backbone.layer3[2].conv2
    assert n_params(layer) / (256 * 256 * 9) == pytest.approx(0.75 + 0.25 / 3)  # 0.8333


def test_paper_sth_mobilenet_v2_replaces_every_depthwise_conv_counted_by_hand():
    mobilenet = 3_504_872                       # torchvision mobilenet_v2, 1000 classes
    depthwise = [32, 96, 144, 144, 192, 192, 192, 384, 384, 384, 384, 576, 576, 576, 960, 960, 960]
    expected = mobilenet - (1280 * 1000 + 1000) + (1280 * 51 + 51)
    expected += sum(c * ((1 - 0.25) * 9 + 0.25 * 3) - c * 9 for c in depthwise)
    model = on_meta(build_model, "sth", "paper", 51, {"backbone": "mobilenet_v2"})
    assert n_params(model) == expected
    layers = [m for m in model.modules() if isinstance(m, STHDepthwise)]
    assert [sum(m.sizes()) for m in layers] == depthwise
    assert [m.sizes()[0] for m in layers] == [c // 4 for c in depthwise]


def test_paper_input_is_eight_segments_of_one_frame_at_224():
    spec = on_meta(build_model, "sth", "paper", 10).input_spec
    assert (spec.sampling, spec.segments, spec.frames_per_segment, spec.size) == ("segments", 8, 1, 224)


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v2"])
def test_paper_sth_gives_one_score_vector_per_clip_of_its_declared_input(backbone):
    model = build_model("sth", "paper", 101, {"backbone": backbone}).eval()
    with torch.no_grad():
        assert model(rgb=clip_for(model, batch=1)).shape == (1, 101)


def test_sth_is_registered_with_recon_provenance_and_its_options():
    assert "sth" in model_names()
    info = model_info("sth")
    assert info.tag == "recon" and "2003.08042" in info.reference and info.published == ()
    assert model_options("sth") == {"pretrained": "none", "backbone": None, "segments": 8, "size": None,
                                    "dropout": 0.5, "groups": 4, "rho": None}


# ---------------------------------------------------------------- efficient form = reference form

@pytest.mark.parametrize("c_in, c_out, stride, groups, m", [
    (12, 8, 1, 4, 1), (12, 8, 2, 4, 2), (10, 7, 1, 3, 1), (8, 8, 2, 2, 1), (16, 16, 1, 8, 3)])
def test_efficient_sth_conv_equals_the_masked_conv3d(c_in, c_out, stride, groups, m):
    torch.manual_seed(0)
    conv = STHConv2d(c_in, c_out, stride, segments=5, groups=groups, temporal_groups=m)
    randomise(conv)
    x = torch.randn(2, c_in, 5, 9, 9)
    ref = to_conv3d(conv)
    assert ref.weight.shape == (c_out, c_in, 3, 3, 3) and ref.stride == (1, stride, stride)
    expected = ref(x)
    torch.testing.assert_close(run_layer(conv, x), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("channels, stride, groups, m", [(12, 1, 4, 1), (12, 2, 4, 3), (9, 1, 3, 1)])
def test_efficient_depthwise_sth_equals_the_masked_depthwise_conv3d(channels, stride, groups, m):
    torch.manual_seed(0)
    conv = STHDepthwise(channels, stride, segments=4, groups=groups, temporal_groups=m)
    randomise(conv)
    x = torch.randn(3, channels, 4, 8, 8)
    expected = to_conv3d(conv)(x)
    torch.testing.assert_close(run_layer(conv, x), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("groups, m", [(4, 1), (4, 2), (3, 1)])
def test_reference_mask_is_a_centre_plane_or_line_per_pair_and_holds_the_parameters(groups, m):
    conv = STHConv2d(12, 12, groups=groups, temporal_groups=m)
    randomise(conv)
    mask = reference_mask(conv)
    weight = to_conv3d(conv).weight
    assert (weight[~mask] == 0).all() and (weight[mask] != 0).all()
    per_pair = mask.flatten(2).sum(2)
    assert set(per_pair.unique().tolist()) == {3, 9}
    centre_plane = mask[:, :, 1].flatten(2).all(2)
    centre_line = mask[:, :, :, 1, 1].all(2)
    assert ((per_pair == 9) == centre_plane).all() and ((per_pair == 3) == centre_line).all()
    # every input channel is temporal for m of the G output groups: rho * C_out output channels
    assert ((per_pair == 3).sum(0) == 12 * m // groups).all()
    # C_out * C_in * ((1 - rho) * 9 + rho * 3) with rho = m / G, in exact integer arithmetic
    assert mask.sum().item() == n_params(conv) == 12 * 12 * ((groups - m) * 9 + m * 3) // groups


def test_sth_conv_flops_are_the_reduced_fraction_of_the_2d_conv():
    conv2d = nn.Conv2d(32, 32, 3, 1, 1, bias=False)
    sth = STHConv2d.from_conv2d(conv2d, segments=4, groups=4, temporal_groups=1)
    x = torch.randn(4, 32, 14, 14)
    with FlopCounterMode(display=False) as flat:
        conv2d(x)
    with FlopCounterMode(display=False) as hybrid:
        sth(list(torch.split(x, 8, dim=1)))
    assert hybrid.get_total_flops() == flat.get_total_flops() * (0.75 * 9 + 0.25 * 3) / 9


def test_moving_frames_along_the_folded_batch_matches_the_clip_layout():
    z = torch.randn(3 * 4, 5, 2, 2)
    clip = z.view(3, 4, 5, 2, 2)
    previous = torch.cat([torch.zeros_like(clip[:, :1]), clip[:, :-1]], dim=1).view_as(z)
    following = torch.cat([clip[:, 1:], torch.zeros_like(clip[:, :1])], dim=1).view_as(z)
    torch.testing.assert_close(from_neighbour(z, 4, 1), previous, rtol=0, atol=0)
    torch.testing.assert_close(from_neighbour(z, 4, -1), following, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a multiple of T=4"):
        from_neighbour(torch.randn(6, 2, 1, 1), 4, 1)


# ---------------------------------------------------------------- init from 2D weights

def collapse_temporal_pairs(net: nn.Module, groups: int = 4) -> None:
    """The 2D network an STH network initialised from `net` equals on a static clip: each 3x3 kernel
    of a temporal (output group g, input group g) pair replaced by its sum at the centre."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m is not first_conv(net):
                w = m.weight
                if m.groups == 1:
                    step_in, step_out = m.in_channels // groups, m.out_channels // groups
                    for g in range(groups):
                        block = w[g * step_out:(g + 1) * step_out, g * step_in:(g + 1) * step_in]
                        total = block.sum((2, 3))
                        block.zero_()
                        block[:, :, 1, 1] = total
                else:  # depthwise: the first C/G channels are temporal
                    block = w[:m.out_channels // groups]
                    total = block.sum((2, 3))
                    block.zero_()
                    block[:, :, 1, 1] = total


def first_conv(net: nn.Module) -> nn.Conv2d:
    return net.conv1 if isinstance(net, torchvision.models.ResNet) else net.features[0][0]


def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last feature map, before pooling, of a torchvision ResNet or MobileNetV2 (2D or STH)."""
    if isinstance(net, torchvision.models.ResNet):
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return net.features(x)


@pytest.mark.parametrize("kind", ["tiny", "mobilenet_v2", "resnet50"])
def test_sth_from_2d_weights_on_a_static_clip_is_the_2d_network_with_collapsed_temporal_kernels(kind):
    torch.manual_seed(0)
    build = {"tiny": tiny_bottleneck_resnet, "mobilenet_v2": tiny_mobilenet_v2,
             "resnet50": torchvision.models.resnet50}[kind]
    net2d = build()
    randomise(net2d)
    net2d.eval()
    frames = 4
    sth = copy.deepcopy(net2d)
    convert_backbone(sth, segments=frames, groups=4, temporal_groups=1, copy_weights=True)
    sth.eval()
    collapsed = copy.deepcopy(net2d)
    collapse_temporal_pairs(collapsed)
    frame = torch.randn(2, 3, 32, 32)
    clip = frame.unsqueeze(1).expand(-1, frames, -1, -1, -1).flatten(0, 1)  # (B*T, 3, H, W), static
    with torch.no_grad():
        ours = features(sth, clip).unflatten(0, (2, frames))
        expected = features(collapsed, frame)
        original = features(net2d, frame)
    for t in range(frames):  # every frame, the clip ends included: the t-1 and t+1 taps start at zero
        torch.testing.assert_close(ours[:, t], expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert (expected - original).abs().max() > 1e-2 * original.abs().max()  # the collapse is not a no-op


def test_sth_conv_from_2d_weights_gives_the_2d_response_on_static_flat_frames():
    torch.manual_seed(0)
    conv2d = nn.Conv2d(8, 12, 3, 1, 1, bias=False)
    sth = STHConv2d.from_conv2d(conv2d, segments=3, groups=4, temporal_groups=1)
    flat = torch.randn(1, 8, 1, 1).expand(-1, -1, 6, 6)   # each channel one constant
    textured = torch.randn(1, 8, 6, 6)
    for frame, same in ((flat, True), (textured, False)):
        clip = frame.unsqueeze(2).expand(-1, -1, 3, -1, -1)
        with torch.no_grad():
            out, expected = run_layer(sth, clip), conv2d(frame)
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # away from the zero padding
        for t in range(3):
            close = torch.allclose(out[:, :, t][inner], expected[inner], rtol=1e-5, atol=1e-5)
            assert close is same


# ---------------------------------------------------------------- tiny models

@pytest.mark.parametrize("backbone", BACKBONES)
def test_tiny_sth_trains_forward_and_backward_on_its_declared_input(backbone):
    torch.manual_seed(0)
    model = build_model("sth", "tiny", 6, {"backbone": backbone}).train()
    spec = model.input_spec
    assert (spec.size, spec.frames, spec.segments) == (32, 8, 8)
    logits = model(rgb=clip_for(model, batch=3))
    assert logits.shape == (3, 6)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


@pytest.mark.parametrize("backbone", BACKBONES)
def test_tiny_sth_costs_under_a_tenth_of_a_gigaflop_per_clip(backbone):
    model = build_model("sth", "tiny", 10, {"backbone": backbone}).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(rgb=clip_for(model, batch=1))
    assert 0.005e9 < counter.get_total_flops() < 0.1e9


@pytest.mark.parametrize("backbone", BACKBONES)
def test_reversing_the_frame_order_changes_the_output(backbone):
    torch.manual_seed(0)
    model = build_model("sth", "tiny", 5, {"backbone": backbone}).eval()
    randomise(model)
    assert model.temporal is True
    clip = clip_for(model)
    with torch.no_grad():
        forward, backward = model(rgb=clip), model(rgb=clip.flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_untrained_sth_is_not_blind_to_frame_order_at_its_default_init():
    torch.manual_seed(0)
    model = build_model("sth", "tiny", 5).eval()  # no randomise(): the builder's own init
    clip = clip_for(model)
    with torch.no_grad():
        forward, backward = model(rgb=clip), model(rgb=clip.flip(1))
    assert (forward - backward).abs().max() > 1e-4 * forward.abs().max()


def test_sth_logits_are_the_mean_of_the_per_segment_logits():
    model = build_model("sth", "tiny", 4).eval()
    clip = clip_for(model)
    with torch.no_grad():
        per_segment = model.frame_logits(clip).unflatten(0, (2, 8))
        torch.testing.assert_close(model(rgb=clip), per_segment.mean(dim=1))


def test_sth_refuses_a_clip_of_another_length_and_flow():
    model = build_model("sth", "tiny", 4, {"segments": 4})
    with pytest.raises(ValueError, match="built for T=4"):
        model(rgb=torch.randn(1, 8, 3, 32, 32))
    with pytest.raises(ValueError, match="takes no flow"):
        model(rgb=torch.randn(1, 4, 3, 32, 32), flow=torch.randn(1, 1, 20, 32, 32))


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("options, match", [
    ({"rho": 0.3}, r"rho = 0.3 with groups = 4: rho must be a multiple of 1/groups"),
    ({"rho": 1.0}, r"between 0.25 and 0.75"),
    ({"groups": 1}, r"groups = 1; use at least 2"),
    ({"groups": 16}, r"groups = 16 does not fit the tiny backbone"),
    ({"backbone": "resnet18"}, r"backbone = 'resnet18'.*BasicBlock"),
    ({"pretrained": "imagenet"}, r"no weights for the tiny tiny backbone"),
    ({"rho": "1/4"}, r"rho = '1/4'; use a number"),
    ({"dilation": 2}, r"unknown option.*allowed keys"),
])
def test_invalid_options_are_config_errors_naming_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("sth", "tiny", 3, options)


def test_rho_and_groups_set_the_temporal_window_of_every_layer():
    model = build_model("sth", "tiny", 3, {"groups": 3, "rho": 2 / 3})
    layers = [m for m in model.modules() if isinstance(m, STHConv2d)]
    assert layers and all(layer.groups == 3 and layer.temporal_groups == 2 for layer in layers)
    assert layers[0].window(2) == (2, 0) and layers[0].others(2) == (1,)


# ---------------------------------------------------------------- weights

def test_2d_state_dict_file_is_converted_with_copied_spatial_and_summed_temporal_kernels(tmp_path):
    torch.manual_seed(1)
    source = tiny_bottleneck_resnet()
    torch.save(source.state_dict(), tmp_path / "2d.pt")
    model = build_model("sth", "tiny", 9, {"pretrained": str(tmp_path / "2d.pt")})
    w = source.layer2[0].conv2.weight                     # 24 -> 24: groups of 6
    layer = model.backbone.layer2[0].conv2
    torch.testing.assert_close(layer.spatial[1].weight, torch.cat([w[6:12, :6], w[6:12, 12:]], dim=1))
    previous, centre, following = layer.taps(1, 0)
    torch.testing.assert_close(centre, w[6:12, 6:12].sum((2, 3), keepdim=True))
    assert (previous == 0).all() and (following == 0).all()
    torch.testing.assert_close(model.backbone.layer2[0].conv1[2].weight, source.layer2[0].conv1.weight[12:18])
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)


def test_sth_backbone_state_dict_file_loads_as_it_is(tmp_path):
    torch.manual_seed(2)
    trained = build_model("sth", "tiny", 5, {"backbone": "mobilenet_v2"})
    randomise(trained)
    torch.save(trained.backbone.state_dict(), tmp_path / "sth.pt")
    again = build_model("sth", "tiny", 7, {"backbone": "mobilenet_v2", "pretrained": str(tmp_path / "sth.pt")})
    mine, theirs = again.backbone.state_dict(), trained.backbone.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key])
    assert again.fc.out_features == 7


# ---------------------------------------------------------------- pruning (torch-pruning)

def stem_shapes(model) -> list:
    """Weight shapes of the input stem conv(s): everything prune_ignored_layers() lists but the classifier."""
    return [m.weight.shape for m in model.prune_ignored_layers() if m is not model.fc]


def sth_channels(layer) -> tuple[int, int]:
    """(input, output) channels of an STH layer, read from its weights."""
    if isinstance(layer, STHDepthwise):
        return sum(layer.sizes()), sum(layer.sizes())
    return sum(layer.in_sizes()), sum(layer.out_sizes())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_pruning_smoke_metapruner_halves_tiny_sth_channels_and_it_still_runs(backbone):
    """Prunability smoke test (the pruning step itself belongs to the pruning engine)."""
    torch.manual_seed(0)
    model = build_model("sth", "tiny", 7, {"backbone": backbone}).eval()
    example = {"rgb": clip_for(model, batch=2)}
    layers = [m for m in model.modules() if isinstance(m, (STHConv2d, STHDepthwise))]
    before, stems, widths = n_params(model), stem_shapes(model), [sth_channels(m)[1] for m in layers]
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=model.prune_ignored_layers())
    pruner.step()
    assert n_params(model) < 0.4 * before
    assert model(**example).shape == (2, 7) and model.fc.out_features == 7
    assert stem_shapes(model) == stems
    # every STH layer lost about half its channels, except a MobileNetV2 first block tied to the kept stem
    pruned = [sth_channels(m)[1] / w for m, w in zip(layers, widths)]
    assert sum(r <= 0.5 for r in pruned) >= len(layers) - (backbone == "mobilenet_v2")
    for layer in layers:  # every pruned layer is still an STH conv: efficient = masked reference
        clip = torch.randn(1, sth_channels(layer)[0], 8, 6, 6)
        torch.testing.assert_close(run_layer(layer, clip), to_conv3d(layer)(clip), rtol=1e-4, atol=1e-4)
    fresh = build_model("sth", "tiny", 7, {"backbone": backbone}).eval()  # tensors-only reload of pruned shapes
    tp.load_state_dict(fresh, state_dict=tp.state_dict(model))
    with torch.no_grad():
        torch.testing.assert_close(fresh(**example), model(**example))


def kill(bn: nn.BatchNorm2d, channel: int) -> None:
    """Make a channel's batch-norm output exactly zero (so it is zero after ReLU/ReLU6 too)."""
    with torch.no_grad():
        bn.weight[channel] = 0
        bn.bias[channel] = 0


def test_pruning_dead_channels_through_the_sth_groups_leaves_the_resnet_function_unchanged():
    torch.manual_seed(0)
    model = build_model("sth", "tiny", 5).eval()
    randomise(model)
    block = model.backbone.layer2[0]        # conv2: 24 -> 24 in four groups of 6
    kill(block.bn1[1], 0)                    # input group 1, channel 0 of the STH conv
    kill(block.bn2[2], 4)                    # output group 2, channel 4
    clip = clip_for(model)
    with torch.no_grad():
        expected = model(rgb=clip)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs={"rgb": clip})
    graph.get_pruning_group(block.conv1[1], tp.prune_conv_out_channels, idxs=[0]).prune()
    graph.get_pruning_group(block.conv2.spatial[2], tp.prune_conv_out_channels, idxs=[4]).prune()
    assert block.conv2.in_sizes() == [6, 5, 6, 6] and block.conv2.out_sizes() == [6, 6, 5, 6]
    assert block.conv2.spatial[0].weight.shape[1] == 6 + 5 + 6  # the concatenated other groups shrank too
    with torch.no_grad():
        torch.testing.assert_close(model(rgb=clip), expected, rtol=1e-5, atol=1e-6)


def test_pruning_dead_channels_of_a_depthwise_sth_layer_leaves_the_mobilenet_function_unchanged():
    torch.manual_seed(0)
    model = build_model("sth", "tiny", 5, {"backbone": "mobilenet_v2"}).eval()
    randomise(model)
    block = model.backbone.features[3]      # 96 depthwise channels: 24 temporal, 72 spatial
    for part, channel in ((0, 5), (1, 40)):
        kill(block.expand_bn[part], channel)
        kill(block.dw_bn[part], channel)
    clip = clip_for(model)
    with torch.no_grad():
        expected = model(rgb=clip)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs={"rgb": clip})
    graph.get_pruning_group(block.expand[0], tp.prune_conv_out_channels, idxs=[5]).prune()
    graph.get_pruning_group(block.expand[1], tp.prune_conv_out_channels, idxs=[40]).prune()
    assert block.dw.sizes() == [23, 71]
    with torch.no_grad():
        torch.testing.assert_close(model(rgb=clip), expected, rtol=1e-5, atol=1e-6)
