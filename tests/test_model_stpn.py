"""STPN: the paper-scale size counted by hand, the declared two-stream input, the pyramid's wiring
(attention over locations, STCB sizes), cross-modality init, order sensitivity of the flow stream,
checkpoints without the sketch matrices, the tiny cost budget and prunability with torch-pruning."""

from __future__ import annotations

import io

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.errors import ConfigError
from actionrepro.models import build_model, model_info
from actionrepro.models.backbones import tiny_resnet
from actionrepro.models.bilinear import CountSketch
from actionrepro.models.registry import needs_flow
from tests.tensors import n_params, inputs_for, randomise_bn_stats


pytestmark = pytest.mark.usefixtures("one_thread")


def reverse_frames_in_stacks(flow: torch.Tensor) -> torch.Tensor:
    """Reverse the L flow frames of every stack, keeping each frame's (x, y) channel pair in order."""
    return flow.unflatten(2, (-1, 2)).flip(2).flatten(2, 3)


def on_meta(build, *args, **kwargs):
    with torch.device("meta"):
        return build(*args, **kwargs)


def tiny_eval_model(classes: int = 5, **options):
    torch.manual_seed(0)
    model = build_model("stpn", "tiny", classes, options).eval()
    randomise_bn_stats(model)
    return model


# ---------------------------------------------------------------- paper scale

def resnet50_params_by_hand(in_channels: int) -> int:
    """torchvision ResNet-50 without its FC: 7x7 stem, 4 stages of bottlenecks (1x1, 3x3, 1x1 at
    expansion 4, batch-norm weight+bias after each conv, a 1x1 projection in each stage's first block)."""
    total = in_channels * 64 * 7 * 7 + 2 * 64  # stem conv + bn
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            total += inplanes * planes + 2 * planes          # 1x1 reduce + bn
            total += planes * planes * 9 + 2 * planes        # 3x3 + bn
            total += planes * 4 * planes + 2 * 4 * planes    # 1x1 expand + bn
            if b == 0:
                total += inplanes * 4 * planes + 2 * 4 * planes  # projection shortcut + bn
            inplanes = 4 * planes
    return total


def test_paper_stpn_parameter_count_matches_the_spec_counted_by_hand():
    assert resnet50_params_by_hand(3) == 25_557_032 - (2048 * 1000 + 1000)  # torchvision's resnet50 minus its FC
    spatial = resnet50_params_by_hand(3)                # RGB stream
    temporal = resnet50_params_by_hand(20)              # ONE flow stream shared by the K=3 stacks, 20-channel stem
    attention = (2048 * 64 + 64) + (64 * 1 + 1)  # z_l (d=2048) -> 1x1 conv 64 -> 1x1 conv 1
    head = 4096 * 101 + 101                             # FC on u (d=4096)
    sketches = 0                                        # count sketches are fixed buffers, not parameters
    expected = spatial + temporal + attention + head + sketches
    assert expected == 47_614_374
    model = on_meta(build_model, "stpn", "paper", 101)
    assert n_params(model) == expected


def test_paper_input_spec_is_one_rgb_frame_and_three_twenty_channel_flow_stacks():
    spec = on_meta(build_model, "stpn", "paper", 101).input_spec
    assert (spec.rgb, spec.flow, spec.sampling, spec.frames) == (True, True, "segments", 1)
    assert (spec.flow_segments, spec.flow_len, spec.size) == (3, 10, 224)
    assert needs_flow("stpn") and model_info("stpn").modalities == ("rgb", "flow")


def test_paper_pyramid_has_the_documented_sizes_and_maps_the_declared_input_to_class_scores():
    with torch.device("meta"):
        model = build_model("stpn", "paper", 101)
        batch = inputs_for(model, batch=2)
        spatial = model.spatial_map(batch["rgb"])
        logits = model(**batch)
    assert spatial.shape == (2, 2048, 7, 7)  # S: C x 7 x 7 at 224
    assert logits.shape == (2, 101)
    assert [s.weight.shape[:2] for s in model.temporal_fusion.sketches] == [(1024, 2048)] * 3
    assert [s.weight.shape[:2] for s in model.attention_fusion.sketches] == [(2048, 2048), (2048, 1024)]
    assert [s.weight.shape[:2] for s in model.final_fusion.sketches] == [(4096, 2048), (4096, 1024), (4096, 2048)]
    assert model.flow_backbone.conv1.weight.shape == (64, 20, 7, 7)
    assert (model.attention[0].out_channels, model.attention[2].out_channels) == (64, 1)


