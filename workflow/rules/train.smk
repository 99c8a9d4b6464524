# train, per dataset x split x model. checkpoint.pt (the per-epoch resume state, then the final
# weights) is deliberately not a declared output: Snakemake deletes declared outputs before a job
# runs and after it fails, which would make a killed training start over. metrics.json is written
# last (with checkpoint "complete") and is what downstream rules depend on.


def train_inputs(w):
    inputs = [f"data/frames/{w.dataset}/summary.json", f"data/manifests/{w.dataset}/summary.json"]
    if needs_flow(w.model):
        inputs.append(f"data/flow/{w.dataset}/summary.json")
    return inputs


rule train:
    input:
        train_inputs,
    output:
        model="runs/{dataset}/split{split}/{model}/dense/model.json",
        history="runs/{dataset}/split{split}/{model}/dense/history.csv",
        metrics="runs/{dataset}/split{split}/{model}/dense/metrics.json",
    params:
        seed=config["seed"],
        scale=config["scale"],
        train=config["train"],
        augment=config["augment"],
        options=lambda w: config["architectures"].get(w.model, {}),
    log:
        "logs/train/{dataset}-split{split}-{model}.log",
    benchmark:
        "benchmarks/train/{dataset}-split{split}-{model}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=1440,
    shell:
        "actionrepro train {wildcards.dataset} {wildcards.split} {wildcards.model} {PARAMS} --threads {threads} > {log} 2>&1"
