"""The device decode path (decode_on="device" + gpu_clips.to_device_batch) against the host path.

Run on the CPU device here (decode_jpeg on the CPU); the CUDA tests need a GPU and are skipped without.
Same draws (frame indices, box, flip) exactly; pixels within RGB_TOL (1 grey level) of the host path, on
the 0..255 scale: the host resizes uint8 with a fixed-point kernel and rounds, the device path
resizes in float32 (JPEG decoding itself agrees exactly on the CPU: both are libjpeg-turbo).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from actionrepro.data import dataset as D
from actionrepro.data import gpu_clips, store
from actionrepro.inputs import InputSpec
from test_dataset import DS, PARAMS, RGB, TWO_STREAM, write_tree

pytestmark = pytest.mark.usefixtures("one_thread")

# Max |host - device| in grey levels (0..255), on the CPU device. Measured (8 epochs each; noisy ramps
# at 24x32 -> 16/20 and textured 341x256 -> 224/112, train crops and 2x3 test views): max 1.0003,
# mean 0.20-0.31. The host's uint8 kernel rounds (0.5) and uses fixed-point weights (up to ~0.5 more);
# decoding agrees exactly. On CUDA nvJPEG's IDCT/upsampling may add a few levels: CUDA_TOL (a guess,
# not measured: no GPU was lent when this was written).
RGB_TOL = 1.01
CUDA_TOL = 8.0
STD_255 = torch.tensor(D.IMAGENET_STD).view(3, 1, 1) * 255
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"a": 40, "b": 9, "c": 25})
    return tmp_path


def textured_tree(root: Path, monkeypatch, n: int = 20) -> None:
    """One video of n textured 256x341 frames (UCF101 at short side 256), JPEG q90 like the decode step."""
    write_tree(root, {"a": n}, flow=False)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:256, 0:341]
    frames = []
    for t in range(n):
        base = 128 + 60 * np.sin((x + 3 * t) / 7.0)[..., None] * np.cos(y / 11.0)[..., None]
        frames.append(np.clip(base + rng.normal(0, 20, (256, 341, 3)), 0, 255).astype(np.uint8))
    rel = "C0/v_a.frames"
    store.write_store(root / "data/frames" / DS / rel, np.stack(frames), quality=90)
    index = root / "data/frames" / DS / "index.csv"
    index.write_text(f"video_id,path,store_path,num_frames,height,width\nv_a.avi,C0/v_a.avi,{rel},{n},256,341\n")


def both(spec: InputSpec, mode: str, views=(1, 1), epoch: int = 0):
    host = D.VideoClipDataset(DS, 1, "train", spec, PARAMS, mode=mode, views=views)
    dev = D.VideoClipDataset(DS, 1, "train", spec, PARAMS, mode=mode, views=views, decode_on="device")
    host.set_epoch(epoch)
    dev.set_epoch(epoch)
    return host, dev


def device_items(dev: D.VideoClipDataset, device="cpu", batch_size=2) -> dict:
    loader = DataLoader(dev, batch_size=batch_size, collate_fn=gpu_clips.collate_encoded)
    parts = [gpu_clips.to_device_batch(b, device, dev.spec) for b in loader]
    return {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max difference of two normalised RGB tensors (..., 3, H, W), in 0..255 grey levels."""
    return float(((a - b).abs() * STD_255).max())


@pytest.mark.parametrize("epoch", [0, 1])
def test_both_modes_draw_the_same_frames_box_and_flip(tree, epoch):
    host, dev = both(RGB, "train", epoch=epoch)
    for i in range(len(host)):
        a, b = host.draw(i), dev.draw(i)
        assert np.array_equal(a.rgb_indices, b.rgb_indices) and a.box == b.box and a.flip == b.flip
        item = dev[i]
        assert item["rgb_box"].tolist() == list(a.box) and bool(item["rgb_flip"]) == a.flip
        distinct = np.unique(a.rgb_indices)
        assert len(item["rgb_jpeg"]) == len(distinct)
        assert np.array_equal(distinct[item["rgb_gather"].numpy()], a.rgb_indices)
    assert "rgb" not in dev[0]


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_train_clips_match_the_host_path_within_tolerance(tree, epoch):
    host, dev = both(RGB, "train", epoch=epoch)
    got = device_items(dev)
    want = torch.stack([host[i]["rgb"] for i in range(len(host))])
    assert got["rgb"].shape == want.shape == (3, RGB.frames, 3, RGB.size, RGB.size)
    assert got["rgb"].dtype == torch.float32
    assert grey_levels(got["rgb"], want) <= RGB_TOL
    assert got["label"].tolist() == [host[i]["label"] for i in range(len(host))]
    assert got["index"].tolist() == [0, 1, 2]


