"""Decoding videos into frame stores: one video in a worker process, a pool of them with timeouts.

The decode step (actionrepro.steps.decode) writes, under paths.frames_dir(dataset):
  <path with .avi -> .frames>   one store per video (store.py), mirroring data/videos/<ds>
  index.csv        stored videos: video_id, path, store_path (relative to this folder), num_frames,
                   header_frames, height, width, fps
  quarantine.csv   videos not stored: video_id, path, reason, detail
  progress.jsonl   one line per stored video, appended as it finishes: lets a killed run resume
  summary.json     counts and settings; written LAST, so its presence means the step completed

Why decord (0.6.0, unmaintained since 2021) is driven this way: each video is decoded once, front to
back, with VideoReader.next(); random or batched reads returned wrong pixels on some AVIs and can
deadlock when the container over-reports its length. Readers are created inside worker processes
started by forkserver, and each video runs under a timeout: a hung decoder is killed and replaced.
Speed (bench/decode.py): the step costs 1.1-1.2x the unavoidable decode + resize + JPEG encode.

Frames actually decoded are what counts. `header_frames` is what the container claims (the larger of
decord's count and, for AVI, the stream header's dwLength, which survives truncation when ffmpeg
rebuilds a shorter index). Rule, per video with D frames decoded and H claimed:
  open fails (missing, unreadable, no video stream, bad codec data)  -> quarantine `open_failed`
  the decoder raises, at any frame                                   -> quarantine `decode_error`
  the stream ends cleanly with D == 0                                -> quarantine `no_frames`
  the stream ends cleanly with 0 < D < ceil(MIN_FRAME_FRACTION * H)  -> quarantine `truncated`
  otherwise: stored with its D frames; D < H is counted as `short_by_header` in summary.json
  still running after timeout_s                                      -> worker killed, `timeout`
A clip missing more than half of its frames is a broken file, not a short clip: sampling it would
teach the model its first seconds only; a frame or two short of the header is common in real AVIs.
A decoder error is never "kept up to the error": decord decodes on a thread that runs ahead and
reports the error a timing-dependent number of frames early, so the frames kept would vary by run.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing as mp
import os
import struct
import time
from multiprocessing.connection import wait
from pathlib import Path, PurePosixPath

import numpy as np

from actionrepro import lifecycle
from actionrepro.data import journal, store
from actionrepro.errors import DiskFullError
from actionrepro.io import disk_full_error, is_disk_full

log = logging.getLogger(__name__)

MIN_FRAME_FRACTION = 0.5
REASONS = ("open_failed", "decode_error", "truncated", "timeout", "no_frames")
INDEX_COLUMNS = ["video_id", "path", "store_path", "num_frames", "header_frames", "height", "width", "fps"]
QUARANTINE_COLUMNS = ["video_id", "path", "reason", "detail"]
JOURNAL = journal.FILE_NAME


# ---------------------------------------------------------------- one video (runs in a worker)

def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to `short_side`, aspect ratio kept."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def avi_declared_frames(path: str | os.PathLike) -> int | None:
    """Frame count an AVI's headers declare (video strh dwLength, else avih dwTotalFrames); None if not AVI.

    ffmpeg rebuilds the index of a truncated AVI from the packets it finds, so only the header still
    tells how long the file was meant to be.
    """
    with open(path, "rb") as fh:
        data = fh.read(1 << 16)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"AVI ":
        return None
    total = length = 0

    def walk(start: int, end: int) -> None:
        nonlocal total, length
        pos = start
        while pos + 8 <= min(end, len(data)):
            fourcc, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
            body = pos + 8
            if fourcc == b"LIST" and data[body:body + 4] in (b"hdrl", b"strl"):
                walk(body + 4, body + size)
            elif fourcc == b"avih" and body + 20 <= len(data):
                total = struct.unpack_from("<I", data, body + 16)[0]
            elif fourcc == b"strh" and body + 36 <= len(data) and data[body:body + 4] == b"vids" and not length:
                length = struct.unpack_from("<I", data, body + 32)[0]
            elif fourcc == b"LIST" and data[body:body + 4] == b"movi":
                return
            pos = body + size + (size & 1)

    walk(12, len(data))
    return length or total or None


def rgb_frame(frame: np.ndarray) -> np.ndarray:
    """decord's frame as (H, W, 3): for some narrow widths (48, 72 px) decord 0.6.0 reports its
    padded rows as a 4th channel, shape (H, W, 4); the first 3*W bytes of each row are the pixels."""
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    height, width = frame.shape[:2]
    rows = np.ascontiguousarray(frame).reshape(height, -1)
    if rows.shape[1] < 3 * width:
        raise ValueError(f"decoder returned a frame of shape {frame.shape}, which holds no RGB image")
    return rows[:, :3 * width].reshape(height, width, 3)


def _error_text(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:500]


# Encoded frames of the current video, kept in one buffer that lives as long as the worker, so the
# heap does not grow and shrink (and fault its pages back in) with every video; see _keep_heap.
_scratch = np.empty(0, np.uint8)


def _keep(parts: list[bytes], spans: list[tuple[int, int]]) -> None:
    """Append encoded parts to the scratch buffer, recording their (start, end) byte spans."""
    global _scratch
    used = spans[-1][1] if spans else 0
    for part in parts:
        end = used + len(part)
        if end > len(_scratch):
            grown = np.empty(max(end, 2 * len(_scratch), 1 << 22), np.uint8)
            grown[:used] = _scratch[:used]
            _scratch = grown
        _scratch[used:end] = np.frombuffer(part, np.uint8)
        spans.append((used, end))
        used = end


def decode_video(src: str | os.PathLike, dst: str | os.PathLike, short_side: int, quality: int) -> dict:
    """Decode `src` front to back, resize, JPEG-encode and write the store `dst` (atomically).

    Returns a record: status "stored" with num_frames, header_frames, height, width, fps; or
    status "quarantined" with reason and detail. Never raises for a bad video.
    """
    import cv2
    import decord

    cv2.setNumThreads(1)
    start = time.perf_counter()
    try:
        declared = avi_declared_frames(src)
        reader = decord.VideoReader(str(src), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # FileNotFoundError, RuntimeError("Error reading"), DECORDError, AssertionError
        return {"status": "quarantined", "reason": "open_failed", "detail": _error_text(err)}
    header = max(len(reader), declared or 0)
    fps = float(reader.get_avg_fps())
    spans: list[tuple[int, int]] = []
    size = interp = None
    decoded = 0
    while True:
        try:
            frame = rgb_frame(reader.next().asnumpy())
        except StopIteration:
            break
        except Exception as err:  # DECORDError from a damaged packet
            return {"status": "quarantined", "reason": "decode_error",
                    "detail": f"decoder failed after {decoded} of {header} frames: {_error_text(err)}"}
        if size is None:
            size = target_size(frame.shape[0], frame.shape[1], short_side)
            interp = cv2.INTER_AREA if size[0] < frame.shape[0] else cv2.INTER_LINEAR
        if frame.shape[:2] != size:
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=interp)
        _keep(store.encode_frame(frame, quality), spans)
        decoded += 1
    del reader
    if decoded == 0:
        return {"status": "quarantined", "reason": "no_frames",
                "detail": f"the stream ended before its first frame (header claims {header})"}
    if decoded < math.ceil(MIN_FRAME_FRACTION * header):
        return {"status": "quarantined", "reason": "truncated",
                "detail": f"the stream ended after {decoded} of the {header} frames its header claims "
                          f"(keeping needs {MIN_FRAME_FRACTION:.0%})"}
    view = memoryview(_scratch)
    store.write_encoded(dst, [view[a:b] for a, b in spans], channels=3, height=size[0], width=size[1])
    return {"status": "stored", "num_frames": decoded, "header_frames": header, "height": size[0],
            "width": size[1], "fps": fps, "seconds": time.perf_counter() - start}


def _keep_heap() -> None:
    """Make glibc keep freed frame-sized blocks (250 KB) for reuse instead of unmapping them.

    By default each resized frame comes from a fresh mmap that is faulted in page by page and
    unmapped again: ~5% of the step's CPU time in sys, measured (bench/README.md, "decode").
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(-3, 64 << 20)   # M_MMAP_THRESHOLD: blocks below 64 MB come from the heap
    libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD: keep up to 128 MB of free heap