def test_model_info_tags_the_recalled_numbers_and_names_the_original_backbone():
    info = model_info("stpn")
    assert info.tag == "recon"
    assert {(p.dataset, p.top1, p.tag) for p in info.published} == {("ucf101", 94.6, "recalled"),
                                                                    ("hmdb51", 68.9, "recalled")}
    assert "BN-Inception" in info.notes and "ResNet-50" in info.protocol


# ---------------------------------------------------------------- tiny: train, cost

def test_tiny_model_trains_forward_and_backward_on_its_declared_input():
    torch.manual_seed(0)
    model = build_model("stpn", "tiny", 6).train()
    spec = model.input_spec
    assert (spec.size, spec.frames, spec.flow_segments, spec.flow_len) == (32, 1, 3, 5)
    logits = model(**inputs_for(model, batch=3))
    assert logits.shape == (3, 6)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


def test_tiny_model_costs_under_a_tenth_of_a_gigaflop_per_clip():
    model = build_model("stpn", "tiny", 10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs_for(model, batch=1))
    assert 0.01e9 < counter.get_total_flops() < 0.1e9


def test_missing_or_mis_shaped_flow_is_refused_with_the_expected_shape():
    model = build_model("stpn", "tiny", 4)
    batch = inputs_for(model)
    with pytest.raises(ValueError, match="needs rgb=.*and flow="):
        model(rgb=batch["rgb"])
    with pytest.raises(ValueError, match=r"flow of shape \(B, 3, 10, H, W\).*got \(2, 3, 20, 32, 32\)"):
        model(rgb=batch["rgb"], flow=torch.randn(2, 3, 20, 32, 32))
    with pytest.raises(ValueError, match=r"rgb of shape \(B, 1, 3, H, W\)"):
        model(rgb=torch.randn(2, 8, 3, 32, 32), flow=batch["flow"])


# ---------------------------------------------------------------- the pyramid

def test_attention_weights_are_a_softmax_over_the_locations_of_s():
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        spatial = model.spatial_map(batch["rgb"])
        t = model.temporal_fusion(*model.flow_features(batch["flow"]))
        weights = model.attention_weights(spatial, t)
    assert weights.shape == (2, 1, *spatial.shape[2:])
    torch.testing.assert_close(weights.sum(dim=(2, 3)), torch.ones(2, 1))
    assert (weights > 0).all()


def test_fused_features_are_stcb_of_pooled_s_t_and_the_attended_s():
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        u, pooled, t = model.fused(**batch)
        spatial = model.spatial_map(batch["rgb"])
        a = model.attention_weights(spatial, t)
        attended = (spatial * a).sum(dim=(2, 3))  # v = sum_l a_l S_l, written with plain broadcasting
        expected = model.final_fusion(spatial.mean(dim=(2, 3)), t.flatten(1), attended)
    torch.testing.assert_close(u.flatten(1), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pooled.flatten(1), spatial.mean(dim=(2, 3)))
    torch.testing.assert_close(u.flatten(1).norm(dim=1), torch.ones(2))


def test_the_k_flow_stacks_go_through_one_shared_backbone():
    model = tiny_eval_model()
    flow = inputs_for(model)["flow"]
    with torch.no_grad():
        features = model.flow_features(flow)
        alone = [model.flow_backbone.avgpool(model.flow_backbone.layer4(model.flow_backbone.layer3(
            model.flow_backbone.layer2(model.flow_backbone.layer1(model.flow_backbone.maxpool(model.flow_backbone.relu(
                model.flow_backbone.bn1(model.flow_backbone.conv1(flow[:, k]))))))))) for k in range(3)]
    assert len(features) == 3
    for got, want in zip(features, alone):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- order sensitivity

def test_stpn_declares_itself_temporal():
    assert build_model("stpn", "tiny", 3).temporal is True


