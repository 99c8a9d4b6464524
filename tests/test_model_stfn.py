"""STFN: the paper-scale size counted by hand, the declared two-stream input over T positions, the
Residual Inception block (shape, residual, receptive field), the three fusion connections, order
sensitivity of both streams, frozen backbones with the cached-features path, cross-modality init,
the tiny cost budget and prunability with torch-pruning."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.errors import ConfigError
from actionrepro.models import build_model, model_info, model_options
from actionrepro.models.backbones import tiny_resnet
from actionrepro.models.registry import needs_flow
from actionrepro.models.stfn import TINY_BACKBONE_WIDTHS, Fusion, ResidualInception
from tests.tensors import n_params, inputs_for, randomise_bn_stats


pytestmark = pytest.mark.usefixtures("one_thread")


def on_meta(build, *args, **kwargs):
    with torch.device("meta"):
        return build(*args, **kwargs)


def tiny_eval_model(classes: int = 5, **options):
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", classes, options).eval()
    randomise_bn_stats(model)
    return model


# ---------------------------------------------------------------- paper scale, counted by hand

def resnet50_trunk_params(in_channels: int) -> int:
    """torchvision ResNet-50 without its FC: 7x7 stem, 4 stages of bottlenecks (1x1, 3x3, 1x1 at
    expansion 4, batch-norm weight+bias after each conv, a 1x1 projection in each stage's first block)."""
    total = in_channels * 64 * 7 * 7 + 2 * 64
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            total += inplanes * planes + 2 * planes
            total += planes * planes * 9 + 2 * planes
            total += planes * 4 * planes + 2 * 4 * planes
            if b == 0:
                total += inplanes * 4 * planes + 2 * 4 * planes
            inplanes = 4 * planes
    return total


def inception_block_params(d: int, bn_relu: bool = False) -> int:
    """One Residual Inception block over time at width d (branches d/4 wide, bias-free convs)."""
    w = d // 4
    total = d * w                  # k1
    total += d * w + w * w * 3     # k1 -> k3
    total += d * w + w * w * 5     # k1 -> k5
    total += d * w                 # maxpool3 -> k1
    total += 2 * d                 # BN after the concatenation
    if bn_relu:
        total += 2 * (2 * w)       # BN after the k1 reductions of the k3 and k5 branches
    return total


def test_paper_stfn_parameter_count_matches_the_spec_counted_by_hand():
    assert resnet50_trunk_params(3) == 25_557_032 - (2048 * 1000 + 1000)  # torchvision's resnet50 minus its FC
    d, blocks, classes = 512, 2, 101
    appearance = resnet50_trunk_params(3)                  # RGB backbone
    motion = resnet50_trunk_params(20)                     # flow backbone, 10 flow frames = 20-channel stem
    projections = 2 * (2048 * d + 2 * d)                   # per stream: Conv1d k=1 2048->512 (no bias) + BN
    temporal = 2 * blocks * inception_block_params(d)      # two streams x two blocks
    fusion = 0                                             # multiplicative A + A*M has no parameters
    head = 4 * d * classes + classes                       # FC on [avg A, max A, avg M, max M]
    expected = appearance + motion + projections + temporal + fusion + head
    assert inception_block_params(d) == 394_240
    assert expected == 50_952_485
    assert n_params(on_meta(build_model, "stfn", "paper", classes)) == expected


def test_paper_fusion_and_branch_options_add_exactly_their_layers():
    base = n_params(on_meta(build_model, "stfn", "paper", 51))
    concat = n_params(on_meta(build_model, "stfn", "paper", 51, {"fusion": "concat"}))
    assert concat - base == 2 * (2 * 512 * 512 + 512)  # one Conv1d k=1 2D'->D' with bias per appearance block
    assert n_params(on_meta(build_model, "stfn", "paper", 51, {"fusion": "additive"})) == base
    inner = n_params(on_meta(build_model, "stfn", "paper", 51, {"branch_bn_relu": True}))
    assert inner - base == 4 * (inception_block_params(512, True) - inception_block_params(512))


def test_paper_input_spec_is_25_positions_each_one_rgb_frame_and_a_20_channel_flow_stack():
    spec = on_meta(build_model, "stfn", "paper", 101).input_spec
    assert (spec.rgb, spec.flow, spec.sampling, spec.segments, spec.frames_per_segment) == (True, True, "segments", 25, 1)
    assert (spec.flow_segments, spec.flow_len, spec.size) == (25, 10, 224)
    assert needs_flow("stfn") and model_info("stfn").modalities == ("rgb", "flow")


def test_paper_model_maps_the_declared_input_through_d_prime_512_streams_to_class_scores():
    with torch.device("meta"):
        model = build_model("stfn", "paper", 101)
        batch = inputs_for(model, batch=2)
        appearance, motion = model.features(**batch)
        a, m = model.temporal_streams(appearance, motion)
        logits = model(**batch)
    assert appearance.shape == motion.shape == (2, 2048, 25)
    assert a.shape == m.shape == (2, 512, 25)
    assert logits.shape == (2, 101)
    assert model.flow_backbone.conv1.weight.shape == (64, 20, 7, 7)
    assert [len(model.rgb_blocks), len(model.flow_blocks), len(model.fusions)] == [2, 2, 2]
    assert model.rgb_blocks[0].branch5[-1].weight.shape == (128, 128, 5)


def test_model_info_tags_the_relatives_numbers_so_the_report_never_compares_them():
    info = model_info("stfn")
    assert info.tag == "recon"
    assert {(p.dataset, p.top1, p.tag) for p in info.published} == {("ucf101", 94.1, "abstract"),
                                                                    ("hmdb51", 69.0, "abstract")}
    for number in info.published:  # TS-LSTM's two-stream ResNet-101: never our ResNet-50 network
        assert "NOT STFN" in number.protocol and number.backbone != info.built_backbone("paper", {})


def test_options_are_the_documented_uncertain_choices():
    assert model_options("stfn") == {
        "pretrained": "none", "backbone": None, "size": None, "segments": None, "flow_len": None, "width": None,
        "blocks": 2, "fusion": "multiplicative", "branch_bn_relu": False, "dropout": 0.5, "freeze_backbones": False}


@pytest.mark.parametrize("options, match", [
    ({"fusion": "gated"}, r"architectures\.stfn\.fusion = 'gated'"),
    ({"width": 30}, r"architectures\.stfn\.width = 30; D' must be a multiple of 4"),
    ({"blocks": 0}, r"architectures\.stfn\.blocks = 0"),
    ({"segments": 0}, r"architectures\.stfn\.segments = 0"),
    ({"pretrained": "imagenet"}, "no weights for the tiny ResNet"),
    ({"backbone": "vgg16"}, r"architectures\.stfn\.backbone = 'vgg16'"),
])
def test_bad_options_are_config_errors_naming_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("stfn", "tiny", 3, options)


# ---------------------------------------------------------------- tiny: train, cost

def test_tiny_model_trains_forward_and_backward_on_its_declared_input():
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", 6).train()
    spec = model.input_spec
    assert (spec.size, spec.segments, spec.flow_segments, spec.flow_len) == (32, 8, 8, 5)
    logits = model(**inputs_for(model, batch=3))
    assert logits.shape == (3, 6)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


def test_tiny_model_costs_under_a_tenth_of_a_gigaflop_per_clip():
    model = build_model("stfn", "tiny", 10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs_for(model, batch=1))
    assert 0.01e9 < counter.get_total_flops() < 0.1e9


def test_tiny_backbone_has_the_stfn_widths():
    model = build_model("stfn", "tiny", 4)
    assert model.rgb_backbone.conv1.out_channels == TINY_BACKBONE_WIDTHS[0]
    assert model.rgb_proj[0].in_channels == model.flow_proj[0].in_channels == TINY_BACKBONE_WIDTHS[-1]


# ---------------------------------------------------------------- order sensitivity

def test_reversing_the_positions_of_both_streams_changes_the_output():
    model = tiny_eval_model()
    assert model.temporal is True
    batch = inputs_for(model)
    with torch.no_grad():
        forward = model(**batch)
        backward = model(rgb=batch["rgb"].flip(1), flow=batch["flow"].flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_reversing_the_positions_of_one_stream_changes_the_output(stream):
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        forward = model(**batch)
        backward = model(**{**batch, stream: batch[stream].flip(1)})
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_temporal_blocks_and_not_just_the_pooling_see_the_order():
    """Avg/max pooling over T is order-free: reversed features must differ before the pooling."""
    model = tiny_eval_model()
    a0, m0 = torch.randn(2, 96, 8), torch.randn(2, 96, 8)
    with torch.no_grad():
        a, _ = model.temporal_streams(a0, m0)
        a_rev, _ = model.temporal_streams(a0.flip(2), m0.flip(2))
    assert not torch.allclose(a_rev.flip(2), a, atol=1e-4)


# ---------------------------------------------------------------- Residual Inception block

@pytest.mark.parametrize("frames", [1, 2, 8, 25])
def test_inception_block_keeps_width_and_time_with_quarter_width_branches(frames):
    block = ResidualInception(32).eval()
    x = torch.randn(3, 32, frames)
    assert block(x).shape == x.shape
    branch_widths = [block.branch1.out_channels, block.branch3[-1].out_channels,
                     block.branch5[-1].out_channels, block.branch_pool[-1].out_channels]
    assert branch_widths == [8, 8, 8, 8]


def test_inception_block_adds_its_input_after_bn_and_relu():
    block = ResidualInception(16).eval()
    x = torch.randn(2, 16, 6)
    nn.init.zeros_(block.bn.weight)
    nn.init.zeros_(block.bn.bias)
    torch.testing.assert_close(block(x), x)  # branches silenced by BN: only the residual remains
    nn.init.ones_(block.bn.weight)
    nn.init.constant_(block.bn.bias, -1e3)
    torch.testing.assert_close(block(x), x)  # ReLU comes before the addition: negatives are cut off
    nn.init.constant_(block.bn.bias, 0.5)
    assert (block(x) - x).min() >= 0


def test_inception_block_sees_two_positions_each_way_and_no_further():
    """k5 with same padding is the widest branch: an impulse at t moves outputs t-2..t+2 only."""
    torch.manual_seed(0)
    block = ResidualInception(16).eval()
    randomise_bn_stats(block)
    nn.init.constant_(block.bn.bias, 5.0)  # keep the ReLU open so every branch shows
    base = torch.randn(1, 16, 11)
    bumped = base.clone()
    bumped[0, :, 5] += 3.0
    with torch.no_grad():
        changed = (block(bumped) - block(base)).abs().amax(dim=1)[0] > 1e-6
    assert changed.tolist() == [False] * 3 + [True] * 5 + [False] * 3


@pytest.mark.parametrize("bn_relu", [False, True])
def test_k3_and_k5_branches_follow_their_k1_reduction(bn_relu):
    block = ResidualInception(16, branch_bn_relu=bn_relu)
    kinds = [type(m) for m in block.branch5]
    assert kinds == ([nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.Conv1d] if bn_relu else [nn.Conv1d, nn.Conv1d])
    assert [m.kernel_size[0] for m in block.branch5 if isinstance(m, nn.Conv1d)] == [1, 5]
    assert [m.kernel_size[0] for m in block.branch3 if isinstance(m, nn.Conv1d)] == [1, 3]
    assert isinstance(block.branch_pool[0], nn.MaxPool1d) and block.branch_pool[0].kernel_size == 3


# ---------------------------------------------------------------- fusion

def test_fusion_variants_compute_their_formula_at_width_d_prime():
    a, m = torch.randn(2, 8, 5), torch.randn(2, 8, 5)
    torch.testing.assert_close(Fusion("multiplicative", 8)(a, m), a + a * m)
    torch.testing.assert_close(Fusion("additive", 8)(a, m), a + m)
    concat = Fusion("concat", 8)
    assert (concat.mix.in_channels, concat.mix.out_channels, concat.mix.kernel_size) == (16, 8, (1,))
    expected = nn.functional.conv1d(torch.cat([a, m], dim=1), concat.mix.weight, concat.mix.bias)
    torch.testing.assert_close(concat(a, m), expected)
    assert n_params(Fusion("multiplicative", 8)) == n_params(Fusion("additive", 8)) == 0


@pytest.mark.parametrize("fusion", ["multiplicative", "additive", "concat"])
def test_fusion_variants_give_d_prime_streams_and_class_scores(fusion):
    model = tiny_eval_model(classes=4, fusion=fusion, width=32)
    seen = []
    hooks = [f.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape, args[1].shape, out.shape)))
             for f in model.fusions]
    if fusion == "concat":
        hooks += [f.mix.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape, out.shape)))
                  for f in model.fusions]
    with torch.no_grad():
        logits = model(**inputs_for(model))
    for h in hooks:
        h.remove()
    assert logits.shape == (2, 4)
    assert [s for s in seen if len(s) == 3] == [((2, 32, 8), (2, 32, 8), (2, 32, 8))] * 2
    assert [s for s in seen if len(s) == 2] == ([((2, 64, 8), (2, 32, 8))] * 2 if fusion == "concat" else [])
    assert model.fc.in_features == 4 * 32


