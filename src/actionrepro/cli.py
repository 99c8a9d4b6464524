"""The `actionrepro` command: one subcommand per pipeline step.

A table from step name to module (actionrepro.steps.<name>): parse arguments, load params, set
threads, call the step, map errors to exit codes. Snakemake rules and DVC stages call exactly these
commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from actionrepro import steps
from actionrepro.errors import ActionReproError
from actionrepro.steps import STEP_HELP, TORCH_STEPS, module_name

log = logging.getLogger("actionrepro")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int | None) -> int:
    """Give torch exactly the cores this job was granted.

    Two intra-op threads on a 2-core box make every oneDNN conv pay ~30 ms of OpenMP spin-wait;
    a passive wait policy (set before torch loads OpenMP) removes it.
    """
    threads = threads or available_cores()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    return threads


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", type=Path,
                        help="params file (default: params.yaml; the demo uses config/demo.yaml)")
    common.add_argument("--threads", type=int, default=None,
                        help="CPU threads for this step (default: all cores available to the process)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one params value for this run (dotted key, YAML value; repeatable; "
                             "validated like the file and recorded in the run's provenance)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    parser = argparse.ArgumentParser(
        prog="actionrepro",
        description="Reproduce video action-recognition networks on UCF101 and HMDB51: "
        "download -> extract -> splits -> decode -> flow -> train -> prune -> evaluate -> report.",
    )
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    chosen = chosen_step(argv or [])
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--params", default="params.yaml", type=Path)
    steps.PARAMS_FOR_CHOICES = early.parse_known_args(argv or [])[0].params
    for name, text in STEP_HELP.items():
        step_parser = sub.add_parser(name, parents=[common], help=text)
        if name == chosen:  # only the chosen step's module is imported (each imports torch)
            step_module(name).add_arguments(step_parser)
    return parser


def chosen_step(argv: list[str]) -> str | None:
    return next((arg for arg in argv if arg in STEP_HELP), None)


def step_module(name: str) -> ModuleType:
    """actionrepro.steps.<name> ('-' as '_'): every step has add_arguments(parser) and run(args, params)."""
    return importlib.import_module(module_name(name))


def run_step(args) -> None:
    from actionrepro import config

    step_module(args.step).run(args, config.load(args.params, args.overrides))


# Steps that end when the process that started them dies (a killed Snakemake leaves no orphan).
DIE_WITH_PARENT = ("train", "prune", "evaluate", "evaluate-checkpoint")


def guarded(step: str):
    """The step's process settings: SIGTERM ends it cleanly (exit 143); some die with their parent."""
    from actionrepro import lifecycle

    return lifecycle.step_process(with_parent=step in DIE_WITH_PARENT)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Threads first: a torch step's module imports torch, and OpenMP reads its settings once, then.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=None)
    threads = early.parse_known_args(argv)[0].threads
    threads = configure_threads(threads) if chosen_step(argv) in TORCH_STEPS else threads or available_cores()
    args = build_parser(argv).parse_args(argv)
    args.threads = threads
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        with guarded(args.step):
            run_step(args)
    except ActionReproError as err:
        print(f"actionrepro {args.step}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        from actionrepro.lifecycle import EXIT_SIGTERM, Terminated

        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"actionrepro {args.step}: {how}; finished outputs are kept, re-run to resume", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(err, Terminated) else 130
    return 0
