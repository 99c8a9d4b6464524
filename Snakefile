# actionrepro: the full reproduction DAG.
#   snakemake --cores all                               paper scale, from params.yaml
#   snakemake --cores all --configfile config/demo.yaml the synthetic demo (make demo)
# Every rule calls one `actionrepro <step>` command; no logic lives here beyond naming files.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