def test_fusion_reaches_the_appearance_stream_only():
    model = tiny_eval_model()
    a0, m0 = torch.randn(2, 96, 8), torch.randn(2, 96, 8)
    with torch.no_grad():
        a, m = model.temporal_streams(a0, m0)
        a2, m2 = model.temporal_streams(a0 + torch.randn_like(a0), m0)
        a3, m3 = model.temporal_streams(a0, m0 + torch.randn_like(m0))
    torch.testing.assert_close(m2, m)        # appearance never flows into motion
    assert not torch.allclose(a3, a, atol=1e-4)  # motion gates appearance


# ---------------------------------------------------------------- cached features, frozen backbones

def test_forward_is_the_head_on_the_cached_backbone_features():
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        appearance, motion = model.features(**batch)
        assert appearance.shape == motion.shape == (2, TINY_BACKBONE_WIDTHS[-1], 8)
        torch.testing.assert_close(model.forward_features(appearance, motion), model(**batch))
        per_frame = model.rgb_backbone(batch["rgb"][:, 3])  # position 3 alone through the backbone
    torch.testing.assert_close(appearance[:, :, 3], per_frame)


def test_frozen_backbones_get_no_gradients_and_keep_their_statistics():
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", 5, {"freeze_backbones": True}).train()
    assert not any(m.training for b in model.backbones() for m in b.modules())
    assert all(m.training for m in model.rgb_blocks.modules())
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    nn.functional.cross_entropy(model(**inputs_for(model)), torch.tensor([0, 3])).backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("rgb_backbone.", "flow_backbone."))
        assert (p.grad is None) == frozen, name
        assert p.requires_grad != frozen, name
    after = model.state_dict()
    for key, value in stats.items():
        same = torch.equal(after[key], value)
        assert same == key.startswith(("rgb_backbone.", "flow_backbone.")), key
    model.eval().train()
    assert not any(m.training for b in model.backbones() for m in b.modules())


