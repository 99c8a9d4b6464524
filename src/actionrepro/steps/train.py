"""The `actionrepro train` step: one model on one split's TRAIN list -> runs/<ds>/split<k>/<model>/dense."""

from __future__ import annotations

from actionrepro.engine import runner
from actionrepro.steps import add_run_arguments


def add_arguments(parser) -> None:
    add_run_arguments(parser)


def run(args, params: dict) -> None:
    from actionrepro import runs

    out = runs.run_dir(args.dataset, args.split, args.model)
    with runs.run_lock(out), runs.no_stale_metrics(out):  # one process per run directory
        runner.train(args.dataset, args.split, args.model, params)
