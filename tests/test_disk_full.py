"""A full disk anywhere: one clear DiskFullError naming the path and the space, the step stops at the
first failed write, nothing that looks finished is left, no temporary file stays, a re-run resumes."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
from pathlib import Path

import pytest
import torch
import yaml

from actionrepro import cli, io
from actionrepro.data import decode, flow, store
from actionrepro.engine import checkpoint
from actionrepro.errors import ActionReproError, DiskFullError
from actionrepro.io import atomic_path, atomic_write_json

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def temps(root: Path) -> list[str]:
    return [p.name for p in Path(root).rglob("*.tmp")]


def failing_writer(real, attempts: Path, fail_at: int):
    """store.write_encoded that logs each call to `attempts` and, at call `fail_at`, writes part of a
    temporary store and then fails with ENOSPC (as a full disk would)."""
    def write(path, parts, **kw):
        with open(attempts, "a") as fh:
            fh.write(f"{path}\n")
        if len(attempts.read_text().splitlines()) == fail_at:
            with atomic_path(path, needed=sum(len(p) for p in parts)) as tmp:
                tmp.write_bytes(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, parts, **kw)
    return write


# ---------------------------------------------------------------- the library piece
def test_enospc_edquot_and_torch_write_failures_are_recognised():
    assert io.is_disk_full(ENOSPC) and io.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert io.is_disk_full(RuntimeError("basic_ios::clear: iostream error"))
    assert io.is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))
    assert not io.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not io.is_disk_full(RuntimeError("shape mismatch"))


def test_atomic_write_on_a_full_disk_names_the_file_and_the_space_and_leaves_nothing(tmp_path, monkeypatch):
    def full_fsync(fd):
        raise ENOSPC

    monkeypatch.setattr("os.fsync", full_fsync)
    with pytest.raises(DiskFullError) as err:
        atomic_write_json(tmp_path / "summary.json", {"done": True})
    message = str(err.value)
    assert str(tmp_path / "summary.json") in message and "free" in message and "needed" in message
    assert err.value.free is not None and err.value.needed > 0
    assert list(tmp_path.iterdir()) == []


def test_a_write_failure_that_is_not_a_full_disk_stays_itself(tmp_path):
    with pytest.raises(OSError) as err:
        with atomic_path(tmp_path / "x"):
            raise OSError(errno.EACCES, "Permission denied")
    assert not isinstance(err.value, ActionReproError)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_error_survives_pickling_between_processes():
    import pickle

    err = pickle.loads(pickle.dumps(DiskFullError("/data/x", 10, 5, "note")))
    assert (err.path, err.needed, err.free, err.note) == ("/data/x", 10, 5, "note") and "note" in str(err)


# ---------------------------------------------------------------- checkpoints and the train step
def test_checkpoint_save_on_a_full_disk_is_a_disk_full_error_not_basic_ios(tmp_path, monkeypatch):
    def torch_save_on_full_disk(obj, f):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", torch_save_on_full_disk)
    with pytest.raises(DiskFullError, match="checkpoint.pt") as err:
        checkpoint.save(tmp_path / "checkpoint.pt", {"model": {"w": torch.zeros(256)}})
    assert err.value.needed == 1024
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_full_disk_prints_one_message_and_leaves_nothing_finished(tmp_path, monkeypatch, capsys):
    from tests.test_train import demo_params, install_fakes

    monkeypatch.chdir(tmp_path)
    install_fakes(monkeypatch, [])
    Path("params.yaml").write_text(yaml.safe_dump(demo_params(epochs=2)))
    saves = []

    def torch_save_on_full_disk(obj, f):
        saves.append(f)
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", torch_save_on_full_disk)
    code = cli.main(["train", "synth_ucf101", "1", "tsn", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == DiskFullError.exit_code != 0
    assert "Traceback" not in err and "basic_ios" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "no space left" in lines[0] and "checkpoint.pt" in lines[0] and "free" in lines[0]
    assert len(saves) == 1  # stopped at the first failed save: no later epoch tried
    run = Path("runs/synth_ucf101/split1/tsn/dense")
    assert not (run / "metrics.json").exists() and not (run / "checkpoint.pt").exists()
    assert temps(run) == []


# ---------------------------------------------------------------- decode
@pytest.fixture
def fork_pool(monkeypatch):
    """Decode workers forked from this process, so they see the test's monkeypatches."""
    monkeypatch.setattr(decode, "_context", lambda: mp.get_context("fork"))


