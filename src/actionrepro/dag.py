"""The DAG's facts for both front doors: which params keys each step reads, which source files each
step runs (its code dependencies), and the helpers the Snakemake rules call.

Snakemake puts exactly the STEP_PARAMS values into each rule's `params:` (so its params rerun
trigger fires only for the jobs a change touches), dvc.yaml lists exactly these keys per stage,
and tests/test_dag_consistency.py checks the two against this table. A key is a dotted path into
params.yaml; a top-level name stands for its whole section. `prune.ratios` is deliberately absent
from `prune`: the ratio is the job's own wildcard/matrix value.

No torch here: a dry run of the paper-scale DAG must plan in seconds (bench/dag.py).
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

STEP_PARAMS: dict[str, tuple[str, ...]] = {
    "download": ("download", "synth", "seed"),
    "extract": (),
    "splits": ("synth",),
    "decode": ("decode",),
    # the pretrained checkpoints of the recipes' inits (Snakemake narrows recipes to the inits: inits_of)
    "weights": ("download", "datasets", "models", "recipes"),
    "flow": ("flow", "decode.jpeg_quality"),
    "train": ("seed", "scale", "train", "augment", "architectures", "recipes", "after_recipes"),
    "prune": ("seed", "train", "augment", "recipes", "after_recipes", "prune.importance", "prune.global_pruning",
              "prune.iterative_steps", "prune.round_to", "prune.finetune_epochs", "prune.finetune_lr",
              "evaluate.latency_repeats"),
    "evaluate": ("evaluate", "train.device", "train.num_workers", "train.loader_memory_gb", "recipes",
                 "after_recipes"),
    # the report reads the whole file (target lists, protocols, provenance, params_hash)
    "report": (),
}

# Keys with a schema default that a hand-made params dict may lack.
OPTIONAL_KEYS = {"recipes": {}, "after_recipes": {}}

# Two-stream models (registry.needs_flow), kept as a table because asking the registry imports torch
# and every architecture; tests/test_snakemake_workflow.py checks it against the registry.
TWO_STREAM_MODELS = ("stpn", "stfn")
# Longest chains first: flow gates the two-stream trainings, training gates everything after it.
PRIORITY = {"decode": 50, "flow": 50, "train": 20, "prune": 10, "evaluate": 0}
REPORT_FILES = {
    "results": "reports/results.csv",
    "temporal_order": "reports/temporal_order.csv",
    "pruning": "reports/pruning.csv",
    "provenance": "reports/provenance.json",
    "run_status": "reports/run_status.csv",
    "quarantine": "reports/quarantine.csv",
    "markdown": "reports/report.md",
    "html": "reports/report.html",
}
REPORT_DIRS = {"tables": "reports/tables", "figures": "reports/figures"}
REPORT_OUTPUTS = [*REPORT_FILES.values(), *REPORT_DIRS.values()]
PACKAGE = Path(__file__).resolve().parent
STAGE_STEP = {"evaluate_pruned": "evaluate"}  # DVC stage names that differ from the step they run


# ---------------------------------------------------------------- params keys
def lookup(params: dict, key: str) -> Any:
    """The value at dotted `key` in params; KeyError names the missing part."""
    if key in OPTIONAL_KEYS and key not in params:
        return OPTIONAL_KEYS[key]
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"params has no {key!r} (missing {part!r})")
        node = node[part]
    return node


def step_params(step: str, params: dict) -> dict[str, Any]:
    """{key with dots as underscores: value} for every key `step` reads, for Snakemake's params:."""
    if step not in STEP_PARAMS:
        raise KeyError(f"unknown pipeline step {step!r}; known: {', '.join(STEP_PARAMS)}")
    return {key.replace(".", "_"): lookup(params, key) for key in STEP_PARAMS[step]}


