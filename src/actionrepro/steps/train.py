"""The `actionrepro train` step: one model on one split's TRAIN list -> runs/<ds>/split<k>/<model>/dense,
with its provenance recorded (settings, code, inputs, environment) and a stale run started over."""

from __future__ import annotations

from pathlib import Path

from actionrepro import config, dag, provenance, runs
from actionrepro.data import weights
from actionrepro.engine import runner
from actionrepro.steps import add_run_arguments


def add_arguments(parser) -> None:
    add_run_arguments(parser)


def run(args, params: dict) -> None:
    out = runs.run_dir(args.dataset, args.split, args.model)
    with runs.run_lock(out), runs.no_stale_metrics(out):  # one process per run directory
        train(args.dataset, args.split, args.model, params, params_file=str(args.params), overrides=args.overrides)


def train(dataset: str, split: int, model: str, params: dict, params_file: str | None = None,
          overrides: list[str] = ()) -> Path:
    params = config.resolve(params, dataset, model)  # the model's recipe over the global blocks
    path = runs.run_dir(dataset, split, model)
    init_file = weights.init_file(model, params)  # None: random init; never a download here
    inputs = runs.data_inputs(dataset, split, model in dag.TWO_STREAM_MODELS) + ([init_file] if init_file else [])
    record = provenance.make_record("train", params, params_file=params_file, model=model, inputs=inputs,
                                    overrides=overrides, dataset=dataset)
    runs.begin_step(path, "train", record)
    runner.train(dataset, split, model, params, init=weights.initialiser(model, params, init_file),
                 build_options=weights.build_options(model, params, init_file))
    runs.finish_step(path, "train", record, ["checkpoint.pt"])
    return path
