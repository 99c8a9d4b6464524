# decode (frame store) and flow, per dataset. Only the summary files are declared outputs: the
# per-video stores beside them survive a killed job, so a re-run resumes instead of starting over.


rule decode:
    input:
        "data/videos/{dataset}/.extracted.json",
        "data/manifests/{dataset}/summary.json",
        code=dag.step_code("decode"),
    output:
        index="data/frames/{dataset}/index.csv",
        quarantine="data/frames/{dataset}/quarantine.csv",
        summary="data/frames/{dataset}/summary.json",
    params:
        **dag.rule_params("decode", config),
    log:
        "logs/decode/{dataset}.log",
    benchmark:
        "benchmarks/decode/{dataset}.tsv"
    threads: LAUNCH.data_threads
    priority: PRIORITY["decode"]
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=720,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("decode {wildcards.dataset}", PARAMS_FILE)


rule flow:
    input:
        "data/frames/{dataset}/summary.json",
        code=dag.step_code("flow"),
    output:
        index="data/flow/{dataset}/index.csv",
        summary="data/flow/{dataset}/summary.json",
    params:
        **dag.rule_params("flow", config),
    log:
        "logs/flow/{dataset}.log",
    benchmark:
        "benchmarks/flow/{dataset}.tsv"
    threads: LAUNCH.data_threads
    priority: PRIORITY["flow"]
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=1440,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("flow {wildcards.dataset}", PARAMS_FILE)
