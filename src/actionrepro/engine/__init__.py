"""Small pieces of the training engine, one job each (used by actionrepro.train).

determinism: seeds, RNG state capture/restore, deterministic CPU kernels.
optim:       parameter groups with weight-decay exclusions, optimizers, warmup schedules.
checkpoint:  atomic save, weights_only load.
distributed: torchrun/DDP setup, device selection, GPU claiming for concurrent jobs.
"""
