"""The flow step: optical flow between consecutive stored frames, into a store of the same format.

Output, under paths.flow_dir(dataset), mirroring data/frames/<ds>:
  <store_path>     one store per video: N-1 flow frames (H, W, 2) uint8 for a video of N frames;
                   flow frame i is the motion from frame i to frame i+1 (x then y)
  index.csv        video_id, path, store_path, num_frames (flow frames), height, width
  quarantine.csv   videos that have no flow: video_id, path, reason, detail (`too_short`: one frame)
  progress.jsonl   one line per finished video: lets a killed run resume
  summary.json     algorithm, bound, counts, timings; written LAST (its presence means done)

Flow is computed on grayscale frames with TV-L1 (the two-stream papers' standard) or Farneback
(fast), then each of x and y is clipped to +-bound pixels and quantised to uint8 with
v -> round((v + bound) * 255 / (2 * bound)), so 0 px -> 128 and the dataset maps it back with
(q - 128) / 128. Videos quarantined by the decode step have no frames and are only counted.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pandas as pd

from actionrepro import paths
from actionrepro.data import journal, store
from actionrepro.errors import ActionReproError, DataError
from actionrepro.io import atomic_write_csv, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

ALGORITHMS = ("tvl1", "tvl1_opencv", "farneback")
INDEX_COLUMNS = ["video_id", "path", "store_path", "num_frames", "height", "width"]
QUARANTINE_COLUMNS = ["video_id", "path", "reason", "detail"]
JOURNAL = journal.FILE_NAME
CHUNK = 32  # frames decoded at a time: memory stays flat on long videos

# Farneback as in OpenCV's dense-flow sample: 3-level pyramid (halving), 15 px window.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


# ---------------------------------------------------------------- flow of one video

def quantise(flow: np.ndarray, bound: float) -> np.ndarray:
    """float displacement (..., 2) -> uint8: clip to +-bound, map [-bound, bound] onto [0, 255]."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantise(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 -> float32 displacement in pixels (the inverse of quantise, up to its rounding)."""
    return (q.astype(np.float32) * (2.0 * bound / 255.0) - bound).astype(np.float32)


