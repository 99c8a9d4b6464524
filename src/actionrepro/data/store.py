"""The frame store: one file per video, any frame readable without decoding the others.

Why this format (figures in bench/README.md, "decode"): one file per video keeps DVC and the file
system fast (UCF101 as loose JPEGs is 2.4 million files), reads as fast as loose JPEGs (one pread
per frame), and JPEG keeps the store 14x smaller than raw pixels, which would have to come from
disk at 256 KB a frame.

Layout (little-endian):

    magic    8 bytes   b"ARFRAMES"
    version  uint32    1
    frames   uint32    number of frames N (>= 1)
    channels uint32    3 (RGB, one colour JPEG per frame) or 1/2 (one grayscale JPEG per channel,
                       so chroma subsampling never mixes the x and y planes of optical flow)
    height   uint32
    width    uint32
    offsets  uint64 x (N * parts + 1)   absolute byte offsets of each JPEG; parts = 1 for RGB,
                       else `channels`; offsets[0] = header size, offsets[-1] = file size

Frame indices are 0-based. A file whose last offset is not its size is incomplete (a killed writer
cannot leave one, since writes go to a temporary file renamed into place) or foreign.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from actionrepro.errors import DataError
from actionrepro.io import atomic_path

MAGIC = b"ARFRAMES"
VERSION = 1
SUFFIX = ".frames"
_FIXED = struct.Struct("<8s5I")  # magic, version, frames, channels, height, width
_CHANNELS = (1, 2, 3)


def _parts(channels: int) -> int:
    """JPEG images stored per frame."""
    return 1 if channels == 3 else channels


def header_size(num_frames: int, channels: int) -> int:
    return _FIXED.size + 8 * (num_frames * _parts(channels) + 1)


def encode_frame(frame: np.ndarray, quality: int) -> list[bytes]:
    """JPEG-encode one uint8 frame (H,W,3) RGB or (H,W,C<=2) into its stored parts.

    cv2 (libjpeg-turbo, baseline, 4:2:0) measured fastest; torchvision and PIL write the same bytes.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in _CHANNELS:
        raise ValueError(f"a frame must be uint8 (H, W, C) with C in {_CHANNELS}, got {frame.dtype} {frame.shape}")
    if frame.shape[2] == 3:
        planes = [cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)]  # cv2 orders colour BGR
    else:
        planes = [np.ascontiguousarray(frame[:, :, c]) for c in range(frame.shape[2])]
    out = []
    for plane in planes:
        ok, buf = cv2.imencode(".jpg", plane, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:  # pragma: no cover - libjpeg does not fail on valid uint8 input
            raise RuntimeError(f"JPEG encoding failed for a {frame.shape} frame")
        out.append(buf.tobytes())
    return out


def write_encoded(path: str | os.PathLike, parts: Sequence[bytes | memoryview], channels: int, height: int,
                  width: int) -> None:
    """Write already-encoded JPEG parts (frame-major, `_parts(channels)` per frame) atomically.

    Lets the decode step encode frame by frame as it decodes, holding only the compressed bytes.
    """
    if channels not in _CHANNELS:
        raise ValueError(f"channels must be one of {_CHANNELS}, got {channels}")
    per = _parts(channels)
    if not parts or len(parts) % per:
        raise ValueError(f"need a positive multiple of {per} JPEG parts for {channels} channel(s), got {len(parts)}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    num_frames = len(parts) // per
    start = header_size(num_frames, channels)
    offsets = np.empty(len(parts) + 1, dtype="<u8")
    offsets[0] = start
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    offsets[1:] += start
    with atomic_path(path, needed=int(offsets[-1])) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(_FIXED.pack(MAGIC, VERSION, num_frames, channels, height, width))
            fh.write(offsets.tobytes())
            for part in parts:
                fh.write(part)


def write_store(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray, quality: int) -> None:
    """Encode uint8 frames (H,W,3) RGB or (H,W,2) flow x/y as JPEG at `quality` into one store file."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    parts: list[bytes] = []
    shape = None
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise ValueError(f"frame {i} has shape {frame.shape}, frame 0 has {shape}; all frames must match")
        parts.extend(encode_frame(frame, quality))
    if shape is None:
        raise ValueError(f"no frames to write to {path}; a store holds at least one frame")
    write_encoded(path, parts, channels=shape[2], height=shape[0], width=shape[1])


def read_header(path: str | os.PathLike) -> tuple[int, int, int, int, np.ndarray]:
    """(num_frames, channels, height, width, offsets) of a store; DataError if corrupt, foreign or incomplete."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fixed = fh.read(_FIXED.size)
            if len(fixed) < _FIXED.size or fixed[:8] != MAGIC:
                raise DataError(f"{path} is not a frame store (bad magic or too short); delete it and re-run "
                                "`actionrepro decode` (or `flow`) to rebuild it")
            _, version, num_frames, channels, height, width = _FIXED.unpack(fixed)
            if version != VERSION:
                raise DataError(f"{path} is frame store version {version}; this code reads version {VERSION}. "
                                "Delete it and re-run the step that wrote it")
            if num_frames < 1 or channels not in _CHANNELS or height < 1 or width < 1:
                raise DataError(f"{path} has a corrupt header (frames={num_frames}, channels={channels}, "
                                f"{height}x{width}); delete it and re-run the step that wrote it")
            count = num_frames * _parts(channels) + 1
            raw = fh.read(8 * count)
    except OSError as err:
        raise DataError(f"cannot read frame store {path}: {err}") from err
    if len(raw) < 8 * count:
        raise DataError(f"{path} is truncated inside its header; delete it and re-run the step that wrote it")
    offsets = np.frombuffer(raw, dtype="<u8").astype(np.int64)
    if offsets[0] != header_size(num_frames, channels) or np.any(np.diff(offsets) <= 0) or offsets[-1] != size:
        raise DataError(f"{path} is incomplete or corrupt: its index ends at byte {int(offsets[-1])} but the file has "
                        f"{size} bytes; delete it and re-run the step that wrote it")
    return num_frames, channels, height, width, offsets


def is_complete(path: str | os.PathLike) -> bool:
    """True if `path` is a whole, well-formed store (header consistent with the file size)."""
    try:
        read_header(path)
    except DataError:
        return False
    return True


class FrameReader:
    """Random access to one store: reads and decodes only the requested frames.

    Uses positional reads (os.pread) on one descriptor, so a reader is safe to share across
    threads and forked DataLoader workers; pickling drops the descriptor and reopens lazily.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.num_frames, self.channels, self.height, self.width, self._offsets = read_header(self.path)
        self._parts = _parts(self.channels)
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"FrameReader({str(self.path)!r}: {self.num_frames} x {self.height}x{self.width}x{self.channels})"

    def _check(self, indices: Iterable[int]) -> list[int]:
        out = []
        for i in indices:
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"frame indices must be integers, got {i!r} ({type(i).__name__})")
            if not 0 <= i < self.num_frames:
                raise IndexError(f"frame index {int(i)} is out of range for {self.path}: it holds "
                                 f"{self.num_frames} frames, valid indices are 0..{self.num_frames - 1} (0-based)")
            out.append(int(i))
        return out

    def _descriptor(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as err:
                raise DataError(f"cannot open frame store {self.path}: {err}") from err
        return self._fd

    def _read_parts(self, indices: list[int]) -> list[bytes]:
        fd = self._descriptor()
        out = []
        for i in indices:
            first, last = i * self._parts, (i + 1) * self._parts
            start, stop = int(self._offsets[first]), int(self._offsets[last])
            blob = os.pread(fd, stop - start, start)
            if len(blob) != stop - start:
                raise DataError(f"{self.path} was truncated after it was opened (frame {i}); "
                                "re-run the step that wrote it")
            for p in range(first, last):
                a, b = int(self._offsets[p]) - start, int(self._offsets[p + 1]) - start
                out.append(blob[a:b])
        return out

    def read_encoded(self, indices: Sequence[int]) -> list[bytes]:
        """The stored JPEG bytes of `indices`: one per frame for RGB, `channels` per frame (x, y) otherwise."""
        return self._read_parts(self._check(indices))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Decode `indices` (0-based, any order, repeats allowed) into uint8 (N, H, W, C)."""
        idx = self._check(indices)
        out = np.empty((len(idx), self.height, self.width, self.channels), dtype=np.uint8)
        parts = self._read_parts(idx)
        flag = cv2.IMREAD_COLOR_RGB if self.channels == 3 else cv2.IMREAD_GRAYSCALE
        for n, blob in enumerate(parts):
            img = cv2.imdecode(np.frombuffer(blob, dtype=np.uint8), flag)
            frame, channel = divmod(n, self._parts)
            if img is None or img.shape[:2] != (self.height, self.width):
                raise DataError(f"{self.path}: frame {idx[frame]} does not decode to a {self.height}x{self.width} "
                                "JPEG; the store is corrupt, delete it and re-run the step that wrote it")
            if self.channels == 3:
                out[frame] = img
            else:
                out[frame, :, :, channel] = img
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"] = None
        return state
