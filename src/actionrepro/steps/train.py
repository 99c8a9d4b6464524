"""The `actionrepro train` step: one model on one split's TRAIN list -> runs/<ds>/split<k>/<model>/dense."""

from __future__ import annotations

from actionrepro.engine import runner
from actionrepro.steps import add_run_arguments


def add_arguments(parser) -> None:
    add_run_arguments(parser)


def run(args, params: dict) -> None:
    runner.train(args.dataset, args.split, args.model, params)
