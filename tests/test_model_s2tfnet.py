"""S2TF-Net: sizes counted by hand from MODELS.md, saliency/mask shapes at paper scale (meta device),
the non-local block against the written-out formula, TSFP, interleaving, the shared saliency BN,
the mask on res5, the loss variants, order sensitivity, the tiny cost budget and a torch-pruning
smoke test."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.errors import ConfigError
from actionrepro.models import build_model, model_info, model_options
from actionrepro.models.backbones import TINY_WIDTHS_3D, tiny_resnet
from actionrepro.models.s2tfnet import TSFP, NonLocal, interleave
from tests.tensors import n_params, clip_for


pytestmark = pytest.mark.usefixtures("one_thread")


def on_meta(*args, **kwargs):
    with torch.device("meta"):
        return build_model("s2tfnet", *args, **kwargs)


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial statistics and affine parameters (also wakes the zero-gamma non-local blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


# ---------------------------------------------------------------- hand counts from the spec

def ssf_params(c: int) -> int:
    """One SSF scale: two sub-blocks 1x1x1 C->C/2, 1x3x3 C/2->C/2, 3x1x1 C/2->C/2, 1x1x1 C/2->C
    (no bias, no BN), then the 1x1x1 C->1 head."""
    h = c // 2
    sub_block = c * h + h * h * 9 + h * h * 3 + h * c      # = 4 C^2
    return 2 * sub_block + c * 1


def tsfp_params(widths=(16, 32, 64, 32, 16, 4)) -> int:
    """1x9x9 1->16, 1x7x7 16->32, 1x3x3 32->64, 1x1x1 64->32, 1x5x5 32->16, 1x3x3 16->4, 1x1x1 4->1."""
    a, b, c, d, e, f = widths
    return 1 * a * 81 + a * b * 49 + b * c * 9 + c * d * 1 + d * e * 25 + e * f * 9 + f * 1 * 1


def nonlocal_params(c: int) -> int:
    """theta, phi, g: 1x1x1 C->C/2 with bias; output 1x1x1 C/2->C with bias; BN(C)."""
    h = c // 2
    return 3 * (c * h + h) + (h * c + c) + 2 * c


def test_ssf_modules_add_eleven_million_parameters_counted_by_hand():
    # 8 C^2 + C per scale at C = 256, 512, 1024, plus one BatchNorm3d(1) shared by the three scales
    expected = (8 * 256**2 + 256) + (8 * 512**2 + 512) + (8 * 1024**2 + 1024)
    assert expected == 11_011_840  # MODELS.md: "adds ~11.0 M parameters"
    assert sum(ssf_params(c) for c in (256, 512, 1024)) == expected
    model = on_meta("paper", 400)
    assert n_params(model.ssf) == expected
    assert n_params(model.saliency_bn) == 2 and model.saliency_bn.num_features == 1


def test_paper_s2tfnet_parameters_equal_nonlocal_i3d_r50_plus_ssf_tsfp_and_mask_fusion():
    resnet50 = 25_557_032                                  # torchvision resnet50 with its 1000-way FC
    backbone = resnet50 - (2048 * 1000 + 1000)
    # inflation: the 7x7 stem becomes 5x7x7 (+4 planes); first convs with t=3 get +2 planes
    stem = 64 * 3 * 7 * 7 * 4
    res2 = 2 * (64 * 64 + 256 * 64 + 256 * 64)             # t = 3, 3, 3
    res3 = 2 * (256 * 128 + 512 * 128)                     # t = 3, 1, 3, 1
    res4 = 2 * (512 * 256 + 1024 * 256 + 1024 * 256)       # t = 3, 1, 3, 1, 3, 1
    res5 = 2 * (2048 * 512)                                # t = 1, 3, 1
    i3d = backbone + stem + res2 + res3 + res4 + res5
    nonlocal_blocks = 2 * nonlocal_params(512) + 3 * nonlocal_params(1024)
    assert nonlocal_params(512) == 2 * 512**2 + 4.5 * 512
    saliency = 11_011_840 + 2                              # SSF x3 + the shared BN(1)
    tsfp = 2 * tsfp_params()
    assert tsfp_params() == 60_244
    fusion = 4 * 2 + 2 * 1                                 # 1x1 convs 4->2, 2->1 over time-as-channels
    head = 2048 * 400 + 400
    expected = i3d + nonlocal_blocks + saliency + tsfp + fusion + head
    assert expected == 46_534_276
    assert n_params(on_meta("paper", 400)) == expected


def test_paper_r3d_18_variant_is_torchvisions_r3d_18_plus_the_same_side_branch():
    r3d_18 = 33_371_472 - (512 * 400 + 400)                # torchvision r3d_18 without its FC
    expected = r3d_18 + sum(ssf_params(c) for c in (64, 128, 256)) + 2 + 2 * tsfp_params() + 10 + 512 * 51 + 51
    model = on_meta("paper", 51, {"backbone": "r3d_18"})
    assert n_params(model) == expected
    assert not any(isinstance(m, NonLocal) for m in model.modules())


def test_paper_backbone_has_the_released_temporal_kernels_and_nonlocal_placement():
    net = on_meta("paper", 10).backbone
    assert net.conv1.weight.shape == (64, 3, 5, 7, 7) and net.conv1.stride == (1, 2, 2)
    assert net.maxpool.kernel_size == (1, 3, 3) and net.maxpool.stride == (1, 2, 2)
    assert isinstance(net.layer1[-1], nn.MaxPool3d) and net.layer1[-1].kernel_size == (2, 1, 1)
    layout = [[type(m).__name__ for m in stage] for stage in (net.layer2, net.layer3, net.layer4)]
    assert layout[0] == ["Bottleneck", "Bottleneck", "NonLocal", "Bottleneck", "Bottleneck", "NonLocal"]
    assert layout[1] == ["Bottleneck", "Bottleneck", "NonLocal", "Bottleneck", "Bottleneck", "NonLocal",
                         "Bottleneck", "Bottleneck", "NonLocal"]
    assert layout[2] == ["Bottleneck"] * 3
    kernels = [[b.conv1.kernel_size[0] for b in stage if not isinstance(b, (NonLocal, nn.MaxPool3d))]
               for stage in (net.layer1, net.layer2, net.layer3, net.layer4)]
    assert kernels == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    block = net.layer3[0]
    assert (block.conv2.kernel_size, block.conv3.kernel_size) == ((1, 3, 3), (1, 1, 1))


def test_paper_saliency_volumes_tsfp_outputs_and_final_mask_have_the_documented_shapes():
    model = on_meta("paper", 400)
    spec = model.input_spec
    assert (spec.sampling, spec.clip_len, spec.stride, spec.size) == ("dense", 8, 8, 224)
    maps = model.forward_maps(torch.empty(2, 8, 3, 224, 224, device="meta"))
    shapes = {k: tuple(v.shape) for k, v in maps.items()}
    assert shapes == {
        "s1": (2, 1, 4, 56, 56), "s2": (2, 1, 4, 28, 28), "s3": (2, 1, 4, 14, 14),
        "p1": (2, 1, 4, 28, 28), "m1": (2, 1, 4, 28, 28),      # TSFP1 pools (1, 2, 2)
        "p2": (2, 1, 4, 14, 14), "m2": (2, 1, 4, 14, 14),      # TSFP2 pools (2, 2, 2) of 8 interleaved frames
        "mask": (2, 1, 1, 7, 7), "logits": (2, 400),
    }
    assert (model.tsfp1.time_stride, model.tsfp2.time_stride) == (1, 2)
    assert model.fusion.reduce.in_channels == 4 and model.fusion.reduce.out_channels == 2
    assert model.tsfp2.mask[10].stride == (2, 2, 2) and model.tsfp1.mask[10].stride == (1, 2, 2)


def test_r3d_18_saliency_pyramid_pools_time_to_meet_each_next_scale():
    model = on_meta("paper", 10, {"backbone": "r3d_18"})
    spec = model.input_spec
    assert (spec.clip_len, spec.stride, spec.size) == (16, 1, 112)
    maps = model.forward_maps(torch.empty(1, 16, 3, 112, 112, device="meta"))
    assert maps["s1"].shape == (1, 1, 16, 56, 56) and maps["s2"].shape == (1, 1, 8, 28, 28)
    assert maps["p1"].shape == maps["s2"].shape and maps["p2"].shape == maps["s3"].shape == (1, 1, 4, 14, 14)
    assert (model.tsfp1.time_stride, model.tsfp2.time_stride) == (2, 4)
    assert maps["mask"].shape == (1, 1, 1, 7, 7)


def test_options_are_the_documented_choices_with_their_defaults():
    assert model_options("s2tfnet") == {
        "backbone": "i3d_r50_nl", "pretrained": "none", "clip_len": None, "stride": None, "size": None,
        "dropout": 0.5, "nonlocal_pool": True, "positive_init": True, "loss": "ce", "lam": 1e-4, "gamma": 1e-4, "theta": 1e-4,
    }


@pytest.mark.parametrize("options, match", [
    ({"backbone": "resnet50"}, "backbone = 'resnet50'"),
    ({"loss": "mse"}, "loss = 'mse'"),
    ({"lam": -1.0}, "lam = -1.0"),
    ({"nonlocal_pool": 1}, "nonlocal_pool = 1"),
    ({"size": 40}, "multiple of 16"),
    ({"backbone": "r3d_18", "clip_len": 5}, "frames of each scale"),
    ({"pretrained": "kinetics"}, "not available for s2tfnet"),
    ({"pretrained": "imagenet"}, "no weights for the tiny backbone"),
    ({"dropout": 1.0}, "dropout = 1.0"),
])
def test_invalid_options_are_config_errors_naming_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("s2tfnet", "tiny", 3, options)


def test_model_info_says_the_structure_is_from_code_and_the_numbers_from_the_abstract():
    info = model_info("s2tfnet")
    assert info.tag == "code" and "xiaoxiAries/S2TFNet" in info.reference
    assert {(p.dataset, p.top1) for p in info.published} == {("kinetics400", 74.8), ("ucf101", 95.1), ("hmdb51", 80.9)}
    assert all(p.tag == "abstract" and "doi:10.1016/j.image.2025.117381" in p.source for p in info.published)
    assert all(p.backbone == "non-local I3D ResNet-50" and p.splits is None for p in info.published)
    assert "unknown" in info.notes and "plain CE" in info.notes


# ---------------------------------------------------------------- tiny model: train, cost, order

@pytest.mark.parametrize("backbone", ["i3d_r50_nl", "r3d_18"])
def test_tiny_model_trains_forward_and_backward_on_its_declared_input(backbone):
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 6, {"backbone": backbone}).train()
    spec = model.input_spec
    assert (spec.sampling, spec.clip_len, spec.size) == ("dense", 8, 32) and spec.stride in (1, 2)
    logits = model(rgb=clip_for(model, batch=3))
    assert logits.shape == (3, 6)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"
    assert model.tsfp1.mask[0].weight.grad.abs().sum() > 0  # CE alone reaches the saliency branch


@pytest.mark.parametrize("backbone", ["i3d_r50_nl", "r3d_18"])
def test_tiny_model_costs_under_a_tenth_of_a_gigaflop_per_clip(backbone):
    model = build_model("s2tfnet", "tiny", 10, {"backbone": backbone}).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(rgb=clip_for(model, batch=1))
    assert 0.01e9 < counter.get_total_flops() < 0.1e9


@pytest.mark.parametrize("backbone", ["i3d_r50_nl", "r3d_18"])
def test_reversing_the_frame_order_changes_the_output(backbone):
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 5, {"backbone": backbone}).eval()
    randomise_bn(model)
    assert model.temporal is True
    clip = clip_for(model)
    with torch.no_grad():
        forward, backward = model(rgb=clip), model(rgb=clip.flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_refuses_a_clip_of_another_length_and_flow_input():
    model = build_model("s2tfnet", "tiny", 4)
    with pytest.raises(ValueError, match="built for T=8"):
        model(rgb=torch.randn(1, 4, 3, 32, 32))
    with pytest.raises(ValueError, match="no flow input"):
        model(rgb=clip_for(model, batch=1), flow=torch.randn(1, 1, 20, 32, 32))


def test_tiny_backbone_inflates_a_2d_state_dict_file(tmp_path):
    source = tiny_resnet(TINY_WIDTHS_3D)
    torch.save(source.state_dict(), tmp_path / "tiny2d.pt")
    model = build_model("s2tfnet", "tiny", 4, {"pretrained": str(tmp_path / "tiny2d.pt")})
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3)
    assert isinstance(model.backbone.layer2[1], NonLocal) and isinstance(model.backbone.layer3[1], NonLocal)


# ---------------------------------------------------------------- the parts

def nonlocal_reference(nl: NonLocal, x: torch.Tensor, pool: bool) -> torch.Tensor:
    """Wang et al.'s embedded Gaussian written out: softmax(theta^T phi / sqrt(C/2)) g, projected, BN, + x."""
    n, _, t, h, w = x.shape
    source = F.max_pool3d(x, (1, 2, 2)) if pool else x
    theta = nl.theta(x).reshape(n, -1, t * h * w)
    phi = nl.phi(source).reshape(n, theta.shape[1], -1)
    g = nl.g(source).reshape(n, theta.shape[1], -1)
    attention = torch.softmax(torch.einsum("nci,ncj->nij", theta, phi) / theta.shape[1] ** 0.5, dim=-1)
    y = torch.einsum("nij,ncj->nci", attention, g).reshape(n, -1, t, h, w)
    return x + nl.bn(nl.out(y))