def test_reversing_the_frames_inside_each_flow_stack_changes_the_output():
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        forward = model(**batch)
        backward = model(rgb=batch["rgb"], flow=reverse_frames_in_stacks(batch["flow"]))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_reversing_the_order_of_whole_flow_stacks_changes_the_output_through_per_stack_sketches():
    """t = STCB(f_1..f_K) has one hash/sign per stack position (it sketches the ordered product), so
    moving whole stacks changes t even though each stack's features are unchanged."""
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        features = model.flow_features(batch["flow"])
        reversed_features = model.flow_features(batch["flow"].flip(1))
        for a, b in zip(features, reversed_features[::-1]):
            torch.testing.assert_close(a, b)  # same stacks, other positions
        forward = model(**batch)
        backward = model(rgb=batch["rgb"], flow=batch["flow"].flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_reversing_the_whole_flow_sequence_changes_the_output():
    model = tiny_eval_model()
    batch = inputs_for(model)
    with torch.no_grad():
        forward = model(**batch)
        backward = model(rgb=batch["rgb"], flow=reverse_frames_in_stacks(batch["flow"].flip(1)))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_the_order_helper_reverses_frames_but_keeps_x_y_pairs():
    flow = torch.arange(6.0).view(1, 1, 6, 1, 1)  # x1 y1 x2 y2 x3 y3
    assert reverse_frames_in_stacks(flow).flatten().tolist() == [4.0, 5.0, 2.0, 3.0, 0.0, 1.0]


# ---------------------------------------------------------------- initialisation and checkpoints

def test_flow_stem_from_pretrained_weights_is_the_rgb_stem_averaged_and_repeated(tmp_path):
    torch.manual_seed(1)
    source = tiny_resnet()
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    model = build_model("stpn", "tiny", 4, {"pretrained": str(tmp_path / "tiny.pt")})
    torch.testing.assert_close(model.rgb_backbone.conv1.weight, source.conv1.weight)
    expected = source.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 10, -1, -1)
    torch.testing.assert_close(model.flow_backbone.conv1.weight, expected)
    torch.testing.assert_close(model.flow_backbone.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert model.flow_backbone.layer3[0].conv1.weight is not model.rgb_backbone.layer3[0].conv1.weight


def test_flow_stem_from_scratch_gets_distinct_kernels_per_flow_channel():
    model = build_model("stpn", "tiny", 4)
    weight = model.flow_backbone.conv1.weight
    assert weight.shape[1] == 10
    assert not torch.allclose(weight[:, 0], weight[:, 2])  # otherwise blind to the frame order in a stack


def test_checkpoint_round_trip_rebuilds_the_sketches_from_the_seed():
    model = tiny_eval_model()
    state = model.state_dict()
    assert not any(".sketches." in k or "attention_spread" in k for k in state)
    again = build_model("stpn", "tiny", 5).eval()
    again.load_state_dict(state, strict=True)
    batch = inputs_for(model)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), model(**batch), rtol=0, atol=0)
    other_seed = build_model("stpn", "tiny", 5, {"sketch_seed": 1}).eval()
    other_seed.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert not torch.allclose(other_seed(**batch), model(**batch))


def test_distributed_training_skips_broadcasting_only_the_fixed_sketch_buffers():
    model = build_model("stpn", "tiny", 4)
    ignored = model._ddp_params_and_buffers_to_ignore  # read by DistributedDataParallel
    sketch_buffers = [f"{n}.{b}" for n, m in model.named_modules() if isinstance(m, CountSketch) for b in ("weight", "hash", "sign")]
    assert set(ignored) == set(sketch_buffers) | {"attention_spread.weight"}
    assert all(not model.get_buffer(name).requires_grad for name in ignored)
    assert not any("bn" in name or "running" in name for name in ignored)  # batch-norm statistics still sync


# ---------------------------------------------------------------- options

def test_options_set_stacks_flow_length_and_stcb_sizes():
    model = build_model("stpn", "tiny", 3, {"flow_segments": 2, "flow_len": 4, "d_temporal": 64,
                                            "d_attention": 96, "d_final": 128, "attention_hidden": 8})
    spec = model.input_spec
    assert (spec.flow_segments, spec.flow_len) == (2, 4)
    assert len(model.temporal_fusion.sketches) == 2 and model.temporal_fusion.d == 64
    assert (model.attention_fusion.d, model.final_fusion.d, model.attention[0].out_channels) == (96, 128, 8)
    assert model.flow_backbone.conv1.in_channels == 8
    assert model(**inputs_for(model)).shape == (2, 3)


