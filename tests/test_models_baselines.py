"""Baselines TSN, TSM, R(2+1)D-18, R3D-18, I3D-R50: sizes against torchvision counted independently,
order (in)sensitivity, the shift against the reference slicing shift, weight inflation, weight
loading, the tiny cost budget and prunability with torch-pruning."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.errors import ActionReproError, ConfigError
from actionrepro.models import build_model
from actionrepro.models.backbones import (download_state_dict, tiny_resnet, torchvision_weights)
from actionrepro.models.i3d import I3D_R50_INFLATE, inflate_resnet, resnet_features
from actionrepro.models.layers import TemporalShift, adapt_stem, inflate_conv, shifts_disabled
from tests.tensors import n_params, clip_for, randomise_bn_stats

BASELINES = ["tsn", "tsm", "r2plus1d", "r3d", "i3d"]
TEMPORAL = ["tsm", "r2plus1d", "r3d", "i3d"]


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_shift(x: torch.Tensor, segments: int, fold_div: int) -> torch.Tensor:
    """TSM's definition written with slicing on (N, T, C, H, W): first fold from t+1, second from t-1."""
    nt, c, h, w = x.shape
    v = x.view(nt // segments, segments, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


# ---------------------------------------------------------------- paper-scale sizes
# Built on the meta device: shapes and parameter counts without allocating or initialising weights.

def on_meta(build, *args, **kwargs):
    with torch.device("meta"):
        return build(*args, **kwargs)


def test_paper_tsn_is_resnet50_with_a_num_classes_head():
    resnet50 = on_meta(torchvision.models.resnet50)
    assert n_params(resnet50) == 25_557_032
    expected = n_params(resnet50) - (2048 * 1000 + 1000) + (2048 * 101 + 101)
    assert n_params(on_meta(build_model, "tsn", "paper", 101)) == expected


def test_paper_tsm_adds_no_parameters_to_tsn():
    tsm = on_meta(build_model, "tsm", "paper", 51)
    assert n_params(tsm) == n_params(on_meta(build_model, "tsn", "paper", 51))
    shifts = [m for m in tsm.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == 3 + 4 + 6 + 3  # one per bottleneck of ResNet-50
    assert all(s.segments == 8 and s.fold_div == 8 for s in shifts)


@pytest.mark.parametrize("name, builder, at_400", [("r2plus1d", torchvision.models.video.r2plus1d_18, 31_505_325),
                                                   ("r3d", torchvision.models.video.r3d_18, 33_371_472)])
def test_paper_video_resnets_are_torchvisions_with_a_new_head(name, builder, at_400):
    assert n_params(on_meta(builder)) == at_400  # torchvision's 400-way model: ~31.5 M / ~33.4 M
    assert n_params(on_meta(build_model, name, "paper", 400)) == at_400
    assert n_params(on_meta(build_model, name, "paper", 101)) == at_400 - 512 * 400 - 400 + 512 * 101 + 101


def test_paper_i3d_is_resnet50_plus_its_inflated_kernels():
    resnet50 = on_meta(torchvision.models.resnet50)
    extra = resnet50.conv1.weight.numel() * (5 - 1)  # 7x7 stem -> 5x7x7
    stages = [resnet50.layer1, resnet50.layer2, resnet50.layer3, resnet50.layer4]
    for stage, flags in zip(stages, I3D_R50_INFLATE):
        for block, flag in zip(stage, flags):
            extra += block.conv1.weight.numel() * (3 - 1) * flag  # 1x1 -> 3x1x1
    expected = n_params(resnet50) - (2048 * 1000 + 1000) + (2048 * 51 + 51) + extra
    model = on_meta(build_model, "i3d", "paper", 51)
    assert n_params(model) == expected
    assert model.backbone.conv1.weight.shape == (64, 3, 5, 7, 7)
    assert model.backbone.layer4[1].conv1.weight.shape == (512, 2048, 3, 1, 1)
    assert model.backbone.layer4[0].conv1.weight.shape == (512, 1024, 1, 1, 1)


def test_paper_input_specs_follow_the_models_table():
    specs = {name: on_meta(build_model, name, "paper", 10).input_spec for name in BASELINES}
    assert (specs["tsn"].sampling, specs["tsn"].frames, specs["tsn"].size) == ("segments", 8, 224)
    assert specs["tsm"] == specs["tsn"]
    for name in ("r2plus1d", "r3d"):
        assert (specs[name].sampling, specs[name].clip_len, specs[name].stride, specs[name].size) == ("dense", 16, 1, 112)
    assert (specs["i3d"].sampling, specs["i3d"].clip_len, specs["i3d"].stride, specs["i3d"].size) == ("dense", 8, 8, 224)


# ---------------------------------------------------------------- tiny models: train, cost, order

@pytest.mark.parametrize("name", BASELINES)
def test_tiny_model_trains_forward_and_backward_on_its_declared_input(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny", 6).train()
    spec = model.input_spec
    assert spec.size == 32 and spec.frames == 8
    logits = model(rgb=clip_for(model, batch=3))
    assert logits.shape == (3, 6)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


@pytest.mark.parametrize("name", BASELINES)
def test_tiny_model_costs_under_a_tenth_of_a_gigaflop_per_clip(name):
    model = build_model(name, "tiny", 10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(rgb=clip_for(model, batch=1))
    assert 0.01e9 < counter.get_total_flops() < 0.1e9


@pytest.mark.parametrize("name", TEMPORAL)
def test_temporal_models_change_their_output_when_frame_order_is_reversed(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny", 5).eval()
    randomise_bn_stats(model)
    assert model.temporal is True
    clip = clip_for(model)
    with torch.no_grad():
        forward, backward = model(rgb=clip), model(rgb=clip.flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_tsn_output_does_not_depend_on_frame_order():
    torch.manual_seed(0)
    model = build_model("tsn", "tiny", 5).eval()
    randomise_bn_stats(model)
    assert model.temporal is False
    clip = clip_for(model)
    with torch.no_grad():
        torch.testing.assert_close(model(rgb=clip.flip(1)), model(rgb=clip), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(rgb=clip[:, torch.randperm(8)]), model(rgb=clip), rtol=1e-5, atol=1e-6)


def test_tsn_logits_are_the_mean_of_the_per_segment_logits():
    model = build_model("tsn", "tiny", 4).eval()
    clip = clip_for(model, batch=2)
    with torch.no_grad():
        per_frame = torch.stack([model.frame_logits(clip[:, t:t + 1]) for t in range(8)], dim=1)
        torch.testing.assert_close(model(rgb=clip), per_frame.mean(dim=1), rtol=1e-5, atol=1e-6)


def test_video_models_read_rgb_as_b_t_c_h_w_and_convolve_over_t():
    model = build_model("r3d", "tiny", 4).eval()
    clip = clip_for(model, batch=1)
    with torch.no_grad():
        direct = model.fc(model.backbone(clip.permute(0, 2, 1, 3, 4)))
        torch.testing.assert_close(model(rgb=clip), direct)


# ---------------------------------------------------------------- temporal shift

@pytest.mark.parametrize("segments, channels, fold_div", [(8, 64, 8), (3, 13, 4), (8, 7, 8), (1, 16, 8)])
def test_shift_equals_the_reference_slicing_shift(segments, channels, fold_div):
    x = torch.randn(2 * segments, channels, 3, 2)
    torch.testing.assert_close(TemporalShift(segments, fold_div)(x), reference_shift(x, segments, fold_div),
                               rtol=0, atol=0)


def test_shift_gradient_equals_the_reference_shift_gradient():
    x = torch.randn(16, 24, 2, 2, requires_grad=True)
    weight = torch.randn(16, 24, 2, 2)
    (TemporalShift(8, 8)(x) * weight).sum().backward()
    ours, x.grad = x.grad, None
    (reference_shift(x, 8, 8) * weight).sum().backward()
    torch.testing.assert_close(ours, x.grad, rtol=0, atol=0)


def test_shift_refuses_a_batch_that_is_not_whole_clips():
    with pytest.raises(ValueError, match="not a multiple of T=8"):
        TemporalShift(8)(torch.randn(12, 16, 2, 2))


def test_tsm_shifts_only_the_residual_branch_before_conv1_of_every_block():
    model = build_model("tsm", "tiny", 4)
    for stage in (model.backbone.layer1, model.backbone.layer2, model.backbone.layer3, model.backbone.layer4):
        for block in stage:
            assert isinstance(block.conv1, nn.Sequential) and isinstance(block.conv1[0], TemporalShift)
            assert isinstance(block.conv1[1], nn.Conv2d)
            if block.downsample is not None:
                assert not any(isinstance(m, TemporalShift) for m in block.downsample.modules())


def test_tsm_with_shifts_disabled_is_tsn_with_the_same_weights():
    tsm = build_model("tsm", "tiny", 4).eval()
    randomise_bn_stats(tsm)
    tsn = build_model("tsn", "tiny", 4).eval()
    tsn.load_state_dict({k.replace(".conv1.1.", ".conv1."): v for k, v in tsm.state_dict().items()})
    clip = clip_for(tsm)
    with torch.no_grad():
        shifted = tsm(rgb=clip)
        with shifts_disabled(tsm):
            torch.testing.assert_close(tsm(rgb=clip), tsn(rgb=clip))
        torch.testing.assert_close(tsm(rgb=clip), shifted)  # shifts restored on exit
    assert (shifted - tsn(rgb=clip)).abs().max() > 0


def test_tsm_refuses_a_clip_of_another_length():
    model = build_model("tsm", "tiny", 4, {"segments": 4})
    with pytest.raises(ValueError, match="built for T=4"):
        model(rgb=torch.randn(1, 8, 3, 32, 32))


# ---------------------------------------------------------------- inflation

def test_inflated_conv_on_a_static_clip_gives_the_2d_response_away_from_the_ends():
    conv = nn.Conv2d(5, 7, kernel_size=3, stride=2, padding=1, bias=True)
    frame = torch.randn(2, 5, 9, 9)
    clip = frame.unsqueeze(2).expand(-1, -1, 6, -1, -1)
    out = inflate_conv(conv, time_kernel=3)(clip)
    expected = conv(frame)
    for t in range(1, 5):
        torch.testing.assert_close(out[:, :, t], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, :, 0], expected, atol=1e-3)  # zero padding at the clip's ends


@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_inflated_resnet_on_a_static_clip_reproduces_the_2d_features(scale):
    torch.manual_seed(0)
    net2d = tiny_resnet() if scale == "tiny" else torchvision.models.resnet50()
    randomise_bn_stats(net2d)
    net2d.eval()
    stem_t, inflate = (3, None) if scale == "tiny" else (5, I3D_R50_INFLATE)
    net3d = inflate_resnet(net2d, stem_t, inflate).eval()
    frame = torch.randn(1, 3, 32, 32)
    frames = 24 if scale == "tiny" else 44  # long enough for the centre to escape the zero padding
    clip = frame.unsqueeze(2).expand(-1, -1, frames, -1, -1)
    with torch.no_grad():
        features3d = resnet_features(net3d, clip)
        expected = resnet_features(net2d, frame)
    assert features3d.shape[2] == frames // 2  # one temporal pool after res2
    centre = features3d[:, :, frames // 4]
    torch.testing.assert_close(centre, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_adapted_stem_sees_a_stack_of_identical_channels_like_the_rgb_mean():
    rgb = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    stem = adapt_stem(rgb, 20)
    assert stem.in_channels == 20 and stem.weight.shape == (8, 20, 7, 7)
    plane = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(stem(plane.expand(-1, 20, -1, -1)), rgb(plane.expand(-1, 3, -1, -1)) * 20 / 3,
                               rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- weights

def test_local_state_dict_file_loads_into_the_backbone_but_not_the_classifier(tmp_path):
    torch.manual_seed(1)
    source = tiny_resnet()
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    model = build_model("tsm", "tiny", 9, {"pretrained": str(tmp_path / "tiny.pt")})
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.backbone.layer3[0].conv1[1].weight, source.layer3[0].conv1.weight)
    assert model.fc.out_features == 9


def test_local_state_dict_in_a_wrapper_with_module_prefix_is_unwrapped(tmp_path):
    source = tiny_resnet()
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pt")
    model = build_model("tsn", "tiny", 3, {"pretrained": str(tmp_path / "w.pt")})
    torch.testing.assert_close(model.backbone.layer4[0].conv2.weight, source.layer4[0].conv2.weight)


def test_state_dict_of_another_architecture_fails_with_the_mismatches_listed(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ActionReproError, match=r"do not fit tsn's backbone.*shape mismatches: .*conv1\.weight"):
        build_model("tsn", "tiny", 3, {"pretrained": str(tmp_path / "r18.pt")})


def test_file_that_is_not_a_state_dict_is_refused_without_unpickling(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ActionReproError, match="cannot read pretrained weights"):
        build_model("r3d", "tiny", 3, {"pretrained": str(tmp_path / "junk.pt")})


def test_i3d_inflates_a_2d_state_dict_and_loads_an_inflated_one(tmp_path):
    source = tiny_resnet()
    torch.save(source.state_dict(), tmp_path / "2d.pt")
    model = build_model("i3d", "tiny", 4, {"pretrained": str(tmp_path / "2d.pt")})
    expected = source.conv1.weight.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3
    torch.testing.assert_close(model.backbone.conv1.weight, expected)
    torch.save(model.backbone.state_dict(), tmp_path / "3d.pt")
    again = build_model("i3d", "tiny", 4, {"pretrained": str(tmp_path / "3d.pt")})
    torch.testing.assert_close(again.backbone.layer2[0].conv1.weight, model.backbone.layer2[0].conv1.weight)


@pytest.mark.parametrize("name, value, match", [
    ("tsn", "kinetics", "not available for tsn"),
    ("r3d", "imagenet", "not available for r3d"),
    ("tsn", "imagenet", "no weights for the tiny ResNet"),
    ("i3d", "/no/such/weights.pth", "no file at /no/such/weights.pth"),
])
def test_unavailable_pretrained_choice_is_a_config_error(name, value, match):
    with pytest.raises(ConfigError, match=match):
        build_model(name, "tiny", 3, {"pretrained": value})


def test_named_weights_map_to_torchvisions_weights_enums():
    assert torchvision_weights("resnet50", "imagenet") is torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    assert torchvision_weights("r3d_18", "kinetics") is torchvision.models.video.R3D_18_Weights.KINETICS400_V1
    assert torchvision_weights("r2plus1d_18", "kinetics") is torchvision.models.video.R2Plus1D_18_Weights.KINETICS400_V1


def test_failed_weight_download_says_where_to_put_the_file():
    class Offline:
        url = "https://download.pytorch.org/models/resnet50-0676ba61.pth"

        def get_state_dict(self, **kwargs):
            raise OSError("Network is unreachable")

    with pytest.raises(ActionReproError, match=r"resnet50-0676ba61\.pth.*Network is unreachable.*architectures\.tsn\.pretrained"):
        download_state_dict(Offline(), "tsn")


# ---------------------------------------------------------------- pruning

@pytest.mark.parametrize("name", BASELINES)
def test_tiny_baseline_prunes_with_torch_pruning_and_keeps_classes_and_stem(name):
    torch.manual_seed(0)
    model = build_model(name, "tiny", 7).eval()
    example = {"rgb": clip_for(model, batch=2)}
    ignored = model.prune_ignored_layers()
    stem_weights = [m.weight.shape for m in ignored[1].modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    before = n_params(model)
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=ignored)
    pruner.step()
    assert n_params(model) < 0.5 * before
    assert model(**example).shape == (2, 7) and model.fc.out_features == 7
    assert [m.weight.shape for m in ignored[1].modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))] == stem_weights