@pytest.mark.parametrize("pool", [True, False])
def test_nonlocal_block_equals_the_embedded_gaussian_formula(pool):
    torch.manual_seed(0)
    nl = NonLocal(16, pool=pool).eval()
    randomise_bn(nl)
    x = torch.randn(2, 16, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(nl(x), nonlocal_reference(nl, x, pool), rtol=1e-4, atol=1e-5)
        assert (nl(x) - x).abs().max() > 1e-2


def test_nonlocal_block_starts_as_the_identity_through_its_zero_gamma_batch_norm():
    nl = NonLocal(8).eval()
    x = torch.randn(1, 8, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(nl(x), x)


def test_interleave_alternates_frames_of_the_two_volumes_along_time():
    a = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(2, 1, 3, 2, 2)
    b = 10 + a
    out = interleave(a, b)
    assert out.shape == (2, 1, 6, 2, 2)
    assert out[0, 0, :, 0, 0].tolist() == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]
    with pytest.raises(ValueError, match="cannot interleave"):
        interleave(a, b[:, :, :2])


@pytest.mark.parametrize("time_stride", [1, 2])
def test_tsfp_returns_the_average_pooled_volume_times_its_sigmoid_mask(time_stride):
    torch.manual_seed(0)
    tsfp = TSFP(time_stride, (4, 4, 8, 4, 4, 4)).eval()
    p = torch.rand(2, 1, 4, 8, 8)
    with torch.no_grad():
        out, mask = tsfp(p)
    assert out.shape == mask.shape == (2, 1, 4 // time_stride, 4, 4)
    assert ((mask > 0) & (mask < 1)).all()
    torch.testing.assert_close(out, F.avg_pool3d(p, (time_stride, 2, 2)) * mask)
    kernels = [m.kernel_size for m in tsfp.mask if isinstance(m, nn.Conv3d)]
    assert kernels == [(1, 9, 9), (1, 7, 7), (1, 3, 3), (1, 1, 1), (1, 5, 5), (1, 3, 3), (1, 1, 1)]


def test_ssf_sub_blocks_factorise_space_then_time_without_batch_norm():
    model = build_model("s2tfnet", "tiny", 3)
    ssf = model.ssf[1]
    kernels = [[m.kernel_size for m in body if isinstance(m, nn.Conv3d)] for body in ssf.blocks]
    assert kernels == [[(1, 1, 1), (1, 3, 3), (3, 1, 1), (1, 1, 1)]] * 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ssf.modules())
    assert ssf.head.out_channels == 1 and ssf.blocks[0][0].out_channels == ssf.head.in_channels // 2


def test_one_batch_norm_normalises_all_three_saliency_scales():
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 3).train()
    assert sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm3d) and m.num_features == 1) == 1
    with torch.no_grad():
        maps = model.forward_maps(clip_for(model))
    assert model.saliency_bn.num_batches_tracked.item() == 3
    for key in ("s1", "s2", "s3"):  # batch statistics of each scale, then a sigmoid
        logit = torch.logit(maps[key].double())
        assert ((maps[key] > 0) & (maps[key] < 1)).all()
        torch.testing.assert_close(logit.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-3, rtol=0)