@pytest.mark.parametrize("options, match", [
    ({"d_final": 1}, r"architectures\.stpn\.d_final = 1"),
    ({"flow_segments": 0}, r"architectures\.stpn\.flow_segments = 0"),
    ({"backbone": "bninception"}, r"architectures\.stpn\.backbone = 'bninception'"),
    ({"pretrained": "kinetics"}, "not available for stpn"),
    ({"sketch_seed": -1}, r"sketch_seed = -1"),
    ({"dropout": 1.0}, r"architectures\.stpn\.dropout"),
])
def test_bad_options_are_config_errors_naming_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        build_model("stpn", "tiny", 3, options)


def test_auxiliary_heads_are_off_by_default_and_add_stream_scores_when_on():
    torch.manual_seed(0)
    plain = build_model("stpn", "tiny", 4)
    assert plain.rgb_head is None and plain.flow_head is None and plain.auxiliary_loss() is None
    torch.manual_seed(0)
    model = build_model("stpn", "tiny", 4, {"aux_heads": True}).eval()
    randomise_bn_stats(model)
    assert n_params(model) == n_params(plain) + (128 * 4 + 4) + (256 * 4 + 4)
    batch = inputs_for(model)
    with torch.no_grad():
        u, pooled, t = model.fused(**batch)
        expected = model.fc(u.flatten(1)) + model.rgb_head(pooled.flatten(1)) + model.flow_head(t.flatten(1))
        torch.testing.assert_close(model(**batch), expected)
    assert model.rgb_head in model.prune_ignored_layers() and model.flow_head in model.prune_ignored_layers()


# ---------------------------------------------------------------- pruning (smoke test)

def test_pruning_smoke_torch_pruning_prunes_tiny_stpn_through_the_sketches_and_it_still_runs():
    """PRUNING SMOKE TEST (the prune step is elsewhere): MetaPruner at ratio 0.5 with the model's own
    ignored layers shrinks both streams (the RGB stream's last stage included, which needs the
    attention_spread conv), keeps stems, classifier and every sketch's d, survives tp.state_dict /
    tp.load_state_dict, and the model still trains."""
    torch.manual_seed(0)
    model = build_model("stpn", "tiny", 7).eval()
    example = inputs_for(model, batch=2)
    ignored = model.prune_ignored_layers()
    stems = (model.rgb_backbone.conv1.weight.shape, model.flow_backbone.conv1.weight.shape)
    dims = [s.out_channels for s in model.sketches()]
    before = n_params(model)
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=ignored)
    pruner.step()
    assert n_params(model) < 0.5 * before
    assert (model.rgb_backbone.conv1.weight.shape, model.flow_backbone.conv1.weight.shape) == stems
    assert model.fc.out_features == 7 and model.attention[2].out_channels == 1
    assert [s.out_channels for s in model.sketches()] == dims
    rgb_width = model.rgb_backbone.layer4[-1].bn2.num_features
    flow_width = model.flow_backbone.layer4[-1].bn2.num_features
    assert rgb_width < 128 and flow_width < 128
    assert [s.in_channels for s in model.final_fusion.sketches] == [rgb_width, model.temporal_fusion.d, rgb_width]
    assert all(s.in_channels == flow_width for s in model.temporal_fusion.sketches)
    assert model.attention_spread.out_channels == rgb_width
    assert all(isinstance(s, CountSketch) and "weight" in s._buffers for s in model.sketches())
    # torch-pruning's own save format restores the pruned shapes (sketch columns included) on a fresh model
    saved = io.BytesIO()
    torch.save(tp.state_dict(model), saved)
    saved.seek(0)
    fresh = tp.load_state_dict(build_model("stpn", "tiny", 7).eval(), torch.load(saved, weights_only=False))
    with torch.no_grad():
        torch.testing.assert_close(fresh(**example), model(**example), rtol=0, atol=0)
    model.train()
    logits = model(**example)
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
