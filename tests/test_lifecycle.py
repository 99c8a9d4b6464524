"""A step ends with the process that started it; SIGTERM ends it cleanly with exit code 143; worker
pools of a killed step leave no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actionrepro import lifecycle

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

# A stand-in train job: the real CLI (arguments, process settings, error mapping) around a step that sleeps.
STEP = """
import sys, time
from actionrepro import cli
def sleeping_step(args):
    print("running", flush=True)
    time.sleep(120)
cli.run_step = sleeping_step
code = cli.main(["train", "synth_ucf101", "1", "tsn", "--threads", "1"])
open(sys.argv[1], "w").write(str(code))
"""
# Its parent: starts the job, says its pid, waits.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
child.wait()
"""


def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie nobody reaps yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not gone(p)]


def test_a_train_job_dies_with_its_killed_parent_through_the_clean_sigterm_path(tmp_path):
    code_file = tmp_path / "code"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, STEP, str(code_file)], text=True,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "running"
        parent.kill()  # kill -9: no chance to pass anything on
        parent.wait()
        assert wait_gone([child], 10) == [], "the job outlived its parent"
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
    assert code_file.read_text() == str(lifecycle.EXIT_SIGTERM)


def test_sigterm_ends_a_step_cleanly_with_exit_code_143(tmp_path):
    job = subprocess.Popen([sys.executable, "-c", STEP, str(tmp_path / "code")], text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert job.stdout.readline().strip() == "running"
    job.terminate()
    _, err = job.communicate(timeout=30)
    assert (tmp_path / "code").read_text() == "143"
    assert "terminated (SIGTERM); finished outputs are kept" in err and "Traceback" not in err


def test_in_process_cli_calls_leave_the_callers_signal_handling_as_it_was():
    before = signal.getsignal(signal.SIGTERM)
    with lifecycle.step_process(with_parent=True):
        assert signal.getsignal(signal.SIGTERM) is lifecycle._raise_terminated
    assert signal.getsignal(signal.SIGTERM) is before


# A step's pool: prints its worker pids, then keeps them busy (decode: a FIFO that never delivers a
# byte; flow: long sleeps) until it is killed.
DECODE_POOL = """
import os, sys, threading, time, multiprocessing as mp
from actionrepro.data import decode
fifo = sys.argv[1]
os.mkfifo(fifo)
def report():
    time.sleep(2)
    print(" ".join(str(p.pid) for p in mp.active_children() if p.name == "actionrepro-decode"), flush=True)
threading.Thread(target=report, daemon=True).start()
decode.run_pool([(fifo, fifo + ".frames", 48, 90)] * 2, 2, 600, lambda i, r: None)
"""
FLOW_POOL = """
import os, time
from concurrent.futures import ProcessPoolExecutor
from actionrepro.data import flow
with ProcessPoolExecutor(2, mp_context=flow._context(), initializer=flow._init_pool_worker) as pool:
    futures = [pool.submit(os.getpid) for _ in range(8)]
    print(" ".join(str(p) for p in sorted({f.result() for f in futures})), flush=True)
    list(pool.map(time.sleep, [600, 600]))
"""


@pytest.mark.parametrize("script", [DECODE_POOL, FLOW_POOL], ids=["decode", "flow"])
def test_pool_workers_of_a_killed_step_do_not_outlive_it(tmp_path, script):
    step = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "fifo")], text=True,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        workers = [int(p) for p in step.stdout.readline().split()]
        assert workers and not any(gone(p) for p in workers)
        step.kill()
        step.wait()
        assert wait_gone(workers, 15) == [], "orphaned pool workers"
    finally:
        try:
            os.killpg(step.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