def test_positive_init_starts_every_ssf_head_and_the_final_mask_alive_unlike_signed_kaiming():
    gated = lambda m: [*[s.head for s in m.ssf], m.fusion.reduce, m.fusion.expand]  # noqa: E731
    for seed in range(4):
        torch.manual_seed(seed)
        model = build_model("s2tfnet", "tiny", 3).train()
        assert all((conv.weight >= 0).all() for conv in gated(model))
        heads = []
        hooks = [s.head.register_forward_hook(lambda mod, args, out: heads.append(out)) for s in model.ssf]
        with torch.no_grad():
            mask = model.forward_maps(clip_for(model, seed=seed))["mask"]
        assert (mask > 0).all() and all((h > 0).any() for h in heads)
        for hook in hooks:
            hook.remove()
    torch.manual_seed(0)
    released = build_model("s2tfnet", "tiny", 3, {"positive_init": False})
    weights = torch.cat([conv.weight.flatten() for conv in gated(released)])
    assert (weights < 0).any() and (weights > 0).any()


def test_final_mask_multiplies_res5_so_a_zero_mask_leaves_only_the_classifier_bias():
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 5).eval()
    with torch.no_grad():
        model.fc.bias.normal_()
        logits = model(rgb=clip_for(model))
        assert (logits - model.fc.bias).abs().max() > 1e-3
        model.fusion.expand.weight.zero_()
        torch.testing.assert_close(model(rgb=clip_for(model)), model.fc.bias.expand(2, -1))


