# train, per dataset x split x model. checkpoint.pt (the per-epoch resume state, then the final
# weights) is deliberately not a declared output: Snakemake deletes declared outputs before a job
# runs and after it fails, which would make a killed training start over. metrics.json is written
# last (with checkpoint "complete") and is what downstream rules depend on.


rule train:
    input:
        train_inputs,
    output:
        model="runs/{dataset}/split{split}/{model}/dense/model.json",
        history="runs/{dataset}/split{split}/{model}/dense/history.csv",
        metrics="runs/{dataset}/split{split}/{model}/dense/metrics.json",
    params:
        **rule_params("train", architectures=options_of),
    log:
        "logs/train/{dataset}-split{split}-{model}.log",
    benchmark:
        "benchmarks/train/{dataset}-split{split}-{model}.tsv"
    threads: TRAIN_THREADS * max(1, TRAIN_GPUS)
    priority: PRIORITY["train"]
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=TRAIN_MEM_MB * max(1, TRAIN_GPUS),
        runtime=1440,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        cli("train {wildcards.dataset} {wildcards.split} {wildcards.model}", TRAINER, RANK_THREADS)
