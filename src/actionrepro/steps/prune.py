"""The `actionrepro prune` step: structural pruning of a trained model, then fine-tuning.

prune(dataset, split, model, ratio, params) reads runs/<ds>/split<k>/<model>/dense (model.json +
checkpoint.pt, weights_only), removes `ratio` of the channels of every prunable group with
torch-pruning (criterion, global ranking, iterative steps and channel rounding from
params["prune"]; classifier output and input stems never pruned: model.prune_ignored_layers()),
fine-tunes the smaller network with the training engine (engine.runner.train with the built model,
prune.finetune_epochs and prune.finetune_lr) into runs/.../pruned-<ratio>, and adds to its
metrics.json what pruning bought: parameters, FLOPs and measured batch-1 latency before and after
(CPU, and the GPU when training runs on one), and the speed-ups.

The run directory has the training run's files (checkpoint.pt with a plain "model" state dict, history.csv,
metrics.json, model.json). model.json also holds, under "pruning", the record that
actionrepro.pruning.structure writes: the settings, torch-pruning's history of removed channels and
the resulting tensor shapes, all plain JSON. runs.load_model(run_dir) builds the model afresh, replays
that history, checks the shapes, then loads the weights with torch.load(weights_only=True): no
pickled code, identical outputs.

Under torchrun, rank 0 prunes and the other ranks replay its record, so every rank fine-tunes the
same network. Re-running the step after a kill prunes again and the fine-tune resumes from its
checkpoint: training resumes only from the same starting weights, which the criteria reproduce on
a CPU (taylor gradients summed on a GPU may reorder near-ties; the fine-tune then starts over).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from actionrepro import config, dag, provenance, runs
from actionrepro.data import sources
from actionrepro.data.validation import carve_validation
from actionrepro.engine import distributed, runner
from actionrepro.errors import ActionReproError, ConfigError
from actionrepro.io import atomic_write_json
from actionrepro.pruning import importance, structure
from actionrepro.pruning.costs import check_pruned, cost_summary, measure_costs
from actionrepro.steps import add_run_arguments, pruning_ratio

log = logging.getLogger(__name__)

TAYLOR_BATCHES = 8  # training batches whose loss gradients the taylor criterion sums, per pruning step


def add_arguments(parser) -> None:
    add_run_arguments(parser)
    parser.add_argument("ratio", type=pruning_ratio)


def run(args, params: dict) -> None:
    out = runs.run_dir(args.dataset, args.split, args.model, runs.variant_name(args.ratio))
    with runs.run_lock(out), runs.no_stale_metrics(out):  # one process per run directory
        prune(args.dataset, args.split, args.model, args.ratio, params, params_file=str(args.params),
              overrides=args.overrides)


def prune(dataset: str, split: int, model_name: str, ratio: float, params: dict,
          params_file: str | None = None, overrides: list[str] = ()) -> Path:
    """Prune the dense run of `model_name` by `ratio`, fine-tune it; returns the pruned run directory."""
    params = config.resolve(params, dataset, model_name)  # the model's recipe over the global blocks
    cfg = params["prune"]
    ratio = float(ratio)
    if not 0 < ratio < 1:
        raise ConfigError(f"pruning ratio {ratio!r} must be in (0, 1) (the fraction of channels removed)")
    dense_dir = runs.run_dir(dataset, split, model_name, "dense")
    out_dir = runs.run_dir(dataset, split, model_name, runs.variant_name(ratio))
    inputs = runs.data_inputs(dataset, split, model_name in dag.TWO_STREAM_MODELS) + [dense_dir / "checkpoint.pt"]
    run_record = provenance.make_record("prune", params, params_file=params_file, model=model_name, inputs=inputs,
                                        overrides=overrides, dataset=dataset)
    run_record["settings"]["ratio"] = ratio
    run_record["settings_sha256"] = provenance.digest(run_record["settings"])
    runs.begin_step(out_dir, "prune", run_record)
    ctx = distributed.setup(params["train"]["device"])
    try:
        model = runs.load_model(dense_dir)  # clear errors for a missing or unfinished dense run
        dense_meta = runs.read_json(dense_dir / "model.json")
        if dense_meta.get("name") != model_name:
            raise ActionReproError(f"{dense_dir / 'model.json'} describes model {dense_meta.get('name')!r}, "
                                   f"not {model_name!r}; re-run `actionrepro train {dataset} {split} {model_name}`")
        record, costs = None, None
        if ctx.is_main:
            repeats = int(params["evaluate"]["latency_repeats"])
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
        runner.train(dataset, split, model_name, params, variant=runs.variant_name(ratio), model=model,
                       epochs=int(cfg["finetune_epochs"]), lr=float(cfg["finetune_lr"]),
                       model_record={"scale": dense_meta["scale"], "options": dense_meta.get("options") or {},
                                     "pruning": record})
        if ctx.is_main:
            metrics_path = out_dir / "metrics.json"
            metrics = runs.read_json(metrics_path)
            metrics.update(ratio=ratio, importance=cfg["importance"], global_pruning=bool(cfg["global_pruning"]),
                           iterative_steps=int(cfg["iterative_steps"]), round_to=cfg["round_to"],
                           finetune_epochs=int(cfg["finetune_epochs"]), finetune_lr=float(cfg["finetune_lr"]),
                           dense_run=dense_dir.as_posix(), **costs)
            atomic_write_json(metrics_path, metrics)
            runs.finish_step(out_dir, "prune", run_record, ["checkpoint.pt"])
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
    training clips of the split's TRAIN list, less the validation subset training would carve),
    always the same batches for a given seed."""
    from torch.utils.data import DataLoader

    from actionrepro.data.dataset import VideoClipDataset

    seed = int(params["seed"])
    data = VideoClipDataset(dataset, split, "train", spec, params, mode="train")
    val_fraction = float(params["train"]["val_fraction"])
    if val_fraction > 0:
        keep, _ = carve_validation(data.videos, val_fraction, seed, sources.get(dataset, params=params).grouped)
        data = VideoClipDataset(dataset, split, "train", spec, params, mode="train", video_ids=keep)

    def gradients(model: nn.Module) -> int:
        loader = DataLoader(data, batch_size=int(params["train"]["batch_size"]), shuffle=True,
                            generator=torch.Generator().manual_seed(seed),
                            num_workers=int(params["train"]["num_workers"]))
        model.to(device)
        try:
            return importance.accumulate_gradients(model, itertools.islice(loader, TAYLOR_BATCHES), device)
        finally:
            model.to("cpu")

    return gradients
