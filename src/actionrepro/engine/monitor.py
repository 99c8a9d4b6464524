"""What a training run shows while it runs: progress people can read and watch; never the numbers.

- stderr a terminal: a tqdm bar per epoch (its numbers refreshed every `log_every` iterations);
- stderr a file (Snakemake's and DVC's logs, `2> train.log`): no bar and no carriage returns, one
  log line every `log_every` iterations (loss, accuracy, lr, data and step time, clips/s, GPU
  memory on a GPU, ETA) instead;
- always: one log line per epoch, and TensorBoard scalars into `tb_dir` when given.

Only rank 0 shows anything. Nothing here draws random numbers or touches a tensor's value: the
monitor reads (host-syncs) running sums the loop keeps anyway, so a run's numbers are the same
with or without it.

TensorBoard steps are training iterations (1-based, over the run); per-epoch scalars sit at the
epoch's last iteration. A resumed run opens a fresh writer with purge_step at the first iteration
it re-runs, so what the killed process wrote after its last checkpoint is dropped when read back.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

TB_INTERVAL = {"loss": "train/loss", "acc": "train/acc", "lr": "train/lr", "clips_per_s": "train/clips_per_s"}
TB_EPOCH = {"train_loss": "epoch/train_loss", "train_acc": "epoch/train_acc", "lr": "epoch/lr",
            "clips_per_s": "epoch/clips_per_s", "val_loss": "epoch/val_loss", "val_acc": "epoch/val_acc"}


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def eta_text(seconds: float) -> str:
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


def open_writer(tb_dir: Path, *, resumed_at: int | None):
    """A SummaryWriter into tb_dir: a fresh run clears old events; a resumed one purges from `resumed_at`."""
    from torch.utils.tensorboard import SummaryWriter

    if resumed_at is None and tb_dir.exists():
        shutil.rmtree(tb_dir)
    return SummaryWriter(str(tb_dir), purge_step=resumed_at, flush_secs=30)


@dataclass
class Tally:
    """Running sums at the last report: the next report's interval starts here."""

    loss: float = 0.0
    correct: float = 0.0
    seen: int = 0
    data_s: float = 0.0
    step_s: float = 0.0
    at: float = 0.0
    iteration: int = 0


class Monitor:
    """Progress of one fit() call; every method is a no-op off rank 0."""

    def __init__(self, *, epochs: int, batches: int, log_every: int, world_size: int = 1, device: torch.device,
                 active: bool = True, progress: bool = True, writer=None):
        self.epochs, self.batches, self.log_every, self.world_size = epochs, batches, log_every, world_size
        self.device, self.active, self.writer = device, active, writer
        self.live = active and progress  # per-iteration output at all
        self.use_bar = self.live and stderr_is_terminal()
        self.epoch_seconds: float | None = None
        self.bar = None

    # ------------------------------------------------------------ per epoch
    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.started = epoch, time.perf_counter()
        self.last = Tally(at=self.started)
        self.data_s = self.step_s = 0.0
        if self.use_bar:
            self.bar = tqdm(total=self.batches, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                            dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def iteration(self, i: int, *, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, lr: float,
                  data_s: float, step_s: float) -> None:
        """After iteration i (0-based) of the epoch: report every log_every iterations and at the last."""
        if not self.active:
            return
        self.data_s += data_s
        self.step_s += step_s
        if self.bar is not None:
            self.bar.update(1)
        if (i + 1) % self.log_every and i + 1 != self.batches or not (self.live or self.writer is not None):
            return
        now = time.perf_counter()
        loss, hits = loss_sum.item(), float(correct.item())
        n = max(seen - self.last.seen, 1)
        stats = {"loss": (loss - self.last.loss) / n, "acc": (hits - self.last.correct) / n, "lr": lr,
                 "clips_per_s": n * self.world_size / max(now - self.last.at, 1e-9)}
        iters = max(i + 1 - self.last.iteration, 1)
        timing = ((self.data_s - self.last.data_s) / iters, (self.step_s - self.last.step_s) / iters)
        self._report(i, stats, timing, epoch_avg=(loss / max(seen, 1), hits / max(seen, 1)), now=now)
        self.last = Tally(loss, hits, seen, self.data_s, self.step_s, now, i + 1)

    def _report(self, i: int, stats: dict, timing: tuple[float, float], *, epoch_avg: tuple[float, float],
                now: float) -> None:
        per_iteration = (now - self.started) / (i + 1)
        remaining_epochs = self.epochs - self.epoch - 1
        eta = (self.batches - i - 1) * per_iteration + remaining_epochs * (self.epoch_seconds or
                                                                          self.batches * per_iteration)
        step = self.epoch * self.batches + i + 1
        if self.writer is not None:
            for key, tag in TB_INTERVAL.items():
                self.writer.add_scalar(tag, stats[key], step)
        if not self.live:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{epoch_avg[0]:.4f}", acc=f"{epoch_avg[1]:.3f}",
                                 clips_s=f"{stats['clips_per_s']:.1f}", eta=eta_text(eta))
            return
        log.info("epoch %d/%d iter %d/%d | loss %.4f (%.4f) acc %.3f (%.3f) | lr %.4g | data %.3fs step %.3fs | "
                 "%.1f clips/s%s | eta %s", self.epoch + 1, self.epochs, i + 1, self.batches, stats["loss"],
                 epoch_avg[0], stats["acc"], epoch_avg[1], stats["lr"], timing[0], timing[1],
                 stats["clips_per_s"], self.memory_text(), eta_text(eta))

    def end_epoch(self, row: dict) -> None:
        """The epoch's history row is complete (validation included)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.active:
            return
        self.epoch_seconds = row["epoch_seconds"]
        iters = max(self.batches, 1)
        val = f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}" if "val_acc" in row else ""
        log.info("epoch %d/%d: loss %.4f acc %.3f%s | lr %.3g | data %.3fs step %.3fs | %.1f clips/s%s | %.1f s | "
                 "eta %s", self.epoch + 1, self.epochs, row["train_loss"], row["train_acc"], val, row["lr"],
                 self.data_s / iters, self.step_s / iters, row["clips_per_s"], self.memory_text(),
                 row["epoch_seconds"], eta_text((self.epochs - self.epoch - 1) * row["epoch_seconds"]))
        if self.writer is not None:
            step = (self.epoch + 1) * self.batches
            for key, tag in TB_EPOCH.items():
                if key in row:
                    self.writer.add_scalar(tag, row[key], step)
            self.writer.flush()

    def memory_text(self) -> str:
        if self.device.type != "cuda":
            return ""
        return f" | mem {torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GiB"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
