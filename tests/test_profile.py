from __future__ import annotations

import pytest
import torch
from torch import nn

from actionrepro.inputs import InputSpec
from actionrepro.profile import (count_flops, count_params, example_inputs, measure_latency, model_costs)

torch.set_num_threads(1)


class VideoConv(nn.Conv3d):
    """A Conv3d subclass, like torchvision's Conv3DSimple: torch-pruning's counter sees zero here."""


class TinyVideoNet(nn.Module):
    """(B, T, 3, H, W) -> logits, through one Conv3d subclass and a linear head."""

    def __init__(self, cin=3, cout=4, k=3, classes=5):
        super().__init__()
        self.conv = VideoConv(cin, cout, k, padding=k // 2, bias=False)
        self.fc = nn.Linear(cout, classes)
        self.input_spec = InputSpec(sampling="dense", clip_len=4, size=8)

    def forward(self, rgb=None, flow=None):
        x = self.conv(rgb.transpose(1, 2))  # B, C, T, H, W
        return self.fc(x.mean(dim=(2, 3, 4)))


class TwoStream(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb_fc = nn.Linear(3, 2)
        self.flow_fc = nn.Linear(6, 2)

    def forward(self, rgb=None, flow=None):
        return self.rgb_fc(rgb.mean(dim=(1, 3, 4))) + self.flow_fc(flow.mean(dim=(1, 3, 4)))


def test_flops_of_conv3d_subclass_equal_hand_count_2_cin_cout_k3_voxels():
    model = TinyVideoNet(cin=3, cout=4, k=3, classes=5)
    inputs = example_inputs(model.input_spec, batch=1)
    out_voxels = 4 * 8 * 8  # same padding: T x H x W
    conv = 2 * 3 * 4 * 3**3 * out_voxels
    head = 2 * 4 * 5  # addmm of the classifier
    assert count_flops(model, inputs) == conv + head


def test_r3d18_flops_are_twice_the_multiply_adds_torchvision_publishes():
    from torchvision.models.video import R3D_18_Weights, r3d_18

    class Wrapped(nn.Module):  # the registry's (B, T, 3, H, W) convention
        def __init__(self):
            super().__init__()
            self.net = r3d_18().to("meta")  # shapes only: nothing is computed

        def forward(self, rgb=None, flow=None):
            return self.net(rgb.transpose(1, 2))

    flops = count_flops(Wrapped(), {"rgb": torch.empty(1, 16, 3, 112, 112, device="meta")})
    published_gmacs = R3D_18_Weights.KINETICS400_V1.meta["_ops"]  # 40.697, torchvision's "GFLOPS"
    assert flops / 2e9 == pytest.approx(published_gmacs, rel=1e-3)


def test_flops_scale_with_batch_so_per_clip_cost_needs_batch_one():
    model = TinyVideoNet()
    one = count_flops(model, example_inputs(model.input_spec, 1))
    three = count_flops(model, example_inputs(model.input_spec, 3))
    assert one > 0 and three == 3 * one


def test_count_flops_restores_training_mode():
    model = TinyVideoNet().train()
    count_flops(model, example_inputs(model.input_spec, 1))
    assert model.training


def test_params_count_includes_every_parameter_once_and_no_buffers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    model.shared = model[2]  # same module twice: counted once
    expected = (3 * 8 * 9 + 8) + (8 + 8) + (8 * 2 + 2)
    assert count_params(model) == expected


def test_example_inputs_follow_declared_shapes_for_rgb_and_flow():
    spec = InputSpec(rgb=True, flow=True, segments=3, frames_per_segment=5, flow_segments=2, flow_len=4, size=16)
    inputs = example_inputs(spec, batch=2)
    assert inputs["rgb"].shape == (2, 15, 3, 16, 16)
    assert inputs["flow"].shape == (2, 2, 8, 16, 16)
    flow_only = example_inputs(InputSpec(rgb=False, flow=True, flow_segments=1, flow_len=2, size=8), batch=1)
    assert set(flow_only) == {"flow"}


def test_example_inputs_same_seed_same_tensors():
    spec = InputSpec(size=8, segments=2)
    assert torch.equal(example_inputs(spec, 1, seed=3)["rgb"], example_inputs(spec, 1, seed=3)["rgb"])


def test_latency_reports_median_p90_and_batch_size():
    model = TinyVideoNet()
    result = measure_latency(model, example_inputs(model.input_spec, 2), "cpu", repeats=5, warmup=1)
    assert {"batch_size", "median_ms", "p90_ms", "min_ms", "repeats", "warmup"} <= set(result)
    assert result["batch_size"] == 2 and result["repeats"] == 5
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"]


def test_latency_rejects_inputs_with_different_batch_sizes():
    with pytest.raises(ValueError, match="batch size"):
        measure_latency(TwoStream(), {"rgb": torch.zeros(1, 2, 3, 4, 4), "flow": torch.zeros(2, 1, 6, 4, 4)},
                        repeats=1, warmup=0)


def test_model_costs_measure_each_batch_size_once_and_record_device():
    model = TinyVideoNet()
    costs = model_costs(model, model.input_spec, "cpu", batch_sizes=(1, 3, 1), repeats=2, warmup=0)
    assert set(costs["latency_ms"]) == {"batch_1", "batch_3"}
    assert costs["latency_ms"]["batch_3"]["batch_size"] == 3
    assert costs["params"] == count_params(model)
    assert costs["gflops"] == pytest.approx(count_flops(model, example_inputs(model.input_spec, 1)) / 1e9)
    assert costs["gmacs"] == pytest.approx(costs["gflops"] / 2)
    assert costs["threads"] == torch.get_num_threads() and costs["device"] == "cpu" and costs["device_name"]