def test_flips_happen_and_match(tree):
    """Over a few epochs both flip states occur, and the device path mirrors exactly when the host does."""
    seen = set()
    for epoch in range(6):
        host, dev = both(RGB, "train", epoch=epoch)
        got = device_items(dev)["rgb"]
        for i in range(len(host)):
            seen.add(host.draw(i).flip)
            assert grey_levels(got[i], host[i]["rgb"]) <= RGB_TOL
    assert seen == {True, False}


@pytest.mark.parametrize("spec", [RGB, InputSpec(sampling="dense", clip_len=6, stride=3, size=16),
                                  InputSpec(segments=3, frames_per_segment=5, size=20)])
def test_test_views_match_the_host_path(tree, spec):
    host, dev = both(spec, "test", views=(2, 3))
    got = device_items(dev)["rgb"]
    want = torch.stack([host[i]["rgb"] for i in range(len(host))])
    assert got.shape == want.shape == (3, 6, spec.frames, 3, spec.size, spec.size)
    assert grey_levels(got, want) <= RGB_TOL


def test_two_stream_flow_stays_on_the_host_path_and_is_identical(tree):
    host, dev = both(TWO_STREAM, "train", epoch=1)
    got = device_items(dev)
    want = [host[i] for i in range(len(host))]
    assert torch.equal(got["flow"], torch.stack([w["flow"] for w in want]))
    assert grey_levels(got["rgb"], torch.stack([w["rgb"] for w in want])) <= RGB_TOL


def test_paper_size_frames_match_within_tolerance(tmp_path, monkeypatch):
    """UCF101-sized textured frames cropped and resized to 224 (up- and downsampling both occur)."""
    monkeypatch.chdir(tmp_path)
    textured_tree(tmp_path, monkeypatch)
    spec = InputSpec(segments=4, size=224)
    worst = 0.0
    for epoch in range(4):
        host, dev = both(spec, "train", epoch=epoch)
        got = device_items(dev)["rgb"]
        worst = max(worst, grey_levels(got[0], host[0]["rgb"]))
    assert worst <= RGB_TOL


def test_device_mode_rejects_unknown_values(tree):
    with pytest.raises(ValueError, match="decode_on"):
        D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train", decode_on="gpu")


@cuda
def test_cuda_train_clips_match_the_host_path(tree):
    host, dev = both(RGB, "train", epoch=1)
    got = device_items(dev, "cuda")
    want = torch.stack([host[i]["rgb"] for i in range(len(host))])
    assert grey_levels(got["rgb"], want) <= CUDA_TOL


@cuda
def test_cuda_paper_size_frames_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    textured_tree(tmp_path, monkeypatch)
    spec = InputSpec(segments=4, size=224)
    host, dev = both(spec, "train", epoch=0)
    got = device_items(dev, "cuda")["rgb"]
    assert got.device.type == "cpu"  # moved back by device_items
    assert grey_levels(got[0], host[0]["rgb"]) <= CUDA_TOL


def test_without_a_spec_the_recorded_size_is_used_and_workers_can_read(tree):
    """What the loop will call: to_device_batch(batch, device), batches from DataLoader workers."""
    host, dev = both(TWO_STREAM, "train", epoch=2)
    loader = DataLoader(dev, batch_size=3, num_workers=1, collate_fn=gpu_clips.collate_encoded)
    batch = next(iter(loader))
    assert gpu_clips.is_encoded(batch) and not gpu_clips.is_encoded({"rgb": torch.zeros(1)})
    got = gpu_clips.to_device_batch(batch, "cpu")
    want = torch.stack([host[i]["rgb"] for i in range(len(host))])
    assert got["rgb"].shape == want.shape and grey_levels(got["rgb"], want) <= RGB_TOL
    assert set(got) == {"rgb", "flow", "label", "index"}
