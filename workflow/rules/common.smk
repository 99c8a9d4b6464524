# Names the rules share: the params file the CLI reads, each rule's params, launch settings, targets.
# Every helper lives in actionrepro.dag (unit-tested, torch-free); this file only binds names.
from pathlib import Path

from snakemake.utils import validate

from actionrepro import config as ar_config
from actionrepro import dag

# The CLI must read exactly what Snakemake read: the last given params file, whole (Snakemake
# would merge --configfile over params.yaml key by key); --config values are refused by name.
PARAMS_FILE = dag.params_file(workflow.overwrite_configfiles, Path.cwd())
dag.refuse_config_overrides(workflow.config_settings.config, PARAMS_FILE)
config.clear()
config.update(ar_config.load(PARAMS_FILE))
validate(config, str(ar_config.SCHEMA_PATH))

RATIOS = [f"{r:g}" for r in config["prune"]["ratios"]]
LAUNCH = dag.launch_plan(config, PARAMS_FILE)
PRIORITY = dag.PRIORITY
REPORT_FILES = dag.REPORT_FILES
REPORT_DIRS = dag.REPORT_DIRS


wildcard_constraints:
    dataset="|".join(dag.dataset_names(config)),
    split="[1-9][0-9]*",
    model="[a-z0-9_]+",
    ratio="0\\.[0-9]+",
    variant="dense|pruned-0\\.[0-9]+",
