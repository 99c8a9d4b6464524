"""The resume journal of the per-video steps (decode, flow): what a killed run already finished.

Each finished video is appended as one JSON line with the step's settings and the sizes of its output
and source, so a re-run redoes only what is missing, torn or made with other settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from actionrepro.data import store
from actionrepro.errors import DiskFullError

FILE_NAME = "progress.jsonl"


def start(root: Path, settings: dict, key: str) -> dict[str, dict]:
    """Begin a resumable store step in `root`: nothing there looks finished any more (summary.json
    is removed), half-written temporaries are gone, and the journal's records are returned."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").unlink(missing_ok=True)
    remove_stale_temps(root)
    return read(root / FILE_NAME, settings, key)


def read(file: Path, settings: dict, key: str) -> dict[str, dict]:
    """Records of earlier runs with the same settings, by `rec[key]` (a torn last line is ignored)."""
    out: dict[str, dict] = {}
    if not file.is_file():
        return out
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("settings") == settings and key in rec:
            out[rec[key]] = rec
    return out


def reusable(rec: dict | None, output: Path, source: Path, output_size: str, source_size: str) -> bool:
    """An earlier output is kept if it is a whole store, unchanged since, and its source has the same size."""
    if rec is None:
        return False
    try:
        if output.stat().st_size != rec[output_size] or source.stat().st_size != rec[source_size]:
            return False
    except OSError:
        return False
    return store.is_complete(output)


def open_for_append(file: Path) -> IO[str]:
    """Open the journal for appending; a killed run's torn last line is closed so it stays a line of its own."""
    torn = False
    try:
        with open(file, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
    except OSError:  # missing or empty
        pass
    handle = open(file, "a", encoding="utf-8")
    if torn:
        handle.write("\n")
    return handle


def remove_stale_temps(root: Path) -> None:
    """Delete the temporary stores a killed run left behind (atomic_path's `.<name>.<random>.tmp`)."""
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp") and store.SUFFIX + "." in name:
                os.unlink(os.path.join(folder, name))


def stopped_by_full_disk(err: DiskFullError, root: Path, what: str, kept: int) -> DiskFullError:
    """After a full disk stopped a step's pool: remove every temporary store, say what is kept."""
    remove_stale_temps(root)
    return DiskFullError(err.path, err.needed, err.free,
                         f"{what} stopped at the first failed write; the {kept} finished videos are kept "
                         f"(recorded in {root / FILE_NAME})")
