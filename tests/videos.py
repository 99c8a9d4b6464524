"""Real test videos for the tests: MPEG-4 Part 2 in AVI (UCF101's and HMDB51's codec and container),
written with PyAV from deterministic frames, plus the broken inputs decoders meet in the wild.

    frames = make_frames(20, 48, 64, seed=1)        # uint8 (T, H, W, 3) RGB, moving + textured
    write_avi(path, frames, fps=25)                  # a real .avi
    write_video(path, frames=20, height=48, width=64, fps=25, seed=1) -> frames written
    write_garbage(path)            # bytes that are no video at all          (decoder cannot open it)
    corrupt_payload(path)          # valid AVI headers, garbage after them   (decoder fails on it)
    damage_packets(path, 0.5)      # frames 50%..100% garbled, container intact (decoder fails there)
    truncate(path, 0.4)            # cut at 40%: the header still claims every frame
    make_fifo(path)                # a named pipe that never delivers data   (an open that hangs)

Not a test module (no test_ prefix); import it as `from tests.videos import write_avi` (tests/ is a
package). Same arguments, same bytes (one encoder thread, fixed quantiser).

Beware when comparing with decord directly: decord 0.6.0 returns frames of some narrow widths
(48 and 72 px seen) as (H, W, 4), its padded rows taken for a 4th channel; 64 px and the real
datasets' widths are fine. actionrepro.data.decode.rgb_frame repairs such frames.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np

__all__ = ["make_frames", "write_avi", "write_video", "write_garbage", "corrupt_payload", "damage_packets", "truncate",
           "make_fifo"]


def make_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic RGB frames (T, H, W, 3) uint8 that look enough like a real clip for codecs.

    A textured background pans (camera motion) and a coloured disc moves over it (object motion),
    so inter-frame coding, JPEG sizes and decode speed behave like on real footage, not on noise.
    """
    if min(num_frames, height, width) < 1:
        raise ValueError(f"need positive sizes, got T={num_frames} H={height} W={width}")
    rng = np.random.default_rng(seed)
    pad = 4 * num_frames + 8
    ys = np.arange(height + pad, dtype=np.float32)[:, None]
    xs = np.arange(width + pad, dtype=np.float32)[None, :]
    background = np.zeros((height + pad, width + pad, 3), np.float32)
    for c in range(3):  # smooth colour waves; sin(a + b) split so only 1-D sines are computed
        for _ in range(3):
            fy, fx = rng.uniform(0.01, 0.12, 2)
            a, b = fy * ys + rng.uniform(0, 2 * np.pi), fx * xs
            background[..., c] += np.sin(a) * np.cos(b) + np.cos(a) * np.sin(b)
    background = 128 + 35 * background / 3
    # fine texture: box-blurred noise, the detail that makes JPEG and MPEG-4 work
    noise = rng.standard_normal(background.shape, dtype=np.float32)
    noise = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 4
    background += 18 * noise
    np.clip(background, 0, 255, out=background)
    background = background.astype(np.uint8)
    vy, vx = rng.choice([-1, 1], 2) * rng.uniform(0.5, 2.0, 2)   # pan, pixels per frame
    half = pad // 2
    colour = rng.integers(30, 226, 3, dtype=np.uint8)
    radius = max(2.0, min(height, width) / 6)
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    phase = rng.uniform(0, 2 * np.pi)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        oy, ox = int(round(half + vy * t)), int(round(half + vx * t))
        out[t] = background[oy:oy + height, ox:ox + width]
        cy = int(round(height / 2 + height / 4 * np.sin(phase + 0.3 * t)))
        cx = int(round(width / 2 + width / 3 * np.cos(phase + 0.2 * t)))
        yy, xx = cy + dy, cx + dx
        inside = (dy ** 2 + dx ** 2 <= radius ** 2) & (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        out[t, yy[inside], xx[inside]] = colour
    return out


def write_avi(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, qscale: int = 4) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) as MPEG-4 Part 2 (yuv420p) in AVI, deterministically.

    qscale: fixed quantiser 1 (best) .. 31; 4 is about the quality of the UCF101 files.
    H and W must be even (yuv420p).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even height and width, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        codec = stream.codec_context
        codec.thread_count = 1          # same bytes on every machine
        codec.qmin = codec.qmax = qscale
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_video(path: str | os.PathLike, frames: int = 20, height: int = 48, width: int = 64,
                fps: int = 25, seed: int = 0) -> np.ndarray:
    """make_frames + write_avi in one call; returns the frames that were encoded."""
    data = make_frames(frames, height, width, seed)
    write_avi(path, data, fps)
    return data


def write_garbage(path: str | os.PathLike, nbytes: int = 4096, seed: int = 0) -> Path:
    """A file named like a video that holds random bytes (no container a decoder recognises)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return path


def corrupt_payload(path: str | os.PathLike, seed: int = 0) -> Path:
    """Keep an AVI's headers (everything before the 'movi' list) and overwrite the rest with random bytes."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    start = data.find(b"movi")
    if start < 0:
        raise ValueError(f"{path} has no 'movi' list; is it an AVI?")
    start += 4
    data[start:] = np.random.default_rng(seed).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def truncate(path: str | os.PathLike, fraction: float) -> Path:
    """Cut a file to `fraction` of its size, as an interrupted download or copy leaves it."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * fraction))
    return path


def make_fifo(path: str | os.PathLike) -> Path:
    """A named pipe nobody writes to: opening it for reading blocks forever (a decoder that hangs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _movi_chunks(data: bytes) -> list[tuple[int, int]]:
    """(payload offset, size) of each stream chunk in an AVI's 'movi' list, in file order."""
    pos = data.find(b"movi")
    if pos < 0:
        raise ValueError("no 'movi' list; is this an AVI?")
    pos += 4
    out = []
    while pos + 8 <= len(data) and data[pos:pos + 4] != b"idx1":
        size = struct.unpack_from("<I", data, pos + 4)[0]
        out.append((pos + 8, size))
        pos += 8 + size + (size & 1)
    return out


def damage_packets(path: str | os.PathLike, start_fraction: float, stop_fraction: float = 1.0,
                   seed: int = 0) -> Path:
    """Overwrite the compressed data of the frames in [start_fraction, stop_fraction) of the stream
    with random bytes.

    The container (chunk headers, index, frame count) stays intact, so the file opens and decodes
    until the first damaged frame, where the decoder fails: a video that breaks part-way.
    """
    path = Path(path)
    data = bytearray(path.read_bytes())
    chunks = _movi_chunks(bytes(data))
    rng = np.random.default_rng(seed)
    for offset, size in chunks[int(len(chunks) * start_fraction):int(np.ceil(len(chunks) * stop_fraction))]:
        data[offset:offset + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
