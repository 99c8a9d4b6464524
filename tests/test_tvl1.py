"""The PyTorch TV-L1 (data/tvl1.py) against OpenCV's DualTVL1OpticalFlow, stage by stage and end to end."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from actionrepro.data import flow, tvl1

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def opencv_one_thread():
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(threads)


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """float32 smooth random texture in 0..255 with gradients everywhere."""
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32) * 255
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 2.0 - 128, 0, 255)


def shifted_pair(h: int, w: int, dx: float, dy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (prev, next) crops of one texture, next = prev moved by (dx, dy) px (bicubic, sub-pixel)."""
    big = texture(h + 16, w + 16, seed)
    ys, xs = np.mgrid[8:8 + h, 8:8 + w].astype(np.float32)
    prev = big[8:8 + h, 8:8 + w]
    nxt = cv2.remap(big, xs - np.float32(dx), ys - np.float32(dy), cv2.INTER_CUBIC)
    return (np.clip(np.rint(prev), 0, 255).astype(np.uint8), np.clip(np.rint(nxt), 0, 255).astype(np.uint8))


def opencv_tvl1(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, nxt, None)


def epe(a: np.ndarray, b: np.ndarray) -> float:
    """Mean end-point error between two (H, W, 2) flows, in px."""
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


# ---------------------------------------------------------------- stages against OpenCV

def test_pyramid_resize_and_flow_upscaling_match_cv_resize():
    img = texture(51, 64, 0)
    sizes = tvl1.pyramid_sizes(51, 64, tvl1.TVL1Params())
    assert sizes == [(51, 64), (41, 51), (33, 41), (26, 33), (21, 26)]  # rounded, like cv::resize(fx=0.8)
    levels = tvl1.build_pyramid(torch.from_numpy(img)[None], sizes, 0.8)
    ref = img
    for level, (h, w) in zip(levels[1:], sizes[1:]):
        ref = cv2.resize(ref, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        assert ref.shape == (h, w)
        np.testing.assert_allclose(level[0].numpy(), ref, atol=2e-3)
    coarse = np.random.default_rng(1).normal(0, 2, (2, 41, 51)).astype(np.float32)
    up = tvl1.upscale_flow(torch.from_numpy(coarse)[None], (51, 64), 0.8)[0].numpy()
    for c in range(2):
        np.testing.assert_allclose(up[c], cv2.resize(coarse[c], (64, 51), interpolation=cv2.INTER_LINEAR) / 0.8,
                                   atol=1e-4)


def test_bicubic_warp_matches_cv_remap_inside_and_across_the_border():
    img = texture(40, 50, 2)
    rng = np.random.default_rng(3)
    fx = rng.normal(0, 3, (40, 50)).astype(np.float32)
    fy = rng.normal(0, 3, (40, 50)).astype(np.float32)
    xs, ys = np.meshgrid(np.arange(50, dtype=np.float32), np.arange(40, dtype=np.float32))
    ref = cv2.remap(img, xs + fx, ys + fy, cv2.INTER_CUBIC)  # zero outside (BORDER_CONSTANT)
    ours = tvl1.remap_cubic(torch.from_numpy(img)[None, None], torch.from_numpy(np.stack([fx, fy]))[None])
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=2e-3)


@pytest.mark.parametrize("k", [3, 5])
def test_median_network_equals_cv_median_blur(k):
    u = np.random.default_rng(k).normal(0, 1, (2, 23, 31)).astype(np.float32)
    ours = tvl1.median_blur(torch.from_numpy(u)[None], k)[0].numpy()
    for c in range(2):
        np.testing.assert_array_equal(ours[c], cv2.medianBlur(u[c], k))


