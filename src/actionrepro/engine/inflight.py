"""How many batches a DataLoader may hold at once: workers x prefetch batches, bounded in bytes.

A DataLoader with W workers and prefetch factor P keeps up to W x P finished batches in host memory.
At paper scale one STFN test batch of 8 videos at 10x3 views is 30 views x 25 positions x (3 RGB +
20 flow channels) x 224² float32 = 28 GB; eight workers prefetching two each would ask for 440 GB.
`loader_plan` keeps the default (all workers, two batches each) while it fits `budget_bytes`, then
one batch per worker, then fewer workers, and down to loading in the main process (one batch).
Which worker loads which item does not change any clip (the datasets seed each item themselves).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

DEFAULT_PREFETCH = 2  # torch.utils.data.DataLoader's own default


@dataclass(frozen=True)
class LoaderPlan:
    """DataLoader keyword arguments that bound what it holds in flight."""

    num_workers: int
    prefetch_factor: int | None  # None with no workers (DataLoader refuses a factor then)

    def kwargs(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "prefetch_factor": self.prefetch_factor}

    def batches_in_flight(self) -> int:
        return self.num_workers * self.prefetch_factor if self.num_workers else 1


def item_bytes(item: Any) -> int:
    """Bytes of every tensor / array in one dataset item (nested dicts, lists and tuples)."""
    if isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    if hasattr(item, "nbytes") and not isinstance(item, (str, bytes)):
        return int(item.nbytes)
    if isinstance(item, dict):
        return sum(item_bytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(item_bytes(v) for v in item)
    return 0


def loader_plan(num_workers: int, batch_bytes: int, budget_bytes: int) -> LoaderPlan:
    """The most workers x prefetch (at most num_workers x 2) whose batches fit in budget_bytes."""
    num_workers = max(0, int(num_workers))
    if num_workers == 0:
        return LoaderPlan(0, None)
    fits = int(budget_bytes // max(1, batch_bytes))
    if fits >= num_workers * DEFAULT_PREFETCH:
        return LoaderPlan(num_workers, DEFAULT_PREFETCH)
    if fits >= 1:
        return LoaderPlan(min(num_workers, fits), 1)
    return LoaderPlan(0, None)


def plan_for(dataset, batch_size: int, num_workers: int, budget_gb: float, what: str) -> LoaderPlan:
    """loader_plan for `dataset` batched by `batch_size` (one item is read to size the batch); logs
    when the budget (params train.loader_memory_gb) lowers the workers or their prefetch."""
    if num_workers == 0 or len(dataset) == 0:
        return LoaderPlan(0, None)
    batch_bytes = item_bytes(dataset[0]) * max(1, min(batch_size, len(dataset)))
    plan = loader_plan(num_workers, batch_bytes, int(budget_gb * 2**30))
    if plan != LoaderPlan(num_workers, DEFAULT_PREFETCH):
        log.info("%s: a batch holds %.2f GB; %d worker(s) x %s prefetched batch(es) keep the loader within "
                 "train.loader_memory_gb=%g (asked: %d workers x %d)", what, batch_bytes / 2**30, plan.num_workers,
                 plan.prefetch_factor or 1, budget_gb, num_workers, DEFAULT_PREFETCH)
    return plan
