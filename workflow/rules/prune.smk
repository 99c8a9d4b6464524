# prune + fine-tune, per dataset x split x model x ratio (checkpoint.pt undeclared, as in train.smk).


rule prune:
    input:
        metrics="runs/{dataset}/split{split}/{model}/dense/metrics.json",
        model="runs/{dataset}/split{split}/{model}/dense/model.json",
    output:
        model="runs/{dataset}/split{split}/{model}/pruned-{ratio}/model.json",
        history="runs/{dataset}/split{split}/{model}/pruned-{ratio}/history.csv",
        metrics="runs/{dataset}/split{split}/{model}/pruned-{ratio}/metrics.json",
    params:
        prune=config["prune"],
        train=config["train"],
        augment=config["augment"],
    log:
        "logs/prune/{dataset}-split{split}-{model}-{ratio}.log",
    benchmark:
        "benchmarks/prune/{dataset}-split{split}-{model}-{ratio}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=720,
    shell:
        "actionrepro prune {wildcards.dataset} {wildcards.split} {wildcards.model} {wildcards.ratio} {PARAMS} --threads {threads} > {log} 2>&1"
