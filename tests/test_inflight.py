"""Loader memory bound: a DataLoader never holds more prefetched batches than train.loader_memory_gb allows,
and lowering its workers changes no clip (each item is seeded by its own index)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from actionrepro.engine import inflight

GB = 2**30


def test_default_workers_and_prefetch_while_they_fit():
    assert inflight.loader_plan(8, GB // 4, 8 * GB) == inflight.LoaderPlan(8, 2)


def test_one_batch_per_worker_then_fewer_workers_then_none():
    assert inflight.loader_plan(8, GB, 8 * GB) == inflight.LoaderPlan(8, 1)
    assert inflight.loader_plan(8, 2 * GB, 8 * GB) == inflight.LoaderPlan(4, 1)
    assert inflight.loader_plan(8, 28 * GB, 8 * GB) == inflight.LoaderPlan(0, None)  # STFN test batch of 8
    assert inflight.loader_plan(0, 1, 8 * GB) == inflight.LoaderPlan(0, None)


def test_in_flight_bytes_never_exceed_the_budget():
    for workers in range(0, 9):
        for batch_gb in (0.1, 0.5, 1, 3, 7):
            plan = inflight.loader_plan(workers, int(batch_gb * GB), 8 * GB)
            assert plan.batches_in_flight() * batch_gb <= 8 or plan.num_workers == 0


def test_item_bytes_counts_nested_tensors():
    item = {"rgb": torch.zeros(2, 3, 4, dtype=torch.float32), "jpeg": [torch.zeros(10, dtype=torch.uint8)] * 2,
            "label": 3}
    assert inflight.item_bytes(item) == 2 * 3 * 4 * 4 + 20


class Seeded(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        return {"rgb": torch.rand(4, generator=gen), "index": i}


def test_plan_for_sizes_a_batch_from_one_item_and_batches_stay_the_same():
    data = Seeded()
    plan = inflight.plan_for(data, batch_size=2, num_workers=2, budget_gb=(2 * 4 * 4 * 1.5) / GB, what="test")
    assert plan == inflight.LoaderPlan(1, 1)  # room for one 32-byte batch and a half
    lowered = [b["rgb"] for b in DataLoader(data, batch_size=2, **plan.kwargs())]
    default = [b["rgb"] for b in DataLoader(data, batch_size=2, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(lowered, default))