def test_head_trains_from_a_feature_cache_to_the_same_logits_as_end_to_end():
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", 5, {"freeze_backbones": True, "dropout": 0.0}).train()
    batch = inputs_for(model)
    with torch.no_grad():
        cache = model.features(**batch)
    assert not cache[0].requires_grad
    logits = model.forward_features(*cache)
    torch.testing.assert_close(logits, model(**batch))
    logits.sum().backward()
    assert model.fc.weight.grad is not None and model.rgb_proj[0].weight.grad is not None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == n_params(model) - n_params(model.rgb_backbone) - n_params(model.flow_backbone)


# ---------------------------------------------------------------- inputs and init

def test_wrong_inputs_are_refused_with_the_expected_shape():
    model = build_model("stfn", "tiny", 3)
    batch = inputs_for(model)
    with pytest.raises(ValueError, match="needs rgb=.* and flow="):
        model(rgb=batch["rgb"])
    with pytest.raises(ValueError, match=r"built for rgb of shape \(B, 8, 3, H, W\)"):
        model(rgb=batch["rgb"][:, :4], flow=batch["flow"])
    with pytest.raises(ValueError, match=r"built for flow of shape \(B, 8, 10, H, W\)"):
        model(rgb=batch["rgb"], flow=batch["flow"][:, :, :4])
    with pytest.raises(ValueError, match="built for T=8 positions"):
        model.forward_features(torch.randn(2, 96, 4), torch.randn(2, 96, 4))