# ---------------------------------------------------------------- loss variants

def test_plain_cross_entropy_has_no_auxiliary_loss():
    model = build_model("s2tfnet", "tiny", 3)
    model(rgb=clip_for(model))
    assert model.auxiliary_loss() is None


def test_ce_l1_adds_lambda_times_the_l1_norm_of_the_mask_summed_over_the_batch():
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 3, {"loss": "ce_l1", "lam": 0.5}).eval()
    one = clip_for(model, batch=1)
    with torch.no_grad():
        model(rgb=one)
        single = model.auxiliary_loss()
        torch.testing.assert_close(single, 0.5 * model.forward_maps(one)["mask"].abs().sum())
        assert single > 0
        model(rgb=one.expand(2, -1, -1, -1, -1))
        torch.testing.assert_close(model.auxiliary_loss(), 2 * single)


def test_ce_l1_mse_adds_the_weighted_tsfp_mse_terms_and_trains_the_saliency_branch():
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 3, {"loss": "ce_l1_mse", "lam": 0.5, "gamma": 2.0, "theta": 3.0}).eval()
    clip = clip_for(model)
    model(rgb=clip)
    aux = model.auxiliary_loss()
    with torch.no_grad():
        maps = model.forward_maps(clip)
    expected = (0.5 * maps["mask"].abs().sum() + 2.0 * F.mse_loss(maps["p1"], maps["m1"])
                + 3.0 * F.mse_loss(maps["p2"], maps["m2"]))
    torch.testing.assert_close(aux.detach(), expected)
    aux.backward()
    assert model.tsfp1.mask[0].weight.grad.abs().sum() > 0
    assert sum(ssf.head.weight.grad.abs().sum() for ssf in model.ssf) > 0
    assert model.fc.weight.grad is None  # the mask terms do not touch the classifier


