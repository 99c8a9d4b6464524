"""The `actionrepro evaluate` step: a trained (dense or pruned) run on its split's official test list.

The work lives in actionrepro.engine.evaluate_run (shared with `actionrepro evaluate-checkpoint`);
its docstring describes the protocols and the files written into the run directory.
"""

from __future__ import annotations

from actionrepro import runs
from actionrepro.engine.evaluate_run import evaluate, load_reversal_pairs, write_protocol  # noqa: F401 (API)
from actionrepro.steps import add_run_arguments


def add_arguments(parser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--variant", default="dense", help="dense (default) or pruned-<ratio>")


def run(args, params: dict) -> None:
    with runs.run_lock(runs.run_dir(args.dataset, args.split, args.model, args.variant), create=False):
        evaluate(args.dataset, args.split, args.model, params, variant=args.variant, params_file=str(args.params),
                 overrides=args.overrides)