def test_flow_stem_is_the_rgb_stem_averaged_over_channels_from_pretrained_weights(tmp_path):
    torch.manual_seed(1)
    source = tiny_resnet(TINY_BACKBONE_WIDTHS)
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    model = build_model("stfn", "tiny", 4, {"pretrained": str(tmp_path / "tiny.pt")})
    torch.testing.assert_close(model.rgb_backbone.conv1.weight, source.conv1.weight)
    expected = source.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1)
    torch.testing.assert_close(model.flow_backbone.conv1.weight, expected)
    torch.testing.assert_close(model.flow_backbone.layer3[0].conv2.weight, source.layer3[0].conv2.weight)
    assert model.flow_backbone.layer3[0].conv2.weight.data_ptr() != model.rgb_backbone.layer3[0].conv2.weight.data_ptr()


def test_flow_stem_from_scratch_tells_its_input_channels_apart():
    model = build_model("stfn", "tiny", 4)
    w = model.flow_backbone.conv1.weight
    assert w.shape[1] == 10 and not torch.allclose(w[:, :1].expand_as(w), w)


# ---------------------------------------------------------------- pruning (smoke test)

@pytest.mark.parametrize("fusion", ["multiplicative", "concat"])
def test_pruning_smoke_torch_pruning_prunes_tiny_stfn_and_it_still_trains(fusion):
    """PRUNING SMOKE TEST (the prune step is elsewhere): MetaPruner at ratio 0.5 with the model's own
    ignored layers shrinks backbones and temporal streams, keeps both stems and the classes."""
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", 7, {"fusion": fusion}).eval()
    example = inputs_for(model)
    stems = (model.rgb_backbone.conv1.weight.shape, model.flow_backbone.conv1.weight.shape)
    before = n_params(model)
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=model.prune_ignored_layers())
    pruner.step()
    assert n_params(model) < 0.5 * before
    assert (model.rgb_backbone.conv1.weight.shape, model.flow_backbone.conv1.weight.shape) == stems
    assert model.fc.out_features == 7
    assert model.rgb_blocks[-1].bn.num_features < 64 and model.flow_blocks[-1].bn.num_features < 64
    assert model.rgb_backbone.layer4[0].conv1.out_channels < TINY_BACKBONE_WIDTHS[-1]
    model.train()
    logits = model(**example)
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([1, 6])).backward()


