"""Benchmark: the PyTorch TV-L1 (data/tvl1.py) against OpenCV's DualTVL1OpticalFlow, fidelity and speed.

Not a test: prints a table and, last, one JSON line. Builds frame pairs of 340x256 (UCF101 frames at
short side 256) with real texture and known motion, then runs both implementations on the same pairs
in one run:
  sources    synthetic: a frame of the project's synthetic videos (synthetic.render_clip, textured
             background, object, sensor noise); natural: crops of the two photographs scikit-learn
             ships (load_sample_images: china, flower)
  motion     each pair's second frame is the first one's source image resampled (bicubic, then
             rounded to uint8 like a decoded frame) under a random smooth affine motion about the
             crop centre: translation up to +-2.5 px, rotation up to +-1.5 deg, scale 1 +-1.5 %,
             all sub-pixel; the true flow is that affine map minus the identity
  fidelity   mean end-point error (EPE, px, whole frame) of ours against OpenCV's flow, and of each
             against the true motion; for scale, OpenCV against itself when the first frame moves by
             at most +-0.001 grey level (float input): how far TV-L1's result moves on a change that
             small (its many warps and median filters amplify rounding-sized differences)
  speed      pairs per CPU-second of OpenCV (one thread) and of ours on the CPU (torch with --threads
             intra-op threads, --batch pairs per call), and pairs/s of ours on CUDA when present

    .venv/bin/python bench/flow.py [--pairs 6] [--batch 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from actionrepro.data import synthetic, tvl1  # noqa: E402

HEIGHT, WIDTH = 256, 340
MARGIN = 24  # source images are this much larger on each side: the moved frame has content at its border
MAX_SHIFT, MAX_ROTATION_DEG, MAX_SCALE = 2.5, 1.5, 0.015


# ---------------------------------------------------------------- frame pairs with known motion

def natural_images() -> list[np.ndarray]:
    """The two photographs shipped with scikit-learn (427x640), grayscale float32."""
    from sklearn.datasets import load_sample_images

    return [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) for img in load_sample_images().images]


def synthetic_image(index: int, seed: int) -> np.ndarray:
    """First frame of a synthetic clip, rendered MARGIN px larger than the crop on each side."""
    rng = np.random.default_rng(seed + index)
    motion = synthetic.PAIR_MOTIONS[index % len(synthetic.PAIR_MOTIONS)]
    frame = synthetic.render_clip(motion, index, WIDTH + 2 * MARGIN, HEIGHT + 2 * MARGIN, 1, rng)[0]
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def random_motion(rng: np.random.Generator, centre: tuple[float, float]) -> np.ndarray:
    """2x3 affine map taking a point of the first frame to where it is in the second."""
    angle = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)
    scale = 1 + rng.uniform(-MAX_SCALE, MAX_SCALE)
    affine = cv2.getRotationMatrix2D(centre, angle, scale)
    affine[:, 2] += rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    return affine


def make_pair(image: np.ndarray, top: int, left: int, affine: np.ndarray):
    """(prev uint8, next uint8, true flow float32 (H, W, 2)) for a HEIGHTxWIDTH crop of `image`.

    Coordinates are those of `image`; next(q) = image(affine^-1 q), so a point p of prev is at
    affine(p) in next and the flow at p is affine(p) - p.
    """
    ys, xs = np.mgrid[top:top + HEIGHT, left:left + WIDTH].astype(np.float64)
    inverse = cv2.invertAffineTransform(affine)
    src_x = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]).astype(np.float32)
    src_y = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]).astype(np.float32)
    nxt = cv2.remap(image, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    prev = image[top:top + HEIGHT, left:left + WIDTH]
    flow = np.stack([affine[0, 0] * xs + affine[0, 1] * ys + affine[0, 2] - xs,
                     affine[1, 0] * xs + affine[1, 1] * ys + affine[1, 2] - ys], -1).astype(np.float32)
    as_uint8 = lambda a: np.clip(np.rint(a), 0, 255).astype(np.uint8)  # noqa: E731
    return as_uint8(prev), as_uint8(nxt), flow


def build_pairs(source: str, count: int, seed: int) -> list[tuple]:
    """`count` pairs of one source, each with its own crop and motion."""
    rng = np.random.default_rng(seed)
    photos = natural_images() if source == "natural" else None
    pairs = []
    for i in range(count):
        image = photos[i % len(photos)] if photos else synthetic_image(i, seed)
        top = int(rng.integers(MARGIN, image.shape[0] - HEIGHT - MARGIN + 1))
        left = int(rng.integers(MARGIN, image.shape[1] - WIDTH - MARGIN + 1))
        centre = (left + WIDTH / 2 - 0.5, top + HEIGHT / 2 - 0.5)
        pairs.append(make_pair(image, top, left, random_motion(rng, centre)))
    return pairs


# ---------------------------------------------------------------- the two implementations

def run_opencv(pairs: list[tuple]) -> tuple[list[np.ndarray], float, float]:
    """OpenCV DualTVL1 (defaults, one thread) on each pair: (flows, wall s, CPU s)."""
    cv2.setNumThreads(1)
    calc = cv2.optflow.DualTVL1OpticalFlow_create()
    t, c = time.perf_counter(), time.process_time()
    flows = [calc.calc(prev, nxt, None) for prev, nxt, _ in pairs]
    return flows, time.perf_counter() - t, time.process_time() - c


def run_ours(pairs: list[tuple], batch: int, device: str) -> tuple[list[np.ndarray], float, float]:
    """tvl1_batch on `batch` pairs per call on `device`: (flows, wall s, CPU s); transfers included."""
    flows = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t, c = time.perf_counter(), time.process_time()
    for first in range(0, len(pairs), batch):
        chunk = pairs[first:first + batch]
        prev = torch.from_numpy(np.stack([p for p, _, _ in chunk])).to(device).float()
        nxt = torch.from_numpy(np.stack([n for _, n, _ in chunk])).to(device).float()
        flows.extend(tvl1.tvl1_batch(prev, nxt).cpu().numpy())
    sync()
    return flows, time.perf_counter() - t, time.process_time() - c


def run_opencv_jittered(pairs: list[tuple], seed: int) -> list[np.ndarray]:
    """OpenCV DualTVL1 on float frames (0..1) whose first frame is jittered by +-0.001 grey level."""
    cv2.setNumThreads(1)
    calc = cv2.optflow.DualTVL1OpticalFlow_create()
    rng = np.random.default_rng(seed)
    flows = []
    for prev, nxt, _ in pairs:
        jitter = rng.uniform(-1e-3, 1e-3, prev.shape).astype(np.float32)
        flows.append(calc.calc((prev.astype(np.float32) + jitter) / 255, nxt.astype(np.float32) / 255, None))
    return flows


def warm_up(device: str) -> None:
    """One small call first, so lazy initialisation is not timed."""
    prev = torch.rand(1, 64, 80, device=device) * 255
    tvl1.tvl1_batch(prev, prev.roll(1, 2))


def epe(a: np.ndarray, b: np.ndarray) -> float:
    """Mean end-point error between two (H, W, 2) flows, in px."""
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


def mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values))


# ---------------------------------------------------------------- report

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6, help="pairs per source (two sources)")
    parser.add_argument("--batch", type=int, default=3, help="pairs per tvl1_batch call on the CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for ours on the CPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t_all = time.perf_counter()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    load0 = os.getloadavg()[0]
    warm_up("cpu")
    if cuda:
        warm_up("cuda")

    rows, totals = {}, {"opencv": [0.0, 0.0], "ours": [0.0, 0.0], "gpu": [0.0, 0.0]}
    all_vs_cv, all_true_ours, all_true_cv, all_gpu_vs_cpu, all_floor = [], [], [], [], []
    for source in ("synthetic", "natural"):
        pairs = build_pairs(source, args.pairs, args.seed)
        truth = [f for _, _, f in pairs]
        cv_flows, cv_wall, cv_cpu = run_opencv(pairs)
        ours, our_wall, our_cpu = run_ours(pairs, args.batch, "cpu")
        floor = [epe(a, b) for a, b in zip(run_opencv_jittered(pairs, args.seed), cv_flows)]
        vs_cv = [epe(a, b) for a, b in zip(ours, cv_flows)]
        true_ours = [epe(a, t) for a, t in zip(ours, truth)]
        true_cv = [epe(b, t) for b, t in zip(cv_flows, truth)]
        row = {"pairs": len(pairs), "epe_vs_opencv": mean(vs_cv), "epe_vs_opencv_max": max(vs_cv),
               "epe_opencv_jitter": mean(floor),
               "epe_true_ours": mean(true_ours), "epe_true_opencv": mean(true_cv),
               "true_motion_px": mean(float(np.sqrt((t ** 2).sum(-1)).mean()) for t in truth),
               "opencv_cpu_s": cv_cpu, "opencv_wall_s": cv_wall, "ours_cpu_s": our_cpu, "ours_wall_s": our_wall}
        if cuda:
            gpu, gpu_wall, _ = run_ours(pairs, len(pairs), "cuda")
            row["ours_gpu_wall_s"] = gpu_wall
            row["epe_gpu_vs_cpu"] = mean(epe(a, b) for a, b in zip(gpu, ours))
            all_gpu_vs_cpu.append(row["epe_gpu_vs_cpu"])
            totals["gpu"][0] += gpu_wall
        rows[source] = row
        all_vs_cv += vs_cv
        all_floor += floor
        all_true_ours += true_ours
        all_true_cv += true_cv
        totals["opencv"][0] += cv_wall
        totals["opencv"][1] += cv_cpu
        totals["ours"][0] += our_wall
        totals["ours"][1] += our_cpu
    load1 = os.getloadavg()[0]
    n = len(all_vs_cv)

    print(f"TV-L1 on {n} pairs of {WIDTH}x{HEIGHT} (OpenCV {cv2.__version__}, torch {torch.__version__}, "
          f"ours: {args.threads} thread(s), batch {args.batch}); load average {load0:.1f} -> {load1:.1f}\n")
    print(f"{'source':10s} {'pairs':>5s} {'motion px':>9s} | {'EPE ours-cv':>11s} {'max':>6s} {'cv-cv jit':>9s} | "
          f"{'EPE true ours':>13s} {'EPE true cv':>11s} | {'cv CPU s/pair':>13s} {'ours CPU s/pair':>15s}")
    for source, r in rows.items():
        print(f"{source:10s} {r['pairs']:5d} {r['true_motion_px']:9.2f} | {r['epe_vs_opencv']:11.4f} "
              f"{r['epe_vs_opencv_max']:6.3f} {r['epe_opencv_jitter']:9.4f} | "
              f"{r['epe_true_ours']:13.4f} {r['epe_true_opencv']:11.4f} | "
              f"{r['opencv_cpu_s'] / r['pairs']:13.3f} {r['ours_cpu_s'] / r['pairs']:15.3f}")

    cv_rate = n / totals["opencv"][1]
    our_rate = n / totals["ours"][1]
    result = {
        "epe_vs_opencv": round(mean(all_vs_cv), 4),
        "epe_vs_opencv_max_pair": round(max(all_vs_cv), 4),
        "epe_opencv_jitter": round(mean(all_floor), 4),
        "epe_true_ours": round(mean(all_true_ours), 4),
        "epe_true_opencv": round(mean(all_true_cv), 4),
        "epe_true_ratio": round(mean(all_true_ours) / mean(all_true_cv), 4),
        "ours_cpu_pairs_per_s": round(our_rate, 3),
        "opencv_cpu_pairs_per_s": round(cv_rate, 3),
        "cpu_speed_ratio": round(our_rate / cv_rate, 3),
        "cpu_speed_ratio_wall": round(totals["opencv"][0] / totals["ours"][0], 3),
        "ours_gpu_pairs_per_s": round(n / totals["gpu"][0], 2) if cuda else None,
        "epe_gpu_vs_cpu": round(mean(all_gpu_vs_cpu), 5) if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "per_source": {s: {k: round(v, 4) for k, v in r.items()} for s, r in rows.items()},
        "pairs": n, "size": [HEIGHT, WIDTH], "batch": args.batch, "threads": args.threads,
        "load_average": [round(load0, 2), round(load1, 2)],
        "bench_seconds": round(time.perf_counter() - t_all, 1),
    }
    print(f"\nEPE ours vs OpenCV {result['epe_vs_opencv']} px (target <= 0.10; OpenCV vs itself on a +-0.001 "
          f"grey-level jitter: {result['epe_opencv_jitter']}); EPE vs true motion: ours "
          f"{result['epe_true_ours']}, OpenCV {result['epe_true_opencv']} (ratio {result['epe_true_ratio']}, "
          f"target <= 1.05)")
    print(f"CPU: ours {our_rate:.3f} pairs per CPU-second, OpenCV {cv_rate:.3f} (one thread): cpu_speed_ratio "
          f"{result['cpu_speed_ratio']} ({result['cpu_speed_ratio_wall']} in wall time)"
          + (f"; GPU: {result['ours_gpu_pairs_per_s']} pairs/s" if cuda else "; no GPU here")
          + f"; total bench time {result['bench_seconds']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
