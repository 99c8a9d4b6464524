# download -> extract -> splits, per dataset.


rule download:
    output:
        "data/raw/{dataset}/download.json",
    params:
        download=config["download"],
        synth=lambda w: config["synth"].get(w.dataset.removeprefix("synth_")) if w.dataset.startswith("synth_") else None,
        seed=lambda w: config["seed"] if w.dataset.startswith("synth_") else None,
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=600,
    shell:
        "actionrepro download {wildcards.dataset} {PARAMS} > {log} 2>&1"


rule extract:
    input:
        "data/raw/{dataset}/download.json",
    output:
        "data/videos/{dataset}/.extracted.json",
    log:
        "logs/extract/{dataset}.log",
    benchmark:
        "benchmarks/extract/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    shell:
        "actionrepro extract {wildcards.dataset} {PARAMS} > {log} 2>&1"


rule splits:
    input:
        "data/videos/{dataset}/.extracted.json",
    output:
        classes="data/manifests/{dataset}/classes.csv",
        splits=expand("data/manifests/{{dataset}}/split{k}.csv", k=[1, 2, 3]),
        summary="data/manifests/{dataset}/summary.json",
    log:
        "logs/splits/{dataset}.log",
    benchmark:
        "benchmarks/splits/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "actionrepro splits {wildcards.dataset} {PARAMS} > {log} 2>&1"
