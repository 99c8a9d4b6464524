"""Atomic writes: a failed write leaves nothing that looks finished; a finished one is readable by others."""

from __future__ import annotations

import os
import stat

import pytest

from actionrepro.io import atomic_path, atomic_write_text


def test_failed_block_leaves_no_final_and_no_temp_file(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_finished_file_replaces_the_old_one_and_follows_the_umask(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    old = os.umask(0o022)
    try:
        atomic_write_text(final, "new")
    finally:
        os.umask(old)
    assert final.read_text() == "new"
    assert stat.S_IMODE(final.stat().st_mode) == 0o644
