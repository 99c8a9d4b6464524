"""Optical flow between consecutive stored frames, into a store of the same format: the algorithms,
one video, and a pool of worker processes.

The flow step (actionrepro.steps.flow) writes, under paths.flow_dir(dataset), mirroring data/frames/<ds>:
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

import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from actionrepro import lifecycle
from actionrepro.data import journal, store
from actionrepro.errors import ActionReproError, DataError, DiskFullError
from actionrepro.io import disk_full_error, is_disk_full

log = logging.getLogger(__name__)

# Which code computes each algorithm: recorded with the outputs, so that a resumed run never reuses
# flow that another implementation computed under the same algorithm name.
IMPLEMENTATION = {"tvl1": "actionrepro.data.tvl1 (PyTorch)", "tvl1_opencv": "OpenCV DualTVL1OpticalFlow",
                  "farneback": "OpenCV calcOpticalFlowFarneback"}
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


def pairs_function(algorithm: str):
    """Lists of grayscale uint8 frames (prev, next) -> their flows, a chunk of pairs at a time: our
    TV-L1 solves a chunk as one batch (each pair stops on its own, so the flows equal one-pair runs);
    OpenCV's algorithms go pair by pair."""
    if algorithm != "tvl1":
        one = flow_function(algorithm)
        return lambda prevs, nexts: [one(a, b) for a, b in zip(prevs, nexts)]
    import torch

    from actionrepro.data import tvl1

    torch.set_num_threads(1)  # one worker process per core, as for OpenCV
    device = tvl1.default_device()

    def batch(prevs: list[np.ndarray], nexts: list[np.ndarray]) -> list[np.ndarray]:
        a = torch.from_numpy(np.stack(prevs).astype(np.float32)).to(device)
        b = torch.from_numpy(np.stack(nexts).astype(np.float32)).to(device)
        return list(tvl1.tvl1_batch(a, b).cpu().numpy())
    return batch


def flow_video(src: str | os.PathLike, dst: str | os.PathLike, algorithm: str, bound: float, quality: int) -> dict:
    """Compute the flow of frame store `src` and write the flow store `dst` atomically.

    Returns status "stored" with num_frames/height/width/seconds, or "quarantined" with reason and
    detail when the video has a single frame (no pair to compare).
    """
    import cv2

    start = time.perf_counter()
    calc = pairs_function(algorithm)
    with store.FrameReader(src) as reader:
        n, h, w = reader.num_frames, reader.height, reader.width
        if n < 2:
            return {"status": "quarantined", "reason": "too_short",
                    "detail": f"{src} holds {n} frame; optical flow needs at least 2"}
        parts: list[bytes] = []
        prev = None
        for first in range(0, n, CHUNK):
            frames = reader.read(range(first, min(first + CHUNK, n)))
            grays = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
            chain = ([prev] if prev is not None else []) + grays
            for flow in calc(chain[:-1], chain[1:]):
                parts.extend(store.encode_frame(quantise(flow, bound), quality))
            prev = grays[-1]
    store.write_encoded(dst, parts, channels=2, height=h, width=w)
    return {"status": "stored", "num_frames": n - 1, "height": h, "width": w,
            "seconds": time.perf_counter() - start}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _init_pool_worker() -> None:
    lifecycle.worker_init()  # a killed step leaves no orphaned flow workers
    _init_worker()


def _run_one(task: tuple) -> dict:
    """flow_video for the pool: a bad store becomes a record instead of killing the run; a full disk
    is status `disk_full` (path, needed, free), which stops the whole step."""
    try:
        return flow_video(*task)
    except DiskFullError as err:
        return {"status": "disk_full", **err.record()}
    except (DataError, OSError, ValueError) as err:
        if is_disk_full(err):
            return {"status": "disk_full", **disk_full_error(task[1]).record()}
        return {"status": "failed", "reason": "store_error", "detail": f"{type(err).__name__}: {err}"[:500]}


def _checked(record: dict) -> dict:
    """The record, unless it reports a full disk: then DiskFullError, to stop the step at once."""
    if record["status"] == "disk_full":
        raise DiskFullError(record["path"], record["needed"], record["free"])
    return record


# ---------------------------------------------------------------- many videos

def _context():
    """forkserver (a clean parent, no torch/OpenMP state inherited) where available, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cv2", "numpy", "actionrepro.data.store"])
        return ctx
    return mp.get_context("spawn")


def flow_results(tasks: list[tuple], workers: int):
    """Yield (task number, record) as videos finish, in `workers` processes (in-process for one).

    A full disk raises DiskFullError at the first video that hits it: queued videos are cancelled
    and running workers terminated, so nothing further is attempted.
    """
    if workers <= 1 or len(tasks) <= 1:
        _init_worker()
        for i, task in enumerate(tasks):
            yield i, _checked(_run_one(task))
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=_context(),
                             initializer=_init_pool_worker) as pool:
        futures = {pool.submit(_run_one, task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                yield futures[future], _checked(future.result())
        except DiskFullError:
            _terminate(pool, futures)
            raise
        except BrokenProcessPool as err:
            raise ActionReproError(
                f"a flow worker process died ({err}); finished videos are kept in progress.jsonl. "
                "Re-run to resume; if it recurs, run with --threads 1 to find the video that crashes it") from err
        finally:
            for f in futures:
                f.cancel()


def _terminate(pool: ProcessPoolExecutor, futures) -> None:
    """Stop a pool now: cancel queued videos, terminate the workers busy with running ones."""
    for f in futures:
        f.cancel()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public API before 3.14
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
