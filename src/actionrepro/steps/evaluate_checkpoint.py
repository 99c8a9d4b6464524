"""The `actionrepro evaluate-checkpoint` command: a checkpoint trained elsewhere, evaluated like our runs.

MODEL is built at the params' scale for DATASET's classes, the file is loaded completely through
models.checkpoints.load_into (any supported layout; a partial load is refused with the loader's
report unless --allow-missing names the parts that may stay as built), and a run directory
runs/<ds>/split<k>/<model>/external-<name>/ is written: model.json (with "external": path, sha256,
layout), checkpoint.pt (our layout, complete). It is then evaluated by the evaluate step's own code
(engine.evaluate_run), so it has the same eval files; the report lists it as an external row.
"""

from __future__ import annotations

import logging
from pathlib import Path

from actionrepro import runs
from actionrepro.data import manifests
from actionrepro.engine import checkpoint
from actionrepro.engine.evaluate_run import evaluate
from actionrepro.errors import ActionReproError
from actionrepro.io import atomic_write_json, file_digest
from actionrepro.steps import add_run_arguments

log = logging.getLogger(__name__)

LAYOUT_CHOICES = ("auto", "torchvision", "mmaction2", "tdn", "s2tfnet", "ours")


def add_arguments(parser) -> None:
    add_run_arguments(parser)
    parser.add_argument("checkpoint", type=Path, help="the checkpoint file (.pth/.pt/.pth.tar)")
    parser.add_argument("--layout", choices=LAYOUT_CHOICES, default="auto",
                        help="whose key names the file uses (default: detected from its keys)")
    parser.add_argument("--name", default=None,
                        help="run name: writes runs/DATASET/splitK/MODEL/external-NAME (default: the file's stem)")
    parser.add_argument("--allow-missing", action="append", default=[], metavar="PARTS", dest="allow_missing",
                        help="parts that may stay as built (e.g. classifier, nonlocal; comma-separated, "
                             "repeatable); default: refuse any partial load")


def run(args, params: dict) -> None:
    name = args.name or default_name(args.checkpoint)
    parts = [p for text in args.allow_missing for p in text.split(",") if p]
    run_dir = runs.run_dir(args.dataset, args.split, args.model, runs.external_variant(name))
    with runs.run_lock(run_dir):
        write_external_run(run_dir, args.dataset, args.split, args.model, args.checkpoint, params,
                           layout=args.layout, allow_missing=parts)
        evaluate(args.dataset, args.split, args.model, params, variant=run_dir.name,
                 params_file=str(args.params), overrides=args.overrides)


def default_name(path: Path) -> str:
    """The file's stem (less .pth/.pt/.tar), with characters a directory name should not hold as '_'."""
    stem = Path(path).name
    for suffix in (".tar", ".pth", ".pt", ".ckpt", ".bin"):
        stem = stem.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).lstrip(".") or "checkpoint"


def build_for(dataset: str, model_name: str, params: dict):
    """MODEL at the params' scale and options for DATASET's classes, without fetching pretrained weights
    (every weight comes from the checkpoint); returns (model, options, num_classes)."""
    from actionrepro.models.registry import build_model, model_options

    options = dict(params["architectures"].get(model_name) or {})
    if "pretrained" in model_options(model_name):
        options["pretrained"] = "none"
    num_classes = len(manifests.read_classes(dataset))
    return build_model(model_name, params["scale"], num_classes, options), options, num_classes


def load_complete(model, path: Path, layout: str, allow_missing: list[str]) -> dict:
    """load_into with the loader's refusal turned into an error that names the file and the fix."""
    from actionrepro.models.checkpoints import load_into

    if not Path(path).is_file():
        raise ActionReproError(f"{path} not found; pass the path of a checkpoint file")
    try:
        return load_into(model, path, layout=None if layout == "auto" else layout, allow_missing=allow_missing)
    except ActionReproError as err:
        raise ActionReproError(f"{path} does not load completely into {type(model).__name__}: {err}. "
                               "Pass --layout if the detected layout is wrong, or --allow-missing PARTS "
                               "(e.g. classifier) to keep those parts as built") from err


def write_external_run(run_dir: Path, dataset: str, split: int, model_name: str, path: Path, params: dict,
                       layout: str = "auto", allow_missing: list[str] = ()) -> Path:
    """model.json and a complete checkpoint.pt (our layout) for the external checkpoint `path`."""
    model, options, num_classes = build_for(dataset, model_name, params)
    report = load_complete(model, path, layout, list(allow_missing))
    run_dir.mkdir(parents=True, exist_ok=True)
    external = {"path": str(path), "sha256": file_digest(path), "layout": report["layout"],
                "left_as_built": list(report.get("left_as_built", [])), "allow_missing": list(allow_missing)}
    checkpoint.save(run_dir / "checkpoint.pt", {"model": model.state_dict(), "complete": True, "epoch": None,
                                                "external": external})
    atomic_write_json(run_dir / "model.json", {
        "name": model_name, "scale": params["scale"], "options": options, "input_spec": model.input_spec.to_dict(),
        "num_classes": num_classes, "variant": run_dir.name, "dataset": dataset, "split": split,
        "external": external})
    log.info("%s: loaded %d tensors from %s (layout %s)", run_dir, len(report["loaded"]), path, report["layout"])
    return run_dir