def test_decode_on_a_full_disk_stops_at_the_first_failure_and_resumes(tmp_path, monkeypatch, fork_pool):
    from tests.test_decode import out, params, video, write_splits
    from tests.videos import write_video
    from actionrepro.steps.decode import decode_dataset

    monkeypatch.chdir(tmp_path)
    rels = [f"a/v{i}.avi" for i in range(3)]
    for i, rel in enumerate(rels):
        write_video(video(rel), frames=6 + 6 * (3 - i), height=48, width=64, seed=i)  # v0 is largest: first
    write_splits([(rel, "train") for rel in rels])
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setattr(store, "write_encoded", failing_writer(store.write_encoded, attempts, fail_at=2))

    with pytest.raises(DiskFullError) as err:
        decode_dataset("synth_hmdb51", params(), workers=1)
    message = str(err.value)
    assert "v1.frames" in message and "free" in message and "1 finished videos are kept" in message
    assert len(attempts.read_text().splitlines()) == 2  # v2 was never attempted
    assert not out("summary.json").exists() and not out("index.csv").exists()
    assert temps(out("")) == [] and not out("a/v1.frames").exists()
    assert [json.loads(line)["path"] for line in out(decode.JOURNAL).read_text().splitlines()] == ["a/v0.avi"]

    monkeypatch.undo()  # space freed: the re-run resumes
    monkeypatch.chdir(tmp_path)
    decode_dataset("synth_hmdb51", params(), workers=1)
    summary = json.loads(out("summary.json").read_text())
    assert summary["this_run"] == {**summary["this_run"], "reused": 1, "decoded": 2} and summary["stored"] == 3


def test_decode_worker_reports_a_full_disk_as_its_own_status(tmp_path, monkeypatch):
    from tests.videos import write_video

    write_video(tmp_path / "v.avi", frames=6, height=48, width=64)
    monkeypatch.setattr(store, "write_encoded", failing_writer(store.write_encoded, tmp_path / "log", 1))
    record = decode.run_task((str(tmp_path / "v.avi"), str(tmp_path / "v.frames"), 48, 90))
    assert record["status"] == "disk_full" and record["path"] == str(tmp_path / "v.frames")
    assert record["needed"] > 0 and record["free"] is not None
    assert temps(tmp_path) == []


# ---------------------------------------------------------------- flow
@pytest.mark.parametrize("workers", [1, 2])
def test_flow_on_a_full_disk_stops_at_the_first_failure_instead_of_blaming_the_frames(tmp_path, monkeypatch,
                                                                                        workers):
    from tests.test_flow import make_frame_store, moving_square, params
    from actionrepro.steps import flow as flow_step

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flow, "_context", lambda: mp.get_context("fork"))
    make_frame_store(Path("data/frames/synth_ucf101"),
                     {f"v{i}": moving_square(26 - 2 * i, 1, 0) for i in range(12)})  # v0 longest: first
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setattr(store, "write_encoded", failing_writer(store.write_encoded, attempts, fail_at=1))

    with pytest.raises(DiskFullError) as err:
        flow_step.compute_flow("synth_ucf101", params(), workers=workers)
    message = str(err.value)
    assert "free" in message and "frame store" not in message and "store_error" not in message
    root = Path("data/flow/synth_ucf101")
    started = len(attempts.read_text().splitlines())
    # in-process: nothing after the failure; in a pool, only what was already handed to a worker
    # (ProcessPoolExecutor keeps workers + 1 calls queued), never the rest of the videos
    assert started == 1 if workers == 1 else started <= 2 * workers + 1
    assert not (root / "summary.json").exists() and not (root / "index.csv").exists()
    assert temps(root) == []

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    flow_step.compute_flow("synth_ucf101", params(), workers=1)
    assert json.loads((root / "summary.json").read_text())["stored"] == 12


# ---------------------------------------------------------------- temporaries of failed builds
def test_report_start_removes_half_written_figures_of_a_failed_build(tmp_path, monkeypatch):
    import types

    from actionrepro.steps import report

    figures = tmp_path / "reports" / "figures"
    figures.mkdir(parents=True)
    (figures / ".accuracy_vs_gflops.png.k3j2.tmp").write_bytes(b"half")
    (figures / "accuracy_vs_gflops.png").write_bytes(b"whole")
    seen = []
    monkeypatch.setattr(report, "build_report", lambda params, out, params_file: seen.append(sorted(
        p.name for p in figures.iterdir())))
    report.run(types.SimpleNamespace(out=tmp_path / "reports", params="params.yaml"), {})
    assert seen == [["accuracy_vs_gflops.png"]]
