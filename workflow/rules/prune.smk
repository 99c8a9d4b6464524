# prune + fine-tune, per dataset x split x model x ratio (checkpoint.pt undeclared, as in train.smk).
# The ratio is the job's wildcard, not a param: adding a ratio runs only the new ratio's jobs.


rule prune:
    input:
        metrics="runs/{dataset}/split{split}/{model}/dense/metrics.json",
        model="runs/{dataset}/split{split}/{model}/dense/model.json",
        code=dag.step_code("prune"),
    output:
        model="runs/{dataset}/split{split}/{model}/pruned-{ratio}/model.json",
        history="runs/{dataset}/split{split}/{model}/pruned-{ratio}/history.csv",
        metrics="runs/{dataset}/split{split}/{model}/pruned-{ratio}/metrics.json",
    params:
        **dag.rule_params("prune", config, recipes=dag.recipe_of(config)),
    log:
        "logs/prune/{dataset}-split{split}-{model}-{ratio}.log",
    benchmark:
        "benchmarks/prune/{dataset}-split{split}-{model}-{ratio}.tsv"
    threads: LAUNCH.train_threads * max(1, LAUNCH.train_gpus)
    priority: PRIORITY["prune"]
    resources:
        gpu=LAUNCH.train_gpus,
        mem_mb=LAUNCH.train_mem_mb * max(1, LAUNCH.train_gpus),
        runtime=720,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("prune {wildcards.dataset} {wildcards.split} {wildcards.model} {wildcards.ratio}", PARAMS_FILE,
            LAUNCH.trainer, LAUNCH.rank_threads)
