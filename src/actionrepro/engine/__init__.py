"""The training and evaluation engine: small modules, one job each, used by the train, prune and
evaluate steps.

step:        one optimisation step and its parts (inputs, autocast, backward, optimizer step).
loop:        the resumable epoch loop (fit) into a run directory.
runner:      training one model on one split's TRAIN list (the train step and prune's fine-tune).
evaluation:  views, exactly-once predictions over ranks, per-protocol metrics.
determinism: seeds, RNG state capture/restore, deterministic CPU kernels.
optim:       parameter groups with weight-decay exclusions, optimizers, warmup schedules.
checkpoint:  atomic save, weights_only load.
distributed: torchrun/DDP setup, device selection, GPU claiming for concurrent jobs.
"""
