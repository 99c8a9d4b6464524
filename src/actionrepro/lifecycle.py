"""A step's process ends with the process that started it, and ends cleanly on SIGTERM.

Without this, killing Snakemake (kill -9, a lost SSH session) leaves its train/prune/evaluate jobs
and the decode/flow worker pools running as orphans: they hold the GPU, the run directory's lock
and half-written temporaries. Linux delivers SIGTERM to a process whose parent dies once the
process asked for it (prctl PR_SET_PDEATHSIG); SIGTERM then takes the same path as Ctrl-C, so
finished outputs are kept and `finally` blocks run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from typing import Iterator

PR_SET_PDEATHSIG = 1
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143, what a shell reports for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (outputs that are finished stay), exit 143."""


def _prctl_pdeathsig(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig) on Linux; False where unsupported (other systems: a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` to this process when its parent dies; False where unsupported.

    If the parent already died before the request took effect, send `sig` now.
    """
    parent = os.getppid()
    if not _prctl_pdeathsig(sig):
        return False
    if os.getppid() != parent or parent == 1:  # orphaned already: the signal would never come
        os.kill(os.getpid(), sig)
    return True


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def step_process(with_parent: bool) -> Iterator[None]:
    """While a step runs: SIGTERM raises Terminated; with_parent: the step also dies with its parent.

    Both are undone on exit, so calling the CLI in-process (tests) leaves the caller as it was.
    Outside the main thread (where Python takes no signal handlers) nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    dies = with_parent and die_with_parent(signal.SIGTERM)
    try:
        yield
    finally:
        if dies:
            _prctl_pdeathsig(0)
        signal.signal(signal.SIGTERM, previous)


def worker_init() -> None:
    """For a pool's worker processes: die with the step's process (no orphans).

    A forkserver worker's parent is the fork server, which exits when the step's process dies, but
    only once every copy of its "alive" pipe is closed, and each worker inherits one: so a worker
    closes its copy (it starts no processes of its own) and dies with the fork server.
    """
    _release_forkserver()
    die_with_parent(signal.SIGTERM)


def _release_forkserver() -> None:
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None and server._forkserver_pid is None:  # a child of the server, not the step itself
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None