def run_task(task: tuple) -> dict:
    """decode_video for a worker: a full disk is status `disk_full` (path, needed, free); any other
    error that is not the video's fault is status `failed`. Both stop the step."""
    try:
        return decode_video(*task)
    except DiskFullError as err:
        return {"status": "disk_full", **err.record()}
    except Exception as err:  # not the video's fault (permissions, a bug): the step must stop
        if is_disk_full(err):
            return {"status": "disk_full", **disk_full_error(task[1]).record()}
        return {"status": "failed", "detail": _error_text(err)}


def _worker(conn) -> None:
    """Worker loop: receive (src, dst, short_side, quality) tasks until None; one thread each."""
    import cv2
    import decord

    lifecycle.worker_init()  # no orphaned decoder when the step's process is killed
    _keep_heap()
    cv2.setNumThreads(1)
    decord.logging.set_level(decord.logging.QUIET)  # the reasons go to quarantine.csv instead
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(run_task(task))


# ---------------------------------------------------------------- the worker pool

def _context():
    """forkserver where available (readers are created after a fork from a clean server), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cv2", "decord", "actionrepro.data.decode"])
        return ctx
    return mp.get_context("spawn")


class _Slot:
    """One worker process, its pipe, and the task it is running (if any)."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=True, name="actionrepro-decode")
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=None if kill else 10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_pool(tasks: list[tuple], workers: int, timeout_s: float, on_result) -> None:
    """Run decode_video(*task) for every task in `workers` processes, one video at a time each.

    on_result(i, record) is called in this process as each task finishes. A worker still busy after
    timeout_s is killed and replaced (record reason `timeout`); a worker that dies (a crash inside
    the decoder) gives `decode_error` with its exit code. A `disk_full` record raises DiskFullError
    at once: every worker is stopped and no further video is started.
    """
    if not tasks:
        return
    ctx = _context()
    slots = [_Slot(ctx) for _ in range(max(1, min(workers, len(tasks))))]
    queue = list(range(len(tasks)))[::-1]
    try:
        while True:
            for slot in slots:
                if slot.task is None and queue:
                    slot.task, slot.started = queue.pop(), time.monotonic()
                    slot.conn.send(tasks[slot.task])
            busy = [s for s in slots if s.task is not None]
            if not busy:
                break
            deadline = min(s.started for s in busy) + timeout_s
            ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy],
                         timeout=max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            for i, slot in enumerate(slots):
                if slot.task is None:
                    continue
                record = None
                if slot.conn in ready or slot.proc.sentinel in ready:
                    try:
                        record = slot.conn.recv() if slot.conn.poll() else None
                    except (EOFError, OSError):
                        record = None
                    if record is None:
                        slot.proc.join(timeout=5)
                        record = {"status": "quarantined", "reason": "decode_error",
                                  "detail": f"the decoder process died (exit code {slot.proc.exitcode})"}
                        slot.stop(kill=True)
                        slots[i] = slot = _replace(ctx, slot)
                elif now - slot.started >= timeout_s:
                    slot.stop(kill=True)
                    record = {"status": "quarantined", "reason": "timeout",
                              "detail": f"still decoding after {timeout_s:g} s (decode.timeout_s); worker killed"}
                    slots[i] = slot = _replace(ctx, slot)
                if record is not None and record["status"] == "disk_full":
                    raise DiskFullError(record["path"], record["needed"], record["free"])
                if record is not None:
                    task, slot.task = slot.task, None
                    on_result(task, record)
    finally:
        for slot in slots:
            slot.stop(kill=slot.task is not None)


