"""Seeding and RNG state, so that a resumed run continues exactly where the killed one stopped.

Every RNG a training step can touch (python, numpy, torch CPU, the CUDA device) is seeded from
one number and its state is captured into the checkpoint as tensors and plain data only
(loadable with torch.load(weights_only=True)).
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, epoch, rank...), independent of PYTHONHASHSEED."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 % 2**64
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker hook: torch already seeds each worker (base_seed + id); derive the rest."""
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state(device: torch.device | None = None) -> dict:
    """Every RNG state as tensors, lists and numbers (weights_only-safe)."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "cuda": None,
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore what rng_state() captured."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CPU for the duration of a run; previous settings restored after.

    GPUs keep the fast non-deterministic kernels: MaxPool3d backward has no deterministic CUDA
    kernel, so strict mode would refuse the 3D models. The CPU promise is bit-identical results.
    """
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark = torch.backends.cudnn.benchmark
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = benchmark
