"""Checkpoints: written atomically, read back with torch.load(weights_only=True).

Nothing in a checkpoint needs unpickling arbitrary classes: tensors, numbers, strings, lists and
dicts only, so a checkpoint from elsewhere cannot run code on load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from actionrepro.errors import ActionReproError
from actionrepro.io import atomic_path


def save(path: str | Path, state: dict) -> None:
    """Write `state` to `path` through a temporary file and a rename.

    A full disk raises DiskFullError naming `path` (torch's own error is a bare `basic_ios::clear`).
    """
    with atomic_path(path, needed=tensor_bytes(state)) as tmp:
        torch.save(state, tmp)


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested state (dicts, lists, tuples): about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; a damaged file is a clear, actionable error."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, pickled classes, not a torch file: the unpickler raises anything
        first_line = (str(err).splitlines() or ["no detail"])[0]
        raise ActionReproError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line}); it is damaged or holds "
            "more than tensors and plain data. Delete it to restart this run from scratch."
        ) from err
    if not isinstance(state, dict):
        raise ActionReproError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of states; "
                               "delete it to restart the run")
    return state
