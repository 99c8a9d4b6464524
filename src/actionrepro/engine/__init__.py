"""The training and evaluation engine: small modules, one job each, used by the train, prune and
evaluate steps.

step:        one optimisation step and its parts (inputs, autocast, backward, optimizer step).
settings:    TrainSettings, the frozen resolved training settings (built once from validated params).
loop:        the resumable epoch loop (fit: train_one_epoch, validate, checkpoints, finalize).
monitor:     progress bars on a terminal, log lines in log files, TensorBoard scalars (rank 0).
runner:      training one model on one split's TRAIN list (the train step and prune's fine-tune).
evaluation:  views, exactly-once predictions over ranks, per-protocol metrics.
evaluate_run: one run directory on its test list (the evaluate step, evaluate-checkpoint).
determinism: seeds, RNG state capture/restore, deterministic CPU kernels.
optim:       parameter groups with weight-decay exclusions, optimizers, warmup schedules.
checkpoint:  atomic save, weights_only load.
distributed: torchrun/DDP setup, device selection, GPU claiming for concurrent jobs.
"""
