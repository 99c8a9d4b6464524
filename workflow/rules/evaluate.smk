# evaluate, per dataset x split x model x variant (dense, pruned-<ratio>); one GPU (claimed by lock).


rule evaluate:
    input:
        metrics="runs/{dataset}/split{split}/{model}/{variant}/metrics.json",
        model="runs/{dataset}/split{split}/{model}/{variant}/model.json",
    output:
        "runs/{dataset}/split{split}/{model}/{variant}/eval.json",
    params:
        **rule_params("evaluate"),
    log:
        "logs/evaluate/{dataset}-split{split}-{model}-{variant}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}-split{split}-{model}-{variant}.tsv"
    threads: TRAIN_THREADS
    priority: PRIORITY["evaluate"]
    resources:
        gpu=EVAL_GPUS,
        mem_mb=TRAIN_MEM_MB,
        runtime=240,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        cli("evaluate {wildcards.dataset} {wildcards.split} {wildcards.model} --variant {wildcards.variant}")
