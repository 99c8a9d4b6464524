# evaluate, per dataset x split x model x variant (dense, pruned-<ratio>).


rule evaluate:
    input:
        metrics="runs/{dataset}/split{split}/{model}/{variant}/metrics.json",
        model="runs/{dataset}/split{split}/{model}/{variant}/model.json",
    output:
        "runs/{dataset}/split{split}/{model}/{variant}/eval.json",
    params:
        evaluate=config["evaluate"],
    log:
        "logs/evaluate/{dataset}-split{split}-{model}-{variant}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}-split{split}-{model}-{variant}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=240,
    shell:
        "actionrepro evaluate {wildcards.dataset} {wildcards.split} {wildcards.model} --variant {wildcards.variant} {PARAMS} --threads {threads} > {log} 2>&1"
