# prune + fine-tune, per dataset x split x model x ratio (checkpoint.pt undeclared, as in train.smk).
# The ratio is the job's wildcard, not a param: adding a ratio runs only the new ratio's jobs.


rule prune:
    input:
        metrics="runs/{dataset}/split{split}/{model}/dense/metrics.json",
        model="runs/{dataset}/split{split}/{model}/dense/model.json",
    output:
        model="runs/{dataset}/split{split}/{model}/pruned-{ratio}/model.json",
        history="runs/{dataset}/split{split}/{model}/pruned-{ratio}/history.csv",
        metrics="runs/{dataset}/split{split}/{model}/pruned-{ratio}/metrics.json",
    params:
        **rule_params("prune"),
    log:
        "logs/prune/{dataset}-split{split}-{model}-{ratio}.log",
    benchmark:
        "benchmarks/prune/{dataset}-split{split}-{model}-{ratio}.tsv"
    threads: TRAIN_THREADS * max(1, TRAIN_GPUS)
    priority: PRIORITY["prune"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=TRAIN_MEM_MB * max(1, TRAIN_GPUS),
        runtime=720,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        cli("prune {wildcards.dataset} {wildcards.split} {wildcards.model} {wildcards.ratio}", TRAINER, RANK_THREADS)
