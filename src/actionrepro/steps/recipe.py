"""The `actionrepro recipe DATASET MODEL` command: print, as JSON, the fully resolved settings one run
uses (config.resolve: the global blocks overlaid with the model's recipe and its part for DATASET):
its init and where that file comes from, train, evaluate, prune, augment, the architecture options,
the input the built model asks for (its InputSpec) and the anchor the recipe follows. Reads nothing
but the params file; builds the model (random weights, no file read) to report its input."""

from __future__ import annotations

import json
import sys

from actionrepro import config
from actionrepro.data import sources, weights
from actionrepro.steps import add_dataset_argument


def add_arguments(parser) -> None:
    add_dataset_argument(parser)
    parser.add_argument("model")


def num_classes(dataset: str, params: dict) -> int:
    """The class count of `dataset` (synth_*: from the synth block), without reading any data."""
    family = sources.get(dataset).synthetic_of
    if family:
        return int(params["synth"][family]["classes"])
    return {"ucf101": 101, "hmdb51": 51}[dataset]


def resolved_settings(dataset: str, model: str, params: dict) -> dict:
    from actionrepro.models.registry import build_model

    if model not in params["models"] and model not in (params.get("recipes") or {}):
        from actionrepro.models import model_names

        if model not in model_names():
            from actionrepro.errors import ConfigError

            raise ConfigError(f"unknown model {model!r}; known: {', '.join(model_names())}")
    run = config.resolve(params, dataset, model)
    options = run["architectures"][model]
    net = build_model(model, run["scale"], num_classes(dataset, params), options)
    plan = weights.plan(model, run["init"])
    init = {"name": run["init"], "how": plan.how,
            "file": plan.file.as_posix() if plan.file else None,
            "source": ({"urls": list(plan.source.urls), "origin": plan.source.origin, "note": plan.source.note}
                       if plan.source else None)}
    recipe = config.recipe_of(params, model, dataset)
    return {"dataset": dataset, "model": model, "scale": run["scale"], "init": init,
            "anchor": run["anchor"] or {"source": "none: global settings only"},
            "recipe_dataset_part": config.recipe_dataset(config.recipe_of(params, model), dataset),
            "train": run["train"], "evaluate": run["evaluate"], "prune": run["prune"], "augment": run["augment"],
            "architecture": options, "input": net.input_spec.to_dict(),
            "overrides": {k: v for k, v in recipe.items() if k != "anchor"}}


def run(args, params: dict) -> None:
    json.dump(resolved_settings(args.dataset, args.model, params), sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
