"""Prune a model with torch-pruning and record the result as plain data that rebuilds it.

Pruning: torch-pruning's MetaPruner (dependency graph traced on the model's declared input, with
autograd on), the layers the model lists in prune_ignored_layers() left whole (classifier output,
input stems, and whatever else each model names), custom pruners for the layers torch-pruning
cannot cut alone (shift.ChannelShift).

Record (JSON-safe): the settings, torch-pruning's pruning history - for each pruned group, the
root module's name, whether its outputs or inputs were cut, and the channel indices - and the
shape of every parameter and buffer afterwards. `replay` builds the dependency graph of a freshly
built, unpruned model and re-applies the history with torch-pruning's own load_pruning_history,
so the rebuilt model has the same layers, the same shapes and the same kept channels; only then
are the weights loaded. Nothing is unpickled: tp.state_dict would pickle module objects, this
record holds names, booleans and integers. Buffers that models rebuild instead of saving (STPN's
count-sketch matrices) lose exactly the same columns on replay as they did when pruned.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch_pruning as tp
from torch import nn

from actionrepro import profile
from actionrepro.errors import ConfigError
from actionrepro.pruning.importance import make_importance, needs_gradients
from actionrepro.pruning.shift import ChannelShift, ShiftPruner, convert_shifts

FORMAT = 1
CUSTOMIZED_PRUNERS = {ChannelShift: ShiftPruner()}

Gradients = Callable[[nn.Module], object]


def trace_inputs(model: nn.Module, batch: int = 1) -> dict[str, torch.Tensor]:
    """Random inputs of the model's declared shapes (InputSpec), on the model's device."""
    device = next(model.parameters()).device
    return profile.example_inputs(model.input_spec, batch, device)


def _drop(tensor: torch.Tensor) -> None:
    return None


def _dropped(_) -> torch.Tensor:
    raise RuntimeError("activations are not kept while torch-pruning traces the dependency graph; no backward here")


@contextmanager
def tracing() -> Iterator[None]:
    """Autograd on, as torch-pruning's tracing needs (it follows the grad_fn links of one forward),
    without keeping the activations saved for a backward that never runs: tracing STFN at paper
    scale (50 ResNet-50 frames) otherwise holds ~4.5 GB of them for as long as the graph lives.
    torch-pruning reads only sizes and dims from the graph nodes, which are kept."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_drop, _dropped):
        yield


def prepare(model: nn.Module) -> nn.Module:
    """Swap the layers that need help for their prunable equivalents (same function); in place."""
    convert_shifts(model, trace_inputs(model))
    return model


def build_pruner(model: nn.Module, ratio: float, *, importance: str = "l2", global_pruning: bool = False,
                 iterative_steps: int = 1, round_to: int | None = None) -> tp.pruner.BasePruner:
    """torch-pruning's MetaPruner for a prepared model: `ratio` of the channels of every prunable
    group (or of all groups together with global_pruning) removed over `iterative_steps` steps,
    kept channel counts rounded to multiples of `round_to`."""
    if not 0 < ratio < 1:
        raise ConfigError(f"pruning ratio {ratio!r} must be in (0, 1): the fraction of channels removed")
    if iterative_steps < 1:
        raise ConfigError(f"prune.iterative_steps = {iterative_steps!r}; use a positive integer")
    with tracing():
        return tp.pruner.MetaPruner(
            model, example_inputs=trace_inputs(model), importance=make_importance(importance),
            pruning_ratio=float(ratio), global_pruning=bool(global_pruning), iterative_steps=int(iterative_steps),
            round_to=round_to, ignored_layers=model.prune_ignored_layers(),
            customized_pruners=CUSTOMIZED_PRUNERS)


def prune_model(model: nn.Module, ratio: float, *, importance: str = "l2", global_pruning: bool = False,
                iterative_steps: int = 1, round_to: int | None = None,
                gradients: Gradients | None = None) -> dict:
    """Prune `model` in place and return the record that `replay` rebuilds it from.

    `gradients(model)` must fill the parameters' .grad for the taylor criterion; it is called
    before every step, on the model as pruned so far. Frozen parameters stay frozen.
    """
    if needs_gradients(importance) and gradients is None:
        raise ConfigError(f"prune.importance = {importance!r} needs gradients of the training loss; "
                          "pass a gradients callable (the prune step computes them on training clips)")
    was_training = model.training
    prepare(model)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    pruner = build_pruner(model, ratio, importance=importance, global_pruning=global_pruning,
                          iterative_steps=iterative_steps, round_to=round_to)
    for _ in range(int(iterative_steps)):
        if needs_gradients(importance):
            gradients(model)
        pruner.step()
    model.zero_grad(set_to_none=True)
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    model.train(was_training)
    history = plain_history(pruner.pruning_history())
    modules = dict(model.named_modules())
    return {
        "format": FORMAT,
        "ratio": float(ratio),
        "importance": importance,
        "global_pruning": bool(global_pruning),
        "iterative_steps": int(iterative_steps),
        "round_to": round_to,
        "torch_pruning": tp.__version__,
        "history": history,
        "layer_types": {name: type(modules[name]).__name__ for name, _, _ in history},
        "shapes": tensor_shapes(model),
    }


def plain_history(history) -> list[list]:
    """torch-pruning's history as JSON-safe [module name, prunes outputs?, [channel indices]]."""
    return [[str(name), bool(outputs), [int(getattr(i, "idx", i)) for i in idxs]] for name, outputs, idxs in history]


def tensor_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Shape of every parameter and buffer, persistent or not, by qualified name."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {name: list(t.shape) for name, t in tensors.items()}


def replay(model: nn.Module, record: dict) -> nn.Module:
    """Re-apply a record's pruning to a freshly built, unpruned `model` (in place) and check that
    every tensor has the recorded shape. Raises ValueError when the record does not fit the model."""
    if record.get("format") != FORMAT:
        raise ValueError(f"pruning record format {record.get('format')!r} is not {FORMAT}")
    history = record.get("history")
    if not isinstance(history, list):
        raise ValueError("pruning record has no history list")
    was_training = model.training
    prepare(model)
    with tracing():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=trace_inputs(model),
                                                      customized_pruners=CUSTOMIZED_PRUNERS, verbose=False)
    modules = dict(model.named_modules())
    missing = sorted({name for name, _, _ in history if name not in modules})
    if missing:
        raise ValueError(f"pruned layer(s) {', '.join(missing[:5])} do not exist in the rebuilt model")
    types = record.get("layer_types") or {}
    changed = sorted(f"{name} ({types[name]} recorded, {type(modules[name]).__name__} built)"
                     for name in types if name in modules and type(modules[name]).__name__ != types[name])
    if changed:
        raise ValueError(f"pruned layer(s) changed type: {', '.join(changed[:5])}")
    try:
        graph.load_pruning_history([(name, bool(outputs), list(idxs)) for name, outputs, idxs in history])
    except (AssertionError, IndexError, ValueError, RuntimeError) as err:
        raise ValueError(f"replaying the pruning history failed ({type(err).__name__}: {err})") from err
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    expected, actual = record.get("shapes") or {}, tensor_shapes(model)
    wrong = [f"{k}: recorded {expected.get(k)} vs rebuilt {actual.get(k)}"
             for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k)]
    if wrong:
        raise ValueError(f"{len(wrong)} tensor shape(s) differ after replay: {'; '.join(wrong[:3])}")
    return model