def test_a_model_holding_its_last_auxiliary_loss_can_be_deep_copied_and_pickled():
    model = build_model("s2tfnet", "tiny", 3, {"loss": "ce_l1"}).train()
    model(rgb=clip_for(model))
    assert model.auxiliary_loss().requires_grad
    twin = copy.deepcopy(model)
    assert twin.auxiliary_loss() is None and model.auxiliary_loss() is not None
    assert pickle.loads(pickle.dumps(model)).auxiliary_loss() is None


# ---------------------------------------------------------------- pruning

def test_nonlocal_inner_channels_prune_together_so_removing_dead_ones_keeps_the_output():
    """theta, phi, g and the output projection share the inner channels; torch-pruning must remove
    the same ones from all four (here: the four whose weights are zero, so the output is unchanged)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(3, 16, 1), NonLocal(16)).eval()
    nl = net[1]
    randomise_bn(net)
    dead = torch.tensor([0, 2, 5, 7])
    with torch.no_grad():
        for conv in (nl.theta, nl.phi, nl.g):
            conv.weight[dead] = 0
            conv.bias[dead] = 0
        nl.out.weight[:, dead] = 0
    x = torch.randn(2, 3, 2, 4, 4)
    with torch.no_grad():
        before = net(x)
    pruner = tp.pruner.MetaPruner(net, example_inputs=x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[net[0], nl.out])
    pruner.step()
    assert (nl.theta.out_channels, nl.phi.out_channels, nl.g.out_channels, nl.out.in_channels) == (4, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", ["i3d_r50_nl", "r3d_18"])
def test_pruning_smoke_metapruner_prunes_the_tiny_backbone_and_ssf_but_not_the_one_channel_branch(backbone):
    """Smoke test only (pruning is its own step): the dependency graph must follow the non-local
    attention, the SSF residuals and the interleaving, and leave stem, side branch and classes alone."""
    torch.manual_seed(0)
    model = build_model("s2tfnet", "tiny", 7, {"backbone": backbone}).eval()
    example = {"rgb": clip_for(model, batch=2)}
    with torch.no_grad():
        shapes = {k: v.shape for k, v in model.forward_maps(example["rgb"]).items()}
    ignored = model.prune_ignored_layers()
    whole = [model.prune_ignored_layers()[1], model.tsfp1, model.tsfp2, model.fusion]  # stem and one-channel branch
    kept = [m.weight.shape for layer in whole for m in layer.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    ssf_inner = model.ssf[2].blocks[0][0].out_channels
    before = n_params(model)
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=ignored)
    pruner.step()
    assert n_params(model) < 0.5 * before
    with torch.no_grad():
        after = model.forward_maps(example["rgb"])
    assert {k: v.shape for k, v in after.items()} == shapes and model.fc.out_features == 7
    assert kept == [m.weight.shape for layer in whole for m in layer.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert all(ssf.head.out_channels == 1 for ssf in model.ssf)  # heads keep their one output channel
    assert model.ssf[2].blocks[0][0].out_channels == ssf_inner // 2
    if backbone == "i3d_r50_nl":
        nl = model.backbone.layer3[1]
        assert isinstance(nl, NonLocal) and nl.theta.out_channels == 12 and nl.out.out_channels == 24
