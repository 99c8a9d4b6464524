# train, per dataset x split x model. checkpoint.pt is written once training ends; the per-epoch
# resume state (resume.pt) is not a declared output, so Snakemake keeps it across a killed job.


def train_inputs(w):
    inputs = [f"data/frames/{w.dataset}/summary.json", f"data/manifests/{w.dataset}/summary.json"]
    if needs_flow(w.model):
        inputs.append(f"data/flow/{w.dataset}/summary.json")
    return inputs


rule train:
    input:
        train_inputs,
    output:
        checkpoint="runs/{dataset}/split{split}/{model}/dense/checkpoint.pt",
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
