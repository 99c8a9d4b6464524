"""The resolved training settings: one frozen record built once from the validated params.

`TrainSettings.from_params(params, epochs=..., lr=...)` reads params["seed"] and params["train"]
(validated by actionrepro.config, so every optional key holds its schema default) and applies the
epochs / lr overrides of the pruning fine-tune. Everything below it (runner, loop, optim) reads
these fields, never the params dict and never a fallback literal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from actionrepro.errors import ConfigError

# Settings that do not change the numbers a run produces: a resumed run may differ in them.
RESUME_IRRELEVANT = ("num_workers", "loader_memory_gb", "device", "compile", "log_every", "tensorboard")


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class TrainSettings:
    """params["train"] resolved for one run (epochs and lr after the overrides)."""

    seed: int
    epochs: int
    lr: float
    batch_size: int  # the global batch, over every process
    accumulate: int
    optimizer: str
    momentum: float
    nesterov: bool
    weight_decay: float
    no_decay_norm_bias: bool
    classifier_lr_mult: float
    schedule: str
    warmup_epochs: float
    step_milestones: tuple[int, ...]
    step_gamma: float
    clip_grad_norm: float | None
    label_smoothing: float
    partial_bn: bool
    amp: str
    channels_last: bool
    compile: bool
    val_fraction: float
    num_workers: int
    loader_memory_gb: float  # host memory the loader's prefetched batches may take (engine.inflight)
    device: str
    log_every: int
    tensorboard: bool
    # params["train"] as validated (key, value) pairs: what the resume fingerprint hashes
    source: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_params(cls, params: Mapping, *, epochs: int | None = None, lr: float | None = None) -> TrainSettings:
        """From validated params (actionrepro.config.load / validate); epochs / lr override params["train"]."""
        train = params["train"]
        missing = sorted(set(cls.__dataclass_fields__) - {"seed", "source"} - set(train))
        if missing:
            raise ConfigError(f"params['train'] lacks {', '.join(missing)}: pass the params through "
                              "actionrepro.config.validate, which fills every schema default")
        epochs = int(train["epochs"] if epochs is None else epochs)
        if epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {epochs}")
        clip = train["clip_grad_norm"]
        return cls(
            seed=int(params["seed"]), epochs=epochs, lr=float(train["lr"] if lr is None else lr),
            batch_size=int(train["batch_size"]), accumulate=int(train["accumulate"]),
            optimizer=str(train["optimizer"]), momentum=float(train["momentum"]), nesterov=bool(train["nesterov"]),
            weight_decay=float(train["weight_decay"]), no_decay_norm_bias=bool(train["no_decay_norm_bias"]),
            classifier_lr_mult=float(train["classifier_lr_mult"]),
            schedule=str(train["schedule"]), warmup_epochs=float(train["warmup_epochs"]),
            step_milestones=tuple(int(m) for m in train["step_milestones"]), step_gamma=float(train["step_gamma"]),
            clip_grad_norm=None if clip is None else float(clip), label_smoothing=float(train["label_smoothing"]),
            partial_bn=bool(train["partial_bn"]), amp=str(train["amp"]), channels_last=bool(train["channels_last"]),
            compile=bool(train["compile"]), val_fraction=float(train["val_fraction"]),
            num_workers=int(train["num_workers"]), loader_memory_gb=float(train["loader_memory_gb"]),
            device=str(train["device"]), log_every=int(train["log_every"]),
            tensorboard=bool(train["tensorboard"]),
            source=tuple((k, _frozen(v)) for k, v in train.items()),
        )

    def fingerprint(self, meta: Mapping, sizes: tuple[int, int], start_weights: str) -> str:
        """What the run's numbers depend on (settings, data sizes, starting weights); a checkpoint with
        another fingerprint is not resumed. Settings in RESUME_IRRELEVANT are left out."""
        relevant = {k: v for k, v in self.source if k not in RESUME_IRRELEVANT}
        relevant.update(seed=self.seed, epochs=self.epochs, lr=self.lr, sizes=list(sizes), start_weights=start_weights,
                        identity={k: meta.get(k) for k in ("dataset", "split", "model", "variant")})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
