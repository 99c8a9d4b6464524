# train, per dataset x split x model. checkpoint.pt (the per-epoch resume state, then the final
# weights) is deliberately not a declared output: Snakemake deletes declared outputs before a job
# runs and after it fails, which would make a killed training start over. metrics.json is written
# last (with checkpoint "complete") and is what downstream rules depend on.


rule train:
    input:
        data=dag.train_inputs,
        code=dag.step_code("train"),
        model_code=dag.model_code_of,
    output:
        model="runs/{dataset}/split{split}/{model}/dense/model.json",
        history="runs/{dataset}/split{split}/{model}/dense/history.csv",
        metrics="runs/{dataset}/split{split}/{model}/dense/metrics.json",
    params:
        **dag.rule_params("train", config, architectures=dag.options_of(config), recipes=dag.recipe_of(config)),
    log:
        "logs/train/{dataset}-split{split}-{model}.log",
    benchmark:
        "benchmarks/train/{dataset}-split{split}-{model}.tsv"
    threads: LAUNCH.train_threads * max(1, LAUNCH.train_gpus)
    priority: PRIORITY["train"]
    resources:
        gpu=LAUNCH.train_gpus,
        mem_mb=LAUNCH.train_mem_mb * max(1, LAUNCH.train_gpus),
        runtime=1440,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("train {wildcards.dataset} {wildcards.split} {wildcards.model}", PARAMS_FILE, LAUNCH.trainer,
            LAUNCH.rank_threads)
