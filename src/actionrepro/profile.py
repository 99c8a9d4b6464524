"""What a model costs for the input it declares: parameters, FLOPs per clip, latency.

FLOPs come from torch's own FlopCounterMode, which counts at the ATen-op level (convolution,
mm, addmm, bmm, attention) whatever module issued the op. torch-pruning's counter dispatches on
exact module type and counts subclasses of nn.Conv3d (torchvision's video ResNets) as zero, so it
is not used here. Convention: one multiply-add = 2 FLOPs (FLOPs = 2 x MACs); bias adds,
normalisation, pooling, activations and FFTs are not counted (they are a rounding error next to
the convolutions). Beware when comparing: many papers and torchvision's model metadata ("_ops",
"GFLOPS" 40.70 for r3d_18 at 16x112^2) report multiply-adds, i.e. half our number (81.39); the
costs therefore carry both gflops and gmacs.
"""

from __future__ import annotations

import logging
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionrepro.inputs import InputSpec

log = logging.getLogger(__name__)


def example_inputs(spec: InputSpec, batch: int = 1, device: str | torch.device = "cpu",
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of exactly the declared shapes (see actionrepro.inputs), keyed like forward()."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    if spec.rgb:
        out["rgb"] = torch.randn(batch, spec.frames, 3, spec.size, spec.size, generator=gen)
    if spec.flow:
        out["flow"] = torch.randn(batch, spec.flow_segments, 2 * spec.flow_len, spec.size, spec.size,
                                  generator=gen)
    return {k: v.to(device) for k, v in out.items()}


def _batch_size(inputs: dict[str, torch.Tensor]) -> int:
    sizes = {v.shape[0] for v in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"inputs disagree on the batch size: { {k: v.shape[0] for k, v in inputs.items()} }")
    return sizes.pop()


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """FLOPs (= 2 x MACs) of one forward pass in eval mode on `inputs`, for the whole batch.

    Pass a batch of 1 (example_inputs(spec, 1)) for the per-clip cost that tables report as
    GFLOPs = count_flops(...) / 1e9. Frames folded into the batch by 2D models are counted, since
    the counter sees the real convolution shapes.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(**inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: nn.Module, inputs: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                    repeats: int = 20, warmup: int = 3) -> dict:
    """Wall-clock time of one forward pass (eval mode, inference_mode) on `device`.

    Each repeat is timed alone, synchronising the GPU before and after, so the median and 90th
    percentile describe single calls rather than a pipelined stream. Moves `model` to `device`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    times_ms: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(**inputs)
            _synchronize(device)
            for _ in range(repeats):
                start = time.perf_counter()
                model(**inputs)
                _synchronize(device)
                times_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    ordered = sorted(times_ms)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]  # nearest-rank percentile
    return {
        "batch_size": _batch_size(inputs),
        "median_ms": statistics.median(ordered),
        "p90_ms": p90,
        "min_ms": ordered[0],
        "repeats": repeats,
        "warmup": warmup,
    }


def device_name(device: str | torch.device) -> str:
    """Human-readable name of the device latencies were measured on (GPU model or CPU model)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def model_costs(model: nn.Module, spec: InputSpec, device: str | torch.device = "cpu",
                batch_sizes: tuple[int, ...] = (1,), repeats: int = 20, warmup: int = 3) -> dict:
    """Params, GFLOPs per clip and latency at each batch size: the cost columns of the report."""
    device = torch.device(device)
    model.to(device)
    flops = count_flops(model, example_inputs(spec, 1, device))
    latency = {}
    for batch in dict.fromkeys(batch_sizes):  # de-duplicated, order kept
        log.info("latency at batch %d on %s (%d repeats)", batch, device, repeats)
        latency[f"batch_{batch}"] = measure_latency(model, example_inputs(spec, batch, device), device,
                                                    repeats=repeats, warmup=warmup)
    return {
        "params": count_params(model),
        "flops_per_clip": flops,
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "flops_convention": "FLOPs = 2 x MACs per clip (one view, batch 1), torch FlopCounterMode",
        "latency_ms": latency,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
