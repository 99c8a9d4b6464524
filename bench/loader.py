"""Benchmark: training clips from the frame store against decoding each clip from the video.

Not a test: prints a table and, last, one JSON line. Builds its own UCF101-like videos (MPEG-4 Part 2
in AVI, 320x240, 25 fps, 7 s, textured background panning under a moving object) in a temporary
folder, stores them at short side 256 with the project's decode step, then measures, on one core
with one thread, a TSN training clip (8 segments x 1 frame, 224x224, multi-scale crop + flip +
ImageNet normalisation):
  store      VideoClipDataset(..., mode="train")[i]: 8 JPEG reads from the frame store
  on-the-fly what mmaction2's video pipeline does per clip: open decord.VideoReader, get_batch of
             the same 8 sampled indices, resize the short side to 256, then the same augmentation
Both run interleaved clip by clip (a busy machine slows both alike), timed in wall-clock and in CPU
time (process_time: what one core spends, unaffected by other jobs); the median round counts.

    .venv/bin/python bench/loader.py [--videos 16] [--frames 175] [--clips 160] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # tests.videos, the video writer the tests use
sys.path.insert(0, str(ROOT / "src"))

from actionrepro import paths  # noqa: E402
from actionrepro.data import dataset as D  # noqa: E402
from actionrepro.data import sampling  # noqa: E402
from actionrepro.steps import decode as decode_step  # noqa: E402
from actionrepro.inputs import InputSpec  # noqa: E402
from tests.videos import make_frames, write_avi  # noqa: E402

DATASET = "synth_ucf101"
SHORT_SIDE, QUALITY = 256, 90
CLASSES = ["ApplyEyeMakeup", "Archery", "BabyCrawling", "HandstandPushups"]
SPEC = InputSpec(segments=8, frames_per_segment=1, size=224)
PARAMS = {"seed": 0, "augment": {"scales": [1.0, 0.875, 0.75, 0.66], "hflip": {DATASET: True}},
          "decode": {"short_side": SHORT_SIDE, "jpeg_quality": QUALITY, "timeout_s": 300, "max_bad_fraction": 0.0}}


def build(videos: int, frames: int) -> None:
    """UCF101-named AVIs under data/videos/<ds>, their manifests, and the decode step's frame store."""
    rows = []
    for i in range(videos):
        cls = CLASSES[i % len(CLASSES)]
        stem = cls.replace("Handstand", "HandStand")
        rel = f"{cls}/v_{stem}_g{i // len(CLASSES) + 1:02d}_c01.avi"
        write_avi(paths.videos_dir(DATASET) / rel, make_frames(frames, 240, 320, seed=i), fps=25)
        rows.append({"video_id": rel[:-4], "path": rel, "label": CLASSES.index(cls), "class_name": cls,
                     "subset": "train"})
    paths.manifests_dir(DATASET).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(paths.manifests_dir(DATASET) / "split1.csv", index=False)
    pd.DataFrame({"label": range(len(CLASSES)), "class_name": CLASSES}).to_csv(
        paths.manifests_dir(DATASET) / "classes.csv", index=False)
    decode_step.decode_dataset(DATASET, PARAMS, workers=min(2, len(os.sched_getaffinity(0))))


def onthefly_clip(path: str, index: int, epoch: int) -> torch.Tensor:
    """One training clip decoded from the video itself, as a video-reading pipeline does per item."""
    import decord

    rng = np.random.default_rng([PARAMS["seed"], epoch, index])
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    idx = sampling.segment_indices(len(reader), SPEC.segments, SPEC.frames_per_segment, "train", rng)
    frames = torch.from_numpy(reader.get_batch(idx.tolist()).asnumpy()).permute(0, 3, 1, 2)
    frames = F.resize(frames, SHORT_SIDE, antialias=True)
    box, flip = D.train_geometry(frames.shape[-2], frames.shape[-1], PARAMS["augment"]["scales"], True, rng)
    return D.normalise_rgb(D.apply_geometry(frames, box, flip, SPEC.size))


