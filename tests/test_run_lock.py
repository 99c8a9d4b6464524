"""One process per run directory: a second train/prune/evaluate on it refuses, naming the holder."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from actionrepro import runs
from actionrepro.errors import RunLockedError

HOLD = """
import sys
from actionrepro import runs
with runs.run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""
TRY = """
import sys
from actionrepro import runs
from actionrepro.errors import RunLockedError
try:
    with runs.run_lock(sys.argv[1], wait_s=float(sys.argv[2])):
        print("proceeded", flush=True)
except RunLockedError as err:
    print("refused:", err, flush=True)
"""


def python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, stdout=subprocess.PIPE, **kw)


@pytest.fixture
def holder(tmp_path):
    """A real process holding the lock of tmp_path/run until its stdin gets a line."""
    proc = python(HOLD, str(tmp_path / "run"), stdin=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_process_refuses_naming_the_holder_then_proceeds_once_it_is_released(tmp_path, holder):
    second = python(TRY, str(tmp_path / "run"), "0.5")
    out, _ = second.communicate(timeout=60)
    assert out.startswith("refused:"), out
    assert f"pid {holder.pid} on host {socket.gethostname()}" in out and str(tmp_path / "run") in out

    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=30)
    again = python(TRY, str(tmp_path / "run"), "0.5")
    assert again.communicate(timeout=60)[0].strip() == "proceeded"


def test_a_second_process_waits_briefly_for_a_holder_that_is_finishing(tmp_path, holder):
    second = python(TRY, str(tmp_path / "run"), "30")
    time.sleep(1.0)
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert second.communicate(timeout=60)[0].strip() == "proceeded"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    holder.kill()
    holder.wait()
    with runs.run_lock(tmp_path / "run", wait_s=0):
        pass


def test_the_lock_clears_a_killed_writers_temporaries_but_not_finished_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (run / "checkpoint.pt").write_bytes(b"whole")
    with runs.run_lock(run):
        assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoint.pt"]


def test_non_zero_torchrun_ranks_leave_the_lock_to_rank_0(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with runs.run_lock(tmp_path / "run"):
        with runs.run_lock(tmp_path / "run", wait_s=0):  # rank 0 would hold it; rank 1 does not ask
            pass
    assert not (tmp_path / "run" / ".lock").exists()


def lock_is_held(run: Path) -> bool:
    fd = os.open(run / runs.LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@pytest.mark.parametrize("step", ["train", "prune", "evaluate"])
def test_train_prune_and_evaluate_hold_the_run_lock_while_they_run(tmp_path, monkeypatch, step):
    import importlib

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"actionrepro.steps.{step}")
    variant = {"train": "dense", "prune": "pruned-0.5", "evaluate": "pruned-0.5"}[step]
    run = runs.run_dir("synth_ucf101", 1, "tsn", variant)
    run.mkdir(parents=True)
    (run / ".checkpoint.pt.x1.tmp").write_bytes(b"half")
    seen = []

    def work(*args, **kw):
        seen.append((lock_is_held(run), (run / ".checkpoint.pt.x1.tmp").exists()))

    monkeypatch.setattr(f"actionrepro.steps.{step}.{step}", work)
    args = types.SimpleNamespace(dataset="synth_ucf101", split=1, model="tsn", ratio=0.5, variant=variant,
                                 params="params.yaml", overrides=[])
    module.run(args, {})
    assert seen == [(True, False)] and not lock_is_held(run)


def test_a_failed_train_drops_a_metrics_json_older_than_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    os.utime(run / "metrics.json", (1, 1))
    (run / "checkpoint.pt").write_bytes(b"new, unfinished")
    with pytest.raises(RuntimeError):
        with runs.no_stale_metrics(run):
            raise RuntimeError("died mid-training")
    assert not (run / "metrics.json").exists() and (run / "checkpoint.pt").exists()


def test_refusal_message_is_a_run_locked_error_in_process(tmp_path, holder):
    with pytest.raises(RunLockedError, match=rf"pid {holder.pid} on host .* Wait for it to finish or stop it"):
        with runs.run_lock(tmp_path / "run", wait_s=0.2):
            pass