def flow_function(algorithm: str):
    """prev, next grayscale uint8 (H, W) -> float32 (H, W, 2) flow, x then y."""
    import cv2

    if algorithm == "tvl1":  # our PyTorch TV-L1 (OpenCV's defaults and steps), on the GPU when there is one
        from actionrepro.data import tvl1

        device = tvl1.default_device()
        return lambda prev, nxt: tvl1.tvl1(prev, nxt, device=device)
    if algorithm == "tvl1_opencv":
        dual_tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda prev, nxt: dual_tvl1.calc(prev, nxt, None)
    if algorithm == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)
    raise ValueError(f"unknown flow algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def flow_video(src: str | os.PathLike, dst: str | os.PathLike, algorithm: str, bound: float, quality: int) -> dict:
    """Compute the flow of frame store `src` and write the flow store `dst` atomically.

    Returns status "stored" with num_frames/height/width/seconds, or "quarantined" with reason and
    detail when the video has a single frame (no pair to compare).
    """
    import cv2

    start = time.perf_counter()
    calc = flow_function(algorithm)
    with store.FrameReader(src) as reader:
        n, h, w = reader.num_frames, reader.height, reader.width
        if n < 2:
            return {"status": "quarantined", "reason": "too_short",
                    "detail": f"{src} holds {n} frame; optical flow needs at least 2"}
        parts: list[bytes] = []
        prev = None
        for first in range(0, n, CHUNK):
            for frame in reader.read(range(first, min(first + CHUNK, n))):
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                if prev is not None:
                    parts.extend(store.encode_frame(quantise(calc(prev, gray), bound), quality))
                prev = gray
    store.write_encoded(dst, parts, channels=2, height=h, width=w)
    return {"status": "stored", "num_frames": n - 1, "height": h, "width": w,
            "seconds": time.perf_counter() - start}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _run_one(task: tuple) -> dict:
    """flow_video for the pool: a bad store becomes a record instead of killing the run."""
    try:
        return flow_video(*task)
    except (DataError, OSError, ValueError) as err:
        return {"status": "failed", "reason": "store_error", "detail": f"{type(err).__name__}: {err}"[:500]}


# ---------------------------------------------------------------- the dataset step

def read_frames_index(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(index, quarantine) of the decode step's output; DataError if decode has not finished."""
    root = paths.frames_dir(dataset)
    if not (root / "summary.json").is_file() or not (root / "index.csv").is_file():
        raise DataError(f"{root} has no finished frame store (index.csv and summary.json are written when "
                        f"decoding completes); run `actionrepro decode {dataset}` first")
    index = pd.read_csv(root / "index.csv", dtype={"video_id": str, "path": str, "store_path": str},
                        keep_default_na=False, na_filter=False)
    missing = [c for c in ("video_id", "path", "store_path", "num_frames") if c not in index.columns]
    if missing:
        raise DataError(f"{root / 'index.csv'} lacks column(s) {', '.join(missing)}; "
                        f"re-run `actionrepro decode {dataset}`")
    quarantine_file = root / "quarantine.csv"
    quarantine = (pd.read_csv(quarantine_file, dtype=str, keep_default_na=False, na_filter=False)
                  if quarantine_file.is_file() else pd.DataFrame(columns=QUARANTINE_COLUMNS))
    return index, quarantine


def _context():
    """forkserver (a clean parent, no torch/OpenMP state inherited) where available, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cv2", "numpy", "actionrepro.data.store"])
        return ctx
    return mp.get_context("spawn")


def _results(tasks: list[tuple], workers: int):
    """Yield (task number, record) as videos finish, in `workers` processes (in-process for one)."""
    if workers <= 1 or len(tasks) <= 1:
        _init_worker()
        for i, task in enumerate(tasks):
            yield i, _run_one(task)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=_context(),
                             initializer=_init_worker) as pool:
        futures = {pool.submit(_run_one, task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BrokenProcessPool as err:
            raise ActionReproError(
                f"a flow worker process died ({err}); finished videos are kept in progress.jsonl. "
                "Re-run to resume; if it recurs, run with --threads 1 to find the video that crashes it") from err
        finally:
            for f in futures:
                f.cancel()


def compute_flow(dataset: str, params: dict, workers: int) -> None:
    """Compute optical flow for every stored video of data/frames/<ds> into data/flow/<ds>."""
    from tqdm import tqdm

    algorithm, bound = params["flow"]["algorithm"], float(params["flow"]["bound"])
    if algorithm not in ALGORITHMS:
        raise ActionReproError(f"flow.algorithm is {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    quality = int(params["decode"]["jpeg_quality"])
    settings = {"algorithm": algorithm, "bound": bound, "jpeg_quality": quality, "store_version": store.VERSION}
    if algorithm == "farneback":
        settings["farneback"] = FARNEBACK

    frames_root, out_root = paths.frames_dir(dataset), paths.flow_dir(dataset)
    index, decode_quarantine = read_frames_index(dataset)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "summary.json").unlink(missing_ok=True)  # present only once this run has finished
    journal.remove_stale_temps(out_root)
    journal_file = out_root / JOURNAL
    finished = journal.read(journal_file, settings, "store_path")
    t0 = time.perf_counter()

    done: dict[str, dict] = {}
    todo: list[int] = []
    for i, row in index.iterrows():
        if journal.reusable(finished.get(row.store_path), out_root / row.store_path, frames_root / row.store_path,
                            "flow_size", "frames_size"):
            done[row.store_path] = finished[row.store_path]
        else:
            todo.append(i)
    reused = len(done)
    todo.sort(key=lambda i: -int(index.num_frames[i]))  # longest first: no long video finishes alone
    tasks = [(str(frames_root / index.store_path[i]), str(out_root / index.store_path[i]), algorithm, bound, quality)
             for i in todo]
    workers = max(1, int(workers or 1))
    log.info("flow %s (%s, bound %g): %d stored videos, %d already done, %d to compute with %d worker(s); "
             "%d quarantined by decode are skipped", dataset, algorithm, bound, len(index), reused, len(todo),
             min(workers, max(len(todo), 1)), len(decode_quarantine))

    quarantined: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    compute_s = 0.0
    with journal.open_for_append(journal_file) as jf, \
            tqdm(total=len(todo), desc=f"flow {dataset}", unit="video", mininterval=1.0) as bar:
        for t, record in _results(tasks, workers):
            row = index.loc[todo[t]]
            entry = {"video_id": row.video_id, "path": row.path}
            if record["status"] == "stored":
                compute_s += record["seconds"]
                rec = {**entry, "store_path": row.store_path,
                       **{k: record[k] for k in ("num_frames", "height", "width")},
                       "flow_size": (out_root / row.store_path).stat().st_size,
                       "frames_size": (frames_root / row.store_path).stat().st_size,
                       "seconds": round(record["seconds"], 4), "settings": settings}
                jf.write(json.dumps(rec) + "\n")
                jf.flush()
                done[row.store_path] = rec
            else:
                target = quarantined if record["status"] == "quarantined" else failed
                target[row.store_path] = {**entry, "reason": record["reason"], "detail": record["detail"]}
                log.warning("%s: no flow (%s): %s", row.path, record["reason"], record["detail"])
            bar.update(1)

    order = list(index.store_path)
    flow_index = pd.DataFrame([done[s] for s in order if s in done], columns=INDEX_COLUMNS)
    bad = pd.DataFrame([quarantined[s] for s in order if s in quarantined], columns=QUARANTINE_COLUMNS)
    atomic_write_text(journal_file, "".join(json.dumps(done[s]) + "\n" for s in order if s in done))
    if failed:
        listing = "\n  ".join(f"{r['path']}: {r['detail']}" for r in list(failed.values())[:20])
        raise DataError(f"flow {dataset}: {len(failed)} frame store(s) could not be read:\n  {listing}\n"
                        f"The {len(done)} finished flow stores are kept. Delete the broken stores under {frames_root}, "
                        f"re-run `actionrepro decode {dataset}`, then `actionrepro flow {dataset}` (it resumes).")
    atomic_write_csv(out_root / "index.csv", flow_index)
    atomic_write_csv(out_root / "quarantine.csv", bad)

    wall_s = time.perf_counter() - t0
    computed = {index.store_path[i] for i in todo}
    computed_frames = sum(rec["num_frames"] for s, rec in done.items() if s in computed)
    summary = {
        "dataset": dataset,
        "algorithm": algorithm,
        "bound": bound,
        "quantisation": "q = round((clip(v, -bound, bound) + bound) * 255 / (2 * bound)); "
                        "v = q * 2 * bound / 255 - bound",
        "videos": int(len(index)),
        "stored": int(len(flow_index)),
        "flow_frames": int(flow_index.num_frames.sum()) if len(flow_index) else 0,
        "quarantined": {"too_short": int(len(bad))},
        "skipped_quarantined_by_decode": int(len(decode_quarantine)),
        "settings": {**settings, "workers": workers},
        "this_run": {"computed": len(todo) - len(quarantined), "reused": reused,
                     "wall_s": round(wall_s, 3), "compute_s": round(compute_s, 3),
                     "ms_per_flow_frame": round(1000 * compute_s / computed_frames, 3) if computed_frames else None},
    }
    atomic_write_json(out_root / "summary.json", summary)
    log.info("flow %s: %d stored, %d too short, %d skipped (quarantined by decode), %.1f s",
             dataset, len(flow_index), len(bad), len(decode_quarantine), wall_s)
