"""Where a training process runs: torchrun/DDP ranks, device choice, GPU claiming.

Under torchrun (env RANK, WORLD_SIZE > 1, LOCAL_RANK) the process joins the group: nccl on GPUs,
gloo on CPU. Rank 0 writes the files.

Snakemake runs at most `--resources gpu=N` GPU jobs at once but does not say which GPU each gets.
`cuda_index` decides, in this order:
1. a torchrun rank to which CUDA_VISIBLE_DEVICES shows exactly one GPU per rank on the node
   (SLURM's --gpus does that): cuda:LOCAL_RANK;
2. a single process that sees one GPU (CUDA_VISIBLE_DEVICES set per job): cuda:0;
3. otherwise the visible GPUs may be shared with other jobs: the process claims one through an
   exclusive, non-blocking flock on /tmp/actionrepro-gpu-<uuid>.lock (directory overridable with
   ACTIONREPRO_GPU_LOCK_DIR), held for the life of the process. The kernel drops the lock when the
   process dies, even on kill -9, so a crashed job never leaves a GPU reserved. If every GPU is
   claimed, the job waits. Each rank of a multi-GPU job on a shared box claims its own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from actionrepro.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "ACTIONREPRO_GPU_LOCK_DIR"
_held_locks: list = []  # open lock files: kept referenced so the flock lives as long as the process


@dataclass(frozen=True)
class Context:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # setup() initialised the process group, so teardown() ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def under_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    return int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env


def _want_cuda(preference: str) -> bool:
    if preference == "cpu":
        return False
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params train.device is 'cuda' but torch sees no CUDA device "
                          "(check the driver, CUDA_VISIBLE_DEVICES, or set train.device to 'auto' or 'cpu')")
    if preference not in ("auto", "cuda"):
        raise ConfigError(f"params train.device is {preference!r}; allowed values: 'auto', 'cpu', 'cuda'")
    return torch.cuda.is_available()


def claim_gpu(gpu_ids: list[str], lock_dir: str | Path | None = None, wait_s: float = 5.0,
              timeout_s: float | None = None) -> int:
    """Index into `gpu_ids` of a GPU no other actionrepro process holds; the claim lasts until exit.

    `gpu_ids` are stable names (UUIDs), so two jobs with different CUDA_VISIBLE_DEVICES orders still
    contend for the same physical device. Waits (polling every `wait_s`) while all are taken.
    """
    lock_dir = Path(lock_dir or os.environ.get(LOCK_DIR_ENV, "/tmp"))
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    announced = False
    while True:
        for index, gpu in enumerate(gpu_ids):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu)
            handle = open(lock_dir / f"actionrepro-gpu-{safe}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _held_locks.append(handle)
            return index
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"all {len(gpu_ids)} GPUs stayed claimed for {timeout_s:.0f} s (locks in {lock_dir})")
        if not announced:
            log.info("all %d GPUs are claimed by other jobs (locks in %s); waiting for one", len(gpu_ids), lock_dir)
            announced = True
        time.sleep(wait_s)


def _gpu_ids() -> list[str]:
    ids = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        ids.append(str(getattr(props, "uuid", "") or f"{getattr(props, 'pci_bus_id', 'gpu')}-{index}"))
    return ids


def cuda_index(count: int, gpu_ids: Callable[[], list[str]], env: Mapping[str, str] = os.environ,
               lock_dir: str | Path | None = None) -> int:
    """Which of the `count` visible GPUs this process uses (rules in the module docstring).

    `gpu_ids` is called only when a GPU must be claimed; tests pass a count and fake ids."""
    if count < 1:
        raise ConfigError("no CUDA device is visible to this process (check the driver and CUDA_VISIBLE_DEVICES, "
                          "or set train.device to 'cpu')")
    if under_torchrun(env):
        local_world = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        if count < local_world:
            raise ConfigError(f"torchrun started {local_world} processes on this node but only {count} GPU(s) are "
                              "visible; launch at most one process per GPU (launch.gpus_per_job)")
        if count == local_world and env.get("CUDA_VISIBLE_DEVICES"):
            return int(env.get("LOCAL_RANK", "0"))
    elif count == 1:
        return 0
    return claim_gpu(gpu_ids(), lock_dir)


def select_device(preference: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; with several GPUs visible, the one cuda_index picks."""
    if not _want_cuda(preference):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = cuda_index(count, _gpu_ids)
    if count > 1:
        log.info("claimed GPU %d of %d visible (file lock; set CUDA_VISIBLE_DEVICES per job to pin instead)",
                 index, count)
    return torch.device("cuda", index)


def setup(preference: str = "auto") -> Context:
    """Join the torchrun group if launched by torchrun, otherwise a single process on one device."""
    if not under_torchrun():
        if dist.is_available() and dist.is_initialized():  # a caller already set a group up
            rank, world = dist.get_rank(), dist.get_world_size()
            cuda = _want_cuda(preference)
            device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
            return Context(rank, world, int(os.environ.get("LOCAL_RANK", rank)), device, owns_group=False)
        return Context(device=select_device(preference))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if _want_cuda(preference):
        device = torch.device("cuda", cuda_index(torch.cuda.device_count(), _gpu_ids))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        owns = True
    log.info("rank %d/%d on %s (%s)", rank, world, device, backend)
    return Context(rank, world, local_rank, device, owns_group=owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: Context, values: list[float]) -> list[float]:
    """Sum numbers over ranks (float64 on the process device)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather(ctx: Context, obj) -> list:
    """Every rank's `obj`, in rank order (used for per-rank RNG states)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
