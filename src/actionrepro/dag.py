"""Which params keys each pipeline step reads: the one list both front doors must agree with.

Snakemake puts exactly these values into each rule's `params:` (so its params rerun trigger fires
only for the jobs a change touches), dvc.yaml lists exactly these keys per stage, and
tests/test_dag_consistency.py checks the two against this table. A key is a dotted path into
params.yaml; a top-level name stands for its whole section.

`prune.ratios` is deliberately absent from `prune`: the ratio is the job's own wildcard/matrix
value, so adding a ratio must not re-run the pruning jobs of the ratios already done.
"""

from __future__ import annotations

from typing import Any

STEP_PARAMS: dict[str, tuple[str, ...]] = {
    "download": ("download", "synth", "seed"),
    "extract": (),
    "splits": ("synth",),
    "decode": ("decode",),
    "flow": ("flow", "decode.jpeg_quality"),
    "train": ("seed", "scale", "train", "augment", "architectures"),
    "prune": ("seed", "train", "augment", "prune.importance", "prune.global_pruning",
              "prune.iterative_steps", "prune.round_to", "prune.finetune_epochs", "prune.finetune_lr",
              "evaluate.latency_repeats"),
    "evaluate": ("evaluate", "train.device", "train.batch_size", "train.num_workers"),
    # the report reads the whole file (target lists, protocols, provenance, params_hash)
    "report": (),
}


def lookup(params: dict, key: str) -> Any:
    """The value at dotted `key` in params; KeyError names the missing part."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"params has no {key!r} (missing {part!r})")
        node = node[part]
    return node


def step_params(step: str, params: dict) -> dict[str, Any]:
    """{key with dots as underscores: value} for every key `step` reads, for Snakemake's params:."""
    if step not in STEP_PARAMS:
        raise KeyError(f"unknown pipeline step {step!r}; known: {', '.join(STEP_PARAMS)}")
    return {key.replace(".", "_"): lookup(params, key) for key in STEP_PARAMS[step]}