def test_centered_gradient_is_half_differences_with_one_sided_border():
    img = torch.tensor([[0.0, 2.0, 6.0], [1.0, 1.0, 1.0], [4.0, 0.0, 9.0]])[None]
    g = tvl1.centered_gradient(img)[0]
    assert g[0].tolist() == [[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [-2.0, 2.5, 4.5]]
    assert g[1].tolist() == [[0.5, -0.5, -2.5], [2.0, -1.0, 1.5], [1.5, -0.5, 4.0]]


# ---------------------------------------------------------------- end to end

EPE_VS_OPENCV = 0.05  # px, mean over the frame (measured 0.009-0.012 on these pairs)


@pytest.mark.parametrize("size,motion,seed", [((48, 64), (1.3, -0.6), 4), ((64, 80), (-2.25, 0.8), 5)])
def test_flow_matches_opencv_tvl1(size, motion, seed):
    prev, nxt = shifted_pair(*size, *motion, seed)
    ours, ref = tvl1.tvl1(prev, nxt, device="cpu"), opencv_tvl1(prev, nxt)
    assert ours.shape == (*size, 2) and ours.dtype == np.float32
    assert epe(ours, ref) < EPE_VS_OPENCV


@pytest.mark.parametrize("size", [(12, 20), (3, 3)])
def test_frames_too_small_for_a_pyramid_match_opencv(size):
    prev, nxt = shifted_pair(*size, 0.7, -0.4, 1)
    assert epe(tvl1.tvl1(prev, nxt, device="cpu"), opencv_tvl1(prev, nxt)) < 1e-3


def test_flat_frames_give_zero_flow():
    flat = np.full((30, 40), 77, np.uint8)
    assert np.abs(tvl1.tvl1(flat, flat, device="cpu")).max() == 0


def test_known_translation_is_recovered_with_the_right_sign():
    dx, dy = 1.4, -0.6
    prev, nxt = shifted_pair(64, 80, dx, dy, 6)
    f = tvl1.tvl1(prev, nxt, device="cpu")
    inner = f[8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.05)
    assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.05)
    assert epe(inner, np.broadcast_to(np.float32([dx, dy]), inner.shape)) < 0.15


def test_batched_flow_equals_flow_of_each_pair():
    pairs = [shifted_pair(48, 64, dx, dy, s) for s, (dx, dy) in enumerate([(1.0, 0.5), (-0.7, 1.6), (0.0, 0.0)])]
    prev = torch.from_numpy(np.stack([p for p, _ in pairs]).astype(np.float32))
    nxt = torch.from_numpy(np.stack([n for _, n in pairs]).astype(np.float32))
    batched = tvl1.tvl1_batch(prev, nxt).numpy()
    assert batched.shape == (3, 48, 64, 2)
    for i, (p, n) in enumerate(pairs):
        np.testing.assert_allclose(batched[i], tvl1.tvl1(p, n, device="cpu"), atol=1e-3)
    assert np.abs(batched[2]).max() < 0.05  # identical frames: no motion


def test_reading_the_stop_flags_less_often_as_on_a_gpu_changes_nothing(monkeypatch):
    pairs = [shifted_pair(48, 64, dx, dy, s) for s, (dx, dy) in enumerate([(1.0, 0.5), (-0.7, 1.6), (0.0, 0.0)])]
    prev = torch.from_numpy(np.stack([p for p, _ in pairs]).astype(np.float32))
    nxt = torch.from_numpy(np.stack([n for _, n in pairs]).astype(np.float32))
    every_iteration = tvl1.tvl1_batch(prev, nxt)
    monkeypatch.setattr(tvl1, "stop_check_interval", lambda device: 8)
    torch.testing.assert_close(tvl1.tvl1_batch(prev, nxt), every_iteration, rtol=0, atol=0)


def test_same_input_gives_the_same_flow():
    prev, nxt = shifted_pair(48, 64, 0.6, 0.6, 9)
    np.testing.assert_array_equal(tvl1.tvl1(prev, nxt, device="cpu"), tvl1.tvl1(prev, nxt, device="cpu"))


def test_flow_function_names_the_implementations():
    prev, nxt = shifted_pair(48, 64, 1.0, 0.0, 7)
    ours, ref = flow.flow_function("tvl1")(prev, nxt), flow.flow_function("tvl1_opencv")(prev, nxt)
    assert epe(ours, ref) < EPE_VS_OPENCV
    with pytest.raises(ValueError, match="tvl1_opencv"):
        flow.flow_function("nope")


def test_unsupported_parameters_are_refused():
    with pytest.raises(ValueError, match="gamma"):
        tvl1.TVL1Params(gamma=0.1)
    with pytest.raises(ValueError, match="odd"):
        tvl1.TVL1Params(median_filtering=4)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        tvl1.tvl1_batch(torch.zeros(8, 8), torch.zeros(8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_flow_equals_cpu_flow():
    prev, nxt = shifted_pair(64, 80, 1.1, -0.9, 8)
    a = torch.from_numpy(prev.astype(np.float32))[None]
    b = torch.from_numpy(nxt.astype(np.float32))[None]
    on_gpu = tvl1.tvl1_batch(a.cuda(), b.cuda())
    assert on_gpu.device.type == "cuda"
    assert epe(on_gpu[0].cpu().numpy(), tvl1.tvl1_batch(a, b)[0].numpy()) < 0.01
