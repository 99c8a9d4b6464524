"""The `actionrepro prune` step: structural pruning of a trained model, then fine-tuning.

prune(dataset, split, model, ratio, params) reads runs/<ds>/split<k>/<model>/dense (model.json +
checkpoint.pt, weights_only), removes `ratio` of the channels of every prunable group with
torch-pruning (criterion, global ranking, iterative steps and channel rounding from
params["prune"]; classifier output and input stems never pruned: model.prune_ignored_layers()),
fine-tunes the smaller network with the training engine (train.train with the built model,
prune.finetune_epochs and prune.finetune_lr) into runs/.../pruned-<ratio>, and adds to its
metrics.json what pruning bought: parameters, FLOPs and measured batch-1 latency before and after
(CPU, and the GPU when training runs on one), and the speed-ups.

The run directory has train.py's files (checkpoint.pt with a plain "model" state dict, history.csv,
metrics.json, model.json). model.json also holds, under "pruning", the record that
actionrepro.pruning.structure writes: the settings, torch-pruning's history of removed channels and
the resulting tensor shapes, all plain JSON. load_pruned(run_dir) builds the model afresh, replays
that history, checks the shapes, then loads the weights with torch.load(weights_only=True): no
pickled code, identical outputs.

Under torchrun, rank 0 prunes and the other ranks replay its record, so every rank fine-tunes the
same network. Re-running the step after a kill prunes again and the fine-tune resumes from its
checkpoint: train.py resumes only from the same starting weights, which the criteria reproduce on
a CPU (taylor gradients summed on a GPU may reorder near-ties; the fine-tune then starts over).
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from actionrepro import paths, profile
from actionrepro.engine import checkpoint, distributed
from actionrepro.errors import ActionReproError, ConfigError
from actionrepro.io import atomic_write_json
from actionrepro.pruning import importance, structure

log = logging.getLogger(__name__)

TAYLOR_BATCHES = 8  # training batches whose loss gradients the taylor criterion sums, per pruning step


def variant_name(ratio: float) -> str:
    """The run-directory name of a pruning ratio, as the workflow writes it (`pruned-0.3`)."""
    return f"pruned-{float(ratio):g}"


# ---------------------------------------------------------------- the step
def prune(dataset: str, split: int, model_name: str, ratio: float, params: dict) -> Path:
    """Prune the dense run of `model_name` by `ratio`, fine-tune it; returns the pruned run directory."""
    from actionrepro import train as training
    from actionrepro.evaluate import load_model_for_eval

    cfg = params["prune"]
    ratio = float(ratio)
    if not 0 < ratio < 1:
        raise ConfigError(f"pruning ratio {ratio!r} must be in (0, 1) (the fraction of channels removed)")
    dense_dir = paths.run_dir(dataset, split, model_name, "dense")
    out_dir = paths.run_dir(dataset, split, model_name, variant_name(ratio))
    ctx = distributed.setup(params["train"].get("device", "auto"))
    try:
        model = load_model_for_eval(dense_dir)  # clear errors for a missing or unfinished dense run
        dense_meta = _read_json(dense_dir / "model.json")
        if dense_meta.get("name") != model_name:
            raise ActionReproError(f"{dense_dir / 'model.json'} describes model {dense_meta.get('name')!r}, "
                                   f"not {model_name!r}; re-run `actionrepro train {dataset} {split} {model_name}`")
        record, costs = None, None
        if ctx.is_main:
            repeats = int(params["evaluate"].get("latency_repeats", 20))
            before = measure_costs(model, ctx.device, repeats)
            gradients = None
            if importance.needs_gradients(cfg["importance"]):
                gradients = taylor_gradients(dataset, split, model.input_spec, params, ctx.device)
            log.info("pruning %s by %g (%s, global=%s, %d step(s), round_to=%s)", dense_dir, ratio,
                     cfg["importance"], cfg["global_pruning"], cfg["iterative_steps"], cfg["round_to"])
            record = structure.prune_model(model, ratio, importance=cfg["importance"],
                                           global_pruning=cfg["global_pruning"],
                                           iterative_steps=cfg["iterative_steps"], round_to=cfg["round_to"],
                                           gradients=gradients)
            record["dense_run"] = dense_dir.as_posix()
            if not record["history"]:
                log.warning("%s: no channel group could be pruned at ratio %g with %s (round_to=%s); the "
                            "'pruned' model is the dense one", dense_dir, ratio, cfg["importance"], cfg["round_to"])
            check_pruned(model, int(dense_meta["num_classes"]), f"{model_name} pruned by {ratio:g}")
            after = measure_costs(model, ctx.device, repeats)
            costs = cost_summary(before, after)
            log.info("%s: %.3f -> %.3f M params, %.3f -> %.3f GFLOPs per clip, CPU batch-1 speed-up %.2fx",
                     out_dir, before["params"] / 1e6, after["params"] / 1e6, before["gflops"], after["gflops"],
                     costs["speedup"]["cpu"])
        record = _from_rank0(ctx, record)
        if not ctx.is_main:
            structure.replay(model, record)
        training.train(dataset, split, model_name, params, variant=variant_name(ratio), model=model,
                       epochs=int(cfg["finetune_epochs"]), lr=float(cfg["finetune_lr"]),
                       model_record={"scale": dense_meta["scale"], "options": dense_meta.get("options") or {},
                                     "pruning": record})
        if ctx.is_main:
            metrics_path = out_dir / "metrics.json"
            metrics = _read_json(metrics_path)
            metrics.update(ratio=ratio, importance=cfg["importance"], global_pruning=bool(cfg["global_pruning"]),
                           iterative_steps=int(cfg["iterative_steps"]), round_to=cfg["round_to"],
                           finetune_epochs=int(cfg["finetune_epochs"]), finetune_lr=float(cfg["finetune_lr"]),
                           dense_run=dense_dir.as_posix(), **costs)
            atomic_write_json(metrics_path, metrics)
        distributed.barrier(ctx)
    finally:
        distributed.teardown(ctx)
    return out_dir


def _from_rank0(ctx: distributed.Context, obj):
    """Rank 0's `obj` on every rank (the pruning record: every rank fine-tunes the same network)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def taylor_gradients(dataset: str, split: int, spec, params: dict,
                     device: torch.device) -> Callable[[nn.Module], int]:
    """A callable filling a model's gradients from TAYLOR_BATCHES training batches (augmented
    training clips of the split's TRAIN list, less the validation subset train.py would carve),
    always the same batches for a given seed."""
    from torch.utils.data import DataLoader

    from actionrepro import train as training
    from actionrepro.data.dataset import VideoClipDataset

    seed = int(params["seed"])
    data = VideoClipDataset(dataset, split, "train", spec, params, mode="train")
    val_fraction = float(params["train"].get("val_fraction", 0.0))
    if val_fraction > 0:
        keep, _ = training.carve_validation(data.videos, val_fraction, seed, "ucf101" in dataset)
        data = VideoClipDataset(dataset, split, "train", spec, params, mode="train", video_ids=keep)

    def gradients(model: nn.Module) -> int:
        loader = DataLoader(data, batch_size=int(params["train"]["batch_size"]), shuffle=True,
                            generator=torch.Generator().manual_seed(seed),
                            num_workers=int(params["train"].get("num_workers", 0)))
        model.to(device)
        try:
            return importance.accumulate_gradients(model, itertools.islice(loader, TAYLOR_BATCHES), device)
        finally:
            model.to("cpu")

    return gradients


