"""Run `snakemake --unlock` in this directory, but only if no other Snakemake is running here.

A Snakemake that was killed (kill -9, a lost SSH session) leaves .snakemake/locks behind, and the
next run refuses to start until `snakemake --unlock`. Unlocking while another Snakemake works in the
same directory would let two of them write the same outputs, so `make demo` / `make reproduce`
call this first: it unlocks only when no process named snakemake has this working directory.

    python tools/unlock_if_idle.py SNAKEMAKE [ARGS...]    # runs SNAKEMAKE --unlock ARGS (or not)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def is_snakemake(argv: list[str]) -> bool:
    """`snakemake ...`, `python .../bin/snakemake ...` or `python -m snakemake ...`."""
    names = [Path(a).name for a in argv[:3]]
    return names[:1] == ["snakemake"] or names[1:2] == ["snakemake"] or names[1:3] == ["-m", "snakemake"]


def ancestors(pid: int) -> set[int]:
    """`pid` and its parents up to init: make, its shell and this script are not 'another Snakemake'."""
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def snakemakes_in(directory: Path, proc: Path = Path("/proc")) -> list[int]:
    """Pids of Snakemake processes (other than our own ancestry) whose working directory is `directory`."""
    skip = ancestors(os.getpid())
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if is_snakemake(argv) and Path(os.readlink(entry / "cwd")) == directory:
                found.append(int(entry.name))
        except OSError:  # exited meanwhile, or another user's process (it cannot use our .snakemake)
            continue
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    here = Path.cwd().resolve()
    busy = snakemakes_in(here)
    if busy:
        print(f"not unlocking: snakemake is running in {here} (pid {', '.join(map(str, busy))})", file=sys.stderr)
        return 0
    if not (here / ".snakemake" / "locks").is_dir() or not any((here / ".snakemake" / "locks").iterdir()):
        return 0  # nothing to unlock
    return subprocess.call([argv[0], "--unlock", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
