# Shared helpers: which params file the CLI reads, each rule's params, launch settings, target lists.
# No torch here: a dry run of the paper-scale DAG must plan in seconds (bench/dag.py).
import shlex
from pathlib import Path

from snakemake.utils import validate

from actionrepro import config as ar_config
from actionrepro.dag import STEP_PARAMS, step_params

# The CLI must read exactly what Snakemake read. Snakemake merges --configfile over params.yaml
# key by key; to keep both views identical we reload the last given file as the whole config.
# Named relative to the working directory where possible: the file name is part of every shell
# command, and a clone elsewhere must not see changed commands (Snakemake's code rerun trigger).
PARAMS_FILE = Path(workflow.overwrite_configfiles[-1] if workflow.overwrite_configfiles else "params.yaml")
if PARAMS_FILE.resolve().is_relative_to(Path.cwd().resolve()):
    PARAMS_FILE = PARAMS_FILE.resolve().relative_to(Path.cwd().resolve())
PARAMS_FILE = PARAMS_FILE.as_posix()
config.clear()
config.update(ar_config.load(PARAMS_FILE))
validate(config, str(ar_config.SCHEMA_PATH))

DATASETS = config["datasets"]
SPLITS = config["splits"]
MODELS = config["models"]
RATIOS = [f"{r:g}" for r in config["prune"]["ratios"]]

# Two-stream models, i.e. registry.needs_flow(): kept here as a table because asking the registry
# imports torch and every architecture (~3-6 s per DAG build). tests/test_snakemake_workflow.py
# checks this table against the registry.
TWO_STREAM_MODELS = ("stpn", "stfn")
FLOW_MODELS = [m for m in MODELS if m in TWO_STREAM_MODELS]

# Jobs and devices. One thread per training process is fastest on small CPUs (no OpenMP spin-wait);
# real runs give each GPU the loader cores.
TINY = config["scale"] == "tiny"
TRAIN_THREADS = 1 if TINY else 8
ON_GPU = config["train"]["device"] != "cpu"
GPUS_PER_JOB = config["launch"]["gpus_per_job"]
if GPUS_PER_JOB > 1 and not ON_GPU:
    raise ValueError(f"{PARAMS_FILE}: launch.gpus_per_job is {GPUS_PER_JOB} but train.device is 'cpu'; "
                     "set train.device to 'auto' or 'cuda', or launch.gpus_per_job to 1")
EVAL_GPUS = 1 if ON_GPU else 0
TRAIN_GPUS = GPUS_PER_JOB if ON_GPU else 0
TRAIN_MEM_MB = 4000 if TINY else 32000
# decode and flow: one worker per core. Snakemake scales threads down to --cores on one machine;
# a cluster job asks for this many (--set-threads decode=N flow=N to change it). The tiny demo's
# stores take seconds: one thread each, so flow starts as soon as its frames exist instead of
# waiting for every core to be free at once (measured: synth_ucf101's flow started 8 minutes into
# a 9.6-minute demo, holding back its two-stream trainings).
DATA_THREADS = 1 if TINY else 32
# Longest chains first: flow gates the two-stream trainings, training gates everything after it.
PRIORITY = {"decode": 50, "flow": 50, "train": 20, "prune": 10, "evaluate": 0}


wildcard_constraints:
    dataset="|".join(["ucf101", "hmdb51", "synth_ucf101", "synth_hmdb51"]),
    split="[123]",
    model="[a-z0-9_]+",
    ratio="0\\.[0-9]+",
    variant="dense|pruned-0\\.[0-9]+",


# ---------------------------------------------------------------- params: and shell:
def rule_params(step, **per_job):
    """The `params:` of `step`'s rule: the keys of actionrepro.dag.step_params, so the params rerun
    trigger fires for exactly the jobs a change touches; `per_job` narrows a value to what one job
    reads (a function of the wildcards).

    Each value is stored as {dotted key: value}. Snakemake compares a job's params as a *set of
    value reprs*, names ignored (snakemake.persistence.params_changed), so bare scalars can trade
    places unseen: prune.finetune_epochs 1 -> 2 beside prune.iterative_steps 1 and
    evaluate.latency_repeats 2 re-ran nothing. Labelled values cannot collide."""
    values = step_params(step, config)
    unknown = sorted(set(per_job) - set(values))
    if unknown:
        raise ValueError(f"rule_params({step!r}): {unknown} are not params of {step} (actionrepro.dag.STEP_PARAMS)")
    values.update(per_job)
    keys = dict(zip(values, STEP_PARAMS[step]))  # step_params names each key with its dots as underscores
    return {name: _labelled(keys[name], value) for name, value in values.items()}


