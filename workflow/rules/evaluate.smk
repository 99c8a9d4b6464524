# evaluate, per dataset x split x model x variant (dense, pruned-<ratio>); one GPU (claimed by lock).


rule evaluate:
    input:
        metrics="runs/{dataset}/split{split}/{model}/{variant}/metrics.json",
        model="runs/{dataset}/split{split}/{model}/{variant}/model.json",
        code=dag.step_code("evaluate"),
    output:
        "runs/{dataset}/split{split}/{model}/{variant}/eval.json",
    params:
        **dag.rule_params("evaluate", config, recipes=dag.recipe_of(config)),
    log:
        "logs/evaluate/{dataset}-split{split}-{model}-{variant}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}-split{split}-{model}-{variant}.tsv"
    threads: LAUNCH.train_threads
    priority: PRIORITY["evaluate"]
    resources:
        gpu=LAUNCH.eval_gpus,
        mem_mb=LAUNCH.train_mem_mb,
        runtime=240,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("evaluate {wildcards.dataset} {wildcards.split} {wildcards.model} --variant {wildcards.variant}", PARAMS_FILE)
