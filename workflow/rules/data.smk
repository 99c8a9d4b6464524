# download -> extract -> splits, per dataset.


rule download:
    input:
        dag.custom_list_files(config),
        code=dag.step_code("download"),
    output:
        "data/raw/{dataset}/download.json",
    params:
        **dag.rule_params("download", config, synth=dag.synth_of(config), seed=dag.seed_of(config)),
        custom=dag.custom_of(config),
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=600,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("download {wildcards.dataset}", PARAMS_FILE)


rule extract:
    input:
        "data/raw/{dataset}/download.json",
        code=dag.step_code("extract"),
    output:
        "data/videos/{dataset}/.extracted.json",
    params:
        **dag.rule_params("extract", config),
    log:
        "logs/extract/{dataset}.log",
    benchmark:
        "benchmarks/extract/{dataset}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=240,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("extract {wildcards.dataset}", PARAMS_FILE)


rule splits:
    input:
        "data/videos/{dataset}/.extracted.json",
        code=dag.step_code("splits"),
    output:
        classes="data/manifests/{dataset}/classes.csv",
        splits=expand("data/manifests/{{dataset}}/split{k}.csv", k=[1, 2, 3]),
        summary="data/manifests/{dataset}/summary.json",
    wildcard_constraints:
        dataset=dag.BUILTIN_DATASETS,
    params:
        **dag.rule_params("splits", config, synth=dag.synth_of(config)),
    log:
        "logs/splits/{dataset}.log",
    benchmark:
        "benchmarks/splits/{dataset}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("splits {wildcards.dataset}", PARAMS_FILE)


# A custom dataset (params custom_datasets) has the splits it declares: split<k>.csv are written
# before summary.json but not declared, since outputs cannot depend on the wildcard.
rule splits_custom:
    input:
        "data/videos/{dataset}/.extracted.json",
        code=dag.step_code("splits"),
    output:
        classes="data/manifests/{dataset}/classes.csv",
        summary="data/manifests/{dataset}/summary.json",
    wildcard_constraints:
        dataset=dag.custom_constraint(config),
    params:
        **dag.rule_params("splits", config, synth=dag.synth_of(config)),
    log:
        "logs/splits/{dataset}.log",
    benchmark:
        "benchmarks/splits/{dataset}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("splits {wildcards.dataset}", PARAMS_FILE)


# The pretrained checkpoints the recipes start from (recipes.<model>.init), fetched once; training
# reads them from data/weights and never touches the network.
rule weights:
    input:
        code=dag.step_code("weights"),
    output:
        dag.WEIGHTS_MARKER,
    params:
        **dag.rule_params("weights", config, recipes=dag.inits_of(config)),
    log:
        "logs/weights.log",
    benchmark:
        "benchmarks/weights.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=600,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("weights", PARAMS_FILE)