def _labelled(key, value):
    if callable(value):
        return lambda wildcards: {key: _key_sorted(value(wildcards))}
    return {key: _key_sorted(value)}


def _key_sorted(value):
    """`value` with every mapping's keys in sorted order: Snakemake records params by repr(), so
    reordering the keys of params.yaml would otherwise count as a change (DVC compares values)."""
    if isinstance(value, dict):
        return {k: _key_sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_key_sorted(v) for v in value]
    return value


def synth_of(wildcards):
    """The synth section one dataset is generated from; None for the real datasets."""
    ds = wildcards.dataset
    return config["synth"][ds.removeprefix("synth_")] if ds.startswith("synth_") else None


def seed_of(wildcards):
    return config["seed"] if wildcards.dataset.startswith("synth_") else None


def options_of(wildcards):
    """The options of one architecture: changing tsm's options re-trains tsm only."""
    return config["architectures"].get(wildcards.model, {})


def cli(args, launcher="actionrepro", threads="{threads}"):
    """The shell command of a rule: one `actionrepro` step on PARAMS_FILE, its output into the log.

    The params file is written into the command (not read from a global at run time, nor put in
    params:, where its name would count as a hyperparameter)."""
    return f"{launcher} {args} --params {shlex.quote(PARAMS_FILE)} --threads {threads} > {{log}} 2>&1"


# Training processes (train, and prune's fine-tune): on GPUs always through torchrun, with one
# rank per GPU of the job's own `gpu` resource, so what a job requests and what it launches cannot
# disagree (--set-resources train:gpu=4 gives 4 ranks). The command text does not depend on
# launch.gpus_per_job, so changing it re-runs nothing (Snakemake's code trigger compares the text).
# With nproc 1 torchrun sets WORLD_SIZE=1 and the step runs as a single process (GPU claimed by lock).
TRAINER = "torchrun --standalone --nproc-per-node {resources.gpu} -m actionrepro" if ON_GPU else "actionrepro"
RANK_THREADS = "$(( {threads} / {resources.gpu} > 1 ? {threads} / {resources.gpu} : 1 ))" if ON_GPU else "{threads}"


# ---------------------------------------------------------------- inputs and targets
def run_path(dataset, split, model, variant, name):
    return f"runs/{dataset}/split{split}/{model}/{variant}/{name}"


def variants():
    return ["dense"] + [f"pruned-{r}" for r in RATIOS]


REPORT_FILES = {
    "results": "reports/results.csv",
    "temporal_order": "reports/temporal_order.csv",
    "run_status": "reports/run_status.csv",
    "quarantine": "reports/quarantine.csv",
    "markdown": "reports/report.md",
    "html": "reports/report.html",
}
REPORT_DIRS = {"tables": "reports/tables", "figures": "reports/figures"}
REPORT_OUTPUTS = [*REPORT_FILES.values(), *REPORT_DIRS.values()]


def run_targets():
    """Everything the report reads: data summaries and every eval.json the params ask for."""
    targets = [f"data/frames/{ds}/summary.json" for ds in DATASETS]
    if FLOW_MODELS:
        targets += [f"data/flow/{ds}/summary.json" for ds in DATASETS]
    for ds in DATASETS:
        for k in SPLITS:
            for m in MODELS:
                for v in variants():
                    targets.append(run_path(ds, k, m, v, "eval.json"))
    return targets


def all_targets():
    return run_targets() + REPORT_OUTPUTS


def train_inputs(wildcards):
    inputs = [f"data/frames/{wildcards.dataset}/summary.json", f"data/manifests/{wildcards.dataset}/summary.json"]
    if wildcards.model in TWO_STREAM_MODELS:
        inputs.append(f"data/flow/{wildcards.dataset}/summary.json")
    return inputs


def report_inputs(wildcards):
    return run_targets()
