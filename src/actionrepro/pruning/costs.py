"""What pruning bought: parameters, FLOPs per clip and measured latency before and after, and a check
that the pruned network still scores every class."""

from __future__ import annotations

import torch
from torch import nn

from actionrepro import profile
from actionrepro.errors import ActionReproError
from actionrepro.pruning import structure


def check_pruned(model: nn.Module, num_classes: int, what: str) -> None:
    """The pruned network must still run on its declared input and score every class."""
    model.eval()
    with torch.no_grad():
        logits = model(**structure.trace_inputs(model, batch=2))
    if tuple(logits.shape) != (2, num_classes):
        raise ActionReproError(f"{what} outputs {tuple(logits.shape)} for 2 clips instead of (2, {num_classes}); "
                               "its classifier must be listed in prune_ignored_layers()")


def measure_costs(model: nn.Module, device: torch.device | str = "cpu", repeats: int = 20) -> dict:
    """Parameters, FLOPs per clip and batch-1 latency on the CPU (and on `device` if it is a GPU);
    the model is left on the CPU."""
    spec = model.input_spec
    device = torch.device(device)
    flops = profile.count_flops(model, profile.example_inputs(spec, 1))
    latency = {}
    for where in ["cpu"] + (["cuda"] if device.type == "cuda" else []):
        target = device if where == "cuda" else torch.device("cpu")
        timing = profile.measure_latency(model, profile.example_inputs(spec, 1, target), target, repeats=repeats)
        latency[where] = {**timing, "device_name": profile.device_name(target)}
    model.to("cpu")
    return {"params": profile.count_params(model), "flops_per_clip": flops, "gflops": flops / 1e9,
            "latency_ms": latency, "threads": torch.get_num_threads()}


def cost_summary(before: dict, after: dict) -> dict:
    """metrics.json keys comparing the dense (before) and pruned (after) costs."""
    speedup = {where: before["latency_ms"][where]["median_ms"] / after["latency_ms"][where]["median_ms"]
               for where in before["latency_ms"]}
    return {
        "params_before": before["params"], "params_after": after["params"],
        "params_reduction": before["params"] / after["params"],
        "gflops_before": before["gflops"], "gflops_after": after["gflops"],
        "flops_reduction": before["flops_per_clip"] / after["flops_per_clip"],
        "flops_convention": "FLOPs = 2 x MACs per clip (one view, batch 1), torch FlopCounterMode",
        "latency_batch1_before": before["latency_ms"], "latency_batch1_after": after["latency_ms"],
        "speedup": speedup,
        "latency_threads": after["threads"],
    }