def test_pruning_smoke_frozen_backbones_are_left_whole_and_the_head_is_pruned():
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", 7, {"freeze_backbones": True}).eval()
    example = inputs_for(model)
    backbone_params = n_params(model.rgb_backbone) + n_params(model.flow_backbone)
    head_before = n_params(model) - backbone_params
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=model.prune_ignored_layers())
    pruner.step()
    assert n_params(model.rgb_backbone) + n_params(model.flow_backbone) == backbone_params
    assert n_params(model) - backbone_params < 0.5 * head_before
    assert model(**example).shape == (2, 7)


@pytest.mark.parametrize("fusion", ["multiplicative", "concat"])
def test_pruning_smoke_a_dying_inception_branch_never_breaks_the_pruned_model(fusion):
    """A branch whose weights shrank in training has the group's least important channels: pruning
    must still leave every branch non-empty (shared-index fusions: each branch pruned by half)."""
    torch.manual_seed(0)
    model = build_model("stfn", "tiny", 7, {"fusion": fusion}).eval()
    with torch.no_grad():
        for block in (model.rgb_blocks[1], model.flow_blocks[1]):
            block.branch5[-1].weight.mul_(0.01)
            block.bn.weight[32:48].mul_(0.01)  # the k5 branch's slice of the concatenation
    example = inputs_for(model)
    tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                         pruning_ratio=0.5, ignored_layers=model.prune_ignored_layers()).step()
    widths = [[b.branch1.out_channels, b.branch3[-1].out_channels, b.branch5[-1].out_channels,
               b.branch_pool[-1].out_channels] for b in (*model.rgb_blocks, *model.flow_blocks)]
    assert all(min(w) > 0 for w in widths)
    if fusion == "multiplicative":
        assert widths == [[8, 8, 8, 8]] * 4
    assert model(**example).shape == (2, 7)
