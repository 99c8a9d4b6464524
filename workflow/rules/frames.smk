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
        decode=config["decode"],
    log:
        "logs/decode/{dataset}.log",
    benchmark:
        "benchmarks/decode/{dataset}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=720,
    shell:
        "actionrepro decode {wildcards.dataset} {PARAMS} --threads {threads} > {log} 2>&1"


rule flow:
    input:
        "data/frames/{dataset}/summary.json",
    output:
        index="data/flow/{dataset}/index.csv",
        summary="data/flow/{dataset}/summary.json",
    params:
        flow=config["flow"],
    log:
        "logs/flow/{dataset}.log",
    benchmark:
        "benchmarks/flow/{dataset}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=1440,
    shell:
        "actionrepro flow {wildcards.dataset} {PARAMS} --threads {threads} > {log} 2>&1"