def check_pruned(model: nn.Module, num_classes: int, what: str) -> None:
    """The pruned network must still run on its declared input and score every class."""
    model.eval()
    with torch.no_grad():
        logits = model(**structure.trace_inputs(model, batch=2))
    if tuple(logits.shape) != (2, num_classes):
        raise ActionReproError(f"{what} outputs {tuple(logits.shape)} for 2 clips instead of (2, {num_classes}); "
                               "its classifier must be listed in prune_ignored_layers()")


# ---------------------------------------------------------------- costs
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


# ---------------------------------------------------------------- loading
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ActionReproError(f"{path} not found") from err
    except json.JSONDecodeError as err:
        raise ActionReproError(f"{path} is not valid JSON ({err}); re-run the step that writes it") from err


def _prune_command(run_dir: Path) -> str:
    parts = run_dir.parts
    if len(parts) >= 4 and parts[-3].startswith("split") and parts[-1].startswith("pruned-"):
        return (f"actionrepro prune {parts[-4]} {parts[-3].removeprefix('split')} {parts[-2]} "
                f"{parts[-1].removeprefix('pruned-')}")
    return "actionrepro prune DATASET SPLIT MODEL RATIO"


def load_pruned(run_dir: str | Path) -> nn.Module:
    """The pruned, fine-tuned model of a pruned-<ratio> run directory, in eval mode on the CPU:
    built from model.json, pruned again by replaying its recorded structure, then loaded with the
    checkpoint's weights (torch.load weights_only=True)."""
    from actionrepro.models.registry import build_model, model_options

    run_dir = Path(run_dir)
    meta_path, ckpt_path = run_dir / "model.json", run_dir / "checkpoint.pt"
    redo = _prune_command(run_dir)
    for path in (meta_path, ckpt_path):
        if not path.is_file():
            raise ActionReproError(f"{path} not found: prune the model first (`{redo}`) or check the run directory")
    meta = _read_json(meta_path)
    missing = [k for k in ("name", "scale", "num_classes") if k not in meta]
    if missing:
        raise ActionReproError(f"{meta_path} lacks key(s) {', '.join(missing)}; re-run `{redo}`")
    record = meta.get("pruning")
    if not isinstance(record, dict):
        raise ActionReproError(f"{meta_path} holds no pruning record: {run_dir} is not a pruned run "
                               f"(dense runs load with their own state dict); re-run `{redo}`")
    options = dict(meta.get("options") or {})
    if "pretrained" in model_options(meta["name"]):
        options["pretrained"] = "none"  # every weight comes from the checkpoint: fetch no pretrained file
    with torch.inference_mode(False):  # the replay traces the model through autograd
        model = build_model(meta["name"], meta["scale"], int(meta["num_classes"]), options)
        try:
            structure.replay(model, record)
        except ValueError as err:
            raise ActionReproError(f"{meta_path}: the recorded pruning does not fit model {meta['name']!r} as built "
                                   f"now (its code or options changed since pruning): {err}. Re-run `{redo}`") from err
        state = checkpoint.load(ckpt_path)  # weights_only=True
        if state.get("complete") is not True:
            raise ActionReproError(f"{ckpt_path} is from a fine-tune that has not finished (epoch "
                                   f"{state.get('epoch', '?')}); re-run `{redo}` to resume it")
        if not isinstance(state.get("model"), dict):
            raise ActionReproError(f"{ckpt_path} holds no 'model' state dict; delete it and re-run `{redo}`")
        weights = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state["model"].items()}
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            raise ActionReproError(f"{ckpt_path} does not fit the pruned structure recorded in {meta_path}: {err}. "
                                   f"Re-run `{redo}`") from err
    recorded = meta.get("input_spec")
    if recorded is not None and dict(recorded) != model.input_spec.to_dict():
        raise ActionReproError(f"{meta_path} records input_spec {recorded} but model {meta['name']!r} now declares "
                               f"{model.input_spec.to_dict()}; re-run `{redo}` or restore the options")
    return model.eval()
