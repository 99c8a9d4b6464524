"""Which frames a clip uses: pure index arithmetic, 0-based, always inside [0, num_frames - 1].

Kept free of I/O and tensors so every rule (segment bounds, centre positions, short videos, the
last frame) is tested directly. Randomness comes only from the `rng` passed in, so the dataset can
make a clip a function of (seed, epoch, index).

Where a position lands inside its segment is a *fraction* in [0, 1): random in training, 0.5 for
the single test view, (c + 0.5) / clips for test view c of `clips` (evenly spaced views).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from actionrepro.inputs import InputSpec

Mode = Literal["train", "test"]


def _check(num_frames: int, what: str = "num_frames") -> None:
    if num_frames < 1:
        raise ValueError(f"{what} must be >= 1 to sample a clip, got {num_frames}")


def view_fractions(clips: int) -> np.ndarray:
    """Fractions of evenly spaced test views: the centres of `clips` equal parts of [0, 1)."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    return (np.arange(clips) + 0.5) / clips


def _fractions(count: int, mode: Mode, rng: np.random.Generator | None,
               fraction: float | np.ndarray | None) -> np.ndarray:
    """One fraction per segment: given, drawn from rng (train) or the centre (test)."""
    if fraction is not None:
        out = np.broadcast_to(np.asarray(fraction, dtype=np.float64), (count,))
    elif mode == "train":
        if rng is None:
            raise ValueError("train-mode sampling needs an rng (numpy Generator)")
        out = rng.random(count)
    elif mode == "test":
        out = np.full(count, 0.5)
    else:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if np.any(out < 0) or np.any(out >= 1):
        raise ValueError(f"segment fractions must lie in [0, 1), got {out}")
    return out


def segment_positions(length: int, segments: int, fractions: np.ndarray) -> np.ndarray:
    """One index per equal segment of range(length), placed at `fractions` within each segment.

    Segment i is [floor(i*length/segments), floor((i+1)*length/segments)), so segments are
    disjoint and cover the range when length >= segments; when it is shorter, a segment holds
    (at least) its first frame and positions repeat.
    """
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    edges = np.arange(segments + 1) * length // segments
    lo = edges[:-1]
    width = np.maximum(edges[1:] - lo, 1)
    pos = lo + np.floor(np.asarray(fractions) * width).astype(np.int64)
    return np.minimum(pos, length - 1)


def window_offsets(frames_per_segment: int) -> np.ndarray:
    """Offsets of the local window at a position, centred on it (5 -> -2..2; 4 -> -1..2)."""
    if frames_per_segment < 1:
        raise ValueError(f"frames_per_segment must be >= 1, got {frames_per_segment}")
    return np.arange(frames_per_segment) - (frames_per_segment - 1) // 2


def segment_indices(num_frames: int, segments: int, frames_per_segment: int = 1,
                    mode: Mode = "train", rng: np.random.Generator | None = None,
                    fraction: float | np.ndarray | None = None) -> np.ndarray:
    """TSN sampling: (segments * frames_per_segment,) frame indices, segment-major.

    Each segment contributes a window of `frames_per_segment` consecutive frames centred on its
    position (USTN: the position and its 4 neighbours), clamped at the video's ends, so short
    videos repeat frames rather than read past the last one.
    """
    _check(num_frames)
    pos = segment_positions(num_frames, segments, _fractions(segments, mode, rng, fraction))
    idx = pos[:, None] + window_offsets(frames_per_segment)[None, :]
    return np.clip(idx, 0, num_frames - 1).reshape(-1)


def view_starts(num_frames: int, span: int, clips: int) -> np.ndarray:
    """Start frames of `clips` evenly spaced windows of `span` frames (dense test views).

    The valid starts 0..num_frames-span are cut into `clips` equal parts and each view starts at
    the centre of its part; a video shorter than `span` starts every view at 0.
    """
    _check(num_frames)
    room = max(num_frames - span + 1, 1)
    return np.floor(view_fractions(clips) * room).astype(np.int64)


def dense_indices(num_frames: int, clip_len: int, stride: int = 1, mode: Mode = "train",
                  rng: np.random.Generator | None = None, start: int | None = None) -> np.ndarray:
    """A contiguous clip of `clip_len` frames every `stride` frames: (clip_len,) indices.

    Train: random start among those that fit; test: the centred start (view_starts with one
    clip). A video shorter than the clip's span loops back to frame 0 (mmaction2's default),
    so every index stays in range and the clip keeps its length.
    """
    _check(num_frames)
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    span = (clip_len - 1) * stride + 1
    if start is None:
        if mode == "train":
            if rng is None:
                raise ValueError("train-mode sampling needs an rng (numpy Generator)")
            start = int(rng.integers(0, max(num_frames - span, 0) + 1))
        elif mode == "test":
            start = int(view_starts(num_frames, span, 1)[0])
        else:
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    return (start + np.arange(clip_len) * stride) % num_frames


def flow_stack_indices(num_flow_frames: int, flow_segments: int, flow_len: int,
                       mode: Mode = "train", rng: np.random.Generator | None = None,
                       fraction: float | np.ndarray | None = None) -> np.ndarray:
    """TSN flow stacks: (flow_segments, flow_len) flow-frame indices, one stack per segment.

    Stacks start in equal segments of the starts that leave room for `flow_len` frames, so a
    stack never runs past the end; with fewer flow frames than `flow_len` the last one repeats.
    """
    _check(num_flow_frames, "num_flow_frames")
    if flow_len < 1:
        raise ValueError(f"flow_len must be >= 1, got {flow_len}")
    room = max(num_flow_frames - flow_len + 1, 1)
    starts = segment_positions(room, flow_segments, _fractions(flow_segments, mode, rng, fraction))
    return np.minimum(starts[:, None] + np.arange(flow_len)[None, :], num_flow_frames - 1)


def clip_indices(spec: InputSpec, num_frames: int, mode: Mode = "train",
                 rng: np.random.Generator | None = None,
                 fraction: float | np.ndarray | None = None) -> np.ndarray:
    """The (spec.frames,) RGB indices of one clip for `spec` (segments or dense)."""
    if spec.sampling == "dense":
        span = (spec.clip_len - 1) * spec.stride + 1
        start = None
        if fraction is not None:
            room = max(num_frames - span + 1, 1)
            start = int(np.floor(float(np.asarray(fraction).reshape(-1)[0]) * room))
        return dense_indices(num_frames, spec.clip_len, spec.stride, mode, rng, start=start)
    return segment_indices(num_frames, spec.segments, spec.frames_per_segment, mode, rng, fraction)


def test_clip_indices(num_frames: int, spec: InputSpec, clips: int) -> np.ndarray:
    """(clips, spec.frames) RGB indices of the evenly spaced test views.

    Segments: view c takes offset (c + 0.5) / clips inside every segment; dense: the clips start
    at view_starts. With clips=1 this is exactly the test-mode clip.
    """
    return np.stack([clip_indices(spec, num_frames, "test", fraction=f) for f in view_fractions(clips)])


def test_flow_indices(num_flow_frames: int, spec: InputSpec, clips: int) -> np.ndarray:
    """(clips, flow_segments, flow_len) flow indices of the test views, spaced like the RGB ones."""
    return np.stack([flow_stack_indices(num_flow_frames, spec.flow_segments, spec.flow_len, "test", fraction=f)
                     for f in view_fractions(clips)])


test_clip_indices.__test__ = False  # a library function, not a pytest test
test_flow_indices.__test__ = False
