from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from actionrepro.data import flow, store
from actionrepro.steps import flow as flow_step
from actionrepro.errors import DataError

H, W, SIDE = 64, 80, 26


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random texture: gradients everywhere, so flow is well defined."""
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32) * 255
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 1.8 - 100, 0, 255)


def moving_square(num_frames: int, dx: int, dy: int) -> np.ndarray:
    """RGB frames: a textured square translating by (dx, dy) px per frame over a static background."""
    background, patch = texture(H, W, 1), texture(SIDE, SIDE, 2)
    out = np.empty((num_frames, H, W, 3), np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        y, x = 16 + dy * t, 20 + dx * t
        frame[y:y + SIDE, x:x + SIDE] = patch
        out[t] = np.repeat(frame[..., None], 3, axis=2).astype(np.uint8)
    return out


def square_interior(t: int, dx: int, dy: int, margin: int = 6) -> tuple[slice, slice]:
    y, x = 16 + dy * t, 20 + dx * t
    return slice(y + margin, y + SIDE - margin), slice(x + margin, x + SIDE - margin)


def params(algorithm: str = "farneback", bound: float = 20) -> dict:
    return {"flow": {"algorithm": algorithm, "bound": bound}, "decode": {"jpeg_quality": 95}}


def make_frame_store(root: Path, videos: dict[str, np.ndarray], quarantined: list[str] = ()) -> None:
    """A finished decode output: stores, index.csv, quarantine.csv, summary.json."""
    rows = []
    for name, frames in videos.items():
        rel = f"Cls/{name}.frames"
        store.write_store(root / rel, frames, quality=95)
        rows.append({"video_id": name, "path": f"Cls/{name}.avi", "store_path": rel, "num_frames": len(frames),
                     "header_frames": len(frames), "height": frames.shape[1], "width": frames.shape[2], "fps": 25.0})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    pd.DataFrame([{"video_id": q, "path": f"Cls/{q}.avi", "reason": "open_failed", "detail": "x"} for q in quarantined],
                 columns=["video_id", "path", "reason", "detail"]).to_csv(root / "quarantine.csv", index=False)
    (root / "summary.json").write_text("{}")


def test_quantisation_maps_bound_to_byte_range_and_clips():
    q = flow.quantise(np.array([-20.0, 0.0, 20.0, 25.0, -30.0, 10.0]), 20)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 128, 255, 255, 0, 191]  # 30 * 255 / 40 = 191.25
    v = np.linspace(-20, 20, 101)
    assert np.abs(flow.dequantise(flow.quantise(v, 20), 20) - v).max() <= 20 / 255 + 1e-4  # half a step


@pytest.mark.parametrize("algorithm", ["tvl1", "farneback"])
def test_translating_square_gives_its_displacement_with_the_right_sign(tmp_path, algorithm):
    dx, dy = 3, -2
    src, dst = tmp_path / "v.frames", tmp_path / "f.frames"
    store.write_store(src, moving_square(4, dx, dy), quality=95)
    record = flow.flow_video(src, dst, algorithm, bound=20, quality=95)
    assert record["status"] == "stored" and record["num_frames"] == 3
    with store.FrameReader(dst) as reader:
        assert (reader.num_frames, reader.height, reader.width, reader.channels) == (3, H, W, 2)
        q = reader.read(range(3))
    for t in range(3):
        v = flow.dequantise(q[t], 20)
        ys, xs = square_interior(t, dx, dy)
        assert np.median(v[ys, xs, 0]) == pytest.approx(dx, abs=0.4)
        assert np.median(v[ys, xs, 1]) == pytest.approx(dy, abs=0.4)
        # the static background far from the square does not move
        assert np.abs(np.median(v[:, 70:, :], axis=(0, 1))).max() < 0.3


@pytest.mark.parametrize("algorithm", ["tvl1", "farneback"])
def test_displacement_beyond_the_bound_is_clipped_to_0_and_255(tmp_path, algorithm):
    src, dst = tmp_path / "v.frames", tmp_path / "f.frames"
    store.write_store(src, moving_square(3, 3, -3), quality=95)
    flow.flow_video(src, dst, algorithm, bound=1.5, quality=95)
    q = store.FrameReader(dst).read([0])[0]
    ys, xs = square_interior(0, 3, -3)
    assert np.median(q[ys, xs, 0]) >= 250  # +3 px clipped to +1.5 -> 255 (up to JPEG noise)
    assert np.median(q[ys, xs, 1]) <= 5    # -3 px clipped to -1.5 -> 0
    assert abs(int(np.median(q[:, 70:, 0])) - 128) <= 3


def test_compute_flow_writes_index_summary_and_quarantine_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames_root = Path("data/frames/synth_ucf101")
    make_frame_store(frames_root, {"a": moving_square(5, 2, 1), "b": moving_square(3, -2, 0),
                                   "single": moving_square(1, 0, 0)}, quarantined=["broken"])
    flow_step.compute_flow("synth_ucf101", params(), workers=2)

    out = Path("data/flow/synth_ucf101")
    index = pd.read_csv(out / "index.csv")
    assert index.set_index("video_id").num_frames.to_dict() == {"a": 4, "b": 2}
    assert (index.height == H).all() and (index.width == W).all()
    bad = pd.read_csv(out / "quarantine.csv")
    assert bad.video_id.tolist() == ["single"] and bad.reason.tolist() == ["too_short"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "farneback" and summary["bound"] == 20
    assert summary["stored"] == 2 and summary["flow_frames"] == 6
    assert summary["quarantined"] == {"too_short": 1} and summary["skipped_quarantined_by_decode"] == 1
    assert summary["this_run"]["computed"] == 2 and summary["this_run"]["ms_per_flow_frame"] > 0
    with store.FrameReader(out / "Cls/b.frames") as reader:
        x = flow.dequantise(reader.read([0]), 20)[0, ..., 0]
    ys, xs = square_interior(0, -2, 0)
    assert np.median(x[ys, xs]) == pytest.approx(-2, abs=0.4)

    # a second run reuses the finished stores
    mtime = (out / "Cls/a.frames").stat().st_mtime_ns
    flow_step.compute_flow("synth_ucf101", params(), workers=1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["reused"] == 2 and summary["this_run"]["computed"] == 0
    assert (out / "Cls/a.frames").stat().st_mtime_ns == mtime

    # a killed run's partial store is recomputed, and a changed bound recomputes everything
    (out / "Cls/a.frames").write_bytes((out / "Cls/a.frames").read_bytes()[:100])
    flow_step.compute_flow("synth_ucf101", params(), workers=1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["reused"] == 1 and summary["this_run"]["computed"] == 1
    assert store.is_complete(out / "Cls/a.frames")
    flow_step.compute_flow("synth_ucf101", params(bound=10), workers=1)
    assert json.loads((out / "summary.json").read_text())["this_run"]["computed"] == 2


def test_compute_flow_without_finished_decode_names_the_step_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="actionrepro decode synth_hmdb51"):
        flow_step.compute_flow("synth_hmdb51", params(), workers=1)


def test_unreadable_frame_store_is_an_error_and_no_summary_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames_root = Path("data/frames/synth_ucf101")
    make_frame_store(frames_root, {"a": moving_square(3, 1, 0), "b": moving_square(3, 1, 0)})
    (frames_root / "Cls/b.frames").write_bytes(b"not a store")
    with pytest.raises(DataError, match=r"(?s)Cls/b\.avi.*re-run `actionrepro decode synth_ucf101`"):
        flow_step.compute_flow("synth_ucf101", params(), workers=1)
    out = Path("data/flow/synth_ucf101")
    assert not (out / "summary.json").exists()
    assert store.is_complete(out / "Cls/a.frames")  # the finished video is kept for the re-run
