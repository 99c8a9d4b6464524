"""Compact bilinear pooling (STCB): the count sketch against its definition, unbiased inner-product
estimates whose error shrinks with d, the FFT product against the explicit circular convolution,
determinism from the seed, (a)symmetry in the inputs, and pruning through the sketch."""

from __future__ import annotations

import math

import pytest
import torch
import torch_pruning as tp
from torch import nn

from actionrepro.models.bilinear import (CompactBilinear, CountSketch, FixedConv1x1, circular_convolution,
                                         signed_sqrt, sketch_hash, sketch_matrix)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the tests' random inputs are fixed
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def explicit_count_sketch(x: torch.Tensor, h: torch.Tensor, s: torch.Tensor, d: int) -> torch.Tensor:
    """The definition: y[h[j]] += s[j] * x[j], on (N, n) vectors."""
    return torch.zeros(x.shape[0], d, dtype=x.dtype).index_add_(1, h, x * s)


def explicit_circular_convolution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """c[k] = sum_i p[i] q[(k - i) mod d], on (N, d) vectors, in float64."""
    d = p.shape[1]
    idx = (torch.arange(d)[:, None] - torch.arange(d)[None, :]) % d  # [k, i] -> (k - i) mod d
    return torch.einsum("ni,nki->nk", p.double(), q.double()[:, idx])


def correlated_pair(n: int, seed: int, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    x = torch.randn(1, n, generator=g, dtype=torch.float64)
    return x, x + noise * torch.randn(1, n, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- count sketch

def test_count_sketch_as_a_1x1_conv_equals_the_scatter_definition():
    h, s = sketch_hash(37, 16, gen(0))
    assert h.min() >= 0 and h.max() < 16 and set(s.tolist()) <= {-1.0, 1.0}
    sketch = CountSketch(37, 16, gen(0))
    x = torch.randn(5, 37)
    torch.testing.assert_close(sketch(x[:, :, None, None]).flatten(1), explicit_count_sketch(x, h, s, 16))
    matrix = sketch_matrix(h, s, 16)
    assert ((matrix != 0).sum(dim=0) == 1).all()  # one signed bucket per input channel


def test_count_sketch_is_a_fixed_buffer_not_a_trained_parameter():
    layer = CompactBilinear([8, 6], 32, seed=0)
    assert list(layer.parameters()) == []
    x = torch.randn(3, 8, requires_grad=True)
    y = torch.randn(3, 6, requires_grad=True)
    layer(x, y).sum().backward()
    assert x.grad is not None and y.grad is not None and torch.isfinite(x.grad).all()
    assert all(not b.requires_grad for b in layer.buffers())


def test_sketch_inner_product_is_an_unbiased_estimate_whose_error_shrinks_with_d():
    x, y = correlated_pair(48, seed=1)
    truth = (x * y).sum().item()
    seeds = 300
    errors = {}
    for d in (256, 4096):
        estimates = torch.tensor([
            (layer.product(x.float()) * layer.product(y.float())).sum().item()
            for layer in (CompactBilinear([48], d, seed=k, normalize=False) for k in range(seeds))])
        standard_error = estimates.std().item() / math.sqrt(seeds)
        assert abs(estimates.mean().item() - truth) < 4 * standard_error + 1e-3 * abs(truth), (d, estimates.mean(), truth)
        errors[d] = (estimates - truth).pow(2).mean().sqrt().item()
    # variance ~ 1/d: 16x more buckets, about 4x less error
    assert errors[4096] < 0.5 * errors[256], errors


def test_two_input_stcb_inner_product_estimates_the_product_of_inner_products():
    x1, y1 = correlated_pair(24, seed=2)
    x2, y2 = correlated_pair(16, seed=3)
    truth = ((x1 * y1).sum() * (x2 * y2).sum()).item()
    seeds = 300
    errors = {}
    for d in (256, 4096):
        estimates = []
        for k in range(seeds):
            layer = CompactBilinear([24, 16], d, seed=k, normalize=False)
            estimates.append((layer.product(x1.float(), x2.float()) * layer.product(y1.float(), y2.float())).sum().item())
        estimates = torch.tensor(estimates)
        standard_error = estimates.std().item() / math.sqrt(seeds)
        assert abs(estimates.mean().item() - truth) < 4 * standard_error + 1e-3 * abs(truth), (d, estimates.mean(), truth)
        errors[d] = (estimates - truth).pow(2).mean().sqrt().item()
    assert errors[4096] < 0.5 * errors[256], errors


def test_same_seed_gives_the_same_sketches_and_another_seed_does_not():
    a, b, c = (CompactBilinear([20, 12], 64, seed=s) for s in (7, 7, 8))
    for sa, sb in zip(a.sketches, b.sketches):
        torch.testing.assert_close(sa.weight, sb.weight, rtol=0, atol=0)
    assert not torch.equal(a.sketches[0].weight, c.sketches[0].weight)
    assert not torch.equal(a.sketches[0].hash[:12], a.sketches[1].hash)  # one hash per input
    x, y = torch.randn(2, 20), torch.randn(2, 12)
    torch.testing.assert_close(a(x, y), b(x, y), rtol=0, atol=0)


def test_sketch_matrices_are_rebuilt_from_the_seed_not_saved():
    layer = CompactBilinear([10, 10], 32, seed=3)
    assert layer.state_dict() == {}
    again = CompactBilinear([10, 10], 32, seed=3)
    x = torch.randn(4, 10)
    torch.testing.assert_close(again(x, x), layer(x, x), rtol=0, atol=0)


# ---------------------------------------------------------------- FFT product

@pytest.mark.parametrize("widths", [(9, 13), (9, 13, 5)])
def test_fft_product_equals_the_explicit_circular_convolution_of_the_sketches(widths):
    d = 24
    layer = CompactBilinear(list(widths), d, seed=5, normalize=False)
    xs = [torch.randn(3, n) for n in widths]
    sketches = [explicit_count_sketch(x, s.hash, s.sign, d) for x, s in zip(xs, layer.sketches)]
    expected = sketches[0].double()
    for q in sketches[1:]:
        expected = explicit_circular_convolution(expected, q)
    torch.testing.assert_close(layer.product(*xs).double(), expected, rtol=1e-5, atol=1e-5)


def test_maps_and_vectors_broadcast_over_locations():
    layer = CompactBilinear([6, 4], 16, seed=0)
    spatial = torch.randn(2, 6, 3, 5)
    vector = torch.randn(2, 4)
    assert layer(spatial, vector[:, :, None, None]).shape == (2, 16, 3, 5)
    out = layer.product(spatial, vector[:, :, None, None])
    for i, j in [(0, 0), (2, 4), (1, 3)]:
        torch.testing.assert_close(out[:, :, i, j], layer.product(spatial[:, :, i, j], vector), rtol=1e-5, atol=1e-5)


def test_output_is_the_l2_normalised_signed_square_root_of_the_product():
    layer = CompactBilinear([7, 7], 32, seed=1)
    x, y = torch.randn(4, 7), torch.randn(4, 7)
    raw = layer.product(x, y)
    out = layer(x, y)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    assert torch.equal(torch.sign(out), torch.sign(raw))
    expected = torch.sign(raw) * raw.abs().sqrt()
    torch.testing.assert_close(out, expected / expected.norm(dim=1, keepdim=True), rtol=1e-3, atol=1e-4)


def test_signed_sqrt_is_zero_at_zero_with_a_finite_gradient():
    x = torch.tensor([0.0, 4.0, -9.0], requires_grad=True)
    y = signed_sqrt(x)
    torch.testing.assert_close(y, torch.tensor([0.0, 2.0, -3.0]), rtol=1e-4, atol=1e-4)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_circular_convolution_runs_in_float32_for_half_inputs():
    p, q = torch.randn(2, 8).half(), torch.randn(2, 8).half()
    out = circular_convolution([p, q], 8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), explicit_circular_convolution(p.float(), q.float()), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- symmetry

def test_one_shared_sketch_makes_stcb_symmetric_and_one_sketch_per_input_does_not():
    xs = [torch.randn(2, 16) for _ in range(3)]
    shared = CompactBilinear([16] * 3, 64, seed=0, shared_sketch=True)
    torch.testing.assert_close(shared(*xs), shared(*xs[::-1]), rtol=1e-5, atol=1e-6)
    per_input = CompactBilinear([16] * 3, 64, seed=0)
    assert (per_input(*xs) - per_input(*xs[::-1])).abs().max() > 0.05


def test_wrong_number_or_layout_of_inputs_is_refused():
    layer = CompactBilinear([4, 4], 8, seed=0)
    with pytest.raises(ValueError, match="built for 2 inputs"):
        layer(torch.randn(1, 4))
    with pytest.raises(ValueError, match="all \\(N, C\\) or all"):
        layer(torch.randn(1, 4), torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="one width"):
        CompactBilinear([4, 5], 8, shared_sketch=True)


# ---------------------------------------------------------------- pruning

class ConvThenSketch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.stcb = CompactBilinear([12, 12], 32, seed=4)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3), keepdim=True)
        return self.fc(self.stcb(f, f).flatten(1))


