"""One module per DAG step, each with the same entry points: add_arguments(parser) and
run(args, params). Steps call libraries; libraries never import a step, and steps never import
each other. The one-line help of each step lives here, so `actionrepro --help` imports no step
(a step module imports torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

# In DAG order; the CLI offers exactly these subcommands.
STEP_HELP = {
    "synth": "write a synthetic dataset's archives in the official format",
    "download": "fetch (or, for synth_*, generate) a dataset's archives into data/raw/DATASET",
    "extract": "unpack data/raw/DATASET into the official layout under data/videos/DATASET",
    "splits": "parse the official splits into data/manifests/DATASET",
    "decode": "decode every video once into the frame store data/frames/DATASET",
    "flow": "compute optical flow into data/flow/DATASET",
    "weights": "fetch the pretrained checkpoints the recipes start from into data/weights",
    "train": "train MODEL on DATASET split SPLIT -> runs/DATASET/splitK/MODEL/dense",
    "prune": "prune a trained model structurally and fine-tune it -> pruned-RATIO",
    "evaluate": "evaluate a trained (dense or pruned) model on the test list",
    "report": "compile runs/ into reports/ (tables, figures, report.md/html)",
    "recipe": "print the resolved settings of one run (DATASET MODEL) as JSON: init, train, input, anchor",
    # Tools outside the DAG: they read runs (and write external-* runs), nothing depends on them.
    "predict": "top-5 classes of video files of your own under a trained run (one JSON line per video)",
    "evaluate-checkpoint": "evaluate an external checkpoint (torchvision, mmaction2, TDN, S2TF-Net, ours) "
                           "-> runs/DATASET/splitK/MODEL/external-NAME",
}
STEP_NAMES = tuple(STEP_HELP)
# Steps whose work runs in torch (threads set before torch loads OpenMP).
TORCH_STEPS = ("decode", "flow", "train", "prune", "evaluate", "predict", "evaluate-checkpoint")


def module_name(step: str) -> str:
    """The module of a CLI subcommand: actionrepro.steps.<step with '-' as '_'> (evaluate-checkpoint ->
    evaluate_checkpoint), the one rule from CLI name to file."""
    return "actionrepro.steps." + step.replace("-", "_")


# The params file named on the command line (set by cli.build_parser before a step's arguments
# are added): its custom_datasets join the dataset choices.
PARAMS_FOR_CHOICES: Path | None = None


def declared_custom(path: Path | None) -> dict:
    """The raw custom_datasets mapping of a params file; {} when it cannot be read (the step's own
    params loading reports why)."""
    if path is None or not path.is_file():
        return {}
    try:
        import yaml

        params = yaml.safe_load(path.read_text())
    except Exception:  # noqa: BLE001 - reported properly when the params are loaded
        return {}
    custom = params.get("custom_datasets") if isinstance(params, dict) else None
    return {"custom_datasets": {k: v for k, v in custom.items() if isinstance(k, str)}} if isinstance(custom, dict) \
        else {}


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    from actionrepro.data.sources import dataset_names

    parser.add_argument("dataset", choices=dataset_names(declared_custom(PARAMS_FOR_CHOICES)))


def split_number(text: str) -> int:
    """A split number: a positive integer (1-3 for the official datasets; a custom dataset declares its own)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"split must be a positive integer, got {text!r}")
    return int(text)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """DATASET SPLIT MODEL: the identity of a run."""
    add_dataset_argument(parser)
    parser.add_argument("split", type=split_number)
    parser.add_argument("model")


def pruning_ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"pruning ratio must be in (0, 1), got {text}")
    return value
