"""The decode step: what it stores, what it quarantines and why, timeouts, resuming, failing loudly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from actionrepro import config, paths
from actionrepro.data import decode
from actionrepro.data.decode import avi_declared_frames, store_relpath, target_size
from actionrepro.steps.decode import decode_dataset
from actionrepro.data.store import FrameReader
from actionrepro.errors import ActionReproError, DataError
from tests.videos import damage_packets, make_fifo, truncate, write_garbage, write_video

DS = "synth_hmdb51"
AWKWARD = ["clap/#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi",
           "wave/Glory_&_Honor!_[HD]_(part 2)_wave_u_cm_np1_fr_med_0.avi",
           "wave/Bob's_video_wave_f_cm_np1_ri_med_1.avi"]


def params(**decode_cfg) -> dict:
    cfg = {"short_side": 48, "jpeg_quality": 90, "timeout_s": 20, "max_bad_fraction": 1.0}
    cfg.update(decode_cfg)
    return {"decode": cfg}


def video(rel: str) -> Path:
    return paths.videos_dir(DS) / rel


def write_splits(*splits: list[tuple[str, str]]) -> None:
    """split<k>.csv for each list of (path, subset), in the format the splits step writes."""
    folder = paths.manifests_dir(DS)
    folder.mkdir(parents=True, exist_ok=True)
    for k, rows in enumerate(splits, start=1):
        pd.DataFrame([{"video_id": p[:-4], "path": p, "label": 0, "class_name": p.split("/")[0], "subset": s}
                      for p, s in rows]).to_csv(folder / f"split{k}.csv", index=False)


def out(name: str) -> Path:
    return paths.frames_dir(DS) / name


def sequential_decord(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    return np.stack([reader.next().asnumpy() for _ in range(len(reader))])


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# JPEG tolerance, stated: mean absolute error (0..255 scale) < 3 at q90, < 1.5 at q100.
@pytest.mark.parametrize("quality, tolerance", [(90, 3.0), (100, 1.5)])
def test_store_holds_what_decord_decodes_within_jpeg_tolerance(quality, tolerance):
    for i, rel in enumerate(AWKWARD[:2]):
        write_video(video(rel), frames=20, height=48, width=64, fps=25, seed=i)
    write_splits([(AWKWARD[0], "train"), (AWKWARD[1], "test")])
    decode_dataset(DS, params(jpeg_quality=quality), workers=2)

    index = pd.read_csv(out("index.csv"), dtype={"video_id": str, "path": str, "store_path": str})
    assert list(index.columns) == decode.INDEX_COLUMNS
    assert sorted(index.path) == sorted(AWKWARD[:2])
    for row in index.itertuples():
        assert row.store_path == row.path[:-4] + ".frames"
        assert (row.num_frames, row.header_frames, row.height, row.width, row.fps) == (20, 20, 48, 64, 25.0)
        reference = sequential_decord(video(row.path))
        stored = FrameReader(out(row.store_path)).read(range(row.num_frames))
        assert mae(stored, reference) < tolerance
    assert pd.read_csv(out("quarantine.csv")).empty
    summary = json.loads(out("summary.json").read_text())
    assert (summary["videos"], summary["stored"], summary["quarantined_total"]) == (2, 2, 0)
    assert summary["frames"] == 40


def test_frames_are_resized_to_the_short_side_keeping_the_aspect_ratio():
    assert target_size(240, 320, 256) == (256, 341)
    assert target_size(480, 360, 256) == (341, 256)
    assert target_size(256, 256, 128) == (128, 128)
    write_video(video("a/landscape.avi"), frames=8, height=48, width=64, seed=1)
    write_video(video("a/portrait.avi"), frames=8, height=64, width=48, seed=2)
    write_splits([("a/landscape.avi", "train"), ("a/portrait.avi", "test")])
    decode_dataset(DS, params(short_side=32, jpeg_quality=100), workers=1)

    index = pd.read_csv(out("index.csv")).set_index("path")
    assert tuple(index.loc["a/landscape.avi", ["height", "width"]]) == (32, 43)
    assert tuple(index.loc["a/portrait.avi", ["height", "width"]]) == (43, 32)
    stored = FrameReader(out("a/landscape.frames")).read(range(8))
    expected = np.stack([cv2.resize(f, (43, 32), interpolation=cv2.INTER_AREA)
                         for f in sequential_decord(video("a/landscape.avi"))])
    assert mae(stored, expected) < 1.5
    # 48 px wide is one of the widths decord reports as (H, W, 4); the store holds the real pixels
    import av

    reference = np.stack([f.to_ndarray(format="rgb24") for f in av.open(str(video("a/portrait.avi"))).decode(video=0)])
    expected = np.stack([cv2.resize(f, (32, 43), interpolation=cv2.INTER_AREA) for f in reference])
    assert mae(FrameReader(out("a/portrait.frames")).read(range(8)), expected) < 3.0  # misread rows: > 30


def test_padded_decord_rows_are_cropped_back_to_rgb():
    rgb = np.arange(2 * 48 * 3, dtype=np.uint8).reshape(2, 48, 3)
    padded = np.zeros((2, 48 * 4), np.uint8)
    padded[:, :144] = rgb.reshape(2, 144)
    np.testing.assert_array_equal(decode.rgb_frame(padded.reshape(2, 48, 4)), rgb)
    assert decode.rgb_frame(rgb) is rgb


def test_broken_videos_are_quarantined_with_their_reason_while_the_rest_are_stored():
    good = AWKWARD
    for i, rel in enumerate(good):
        write_video(video(rel), frames=20, height=48, width=64, seed=i)
    write_garbage(video("clap/garbage.avi"))                                   # no container at all
    write_video(video("clap/damaged.avi"), frames=40, height=48, width=64, seed=7)
    damage_packets(video("clap/damaged.avi"), 0.0, 0.05)                       # first frame garbled
    write_video(video("clap/cut.avi"), frames=60, height=48, width=64, seed=8)
    truncate(video("clap/cut.avi"), 0.4)                                       # ~11 of 60 frames left
    write_video(video("clap/short.avi"), frames=60, height=48, width=64, seed=9)
    truncate(video("clap/short.avi"), 0.9)                                     # ~56 of 60 frames left
    make_fifo(video("clap/a_never.avi"))                                       # open never returns
    video("clap/b_empty.avi").touch()                                          # decoded after the hang
    broken = ["clap/garbage.avi", "clap/damaged.avi", "clap/cut.avi", "clap/a_never.avi", "clap/b_empty.avi"]
    rows = [(p, "train") for p in good + broken + ["clap/short.avi"]]
    write_splits(rows)

    t0 = time.monotonic()
    decode_dataset(DS, params(timeout_s=3), workers=1)  # one worker: the hung one must be replaced
    elapsed = time.monotonic() - t0

    quarantine = pd.read_csv(out("quarantine.csv"), dtype=str, keep_default_na=False).set_index("path")
    assert quarantine.reason.to_dict() == {
        "clap/garbage.avi": "open_failed", "clap/damaged.avi": "decode_error", "clap/cut.avi": "truncated",
        "clap/a_never.avi": "timeout", "clap/b_empty.avi": "open_failed"}
    assert "DECORDError" in quarantine.detail["clap/damaged.avi"]
    assert "of the 60 frames its header claims" in quarantine.detail["clap/cut.avi"]
    assert "after 3 s" in quarantine.detail["clap/a_never.avi"]
    index = pd.read_csv(out("index.csv"), dtype={"path": str}).set_index("path")
    assert sorted(index.index) == sorted(good + ["clap/short.avi"])
    short = index.loc["clap/short.avi"]
    assert short.header_frames == 60 and 30 <= short.num_frames < 60
    assert FrameReader(out("clap/short.frames")).num_frames == short.num_frames
    for rel in broken:
        assert not out(str(store_relpath(rel))).exists()
    summary = json.loads(out("summary.json").read_text())
    assert summary["quarantined"] == {"open_failed": 2, "decode_error": 1, "truncated": 1, "timeout": 1,
                                      "no_frames": 0}
    assert summary["short_by_header"] == 1
    assert summary["splits"]["split1"]["train"] == {"videos": 9, "usable": 4}
    assert elapsed < 3 + 15  # the hang cost one timeout, not a stuck step


def test_max_bad_fraction_exceeded_fails_naming_the_videos_but_keeps_what_was_stored():
    write_video(video("a/good.avi"), frames=10, height=48, width=64)
    write_garbage(video("a/bad one.avi"))
    write_garbage(video("a/#bad two.avi"), seed=1)
    write_splits([("a/good.avi", "train"), ("a/bad one.avi", "train"), ("a/#bad two.avi", "test")])
    with pytest.raises(DataError) as err:
        decode_dataset(DS, params(max_bad_fraction=0.5), workers=2)
    message = str(err.value)
    assert "2 of 3 videos" in message and "decode.max_bad_fraction = 0.5" in message
    assert "a/bad one.avi: open_failed" in message and "a/#bad two.avi: open_failed" in message
    assert FrameReader(out("a/good.frames")).num_frames == 10
    assert not out("summary.json").exists()  # the step did not complete
    assert len(pd.read_csv(out("quarantine.csv"))) == 2


def test_missing_manifests_ask_to_run_splits_first():
    with pytest.raises(DataError, match=rf"run `actionrepro splits {DS}` first"):
        decode_dataset(DS, params(), workers=1)


def test_manifest_path_escaping_the_video_folder_is_rejected():
    write_splits([("../outside.avi", "train")])
    with pytest.raises(DataError, match="not relative to data/videos"):
        decode_dataset(DS, params(), workers=1)


def test_videos_in_several_splits_are_decoded_once_and_counted_per_split():
    for i, rel in enumerate(["a/x.avi", "a/y.avi", "b/z.avi"]):
        write_video(video(rel), frames=6, height=48, width=64, seed=i)
    write_splits([("a/x.avi", "train"), ("a/y.avi", "train"), ("b/z.avi", "test")],
                 [("a/x.avi", "test"), ("a/y.avi", "train"), ("b/z.avi", "train")])
    decode_dataset(DS, params(), workers=2)
    assert sorted(pd.read_csv(out("index.csv")).path) == ["a/x.avi", "a/y.avi", "b/z.avi"]
    summary = json.loads(out("summary.json").read_text())
    assert summary["videos"] == 3 and summary["this_run"]["decoded"] == 3
    assert summary["splits"] == {"split1": {"train": {"videos": 2, "usable": 2}, "test": {"videos": 1, "usable": 1}},
                                 "split2": {"train": {"videos": 2, "usable": 2}, "test": {"videos": 1, "usable": 1}}}


def test_rerun_redoes_only_missing_or_incomplete_stores_and_everything_when_settings_change():
    rels = [f"a/v{i}.avi" for i in range(4)]
    for i, rel in enumerate(rels):
        write_video(video(rel), frames=10, height=48, width=64, seed=i)
    write_splits([(rel, "train") for rel in rels])
    decode_dataset(DS, params(), workers=2)
    inode = {rel: out(str(store_relpath(rel))).stat().st_ino for rel in rels}

    out("a/v1.frames").unlink()                          # lost
    data = out("a/v2.frames").read_bytes()
    out("a/v2.frames").write_bytes(data[:len(data) // 2])  # torn
    out("summary.json").unlink()
    with open(out(decode.JOURNAL), "a") as fh:
        fh.write('{"video_id": "a/v0", "pa')           # a line torn by a kill
    decode_dataset(DS, params(), workers=2)
    summary = json.loads(out("summary.json").read_text())
    assert summary["this_run"] == {**summary["this_run"], "decoded": 2, "reused": 2}
    assert out("a/v0.frames").stat().st_ino == inode["a/v0.avi"]
    assert out("a/v3.frames").stat().st_ino == inode["a/v3.avi"]
    assert FrameReader(out("a/v1.frames")).num_frames == 10 and FrameReader(out("a/v2.frames")).num_frames == 10
    assert len(pd.read_csv(out("index.csv"))) == 4
    out("summary.json").unlink()
    decode_dataset(DS, params(), workers=2)  # the journal written after the torn line still reads
    assert json.loads(out("summary.json").read_text())["this_run"]["decoded"] == 0

    decode_dataset(DS, params(jpeg_quality=80), workers=2)  # new settings: nothing can be reused
    assert json.loads(out("summary.json").read_text())["this_run"]["decoded"] == 4


def test_killed_run_resumes_without_redoing_finished_videos(tmp_path):
    rels = [f"a/v{i}.avi" for i in range(3)]
    for i, rel in enumerate(rels):
        write_video(video(rel), frames=12, height=48, width=64, seed=i)
    make_fifo(video("a/zz_hang.avi"))  # sorted last (size 0): the run hangs there and is killed
    write_splits([(rel, "train") for rel in rels + ["a/zz_hang.avi"]])
    cfg = config.load(Path(__file__).resolve().parents[1] / "config" / "demo.yaml")
    cfg["decode"].update(short_side=48, timeout_s=120, max_bad_fraction=0.5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))

    proc = subprocess.Popen([sys.executable, "-m", "actionrepro", "decode", DS, "--threads", "1"],
                            cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stderr.log", "wb"))
    journal = out(decode.JOURNAL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) == 3:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
        assert len(journal.read_text().splitlines()) == 3, "the three good videos were not stored in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its forkserver and its workers, mid-run
        proc.wait()
    assert not out("summary.json").exists()
    inode = {rel: out(str(store_relpath(rel))).stat().st_ino for rel in rels}

    video("a/zz_hang.avi").unlink()  # the user fixes the hanging file
    write_video(video("a/zz_hang.avi"), frames=12, height=48, width=64, seed=9)
    decode_dataset(DS, cfg, workers=1)
    summary = json.loads(out("summary.json").read_text())
    assert summary["this_run"]["decoded"] == 1 and summary["this_run"]["reused"] == 3
    assert {rel: out(str(store_relpath(rel))).stat().st_ino for rel in rels} == inode
    assert summary["stored"] == 4
    leftovers = [p.name for p in paths.frames_dir(DS).rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_avi_header_count_survives_truncation_that_shortens_the_index(tmp_path):
    path = tmp_path / "v.avi"
    write_video(path, frames=60, height=48, width=64)
    assert avi_declared_frames(path) == 60
    truncate(path, 0.5)
    import decord

    assert len(decord.VideoReader(str(path), num_threads=1)) < 60  # ffmpeg rebuilt a shorter index
    assert avi_declared_frames(path) == 60
    write_garbage(tmp_path / "g.avi")
    assert avi_declared_frames(tmp_path / "g.avi") is None


def test_store_paths_mirror_awkward_video_names():
    assert str(store_relpath(AWKWARD[1])) == "wave/Glory_&_Honor!_[HD]_(part 2)_wave_u_cm_np1_fr_med_0.frames"
    assert str(store_relpath("clap/#20_x.AVI")) == "clap/#20_x.frames"
    assert str(store_relpath("a/b.c.avi")) == "a/b.c.frames"


def test_a_store_that_cannot_be_written_stops_the_step_instead_of_quarantining_the_video():
    write_video(video("a/v.avi"), frames=6, height=48, width=64)
    write_splits([("a/v.avi", "train")])
    paths.frames_dir(DS).mkdir(parents=True)
    out("a").write_text("a file where the class folder should be")
    with pytest.raises(ActionReproError, match=r"could not process .*a/v\.avi.*re-run") as err:
        decode_dataset(DS, params(), workers=1)
    assert not isinstance(err.value, DataError)
    assert not out("summary.json").exists()


def test_test_videos_are_deterministic_real_mpeg4_avi_with_motion(tmp_path):
    import av

    a = write_video(tmp_path / "a.avi", frames=10, height=48, width=64, seed=5)
    write_video(tmp_path / "b.avi", frames=10, height=48, width=64, seed=5)
    assert (tmp_path / "a.avi").read_bytes() == (tmp_path / "b.avi").read_bytes()
    assert (tmp_path / "a.avi").read_bytes()[8:12] == b"AVI "
    with av.open(str(tmp_path / "a.avi")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert mae(a[0], a[-1]) > 5  # things move between frames
    assert mae(sequential_decord(tmp_path / "a.avi"), a) < 8  # and survive the codec


def test_a_crashed_worker_is_replaced_and_its_video_quarantined(tmp_path):
    import multiprocessing
    import threading

    make_fifo(tmp_path / "hang.avi")
    write_video(tmp_path / "ok.avi", frames=6, height=48, width=64)
    tasks = [(str(tmp_path / "hang.avi"), str(tmp_path / "hang.frames"), 48, 90),
             (str(tmp_path / "ok.avi"), str(tmp_path / "ok.frames"), 48, 90)]

    def crash_the_worker():  # stands in for a segfault inside the decoder
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = [p for p in multiprocessing.active_children() if p.name == "actionrepro-decode"]
            if workers:
                time.sleep(0.5)  # let it block on the pipe
                os.kill(workers[0].pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=crash_the_worker)
    killer.start()
    records = {}
    t0 = time.monotonic()
    decode.run_pool(tasks, workers=1, timeout_s=60, on_result=lambda i, r: records.setdefault(i, r))
    killer.join()
    assert time.monotonic() - t0 < 30  # noticed at once, not after the 60 s timeout
    assert records[0]["reason"] == "decode_error" and "exit code -9" in records[0]["detail"]
    assert records[1]["status"] == "stored" and FrameReader(tmp_path / "ok.frames").num_frames == 6
