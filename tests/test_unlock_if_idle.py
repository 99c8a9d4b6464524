"""tools/unlock_if_idle.py: `snakemake --unlock` after a killed run, never under a running Snakemake."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("unlock_if_idle", ROOT / "tools" / "unlock_if_idle.py")
unlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(unlock)

FAKE = """import sys, time
if sys.argv[1:] == ["work"]:
    time.sleep(120)
open(sys.argv[0] + ".calls", "a").write(" ".join(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def fake_snakemake(tmp_path):
    """An executable called snakemake: `snakemake work` runs (sleeps), anything else is logged."""
    exe = tmp_path / "bin" / "snakemake"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\n" + FAKE)
    exe.chmod(0o755)
    return exe


def test_snakemake_command_lines_are_recognised():
    assert unlock.is_snakemake(["snakemake", "--cores", "all"])
    assert unlock.is_snakemake(["/p/.venv/bin/python", "/p/.venv/bin/snakemake", "--cores", "2"])
    assert unlock.is_snakemake(["python3", "-m", "snakemake"])
    assert not unlock.is_snakemake(["python", "tools/unlock_if_idle.py", ".venv/bin/snakemake"])
    assert not unlock.is_snakemake(["actionrepro", "train", "snakemake"])


def test_unlocks_after_a_killed_run_but_not_while_one_runs_here(tmp_path, monkeypatch, fake_snakemake):
    work = tmp_path / "work"
    (work / ".snakemake" / "locks").mkdir(parents=True)
    (work / ".snakemake" / "locks" / "0.input.lock").write_text("x")
    monkeypatch.chdir(work)
    calls = Path(str(fake_snakemake) + ".calls")

    running = subprocess.Popen([sys.executable, str(fake_snakemake), "work"], cwd=work)
    try:
        deadline = time.monotonic() + 30
        while not unlock.snakemakes_in(work.resolve()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert unlock.snakemakes_in(work.resolve()) == [running.pid]
        assert unlock.snakemakes_in(tmp_path.resolve()) == []  # one elsewhere does not count
        assert unlock.main([str(fake_snakemake), "--configfile", "c.yaml"]) == 0
        assert not calls.exists()  # never unlocked under a running Snakemake
    finally:
        running.kill()
        running.wait()

    assert unlock.main([str(fake_snakemake), "--configfile", "c.yaml"]) == 0
    assert calls.read_text() == "--unlock --configfile c.yaml\n"