def timed_pair(fns: dict, clips: int, videos: int, epoch: int) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per clip of each method over the same `clips` clips, interleaved clip by
    clip so that a load spike on a shared machine hits both methods alike."""
    wall, cpu = dict.fromkeys(fns, 0.0), dict.fromkeys(fns, 0.0)
    for k in range(clips):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            out = fn(k % videos, epoch + k // videos)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
            assert out.shape == (SPEC.frames, 3, SPEC.size, SPEC.size)
    return {name: {"wall": wall[name] / clips, "cpu": cpu[name] / clips} for name in fns}


def store_breakdown(data: D.VideoClipDataset, clips: int) -> dict[str, float]:
    """CPU ms per clip of the store path's parts: read+decode 8 JPEGs, crop+resize+flip, normalise."""
    parts = {"read": 0.0, "geometry": 0.0, "normalise": 0.0}
    for k in range(clips):
        i = k % len(data)
        row = data._rows[i]
        rng = data._generator(i)
        idx, _ = data._indices(row, rng)
        t0 = time.process_time()
        frames = data._read(data.frames_root / row["store_path"], idx)
        t1 = time.process_time()
        box, flip = D.train_geometry(frames.shape[-2], frames.shape[-1], data.scales, data.hflip, rng)
        out = D.apply_geometry(frames, box, flip, SPEC.size)
        t2 = time.process_time()
        D.normalise_rgb(out)
        t3 = time.process_time()
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[name] += dt
    return {name: 1000 * s / clips for name, s in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=175, help="frames per video (175 = 7 s at 25 fps)")
    parser.add_argument("--clips", type=int, default=160, help="clips per method per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    t_all = time.perf_counter()
    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        os.chdir(tmp)
        t = time.perf_counter()
        build(args.videos, args.frames)
        build_s = time.perf_counter() - t
        index = pd.read_csv(paths.frames_dir(DATASET) / "index.csv", dtype={"path": str})
        height, width = int(index.height[0]), int(index.width[0])
        kb_per_frame = sum((paths.frames_dir(DATASET) / p).stat().st_size
                           for p in index.store_path) / index.num_frames.sum() / 1024

        os.sched_setaffinity(0, {cpus[0]})
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        data = D.VideoClipDataset(DATASET, 1, "train", SPEC, PARAMS, mode="train")
        videos = [str(paths.videos_dir(DATASET) / p) for p in data.videos.path]

        def from_store(i: int, epoch: int) -> torch.Tensor:
            data.set_epoch(epoch)
            return data[i]["rgb"]

        def from_video(i: int, epoch: int) -> torch.Tensor:
            return onthefly_clip(videos[i], i, epoch)

        methods = {"store": from_store, "onthefly": from_video}
        timed_pair(methods, len(videos), len(videos), 0)  # warm-up: page cache, readers, kernels
        rounds = [timed_pair(methods, args.clips, len(videos), 100 * (r + 1)) for r in range(args.rounds)]
        breakdown = store_breakdown(data, args.clips)
        os.sched_setaffinity(0, set(cpus))
        os.chdir(ROOT)

    ratio = {kind: [r["onthefly"][kind] / r["store"][kind] for r in rounds] for kind in ("cpu", "wall")}
    median = sorted(range(len(rounds)), key=lambda r: ratio["cpu"][r])[len(rounds) // 2]
    pick = rounds[median]
    print(f"\n{args.videos} videos x {args.frames} frames, 320x240 MPEG-4 Part 2 AVI (built and decoded in "
          f"{build_s:.1f} s); store at {width}x{height}, JPEG q{QUALITY}, {kb_per_frame:.1f} KB/frame")
    print(f"TSN training clip: {SPEC.segments} segments x 1 frame, {SPEC.size}x{SPEC.size}, multi-scale crop "
          f"{PARAMS['augment']['scales']}, flip, ImageNet normalisation; 1 core, 1 thread; "
          f"{args.rounds} rounds x {args.clips} clips, methods interleaved clip by clip\n")
    print(f"{'round':>5s} | {'store ms/clip':>20s} | {'on-the-fly ms/clip':>20s} | {'ratio':>12s}")
    print(f"{'':5s} | {'CPU':>9s} {'wall':>10s} | {'CPU':>9s} {'wall':>10s} | {'CPU':>5s} {'wall':>6s}")
    for r, row in enumerate(rounds):
        print(f"{r + 1:5d} | {1000 * row['store']['cpu']:9.2f} {1000 * row['store']['wall']:10.2f} | "
              f"{1000 * row['onthefly']['cpu']:9.2f} {1000 * row['onthefly']['wall']:10.2f} | "
              f"{ratio['cpu'][r]:5.2f} {ratio['wall'][r]:6.2f}")
    print(f"\nmedian round (by CPU ratio): store (VideoClipDataset from the frame store) "
          f"{1 / pick['store']['cpu']:.1f} clips per CPU-second; on-the-fly (decord VideoReader + get_batch + "
          f"same augmentation) {1 / pick['onthefly']['cpu']:.1f}")
    print("store path, CPU ms/clip: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))
    result = {
        "store_vs_onthefly": round(ratio["cpu"][median], 2),
        "store_vs_onthefly_wall": round(ratio["wall"][median], 2),
        "store_vs_onthefly_rounds_cpu": [round(x, 2) for x in ratio["cpu"]],
        "store_clips_per_s": round(1 / pick["store"]["cpu"], 1),
        "onthefly_clips_per_s": round(1 / pick["onthefly"]["cpu"], 1),
        "store_clips_per_s_wall": round(1 / pick["store"]["wall"], 1),
        "onthefly_clips_per_s_wall": round(1 / pick["onthefly"]["wall"], 1),
        "store_breakdown_cpu_ms": {k: round(v, 2) for k, v in breakdown.items()},
        "videos": args.videos,
        "frames_per_video": args.frames,
        "store_kb_per_frame": round(kb_per_frame, 1),
        "bench_seconds": round(time.perf_counter() - t_all, 1),
    }
    print(f"\nstore_vs_onthefly = {result['store_vs_onthefly']} in CPU time ({result['store_vs_onthefly_wall']} wall; "
          f"target >= 3.5); total bench time {result['bench_seconds']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
