# decode (frame store) and flow, per dataset. Only the summary files are declared outputs: the
# per-video stores beside them survive a killed job, so a re-run resumes instead of starting over.


rule decode:
    input:
        "data/videos/{dataset}/.extracted.json",
        "data/manifests/{dataset}/summary.json",
    output:
        index="data/frames/{dataset}/index.csv",
        quarantine="data/frames/{dataset}/quarantine.csv",
        summary="data/frames/{dataset}/summary.json",
    params:
        **rule_params("decode"),
    log:
        "logs/decode/{dataset}.log",
    benchmark:
        "benchmarks/decode/{dataset}.tsv"
    threads: DATA_THREADS
    priority: PRIORITY["decode"]
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=720,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        cli("decode {wildcards.dataset}")


rule flow:
    input:
        "data/frames/{dataset}/summary.json",
    output:
        index="data/flow/{dataset}/index.csv",
        summary="data/flow/{dataset}/summary.json",
    params:
        **rule_params("flow"),
    log:
        "logs/flow/{dataset}.log",
    benchmark:
        "benchmarks/flow/{dataset}.tsv"
    threads: DATA_THREADS
    priority: PRIORITY["flow"]
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=1440,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        cli("flow {wildcards.dataset}")
