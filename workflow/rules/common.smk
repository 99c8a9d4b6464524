# Shared helpers: which params file the CLI reads, and the target lists derived from it.
from pathlib import Path

from snakemake.utils import validate

from actionrepro import config as ar_config
from actionrepro.models.registry import needs_flow

# The CLI must read exactly what Snakemake read. Snakemake merges --configfile over params.yaml
# key by key; to keep both views identical we reload the last given file as the whole config.
PARAMS_FILE = workflow.overwrite_configfiles[-1] if workflow.overwrite_configfiles else "params.yaml"
config.clear()
config.update(ar_config.load(PARAMS_FILE))
validate(config, str(ar_config.SCHEMA_PATH))

DATASETS = config["datasets"]
SPLITS = config["splits"]
MODELS = config["models"]
RATIOS = [f"{r:g}" for r in config["prune"]["ratios"]]
FLOW_MODELS = [m for m in MODELS if needs_flow(m)]
# One thread per training process is fastest on small CPUs (no OpenMP spin-wait); real runs
# give each job a GPU and the loader cores.
TRAIN_THREADS = 1 if config["scale"] == "tiny" else 8
GPU = 0 if config["train"]["device"] == "cpu" else 1
PARAMS = f"--params {PARAMS_FILE}"


wildcard_constraints:
    dataset="|".join(["ucf101", "hmdb51", "synth_ucf101", "synth_hmdb51"]),
    split="[123]",
    model="[a-z0-9_]+",
    ratio="0\\.[0-9]+",
    variant="dense|pruned-0\\.[0-9]+",


def run_path(dataset, split, model, variant, name):
    return f"runs/{dataset}/split{split}/{model}/{variant}/{name}"


def variants():
    return ["dense"] + [f"pruned-{r}" for r in RATIOS]


def all_targets():
    targets = [f"data/frames/{ds}/summary.json" for ds in DATASETS]
    if FLOW_MODELS:
        targets += [f"data/flow/{ds}/summary.json" for ds in DATASETS]
    for ds in DATASETS:
        for k in SPLITS:
            for m in MODELS:
                for v in variants():
                    targets.append(run_path(ds, k, m, v, "eval.json"))
    targets += REPORT_OUTPUTS
    return targets


REPORT_OUTPUTS = ["reports/results.csv", "reports/report.md", "reports/report.html"]