def _replace(ctx, old: _Slot) -> _Slot:
    new = _Slot(ctx)
    new.task, new.started = old.task, old.started
    return new


# ---------------------------------------------------------------- the dataset step

def store_relpath(video_path: str) -> PurePosixPath:
    """The store's path relative to frames_dir: the video's, with .avi replaced by .frames."""
    rel = PurePosixPath(video_path)
    name = rel.name[:-4] if rel.name.lower().endswith(".avi") else rel.name
    return rel.with_name(name + store.SUFFIX)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def decode_files(videos: list[Path], out_root: Path, short_side: int, quality: int, timeout_s: float,
                 workers: int = 1) -> list[dict]:
    """Decode loose video files (not a dataset) into stores out_root/<i>.frames, exactly as the
    decode step would (same worker, resize rule and JPEG quality); one record per video, in order,
    each with `store_path` (relative to out_root) added when stored."""
    tasks = [(str(src), str(out_root / f"{i}{store.SUFFIX}"), short_side, quality) for i, src in enumerate(videos)]
    records: list[dict] = [{} for _ in tasks]

    def on_result(i: int, record: dict) -> None:
        records[i] = {**record, "store_path": f"{i}{store.SUFFIX}"} if record["status"] == "stored" else record

    run_pool(tasks, workers, timeout_s, on_result)
    return records
