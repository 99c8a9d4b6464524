"""Multi-process training and device choice: two gloo ranks (as torchrun would start them) match
one process with the same global batch; concurrent jobs claim distinct GPUs."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from actionrepro.engine import loop, runner
from actionrepro.engine import distributed
from actionrepro.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_train import FixedClips, TinyNet, demo_params  # noqa: E402  (shared stand-ins)

torch.set_num_threads(1)
WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_params():
    # no BN, no dropout: per-rank batch statistics would differ from the global batch's
    return demo_params(epochs=2, batch_size=8, lr=0.1, val_fraction=0.25)


def build():
    torch.manual_seed(0)
    return TinyNet(bn=False, dropout=0.0)


def rank_main(rank: int, port: int, out: str) -> None:
    """One torchrun-style rank: env:// rendezvous, then the engine's own setup and fit."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    assert ctx.distributed and ctx.rank == rank and ctx.device.type == "cpu"
    model = build()
    loop.fit(model, FixedClips(n=28), FixedClips(n=10, seed=0), run_params(), Path(out) / "run", ctx=ctx,
           progress=False)
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    distributed.teardown(ctx)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(rank_main, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    single = out / "single"
    loop.fit(build(), FixedClips(n=28), FixedClips(n=10, seed=0), run_params(), single, progress=False)
    return out, single


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(ddp_run):
    out, single = ddp_run
    ddp = torch.load(out / "run" / "checkpoint.pt", weights_only=True)
    one = torch.load(single / "checkpoint.pt", weights_only=True)
    assert ddp["model"].keys() == one["model"].keys()
    for key in one["model"]:
        torch.testing.assert_close(ddp["model"][key], one["model"][key], rtol=1e-5, atol=1e-6)
    h_ddp, h_one = pd.read_csv(out / "run" / "history.csv"), pd.read_csv(single / "history.csv")
    for col in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert h_ddp[col].tolist() == pytest.approx(h_one[col].tolist(), rel=1e-5), col


def test_ranks_stay_in_sync_and_only_rank_zero_writes(ddp_run):
    out, _ = ddp_run
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    state = torch.load(out / "run" / "checkpoint.pt", weights_only=True)
    assert len(state["rng"]) == WORLD  # every rank's RNG state, for an exact resume
    assert sorted(p.name for p in (out / "run").iterdir()) == ["checkpoint.pt", "history.csv", "metrics.json"]


def test_ddp_metrics_record_world_size_and_full_validation(ddp_run):
    out, single = ddp_run
    import json

    m = json.loads((out / "run" / "metrics.json").read_text())
    assert m["world_size"] == WORLD and m["num_val_videos"] == 10
    assert m["val_acc"] == pytest.approx(json.loads((single / "metrics.json").read_text())["val_acc"])


# ---------------------------------------------------------------- devices
BUSY = 17


def claim_and_exit(lock_dir: str, timeout: float) -> None:
    """Another job: claim a GPU, report its index as the exit code, exit (dropping the lock)."""
    try:
        index = distributed.claim_gpu(["GPU-aaa", "GPU-bbb"], lock_dir, wait_s=0.05, timeout_s=timeout)
    except TimeoutError:
        os._exit(BUSY)
    os._exit(index)


def other_job(lock_dir: Path, timeout: float = 1.0) -> int:
    # fork: a separate process (separate open file descriptions, so flock excludes it) without
    # paying another torch import
    proc = mp.get_context("fork").Process(target=claim_and_exit, args=(str(lock_dir), timeout))
    proc.start()
    proc.join(30)
    return proc.exitcode


def test_concurrent_jobs_claim_distinct_gpus_and_a_dead_job_frees_its_gpu(tmp_path):
    assert other_job(tmp_path) == 0  # a job claimed GPU-aaa and exited
    held_before = len(distributed._held_locks)
    try:
        assert distributed.claim_gpu(["GPU-aaa", "GPU-bbb"], tmp_path) == 0  # freed by the exit
        assert distributed.claim_gpu(["GPU-aaa", "GPU-bbb"], tmp_path) == 1
        assert other_job(tmp_path, timeout=0.3) == BUSY
    finally:
        while len(distributed._held_locks) > held_before:
            distributed._held_locks.pop().close()
    assert other_job(tmp_path) == 0


def test_device_choice_follows_params():
    assert distributed.select_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert distributed.select_device("auto").type == "cuda"
    else:
        assert distributed.select_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="train.device is 'cuda'"):
            distributed.select_device("cuda")


def test_a_single_process_is_not_distributed(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
