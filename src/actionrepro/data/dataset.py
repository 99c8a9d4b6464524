"""VideoClipDataset: the clips a model's InputSpec asks for, read from the frame (and flow) store.

One item per usable video of a split's subset. Train mode yields one augmented clip; test mode
yields V = clips x crops views (see actionrepro.inputs for tensor layouts). Everything random is
drawn from a generator seeded with (params["seed"], epoch, index), so a clip depends on nothing
else: not the DataLoader's worker count, not the order items are read in.

With decode_on="device" an item carries the sampled frames' JPEG bytes and the drawn geometry instead
of pixels: actionrepro.data.gpu_clips decodes and augments a whole batch on the GPU. Both modes draw
frames and geometry through the same `draw` method, so they sample the same clips.

Videos the decode (or flow) step quarantined are excluded and listed in `.excluded` with a logged
warning; a manifest video that neither step accounts for is an error, never a silent drop.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as F

from actionrepro import paths
from actionrepro.data import sampling
from actionrepro.data.store import FrameReader
from actionrepro.errors import DataError
from actionrepro.inputs import InputSpec

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MANIFEST_COLUMNS = ["video_id", "path", "label", "class_name", "subset"]
MAX_DISTORT = 1      # TSN multi-scale crop: width and height scales at most one step apart
OPEN_READERS = 16    # stores kept open per process (file descriptors, parsed headers)


# ---------------------------------------------------------------- geometry (pure, seeded)

def multiscale_crop_box(height: int, width: int, scales: list[float],
                        rng: np.random.Generator) -> tuple[int, int, int, int]:
    """TSN multi-scale crop: (top, left, crop_h, crop_w).

    Crop sides are scale x short side, the width and height scales drawn as a pair at most
    MAX_DISTORT steps apart in `scales` (TSN's aspect jitter), placed at one of the four corners or
    the centre.
    """
    base = min(height, width)
    sides = [max(1, int(base * s)) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= MAX_DISTORT]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    dy, dx = height - crop_h, width - crop_w
    corners = [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)]
    top, left = corners[int(rng.integers(len(corners)))]
    return top, left, crop_h, crop_w


def crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of the test crops of side `size` in a frame whose short side is already `size`.

    1 crop: the centre. 3 crops: both ends and the centre of the long side (left/centre/right for
    landscape, top/centre/bottom for portrait), the standard three-crop test.
    """
    dy, dx = max(height - size, 0), max(width - size, 0)
    if crops == 1:
        return [(dy // 2, dx // 2)]
    if crops == 3:
        if width >= height:
            return [(dy // 2, 0), (dy // 2, dx // 2), (dy // 2, dx)]
        return [(0, dx // 2), (dy // 2, dx // 2), (dy, dx // 2)]
    raise ValueError(f"crops must be 1 or 3, got {crops}")


def train_geometry(height: int, width: int, scales: list[float], hflip: bool,
                   rng: np.random.Generator) -> tuple[tuple[int, int, int, int], bool]:
    """One clip's augmentation: its crop box (top, left, h, w) and whether it is mirrored."""
    box = multiscale_crop_box(height, width, scales, rng)
    return box, bool(hflip and rng.random() < 0.5)


def apply_geometry(frames: torch.Tensor, box: tuple[int, int, int, int], flip: bool, size: int,
                   flow: bool = False) -> torch.Tensor:
    """Crop `box` from every frame (N, C, H, W) uint8, resize to size x size, mirror if `flip`.

    The whole clip goes through one call, so every frame (and the flow, given the same box and
    flip) gets exactly the same geometry. Mirroring flow also negates its x component.
    """
    top, left, h, w = box
    out = F.resized_crop(frames, top, left, h, w, [size, size], antialias=True)
    if flip:
        out = flip_flow(out) if flow else F.horizontal_flip(out)
    return out


def flip_flow(frames: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of quantised flow (..., 2, H, W): mirror the image and negate x (255 - x)."""
    out = F.horizontal_flip(frames)
    out[..., 0, :, :] = 255 - out[..., 0, :, :]
    return out


_MEAN_255 = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
_INV_STD_255 = 1.0 / (torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)


def normalise_rgb(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> contiguous float32, ImageNet mean/std (on the 0..1 scale)."""
    out = torch.empty(frames.shape, dtype=torch.float32)
    out.copy_(frames)  # one pass: converts type and (channels-last) layout together
    return out.sub_(_MEAN_255).mul_(_INV_STD_255)


def normalise_flow(frames: torch.Tensor) -> torch.Tensor:
    """uint8 flow -> contiguous float32 (v - 128) / 128."""
    out = torch.empty(frames.shape, dtype=torch.float32)
    out.copy_(frames)
    return out.sub_(128.0).mul_(1.0 / 128.0)


# ---------------------------------------------------------------- what an item draws

@dataclass(frozen=True)
class ClipDraw:
    """Everything an item samples, before any pixel is read.

    rgb_indices (T,) in train mode or (clips, T) in test mode, flow_indices (K, L) or (clips, K, L),
    None for a modality the spec does not use; height, width of the stored frames; box (top, left,
    h, w) and flip: the training augmentation (None / False in test mode, whose views are fixed).
    """

    rgb_indices: np.ndarray | None
    flow_indices: np.ndarray | None
    height: int
    width: int
    box: tuple[int, int, int, int] | None
    flip: bool


@dataclass(frozen=True)
class StoreTable:
    """Frame stores to read instead of a split's manifest (e.g. videos decoded for `actionrepro predict`):
    videos has STORE_COLUMNS, store_path relative to frames_root; label may be a placeholder (0)."""

    frames_root: Path
    videos: pd.DataFrame
    num_classes: int


STORE_COLUMNS = ("video_id", "path", "label", "store_path", "num_frames")


# ---------------------------------------------------------------- tables

def _read_csv(path: Path, what: str, fix: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found ({what}); {fix}")
    return pd.read_csv(path, dtype={"video_id": str, "path": str, "store_path": str, "class_name": str,
                                    "subset": str, "reason": str, "detail": str},
                       keep_default_na=False, na_filter=False)


def read_step_output(root: Path, step: str, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(index, quarantine) of the decode or flow step; DataError unless the step finished."""
    fix = f"run `actionrepro {step} {dataset}`"
    if not (root / "summary.json").is_file():
        raise DataError(f"{root}/summary.json not found: the {step} step has not finished for {dataset}; {fix}")
    index = _read_csv(root / "index.csv", f"the {step} step's index", fix)
    quarantine = _read_csv(root / "quarantine.csv", f"the {step} step's quarantine list", fix)
    for table, name, cols in ((index, "index.csv", ("video_id", "store_path", "num_frames")),
                              (quarantine, "quarantine.csv", ("video_id", "reason"))):
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise DataError(f"{root / name} lacks column(s) {', '.join(missing)}; re-{fix}")
    return index, quarantine


def _unaccounted(videos: pd.DataFrame, where: str, root: Path, step: str, dataset: str) -> DataError:
    names = ", ".join(videos.path.head(5))
    more = f" and {len(videos) - 5} more" if len(videos) > 5 else ""
    return DataError(f"{len(videos)} video(s) of {where} are neither in {root}/index.csv nor in "
                     f"{root}/quarantine.csv ({names}{more}): the {step} output is older than the manifests. "
                     f"Re-run `actionrepro {step} {dataset}` (it resumes and adds the missing videos)")


# ---------------------------------------------------------------- the dataset

class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of one split's subset for `spec`, from the store; see the module docstring."""

    def __init__(self, dataset: str, split: int, subset: Literal["train", "test"], spec: InputSpec, params: dict,
                 mode: Literal["train", "test"], views: tuple[int, int] = (1, 1), video_ids: list[str] | None = None,
                 decode_on: Literal["host", "device"] = "host", stores: StoreTable | None = None):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if decode_on not in ("host", "device"):
            raise ValueError(f"decode_on must be 'host' or 'device', got {decode_on!r}")
        self.decode_on = decode_on
        clips, crops = int(views[0]), int(views[1])
        if mode == "train" and (clips, crops) != (1, 1):
            raise ValueError(f"views={views} needs mode='test'; a training item is one augmented clip")
        if clips < 1 or crops not in (1, 3):
            raise ValueError(f"views must be (clips >= 1, crops in {{1, 3}}), got {views}")
        self.dataset, self.split, self.subset, self.spec, self.mode = dataset, int(split), subset, spec, mode
        self.views = (clips, crops)
        self.seed = int(params["seed"])
        self.scales = [float(s) for s in params["augment"]["scales"]]
        self.hflip = bool(params["augment"]["hflip"].get(dataset, True))
        self.epoch = 0
        self.frames_root, self.flow_root = paths.frames_dir(dataset), paths.flow_dir(dataset)
        if stores is None:
            self.videos, self.excluded, self.num_classes = self._load(video_ids)
        else:
            self.frames_root = Path(stores.frames_root)
            self.videos, self.excluded, self.num_classes = self._given(stores)
        keep = [c for c in ("path", "label", "store_path", "num_frames", "flow_store_path", "flow_num_frames")
                if c in self.videos]
        self._rows = [{k: (int(v) if k in ("label", "num_frames", "flow_num_frames") else v) for k, v in r.items()}
                      for r in self.videos[keep].to_dict("records")]  # plain values: no pandas per item
        self._readers: OrderedDict[str, FrameReader] = OrderedDict()
        self._pid = os.getpid()

    # -- tables
    def _load(self, video_ids: list[str] | None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        ds, mdir = self.dataset, paths.manifests_dir(self.dataset)
        fix = f"run `actionrepro splits {ds}`"
        manifest = _read_csv(mdir / f"split{self.split}.csv", f"split {self.split} manifest", fix)
        missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
        if missing:
            raise DataError(f"{mdir / f'split{self.split}.csv'} lacks column(s) {', '.join(missing)}; re-{fix}")
        classes = _read_csv(mdir / "classes.csv", "class index", fix)
        num_classes = len(classes)
        rows = manifest[manifest.subset == self.subset]
        if video_ids is not None:
            wanted = pd.Index([str(v) for v in video_ids])
            unknown = wanted.difference(rows.video_id)
            if len(unknown):
                raise DataError(f"video_ids not in the {self.subset} list of {mdir}/split{self.split}.csv: "
                                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
            rows = rows[rows.video_id.isin(wanted)]
        rows = rows.reset_index(drop=True)
        rows["label"] = rows["label"].astype(np.int64)
        if len(rows) and not rows.label.between(0, num_classes - 1).all():
            raise DataError(f"{mdir}/split{self.split}.csv has labels outside 0..{num_classes - 1} "
                            f"(classes.csv lists {num_classes}); re-{fix}")
        where = f"{mdir}/split{self.split}.csv ({self.subset})"

        steps = [("decode", self.frames_root, "")]
        if self.spec.flow:
            steps.append(("flow", self.flow_root, "flow_"))
        excluded = []
        for step, root, prefix in steps:
            index, quarantine = read_step_output(root, step, ds)
            index = index.drop_duplicates("video_id").set_index("video_id")
            bad = rows.video_id.isin(quarantine.video_id) & ~rows.video_id.isin(index.index)
            if bad.any():
                q = quarantine.drop_duplicates("video_id").set_index("video_id").reindex(rows.video_id[bad])
                detail = q["detail"].to_numpy() if "detail" in q else ""
                excluded.append(rows[bad].assign(step=step, reason=q["reason"].to_numpy(), detail=detail))
                rows = rows[~bad]
            lost = rows[~rows.video_id.isin(index.index)]
            if len(lost):
                raise _unaccounted(lost, where, root, step, ds)
            got = index.reindex(rows.video_id)
            rows = rows.assign(**{f"{prefix}store_path": got.store_path.to_numpy(),
                                  f"{prefix}num_frames": got.num_frames.astype(np.int64).to_numpy()})
            rows = rows.reset_index(drop=True)
        columns = MANIFEST_COLUMNS + ["step", "reason", "detail"]
        excluded = (pd.concat(excluded, ignore_index=True)[columns] if excluded
                    else pd.DataFrame(columns=columns))
        if len(excluded):
            log.warning("%s split %d %s: %d of %d videos excluded as quarantined (%s); see %s",
                        ds, self.split, self.subset, len(excluded), len(rows) + len(excluded),
                        ", ".join(f"{step} {reason}: {n}"
                                  for (step, reason), n in excluded.groupby(["step", "reason"]).size().items()),
                        " and ".join(f"{root}/quarantine.csv" for _, root, _ in steps))
        return rows, excluded, num_classes

    def _given(self, stores: StoreTable) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        """The videos of `stores` (RGB only: no flow store is read), none excluded."""
        if self.spec.flow:
            raise ValueError("a dataset over given stores reads RGB frame stores only; this model also needs flow")
        missing = [c for c in STORE_COLUMNS if c not in stores.videos.columns]
        if missing:
            raise ValueError(f"stores.videos lacks column(s) {', '.join(missing)} (needs {', '.join(STORE_COLUMNS)})")
        videos = stores.videos.reset_index(drop=True).astype({"label": np.int64, "num_frames": np.int64})
        return videos, pd.DataFrame(columns=MANIFEST_COLUMNS + ["step", "reason", "detail"]), int(stores.num_classes)

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        """Training clips and augmentation are a function of (seed, epoch, index)."""
        self.epoch = int(epoch)

    # -- reading
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()  # readers are opened lazily in each worker process
        return state

    def _reader(self, path: Path) -> FrameReader:
        if self._pid != os.getpid():  # forked: never share another process's descriptors
            self._readers, self._pid = OrderedDict(), os.getpid()
        key = str(path)
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = FrameReader(path)
            if len(self._readers) > OPEN_READERS:
                self._readers.popitem(last=False)[1].close()
        else:
            self._readers.move_to_end(key)
        return reader

    def _read(self, path: Path, indices: np.ndarray) -> torch.Tensor:
        """uint8 (len(indices), C, H, W) (a channels-last view), decoding each distinct frame once."""
        reader = self._reader(path)
        flat = np.asarray(indices).reshape(-1)
        self._check_range(path, reader, flat)
        unique, inverse = np.unique(flat, return_inverse=True)
        frames = torch.from_numpy(reader.read(unique.tolist())).permute(0, 3, 1, 2)
        if np.array_equal(unique, flat):  # distinct and increasing: already in order
            return frames
        return frames[torch.from_numpy(inverse.reshape(-1))]

    def _check_range(self, path: Path, reader: FrameReader, flat: np.ndarray) -> None:
        if flat.size and (flat.min() < 0 or flat.max() >= reader.num_frames):
            raise DataError(f"{path} holds {reader.num_frames} frames but the index says more; "
                            f"re-run `actionrepro decode {self.dataset}` (and flow)")

    def _read_encoded(self, path: Path, indices: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The JPEG bytes of each distinct frame of `indices` (RGB stores), as 1-D uint8 tensors in
        increasing frame order, and where each of the (flattened) indices finds its frame in them."""
        reader = self._reader(path)
        if reader.channels != 3:
            raise DataError(f"{path} holds {reader.channels}-channel frames; decode_on='device' reads RGB stores only")
        flat = np.asarray(indices).reshape(-1)
        self._check_range(path, reader, flat)
        unique, inverse = np.unique(flat, return_inverse=True)
        blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in reader.read_encoded(unique.tolist())]
        return blobs, torch.from_numpy(inverse.reshape(-1).astype(np.int64))

    # -- items
    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _indices(self, row: dict, rng: np.random.Generator | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """RGB indices (T,) / (clips, T) and flow indices (K, L) / (clips, K, L) for one video."""
        spec, clips = self.spec, self.views[0]
        share = spec.flow and spec.sampling == "segments" and spec.flow_segments == spec.segments
        rgb = flow = None
        if self.mode == "train":
            fractions = rng.random(spec.segments) if share else None  # align flow stacks with RGB segments
            if spec.rgb:
                rgb = sampling.clip_indices(spec, row["num_frames"], "train", rng, fraction=fractions)
            if spec.flow:
                flow = sampling.flow_stack_indices(row["flow_num_frames"], spec.flow_segments, spec.flow_len,
                                                   "train", rng, fraction=fractions)
        else:
            if spec.rgb:
                rgb = sampling.test_clip_indices(row["num_frames"], spec, clips)
            if spec.flow:
                flow = sampling.test_flow_indices(row["flow_num_frames"], spec, clips)
        return rgb, flow

    def draw(self, index: int) -> ClipDraw:
        """What item `index` samples: frame indices, then (training) crop box and flip, all from the
        (seed, epoch, index) generator in this order. Both decode modes call this, so they agree."""
        row = self._rows[index]
        rng = self._generator(index) if self.mode == "train" else None
        rgb_idx, flow_idx = self._indices(row, rng)
        height, width = self._store_size(row, rgb_idx is not None, flow_idx is not None)
        box, flip = None, False
        if self.mode == "train":
            box, flip = train_geometry(height, width, self.scales, self.hflip, rng)
        return ClipDraw(rgb_idx, flow_idx, height, width, box, flip)

    def _store_size(self, row: dict, rgb: bool, flow: bool) -> tuple[int, int]:
        """(height, width) of the item's stored frames, from the store headers (what read() returns)."""
        sizes = {}
        if rgb:
            reader = self._reader(self.frames_root / row["store_path"])
            sizes["rgb"] = (reader.height, reader.width)
        if flow:
            reader = self._reader(self.flow_root / row["flow_store_path"])
            sizes["flow"] = (reader.height, reader.width)
        if len(set(sizes.values())) != 1:
            raise DataError(f"{row['path']}: frames are {sizes['rgb']} but flow is {sizes['flow']}; "
                            f"the flow store is stale, re-run `actionrepro flow {self.dataset}`")
        return sizes.popitem()[1]

    def __getitem__(self, index: int) -> dict:
        row = self._rows[index]
        d = self.draw(index)
        out = {}
        if self.decode_on == "device":
            if d.rgb_indices is not None:
                out["rgb_jpeg"], out["rgb_gather"] = self._read_encoded(self.frames_root / row["store_path"],
                                                                        d.rgb_indices)
                box = d.box if d.box is not None else (0, 0, d.height, d.width)
                out["rgb_box"] = torch.tensor(box, dtype=torch.int64)
                out["rgb_flip"] = torch.tensor(d.flip)
                out["rgb_size"] = self.spec.size
                if self.mode == "test":
                    out["rgb_views"] = torch.tensor(self.views, dtype=torch.int64)  # (clips, crops)
        else:
            rgb = self._read(self.frames_root / row["store_path"], d.rgb_indices) if d.rgb_indices is not None else None
            if rgb is not None:
                out["rgb"] = self._rgb_tensor(rgb, d)
        # flow stays on the host in both modes (quantised 2-channel stores: grayscale JPEG planes)
        flow = self._read(self.flow_root / row["flow_store_path"], d.flow_indices) if d.flow_indices is not None else None
        if flow is not None:
            out["flow"] = self._flow_tensor(flow, d)
        out["label"] = row["label"]
        out["index"] = int(index)
        return out

    def _rgb_tensor(self, rgb: torch.Tensor, d: ClipDraw) -> torch.Tensor:
        if self.mode == "train":
            return normalise_rgb(apply_geometry(rgb, d.box, d.flip, self.spec.size))
        return normalise_rgb(self._test_views(rgb, self.views[0]))

    def _flow_tensor(self, flow: torch.Tensor, d: ClipDraw) -> torch.Tensor:
        spec, size = self.spec, self.spec.size
        if self.mode == "train":
            flow = normalise_flow(apply_geometry(flow, d.box, d.flip, size, flow=True))
            return flow.view(spec.flow_segments, 2 * spec.flow_len, size, size)
        views = normalise_flow(self._test_views(flow, self.views[0]))
        return views.view(len(views), spec.flow_segments, 2 * spec.flow_len, size, size)

    def _test_views(self, frames: torch.Tensor, clips: int) -> torch.Tensor:
        """(clips * F, C, H, W) uint8 -> (clips * crops, F, C, S, S): short side to S, then the crops."""
        size, crops = self.spec.size, self.views[1]
        frames = F.resize(frames, size, antialias=True)  # an int resizes the short side
        h, w = frames.shape[-2:]
        boxes = crop_offsets(h, w, size, crops)
        stacked = torch.stack([frames[..., t:t + size, l:l + size] for t, l in boxes], dim=1)  # (clips*F, crops, ...)
        stacked = stacked.reshape(clips, -1, crops, *stacked.shape[2:]).transpose(1, 2)        # (clips, crops, F, ...)
        return stacked.reshape(clips * crops, *stacked.shape[2:])