def key_sorted(value):
    """`value` with every mapping's keys in sorted order: Snakemake records params by repr(), so
    reordering the keys of params.yaml would otherwise count as a change (DVC compares values)."""
    if isinstance(value, dict):
        return {k: key_sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [key_sorted(v) for v in value]
    return value


def rule_params(step: str, params: dict, **per_job: Callable) -> dict[str, Any]:
    """The `params:` of `step`'s rule: the keys of step_params, each stored as {dotted key: value};
    `per_job` narrows a value to what one job reads (a function of the wildcards).

    Labelled because Snakemake compares a job's params as a *set of value reprs*, names ignored,
    so bare scalars can trade places unseen (finetune_epochs 1 -> 2 beside another key at 2)."""
    values = step_params(step, params)
    unknown = sorted(set(per_job) - set(values))
    if unknown:
        raise ValueError(f"rule_params({step!r}): {unknown} are not params of {step} (actionrepro.dag.STEP_PARAMS)")
    values.update(per_job)
    dotted = dict(zip(values, STEP_PARAMS[step]))
    return {name: _labelled(dotted[name], value) for name, value in values.items()}


def _labelled(key: str, value):
    if callable(value):
        return lambda wildcards: {key: key_sorted(value(wildcards))}
    return {key: key_sorted(value)}


def synth_of(params: dict) -> Callable:
    """Per job: the synth section its dataset is generated from (None for a real dataset)."""
    from actionrepro.data.sources import get

    def of(wildcards):
        family = get(wildcards.dataset, params=params).synthetic_of
        return params["synth"][family] if family else None
    return of


def seed_of(params: dict) -> Callable:
    """Per job: the seed a dataset's generation reads (only synthetic datasets are generated)."""
    from actionrepro.data.sources import get

    return lambda wildcards: params["seed"] if get(wildcards.dataset, params=params).is_synthetic else None


def options_of(params: dict) -> Callable:
    """Per job: the options of one architecture, so changing tsm's options re-trains tsm only."""
    return lambda wildcards: params["architectures"].get(wildcards.model, {})


def recipe_settings(params: dict, model: str, dataset: str | None = None) -> dict:
    """`model`'s recipe without its anchor (words, not settings), narrowed to `dataset`'s part when
    given: what a change must touch for that model's (dataset's) runs to be redone."""
    from actionrepro.config import recipe_of

    recipe = recipe_of(params, model, dataset)
    recipe.pop("anchor", None)
    for part in (recipe.get("datasets") or {}).values():
        part.pop("anchor", None)
    return recipe


def recipe_of(params: dict) -> Callable:
    """Per job: the job's model's recipe narrowed to its dataset, so changing tsm's lr re-runs tsm only."""
    return lambda wildcards: recipe_settings(params, wildcards.model, wildcards.dataset)


def inits_of(params: dict) -> dict:
    """{model: {dataset: init}} of every run: all the weights step reads of the recipes, so that a
    recipe's lr change does not re-run it (and, in Snakemake, every training after it)."""
    from actionrepro.config import resolve

    return {m: {ds: resolve(params, ds, m)["init"] for ds in params["datasets"]} for m in params["models"]}


WEIGHTS_MARKER = "data/weights/download.json"


def dataset_names(params: dict | None = None) -> list[str]:
    """The built-in datasets and the custom ones `params` declare (the wildcard constraint)."""
    from actionrepro.data.sources import dataset_names as registered

    return registered(params)


BUILTIN_DATASETS = "ucf101|hmdb51|synth_ucf101|synth_hmdb51"  # the registry's (tests check it)


def custom_constraint(params: dict) -> str:
    """The wildcard constraint of the custom datasets' rules: their names (a never-matching pattern
    when none are declared)."""
    names = [n for n in (params.get("custom_datasets") or {}) if n not in BUILTIN_DATASETS.split("|")]
    return "|".join(names) or "(?!)"


def custom_of(params: dict) -> Callable:
    """Per job: a custom dataset's declaration (None for a built-in one), so a changed list path reruns it."""
    return lambda wildcards: (params.get("custom_datasets") or {}).get(wildcards.dataset)


def custom_list_files(params: dict) -> Callable:
    """Input function: a custom dataset's list files (none for a built-in one), so editing one reruns
    its download (which copies and digests them) and everything after it."""
    from actionrepro.data.sources import get

    def files(wildcards) -> list[str]:
        spec = get(wildcards.dataset, params=params).custom
        return [path for _, path in spec.list_files()] if spec else []
    return files


# ---------------------------------------------------------------- which file the CLI reads
def params_file(configfiles: list, cwd: Path) -> str:
    """The params file the rules pass to the CLI: the last --configfile (else params.yaml), relative
    to the working directory where possible, since the file name is part of every shell command and
    a clone elsewhere must not see changed commands (Snakemake's code rerun trigger)."""
    path = Path(configfiles[-1] if configfiles else "params.yaml")
    if path.resolve().is_relative_to(cwd.resolve()):
        path = path.resolve().relative_to(cwd.resolve())
    return path.as_posix()


def refuse_config_overrides(overrides: Mapping, params_path: str) -> None:
    """The steps read the params file, not Snakemake's config: a --config value would plan one
    thing and run another, so it is refused instead of ignored."""
    if overrides:
        keys = ", ".join(sorted(overrides))
        raise ValueError(f"snakemake --config {keys}=...: the actionrepro steps read {params_path}, not Snakemake's "
                         "config, so --config cannot change what they do. Copy the params file, change the value "
                         "there and pass it with --configfile FILE")


# ---------------------------------------------------------------- jobs and devices
@dataclass(frozen=True)
class Launch:
    """How many threads, GPUs and how much memory each kind of job asks for, and how it is started."""

    train_threads: int
    data_threads: int
    train_gpus: int
    eval_gpus: int
    train_mem_mb: int
    trainer: str
    rank_threads: str


def launch_plan(params: dict, params_path: str) -> Launch:
    """Jobs and devices from the params. One thread per training process is fastest on small CPUs
    (no OpenMP spin-wait); real runs give each GPU the loader cores. The tiny demo's data stores
    take seconds: one thread each, so flow starts as soon as its frames exist. On GPUs training
    goes through torchrun with one rank per GPU of the job's own `gpu` resource."""
    tiny = params["scale"] == "tiny"
    on_gpu = params["train"]["device"] != "cpu"
    gpus_per_job = params["launch"]["gpus_per_job"]
    if gpus_per_job > 1 and not on_gpu:
        raise ValueError(f"{params_path}: launch.gpus_per_job is {gpus_per_job} but train.device is 'cpu'; "
                         "set train.device to 'auto' or 'cuda', or launch.gpus_per_job to 1")
    return Launch(
        train_threads=1 if tiny else 8,
        data_threads=1 if tiny else 32,
        train_gpus=gpus_per_job if on_gpu else 0,
        eval_gpus=1 if on_gpu else 0,
        train_mem_mb=4000 if tiny else 32000,
        trainer="torchrun --standalone --nproc-per-node {resources.gpu} -m actionrepro" if on_gpu else "actionrepro",
        rank_threads=("$(( {threads} / {resources.gpu} > 1 ? {threads} / {resources.gpu} : 1 ))"
                      if on_gpu else "{threads}"),
    )


def cli(args: str, params_path: str, launcher: str = "actionrepro", threads: str = "{threads}") -> str:
    """The shell command of a rule: one `actionrepro` step on the params file, output into the log."""
    return f"{launcher} {args} --params {shlex.quote(params_path)} --threads {threads} > {{log}} 2>&1"


# ---------------------------------------------------------------- targets
def run_path(dataset: str, split, model: str, variant: str, name: str) -> str:
    return f"runs/{dataset}/split{split}/{model}/{variant}/{name}"


def variants(params: dict) -> list[str]:
    return ["dense"] + [f"pruned-{r:g}" for r in params["prune"]["ratios"]]


def flow_models(params: dict) -> list[str]:
    return [m for m in params["models"] if m in TWO_STREAM_MODELS]


def run_targets(params: dict) -> list[str]:
    """Everything the report reads: data summaries and every eval.json the params ask for."""
    targets = [f"data/frames/{ds}/summary.json" for ds in params["datasets"]]
    if flow_models(params):
        targets += [f"data/flow/{ds}/summary.json" for ds in params["datasets"]]
    for ds in params["datasets"]:
        for k in params["splits"]:
            for m in params["models"]:
                targets += [run_path(ds, k, m, v, "eval.json") for v in variants(params)]
    return targets


def all_targets(params: dict) -> list[str]:
    return run_targets(params) + REPORT_OUTPUTS


def train_inputs(wildcards) -> list[str]:
    """What a training job reads: the frame store and manifests, the fetched pretrained weights, and
    flow for two-stream models."""
    inputs = [f"data/frames/{wildcards.dataset}/summary.json", f"data/manifests/{wildcards.dataset}/summary.json",
              WEIGHTS_MARKER]
    if wildcards.model in TWO_STREAM_MODELS:
        inputs.append(f"data/flow/{wildcards.dataset}/summary.json")
    return inputs


# ---------------------------------------------------------------- code dependencies
@lru_cache(maxsize=None)
def module_imports(module: str) -> frozenset[str]:
    """The actionrepro modules `module` imports (any depth in its file, lazy imports included)."""
    tree = ast.parse(_module_file(module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actionrepro"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _is_module(candidate) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("actionrepro"))
        elif _imports_by_name(node):  # importlib.import_module("actionrepro.x")
            found.add(node.args[0].value)
    return frozenset(m for m in found if _is_module(m))


def _imports_by_name(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
            and bool(node.args) and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith("actionrepro"))


def code_closure(roots: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    """The source files of `roots` and of every actionrepro module they import, transitively,
    relative to the repository root; modules under `skip` prefixes are left out."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen or any(module.startswith(s) for s in skip):
            continue
        seen.add(module)
        todo.extend(module_imports(module))
    return sorted(_shown(_module_file(m)) for m in seen)


# The registry discovers every architecture at run time (importlib), so a step's closure holds no
# architecture file: each model's own files are added per job by model_code.
STEP_MODULES = {step: (f"actionrepro.steps.{step}", "actionrepro.cli") for step in STEP_PARAMS}


def step_code(step: str) -> list[str]:
    """The source files a job of `step` runs, the architectures' own files excepted."""
    return code_closure(STEP_MODULES[step])


def model_code(model: str) -> list[str]:
    """The source files of one architecture and of the model modules it imports."""
    module = f"actionrepro.models.{model}"
    return code_closure((module,)) if _is_module(module) else []


def shared_model_code(models: list[str]) -> list[str]:
    """Model files that some model imports besides its own module (tsn.py under tsm.py, layers.py
    under all): what every model's training depends on in DVC, which cannot pick files per model."""
    return sorted({path for m in models for path in model_code(m) if not path.endswith(f"/models/{m}.py")})


def dvc_code(step: str, models: list[str]) -> list[str]:
    """The code deps a DVC stage of `step` lists in dvc.yaml: the step's own files and, for train,
    the job's model file (`${item.model}`) and the shared model files."""
    code = step_code(step)
    if step == "train":
        code = sorted(set(code) | set(shared_model_code(models))) + ["src/actionrepro/models/${item.model}.py"]
    return code


def model_code_of(wildcards) -> list[str]:
    """Input function: the source files of the job's model."""
    return model_code(wildcards.model)


def _shown(path: Path) -> str:
    """A source file relative to the working directory where it lies below it (a clone elsewhere
    plans the same inputs), else absolute (an installed package, a test's scratch folder)."""
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _is_module(name: str) -> bool:
    try:
        _module_file(name)
    except FileNotFoundError:
        return False
    return True


def _module_file(name: str) -> Path:
    parts = name.split(".")
    if parts[0] != "actionrepro":
        raise FileNotFoundError(name)
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(name)


def with_dvc_code(dvc_yaml: str, models: list[str]) -> str:
    """dvc.yaml's text with every stage's code deps set to dvc_code (`make dvc-code` writes it back;
    tests/test_dag_consistency.py fails while the file differs). Other deps are kept in order."""
    out: list[str] = []
    stage, skipping = None, False
    for line in dvc_yaml.split("\n"):
        if skipping and line.lstrip().startswith("- src/actionrepro/"):
            continue
        skipping = False
        out.append(line)
        if match := re.fullmatch(r"  (\w+):", line):
            stage = match.group(1)
        elif stage and re.fullmatch(r" {4}( {2})?deps:", line):
            indent = line[: line.index("deps:")] + "  - "
            out.extend(indent + path for path in dvc_code(STAGE_STEP.get(stage, stage), models))
            skipping = True
    return "\n".join(out)
