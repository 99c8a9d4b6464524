"""The frame store: exact layout, round trip within JPEG tolerance, random access, failure modes."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg

from actionrepro.data import store
from actionrepro.data.store import FrameReader, is_complete, write_store
from actionrepro.errors import DataError
from tests.videos import make_frames, write_video

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_frames(12, 48, 64, seed=3)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> np.ndarray:
    """What decord decodes, front to back, from a real MPEG-4 AVI: what the decode step stores."""
    import decord

    path = tmp_path_factory.mktemp("video") / "v.avi"
    write_video(path, frames=12, height=48, width=64, seed=3)
    reader = decord.VideoReader(str(path), num_threads=1)
    return np.stack([reader.next().asnumpy() for _ in range(len(reader))])


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# JPEG tolerance, stated: mean absolute error per pixel and channel (0..255) on decoded video frames
# (already 4:2:0 chroma, like every frame the decode step stores): < 3 at q90, < 1.5 at q100.
@pytest.mark.parametrize("quality, tolerance", [(90, 3.0), (100, 1.5)])
def test_round_trip_returns_decoded_frames_within_jpeg_tolerance(tmp_path, decoded, quality, tolerance):
    path = tmp_path / "v.frames"
    write_store(path, decoded, quality)
    with FrameReader(path) as reader:
        assert (reader.num_frames, reader.height, reader.width, reader.channels) == (12, 48, 64, 3)
        back = reader.read(range(12))
    assert back.dtype == np.uint8 and back.shape == decoded.shape
    assert mean_abs_error(back, decoded) < tolerance


def test_higher_quality_is_closer_and_larger(tmp_path, frames):
    write_store(tmp_path / "q90.frames", frames, 90)
    write_store(tmp_path / "q100.frames", frames, 100)
    e90 = mean_abs_error(FrameReader(tmp_path / "q90.frames").read(range(12)), frames)
    e100 = mean_abs_error(FrameReader(tmp_path / "q100.frames").read(range(12)), frames)
    assert e100 < e90
    assert (tmp_path / "q100.frames").stat().st_size > (tmp_path / "q90.frames").stat().st_size


def test_random_access_reads_any_indices_in_any_order_including_the_last(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, list(frames), 95)  # a list of frames works as well as an array
    reader = FrameReader(path)
    everything = reader.read(range(12))
    picked = reader.read([11, 0, 5, 5, np.int64(7)])
    np.testing.assert_array_equal(picked, everything[[11, 0, 5, 5, 7]])
    assert reader.read([]).shape == (0, 48, 64, 3)


@pytest.mark.parametrize("bad", [12, 100, -1])
def test_out_of_range_index_raises_index_error_naming_the_valid_range(tmp_path, frames, bad):
    path = tmp_path / "v.frames"
    write_store(path, frames, 90)
    with pytest.raises(IndexError, match=r"valid indices are 0\.\.11 \(0-based\)"):
        FrameReader(path).read([0, bad])
    with pytest.raises(IndexError):
        FrameReader(path).read_encoded([bad])


def test_layout_is_magic_version_counts_then_offsets_ending_at_the_file_size(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, frames[:3], 90)
    data = path.read_bytes()
    magic, version, n, c, h, w = struct.unpack_from("<8s5I", data)
    assert (magic, version, n, c, h, w) == (b"ARFRAMES", 1, 3, 3, 48, 64)
    offsets = struct.unpack_from("<4Q", data, 28)
    assert offsets[0] == 28 + 4 * 8 and offsets[-1] == len(data)
    assert data[offsets[0]:offsets[0] + 2] == b"\xff\xd8"  # each part is a JPEG (SOI marker)


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_encoded_frames_decode_elsewhere_to_the_same_pixels(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, frames, 90)
    reader = FrameReader(path)
    blobs = reader.read_encoded([2, 9])
    assert len(blobs) == 2
    for blob, mine in zip(blobs, reader.read([2, 9])):
        theirs = decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8)).permute(1, 2, 0).numpy()
        assert mean_abs_error(theirs, mine) < 1.0


def test_flow_channels_are_stored_as_separate_grayscale_jpegs_without_mixing(tmp_path):
    rng = np.random.default_rng(0)
    x = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (48, 1))  # smooth horizontal ramp
    y = np.zeros((48, 64), np.float32)
    y[:, 32:] = 255  # a hard edge: chroma subsampling would bleed it into x
    flow = np.stack([np.stack([x, y], -1) + rng.normal(0, 2, (48, 64, 2)) for _ in range(4)]).clip(0, 255)
    flow = flow.astype(np.uint8)
    path = tmp_path / "flow.frames"
    write_store(path, flow, 95)
    reader = FrameReader(path)
    assert reader.channels == 2
    assert len(reader.read_encoded([1, 3])) == 4  # x and y of each frame
    back = reader.read([0, 1, 2, 3])
    assert back.shape == (4, 48, 64, 2)
    assert mean_abs_error(back[..., 0], flow[..., 0]) < 2.0
    assert mean_abs_error(back[..., 1], flow[..., 1]) < 2.0


def test_reader_survives_pickling_for_dataloader_workers(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, frames, 90)
    reader = FrameReader(path)
    first = reader.read([4])
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read([4]), first)


def test_truncated_store_is_incomplete_and_raises_data_error(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, frames, 90)
    assert is_complete(path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    assert not is_complete(path)
    with pytest.raises(DataError, match="incomplete or corrupt"):
        FrameReader(path)
    path.write_bytes(data[:40])  # cut inside the offset table
    with pytest.raises(DataError, match="truncated inside its header"):
        FrameReader(path)


def test_foreign_or_corrupt_file_raises_data_error_naming_it(tmp_path, frames):
    foreign = tmp_path / "foreign.frames"
    foreign.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match="foreign.frames is not a frame store"):
        FrameReader(foreign)
    newer = tmp_path / "newer.frames"
    write_store(newer, frames[:2], 90)
    data = bytearray(newer.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    newer.write_bytes(bytes(data))
    with pytest.raises(DataError, match="version 99"):
        FrameReader(newer)
    damaged = tmp_path / "damaged.frames"
    write_store(damaged, frames[:2], 90)
    data = bytearray(damaged.read_bytes())
    start = struct.unpack_from("<Q", data, 28)[0]
    data[start:start + 200] = b"\x00" * 200  # wipe the first JPEG's headers, sizes unchanged
    damaged.write_bytes(bytes(data))
    reader = FrameReader(damaged)
    assert reader.read([1]).shape == (1, 48, 64, 3)  # the other frames still read
    with pytest.raises(DataError, match="frame 0 does not decode"):
        reader.read([0])


def test_failed_write_leaves_no_file_and_keeps_the_previous_one(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, frames[:2], 90)
    before = path.read_bytes()
    mixed = [frames[0], frames[1][:, :32]]  # second frame has another shape
    with pytest.raises(ValueError, match="frame 1 has shape"):
        write_store(path, mixed, 90)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.frames"]  # no temporary left behind
    with pytest.raises(ValueError, match="no frames"):
        write_store(tmp_path / "empty.frames", [], 90)
    with pytest.raises(ValueError, match="uint8"):
        write_store(tmp_path / "float.frames", frames.astype(np.float32), 90)
    assert not (tmp_path / "empty.frames").exists() and not (tmp_path / "float.frames").exists()


def test_header_size_matches_what_is_written(tmp_path, frames):
    path = tmp_path / "v.frames"
    write_store(path, np.zeros((5, 48, 64, 2), np.uint8), 90)
    assert struct.unpack_from("<Q", path.read_bytes(), 28)[0] == store.header_size(5, 2) == 28 + 8 * 11