def test_pruning_the_channels_feeding_a_sketch_drops_their_columns_and_keeps_d():
    torch.manual_seed(0)
    model = ConvThenSketch().eval()
    columns = [s.weight.flatten(1).clone() for s in model.stcb.sketches]
    x = torch.randn(2, 3, 8, 8)
    pruner = tp.pruner.MetaPruner(model, example_inputs=x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[model.fc, *model.stcb.sketches])
    pruner.step()
    kept = model.conv.out_channels
    assert kept == 6
    for sketch, before in zip(model.stcb.sketches, columns):
        assert sketch.weight.shape == (32, kept, 1, 1)  # d kept, inputs follow the conv
        assert "weight" in sketch._buffers and not sketch.weight.requires_grad
        # the surviving channels keep their own hash bucket and sign
        matches = [(before == sketch.weight.flatten(1)[:, [j]]).all(dim=0).nonzero().flatten().tolist() for j in range(kept)]
        assert all(m for m in matches)
    assert list(model.stcb.parameters()) == []
    assert model(x).shape == (2, 5)


def test_fixed_conv_keeps_assigned_weights_as_buffers():
    conv = FixedConv1x1(3, 2, torch.ones(2, 3))
    conv.weight = nn.Parameter(torch.zeros(2, 3, 1, 1))
    assert list(conv.parameters()) == [] and not conv.weight.requires_grad
    with pytest.raises(ValueError, match="must be \\(2, 3\\)"):
        FixedConv1x1(3, 2, torch.ones(3, 2))
