"""Decode and augment a batch of clips on the device the model trains on (the GPU path).

With `VideoClipDataset(..., decode_on="device")` the DataLoader workers only read: an item holds the
JPEG bytes of its distinct sampled frames (`rgb_jpeg`, a list of 1-D uint8 tensors), where each of the
clip's frames finds its image among them (`rgb_gather`), the drawn crop box and flip (`rgb_box`,
`rgb_flip`; the whole frame and no flip in test mode, which adds `rgb_views` = (clips, crops)).
`collate_encoded` keeps the byte tensors as lists, and `to_device_batch` then, on `device`:

  1. decodes every JPEG of the batch in one batched `torchvision.io.decode_jpeg(..., device=...)` call
     (nvJPEG on CUDA, libjpeg-turbo on the CPU: the latter gives exactly cv2's pixels);
  2. applies the same geometry as the host path (dataset.apply_geometry / _test_views): crop the box,
     resize to size x size (antialiased bilinear), mirror; or in test mode resize the short side and
     cut the crops;
  3. normalises with the ImageNet mean/std,

and returns the batch layout the models take (actionrepro.inputs): rgb float32 (B, T, 3, S, S), or
(B, V, T, 3, S, S) in test mode, with flow (decoded on the host, as before) moved along.

Using it (the loop, evaluation and runner are not wired to it yet):

    data = VideoClipDataset(..., decode_on="device" if device.type == "cuda" else "host")
    loader = DataLoader(data, ..., collate_fn=gpu_clips.collate_encoded if data.decode_on == "device" else None)
    for batch in loader:
        if gpu_clips.is_encoded(batch):
            batch = gpu_clips.to_device_batch(batch, device)   # rgb (and flow, label, index) now on device
        ...                                                    # model_inputs / fold_views as before

Pixels differ slightly from the host path: the host resizes uint8 with torchvision's fixed-point
kernel and rounds to uint8 before normalising; here the resize runs in float32 and is not rounded
(and nvJPEG's IDCT/upsampling may differ from libjpeg-turbo's by a level or so). Frame indices,
boxes and flips are the same numbers (dataset.VideoClipDataset.draw). Measured on the CPU device: at most 1.0 grey level (0..255 scale), mean 0.2-0.3
(tests/test_gpu_clips.py).
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import torch
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from actionrepro.data.dataset import IMAGENET_MEAN, IMAGENET_STD, crop_offsets
from actionrepro.inputs import InputSpec

LIST_KEYS = ("rgb_jpeg",)


def collate_encoded(items: Sequence[dict]) -> dict:
    """DataLoader collate for decode_on="device" items: JPEG byte tensors stay lists (one per item,
    lengths differ), everything else is collated as usual."""
    lists = {k: [item[k] for item in items] for k in LIST_KEYS if k in items[0]}
    rest = default_collate([{k: v for k, v in item.items() if k not in LIST_KEYS} for item in items])
    rest.update(lists)
    return rest


def decode_frames(blobs: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """JPEG byte tensors (on the host) -> uint8 (3, H, W) images on `device`, one batched call."""
    if not blobs:
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of torchcodec, not installed here;
        # decode_jpeg still works and is the batched nvJPEG entry point
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(blobs, mode=ImageReadMode.RGB, device=torch.device(device))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) on the 0..255 scale -> ImageNet-normalised, in place."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1) * 255)
    return x.sub_(mean).mul_(inv_std)


def _train_clip(frames: torch.Tensor, box: Sequence[int], flip: bool, size: int) -> torch.Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, size, size) float32 on the 0..255 scale: dataset.apply_geometry in float."""
    top, left, h, w = (int(v) for v in box)
    crop = frames[..., top:top + h, left:left + w].float()
    out = F.resize(crop, [size, size], antialias=True)
    return out.flip(-1) if flip else out


def _test_clip(frames: torch.Tensor, clips: int, crops: int, size: int) -> torch.Tensor:
    """(clips*T, 3, H, W) uint8 -> (clips*crops, T, 3, size, size) float32: dataset._test_views in float."""
    frames = F.resize(frames.float(), size, antialias=True)  # an int resizes the short side
    h, w = frames.shape[-2:]
    boxes = crop_offsets(h, w, size, crops)
    stacked = torch.stack([frames[..., t:t + size, l:l + size] for t, l in boxes], dim=1)
    stacked = stacked.reshape(clips, -1, crops, *stacked.shape[2:]).transpose(1, 2)
    return stacked.reshape(clips * crops, *stacked.shape[2:])


def is_encoded(batch: Mapping) -> bool:
    """Whether `batch` comes from a decode_on="device" dataset (needs to_device_batch before the model)."""
    return "rgb_jpeg" in batch


def to_device_batch(batch: Mapping, device: torch.device | str, spec: InputSpec | None = None,
                    non_blocking: bool = True) -> dict:
    """A collate_encoded batch -> the model's batch on `device`: rgb decoded, augmented, normalised there;
    flow, label and index moved along. Items of a batch may have frames of different sizes.

    spec: the model's InputSpec (only its size is used); None takes the size the dataset recorded."""
    device = torch.device(device)
    out: dict = {}
    if "rgb_jpeg" in batch:
        size = spec.size if spec is not None else int(batch["rgb_size"][0])
        blobs = [blob for item in batch["rgb_jpeg"] for blob in item]
        images = decode_frames(blobs, device)
        gather = batch["rgb_gather"].to(device, non_blocking=non_blocking)
        boxes, flips = batch["rgb_box"].tolist(), batch["rgb_flip"].tolist()
        views = batch["rgb_views"].tolist() if "rgb_views" in batch else None
        clips, start = [], 0
        for b, item in enumerate(batch["rgb_jpeg"]):
            frames = torch.stack(images[start:start + len(item)])[gather[b]]
            start += len(item)
            if views is None:
                clips.append(_train_clip(frames, boxes[b], bool(flips[b]), size))
            else:
                clips.append(_test_clip(frames, views[b][0], views[b][1], size))
        out["rgb"] = _normalise(torch.stack(clips))
    for key in ("flow", "label", "index"):
        if key in batch:
            value = batch[key]
            out[key] = value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value
    return out


# ---------------------------------------------------------------- what the loops call
def decode_on(device: torch.device) -> str:
    """Where a loop on `device` decodes its clips: on the GPU when it trains on one, else in the workers."""
    return "device" if torch.device(device).type == "cuda" else "host"


def dataset_options(device: torch.device) -> dict:
    """Extra VideoClipDataset arguments for a loop on `device` (none on the CPU: the host path as it was)."""
    return {"decode_on": "device"} if decode_on(device) == "device" else {}


def collate_for(data) -> Callable | None:
    """The DataLoader collate of a dataset (or a Subset of one): lists of JPEG bytes for device decoding."""
    base = getattr(data, "dataset", data)
    return collate_encoded if getattr(base, "decode_on", "host") == "device" else None


def on_device(batch: Mapping, device: torch.device) -> Mapping:
    """A loader batch ready for the model on `device`: encoded clips decoded there, others as they are."""
    return to_device_batch(batch, device) if is_encoded(batch) else batch
