# download -> extract -> splits, per dataset.


rule download:
    output:
        "data/raw/{dataset}/download.json",
    params:
        **rule_params("download", synth=synth_of, seed=seed_of),
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
        cli("download {wildcards.dataset}")


rule extract:
    input:
        "data/raw/{dataset}/download.json",
    output:
        "data/videos/{dataset}/.extracted.json",
    params:
        **rule_params("extract"),
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
        cli("extract {wildcards.dataset}")


rule splits:
    input:
        "data/videos/{dataset}/.extracted.json",
    output:
        classes="data/manifests/{dataset}/classes.csv",
        splits=expand("data/manifests/{{dataset}}/split{k}.csv", k=[1, 2, 3]),
        summary="data/manifests/{dataset}/summary.json",
    params:
        **rule_params("splits", synth=synth_of),
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
        cli("splits {wildcards.dataset}")
