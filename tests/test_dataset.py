from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from actionrepro.data import dataset as D
from actionrepro.data import sampling, store
from actionrepro.errors import DataError
from actionrepro.inputs import InputSpec

DS = "synth_ucf101"
H, W = 24, 32
PARAMS = {"seed": 3, "augment": {"scales": [1.0, 0.875, 0.75], "hflip": {DS: True}}}
RGB = InputSpec(segments=4, size=16)
TWO_STREAM = InputSpec(segments=4, flow=True, flow_segments=2, flow_len=3, size=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def gradient_frames(n: int, seed: int) -> np.ndarray:
    """RGB frames brightening from left to right (so a flip is visible), plus per-frame texture."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 235, W)[None, :, None]
    frames = ramp + rng.normal(0, 6, (n, H, W, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def flow_frames(n: int) -> np.ndarray:
    """Quantised flow: x constant at 200 (moving right), y a left-to-right ramp (a visible layout)."""
    out = np.empty((n, H, W, 2), np.uint8)
    out[..., 0] = 200
    out[..., 1] = np.linspace(30, 220, W).astype(np.uint8)[None, None, :]
    return out


def write_tree(root: Path, videos: dict[str, int], *, quarantined=(), unaccounted=(), flow=True,
               flow_quarantined=(), subsets=None) -> None:
    """Manifests, a finished frame store and (optionally) a flow store under `root`."""
    names = list(videos) + list(quarantined) + list(unaccounted)
    manifest = pd.DataFrame({
        "video_id": [f"v_{n}.avi" for n in names],
        "path": [f"C{i % 3}/v_{n}.avi" for i, n in enumerate(names)],
        "label": [i % 3 for i in range(len(names))],
        "class_name": [f"C{i % 3}" for i in range(len(names))],
        "subset": [(subsets or {}).get(n, "train") for n in names],
    })
    mdir = root / "data/manifests" / DS
    mdir.mkdir(parents=True)
    manifest.to_csv(mdir / "split1.csv", index=False)
    pd.DataFrame({"label": [0, 1, 2], "class_name": ["C0", "C1", "C2"]}).to_csv(mdir / "classes.csv", index=False)

    by_name = manifest.set_index(manifest.video_id.str[2:-4])
    for step, make in (("frames", lambda n: gradient_frames(n, 1)), ("flow", flow_frames)):
        if step == "flow" and not flow:
            continue
        out = root / "data" / step / DS
        rows = []
        for name, n in videos.items():
            if step == "flow" and name in flow_quarantined:
                continue
            rel = by_name.path[name].replace(".avi", ".frames")
            count = n if step == "frames" else n - 1
            store.write_store(out / rel, make(count), quality=95)
            rows.append({"video_id": by_name.video_id[name], "path": by_name.path[name], "store_path": rel,
                         "num_frames": count, "height": H, "width": W})
        pd.DataFrame(rows).to_csv(out / "index.csv", index=False)
        bad = quarantined if step == "frames" else flow_quarantined
        pd.DataFrame({"video_id": [by_name.video_id[q] for q in bad], "path": [by_name.path[q] for q in bad],
                      "reason": ["truncated" if step == "frames" else "too_short"] * len(bad),
                      "detail": ["decoded 3 of 90 frames"] * len(bad)}).to_csv(out / "quarantine.csv", index=False)
        (out / "summary.json").write_text("{}")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"a": 40, "b": 9, "c": 3, "d": 25})
    return tmp_path


def test_train_item_has_the_spec_layout_and_normalisation(tree):
    data = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")
    assert len(data) == 4 and data.num_classes == 3
    assert list(data.videos.video_id) == ["v_a.avi", "v_b.avi", "v_c.avi", "v_d.avi"]
    item = data[0]
    assert item["rgb"].shape == (4, 3, 16, 16) and item["rgb"].dtype == torch.float32
    assert item["flow"].shape == (2, 6, 16, 16) and item["flow"].dtype == torch.float32
    assert item["label"] == 0 and item["index"] == 0
    # flow channels interleave x, y: x is the constant 200 (or 55 when flipped), y a ramp
    x, y = item["flow"][:, 0::2], item["flow"][:, 1::2]
    assert torch.allclose(x, x.flatten()[0].expand_as(x), atol=4 / 128)
    assert abs(float(x.mean()) * 128) == pytest.approx(72, abs=3)
    assert float(y.std()) > 0.2


def test_rgb_only_spec_reads_no_flow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"a": 40, "b": 9}, flow=False)
    data = D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train")
    assert set(data[1]) == {"rgb", "label", "index"}
    with pytest.raises(DataError, match="actionrepro flow synth_ucf101"):
        D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")


def test_same_seed_epoch_and_index_give_the_same_clip_and_another_epoch_a_different_one(tree):
    a = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")
    b = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")
    b[3], b[1]  # reading other items first changes nothing
    for k in ("rgb", "flow"):
        assert torch.equal(a[0][k], b[0][k])
    a.set_epoch(1)
    assert not torch.equal(a[0]["rgb"], b[0]["rgb"])
    b.set_epoch(1)
    assert torch.equal(a[0]["rgb"], b[0]["rgb"])
    other = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, {**PARAMS, "seed": 4}, mode="train")
    other.set_epoch(1)
    assert not torch.equal(a[0]["rgb"], other[0]["rgb"])


def test_clips_do_not_depend_on_the_dataloader_worker_count(tree):
    data = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")
    data.set_epoch(2)
    data[0]  # a reader opened before the fork must not leak into the workers
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=workers)
        batches.append([b for b in loader])
    for one, two in zip(*batches):
        assert torch.equal(one["rgb"], two["rgb"]) and torch.equal(one["flow"], two["flow"])
        assert one["index"].tolist() == two["index"].tolist()


def _flipped(rgb: torch.Tensor) -> list[bool]:
    """Per frame: is the left-to-right ramp reversed?"""
    w = rgb.shape[-1]
    return [bool(f[..., : w // 2].mean() > f[..., w // 2:].mean()) for f in rgb]


def test_flip_is_applied_to_all_frames_and_flow_alike_and_negates_flow_x(tree):
    data = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")
    seen = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        for i in range(len(data)):
            item = data[i]
            flags = _flipped(item["rgb"])
            assert len(set(flags)) == 1, "frames of one clip flipped differently"
            y = item["flow"][:, 1::2]
            flow_flipped = bool(y[..., :8].mean() > y[..., 8:].mean())
            x = float(item["flow"][:, 0::2].mean()) * 128 + 128
            assert flow_flipped == flags[0]
            assert x == pytest.approx(55 if flags[0] else 200, abs=3)  # 255 - 200 when flipped
            seen.add(flags[0])
    assert seen == {True, False}


def test_hflip_off_for_a_dataset_never_flips(tree):
    params = {**PARAMS, "augment": {**PARAMS["augment"], "hflip": {DS: False}}}
    data = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, params, mode="train")
    for epoch in range(4):
        data.set_epoch(epoch)
        for i in range(len(data)):
            item = data[i]
            assert not any(_flipped(item["rgb"]))
            assert float(item["flow"][:, 0::2].mean()) * 128 + 128 == pytest.approx(200, abs=3)


def test_multiscale_crop_box_uses_scaled_short_side_at_corners_or_centre():
    rng = np.random.default_rng(0)
    scales = [1.0, 0.875, 0.75, 0.66]
    sides = {int(240 * s) for s in scales}
    positions, shapes = set(), set()
    for _ in range(2000):
        top, left, ch, cw = D.multiscale_crop_box(240, 320, scales, rng)
        assert ch in sides and cw in sides
        order = sorted(sides, reverse=True)
        assert abs(order.index(ch) - order.index(cw)) <= 1  # TSN: aspect jitter of one scale step at most
        assert 0 <= top and top + ch <= 240 and 0 <= left and left + cw <= 320
        assert (top, left) in {(0, 0), (0, 320 - cw), (240 - ch, 0), (240 - ch, 320 - cw),
                               ((240 - ch) // 2, (320 - cw) // 2)}
        if (ch, cw) == (158, 180):
            positions.add((top, left))
        shapes.add((ch, cw))
    assert len(shapes) == 10  # 4 scales, pairs at most one step apart: 4 + 2 * 3
    assert positions == {(0, 0), (0, 140), (82, 0), (82, 140), (41, 70)}


def test_test_views_have_clips_times_crops_and_are_deterministic(tree):
    data = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="test", views=(2, 3))
    item = data[0]
    assert item["rgb"].shape == (6, 4, 3, 16, 16)
    assert item["flow"].shape == (6, 2, 6, 16, 16)
    data.set_epoch(5)
    again = data[0]
    assert torch.equal(item["rgb"], again["rgb"]) and torch.equal(item["flow"], again["flow"])
    # three crops run left, centre, right over the (landscape) ramp, for each clip alike
    means = item["rgb"].mean(dim=(1, 2, 3, 4)).reshape(2, 3)
    assert (means[:, 0] < means[:, 1]).all() and (means[:, 1] < means[:, 2]).all()
    # views are clip-major: view (clip c, crop j) = c * 3 + j; crop j is the same region in both clips
    assert torch.allclose(means[0], means[1], atol=0.1)
    one = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="test", views=(1, 1))[0]
    assert one["rgb"].shape == (1, 4, 3, 16, 16)


def test_test_clip_is_the_centre_frames_resized_and_imagenet_normalised(tree):
    spec = InputSpec(segments=4, size=H)  # short side already at S: resize is a no-op
    data = D.VideoClipDataset(DS, 1, "train", spec, PARAMS, mode="test")
    rgb = data[0]["rgb"][0]
    idx = sampling.segment_indices(40, 4, 1, "test")
    frames = store.FrameReader(Path("data/frames") / DS / "C0/v_a.frames").read(idx.tolist())
    crop = torch.from_numpy(frames).permute(0, 3, 1, 2)[..., (W - H) // 2:(W - H) // 2 + H].float() / 255
    mean, std = torch.tensor(D.IMAGENET_MEAN)[:, None, None], torch.tensor(D.IMAGENET_STD)[:, None, None]
    assert torch.allclose(rgb, (crop - mean) / std, atol=1e-5)


def test_short_video_with_dense_clip_and_ustn_windows_reads_only_valid_frames(tree):
    for spec in (InputSpec(sampling="dense", clip_len=8, stride=2, size=16),
                 InputSpec(segments=8, frames_per_segment=5, size=16),
                 InputSpec(segments=4, flow=True, flow_segments=4, flow_len=5, size=16)):
        for mode, views in (("train", (1, 1)), ("test", (3, 1))):
            item = D.VideoClipDataset(DS, 1, "train", spec, PARAMS, mode=mode, views=views)[2]  # 3 frames
            assert torch.isfinite(item["rgb"]).all()


def test_quarantined_videos_are_excluded_counted_and_logged(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"a": 40, "b": 9, "c": 2}, quarantined=["bad"], flow_quarantined=["c"],
               subsets={"b": "test"})
    with caplog.at_level(logging.WARNING, logger="actionrepro.data.dataset"):
        rgb = D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train")
    assert list(rgb.videos.video_id) == ["v_a.avi", "v_c.avi"]
    assert rgb.excluded.video_id.tolist() == ["v_bad.avi"]
    assert rgb.excluded.reason.tolist() == ["truncated"] and rgb.excluded.step.tolist() == ["decode"]
    assert "1 of 3 videos excluded" in caplog.text and "quarantine.csv" in caplog.text
    two = D.VideoClipDataset(DS, 1, "train", TWO_STREAM, PARAMS, mode="train")
    assert list(two.videos.video_id) == ["v_a.avi"]
    assert two.excluded[["video_id", "step", "reason"]].values.tolist() == [
        ["v_bad.avi", "decode", "truncated"], ["v_c.avi", "flow", "too_short"]]
    test = D.VideoClipDataset(DS, 1, "test", TWO_STREAM, PARAMS, mode="test")
    assert list(test.videos.video_id) == ["v_b.avi"] and len(test.excluded) == 0


def test_manifest_video_missing_from_the_frame_index_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"a": 40}, unaccounted=["lost"])
    with pytest.raises(DataError, match=r"(?is)C1/v_lost\.avi.*re-run `actionrepro decode synth_ucf101`"):
        D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train")


def test_missing_frame_store_or_manifest_names_the_step_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="actionrepro splits synth_ucf101"):
        D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train")
    write_tree(tmp_path, {"a": 40})
    (tmp_path / "data/frames" / DS / "summary.json").unlink()
    with pytest.raises(DataError, match="actionrepro decode synth_ucf101"):
        D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train")


def test_video_ids_select_a_subset_and_unknown_ids_are_rejected(tree):
    data = D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="test", video_ids=["v_d.avi", "v_b.avi"])
    assert sorted(data.videos.video_id) == ["v_b.avi", "v_d.avi"]
    with pytest.raises(DataError, match="v_zzz.avi"):
        D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="test", video_ids=["v_zzz.avi"])
    with pytest.raises(ValueError, match="mode='test'"):
        D.VideoClipDataset(DS, 1, "train", RGB, PARAMS, mode="train", views=(2, 3))


def test_flow_stacks_follow_the_rgb_segments_when_counts_match(tree):
    """STFN-style specs (flow_segments == segments): stack k starts in segment k's part of the video."""
    spec = InputSpec(segments=4, flow=True, flow_segments=4, flow_len=2, size=16)
    data = D.VideoClipDataset(DS, 1, "train", spec, PARAMS, mode="train")
    row = data.videos.iloc[0]
    for epoch in range(20):
        data.set_epoch(epoch)
        rgb, flow = data._indices(row, data._generator(0))
        assert (np.abs(flow[:, 0] - rgb) <= 40 // 4).all()


def test_real_avi_through_decode_and_flow_gives_a_two_stream_clip(tmp_path, monkeypatch):
    """The chain the pipeline runs: MPEG-4 AVI -> decode step -> flow step -> dataset item."""
    from videos import write_video

    from actionrepro.steps import decode as decode_step
    from actionrepro.steps import flow as flow_step

    monkeypatch.chdir(tmp_path)
    names = ["C0/v_C0_g01_c01.avi", "C1/v_C1_g01_c01.avi"]
    for seed, name in enumerate(names):
        write_video(Path("data/videos") / DS / name, frames=12, height=48, width=64, seed=seed)
    mdir = Path("data/manifests") / DS
    mdir.mkdir(parents=True)
    pd.DataFrame({"video_id": [Path(n).name for n in names], "path": names, "label": [0, 1],
                  "class_name": ["C0", "C1"], "subset": ["train", "test"]}).to_csv(mdir / "split1.csv", index=False)
    pd.DataFrame({"label": [0, 1], "class_name": ["C0", "C1"]}).to_csv(mdir / "classes.csv", index=False)
    params = {**PARAMS, "decode": {"short_side": 32, "jpeg_quality": 90, "timeout_s": 60, "max_bad_fraction": 0.0},
              "flow": {"algorithm": "farneback", "bound": 20}}
    decode_step.decode_dataset(DS, params, workers=1)
    flow_step.compute_flow(DS, params, workers=1)

    spec = InputSpec(segments=3, flow=True, flow_segments=2, flow_len=4, size=32)
    train = D.VideoClipDataset(DS, 1, "train", spec, params, mode="train")
    item = train[0]
    assert item["rgb"].shape == (3, 3, 32, 32) and item["flow"].shape == (2, 8, 32, 32)
    assert item["label"] == 0 and torch.isfinite(item["rgb"]).all()
    assert float(item["flow"].abs().max()) > 0  # the clip's pan and disc do move
    test = D.VideoClipDataset(DS, 1, "test", spec, params, mode="test", views=(2, 3))
    assert test[0]["rgb"].shape == (6, 3, 3, 32, 32) and test[0]["label"] == 1


def test_looping_dense_clip_reads_frames_in_clip_order(tree):
    """A 3-frame video under an 8-frame dense clip loops 0,1,2,0,...: the order must survive decoding."""
    spec = InputSpec(sampling="dense", clip_len=8, stride=1, size=H)
    data = D.VideoClipDataset(DS, 1, "train", spec, PARAMS, mode="test")
    rgb = data[2]["rgb"][0]
    assert sampling.dense_indices(3, 8, 1, "test").tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    for a, b in ((0, 3), (1, 4), (2, 5), (0, 6)):
        assert torch.equal(rgb[a], rgb[b])
    assert not torch.equal(rgb[0], rgb[1])
