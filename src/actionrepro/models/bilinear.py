"""Compact bilinear pooling (count sketch + FFT), the STCB operator of STPN, as reusable layers.

STCB(x_1..x_K) count-sketches each input with its own fixed hash and sign, multiplies the sketches'
FFTs and applies signed sqrt and L2 normalisation (Gao et al., CVPR 2016; Fukui et al., EMNLP 2016).
Each sketch is a fixed 1x1 conv: torch-pruning drops its input columns like any conv, and listing
it among a model's prune-ignored layers keeps its d outputs (hash buckets, not features) whole.
Details: docs/models.md ("Shared building blocks").
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def sketch_hash(in_features: int, d: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A count sketch's hash h (int64 in [0, d)) and sign s (+-1 float) for `in_features` inputs."""
    if in_features < 1 or d < 1:
        raise ValueError(f"a count sketch needs in_features >= 1 and d >= 1, got {in_features}, {d}")
    h = torch.randint(d, (in_features,), generator=generator)
    s = torch.randint(2, (in_features,), generator=generator).float() * 2 - 1
    return h, s


def sketch_matrix(h: torch.Tensor, s: torch.Tensor, d: int) -> torch.Tensor:
    """The dense (d, n) matrix M with M[h[j], j] = s[j] and zeros elsewhere: sketch(x) = M x."""
    matrix = torch.zeros(d, h.numel(), dtype=s.dtype)
    matrix[h, torch.arange(h.numel())] = s
    return matrix


class FixedConv1x1(nn.Conv2d):
    """A bias-free 1x1 convolution whose weight is a fixed buffer, not a parameter.

    torch-pruning prunes convolutions by assigning a new nn.Parameter to `.weight`; this class
    turns every such assignment back into a buffer, so a pruned copy stays untrained and keeps out
    of optimisers and parameter counts. `persistent=False` keeps the weight out of state_dict()
    (for weights that the constructor rebuilds deterministically).
    """

    def __init__(self, in_channels: int, out_channels: int, weight: torch.Tensor, persistent: bool = True):
        self._persistent_weight = persistent
        super().__init__(in_channels, out_channels, kernel_size=1, bias=False)
        if weight.shape != (out_channels, in_channels):
            raise ValueError(f"FixedConv1x1 weight must be ({out_channels}, {in_channels}), got {tuple(weight.shape)}")
        with torch.no_grad():
            self.weight.copy_(weight.view(out_channels, in_channels, 1, 1))

    def __setattr__(self, name: str, value) -> None:
        if name == "weight" and isinstance(value, torch.Tensor):
            value = value.detach().requires_grad_(False)
            buffers = self.__dict__.get("_buffers")
            if buffers is not None and "weight" in buffers:
                buffers["weight"] = value
            else:
                self.register_buffer("weight", value, persistent=self.__dict__.get("_persistent_weight", True))
            return
        super().__setattr__(name, value)

    def reset_parameters(self) -> None:
        """Nothing to initialise: the weight is set by the constructor and never trained."""


class CountSketch(FixedConv1x1):
    """Count sketch of the channel vector at every location: (N, n, H, W) -> (N, d, H, W).

    The sketch matrix is rebuilt from (in_features, d, generator state) by the constructor and is
    therefore not saved in state_dict(); `hash` and `sign` keep the draw for inspection (they
    describe the unpruned channels; after pruning, the weight's columns are the truth). No
    read-only properties here: torch-pruning's tp.load_state_dict sets every public attribute.
    """

    def __init__(self, in_features: int, d: int, generator: torch.Generator):
        h, s = sketch_hash(in_features, d, generator)
        super().__init__(in_features, d, sketch_matrix(h, s, d), persistent=False)
        self.register_buffer("hash", h, persistent=False)
        self.register_buffer("sign", s, persistent=False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_channels}, d={self.out_channels}"


def circular_convolution(sketches: Sequence[torch.Tensor], d: int, dim: int = 1) -> torch.Tensor:
    """The circular convolution of d-long sketches along `dim` via FFT (other dims broadcast),
    computed in float32: half-precision FFTs overflow and need power-of-two lengths."""
    spectrum = None
    for sketch in sketches:
        f = torch.fft.rfft(sketch.float(), n=d, dim=dim)
        spectrum = f if spectrum is None else spectrum * f
    return torch.fft.irfft(spectrum, n=d, dim=dim)


def signed_sqrt(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """sign(x) * sqrt(|x|), shifted by sqrt(eps) so that it is 0 at 0 with a finite slope there."""
    return torch.sign(x) * (torch.sqrt(x.abs() + eps) - eps ** 0.5)


class CompactBilinear(nn.Module):
    """STCB(x_1..x_K) -> d features: count sketches, FFT product, signed sqrt, L2 normalisation.

    `shared_sketch=True` uses one hash/sign for all inputs (they must then have equal widths),
    which makes the operator symmetric in its inputs; the default is one sketch per input.
    """

    def __init__(self, in_features: Sequence[int], d: int, seed: int | torch.Generator = 0,
                 shared_sketch: bool = False, normalize: bool = True, eps: float = 1e-8):
        super().__init__()
        in_features = [int(n) for n in in_features]
        if not in_features or d < 2:
            raise ValueError(f"CompactBilinear needs at least one input and d >= 2, got {in_features}, d={d}")
        if shared_sketch and len(set(in_features)) != 1:
            raise ValueError(f"a shared sketch needs inputs of one width, got {in_features}")
        generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        if shared_sketch:
            one = CountSketch(in_features[0], d, generator)
            self.sketches = nn.ModuleList([one] * len(in_features))
        else:
            self.sketches = nn.ModuleList(CountSketch(n, d, generator) for n in in_features)
        self.d = d
        self.normalize = normalize
        self.eps = eps

    def extra_repr(self) -> str:
        return f"d={self.d}, normalize={self.normalize}"

    def product(self, *xs: torch.Tensor) -> torch.Tensor:
        """The circular convolution of the inputs' sketches (before signed sqrt and L2)."""
        if len(xs) != len(self.sketches):
            raise ValueError(f"CompactBilinear was built for {len(self.sketches)} inputs, got {len(xs)}")
        vectors = xs[0].ndim == 2
        if any(x.ndim != (2 if vectors else 4) for x in xs):
            raise ValueError(f"CompactBilinear takes all (N, C) or all (N, C, H, W) inputs, got {[tuple(x.shape) for x in xs]}")
        if vectors:
            xs = tuple(x[:, :, None, None] for x in xs)
        out = circular_convolution([sketch(x) for sketch, x in zip(self.sketches, xs)], self.d, dim=1)
        return out.flatten(1) if vectors else out

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = self.product(*xs)
        if not self.normalize:
            return out
        return F.normalize(signed_sqrt(out, self.eps), dim=1)
