"""TV-L1 optical flow in PyTorch, batched over frame pairs, reproducing OpenCV's DualTVL1OpticalFlow.

Why: the flow step is the slowest step of the pipeline and OpenCV's TV-L1 runs on one CPU core per
pair. This implementation runs a batch of pairs at once on the device the inputs live on (CUDA when
present) and follows OpenCV's algorithm step by step, so its flow can replace OpenCV's.

The method is the duality-based TV-L1 of Zach, Pock and Bischof (2007) with the refinements of Wedel
et al. (2009) as implemented by Sanchez Perez et al. and by OpenCV's optflow module. What is
reproduced from OpenCV (contrib `optflow/src/tvl1flow.cpp`, default parameters):
  - intensities on the 0..255 scale (uint8 input converted without scaling);
  - pyramid: each level is the previous one resized by scale_step with bilinear interpolation
    (cv::resize INTER_LINEAR, pixel-centre aligned, no anti-aliasing, size rounded to nearest);
    levels stop before one would be narrower or shorter than 16 px;
  - coarse to fine, flow starts at zero on the coarsest level; between levels the flow is resized
    bilinearly to the finer size and multiplied by 1 / scale_step;
  - per level: the gradient of the second image by centred differences (half one-sided differences
    on the border), computed ONCE on the unwarped image; per warp the image and its two gradient
    images are warped by bicubic remapping (cv::remap INTER_CUBIC: Keys kernel with a = -0.75,
    sampled at the exact float position as OpenCV 5 does (OpenCV 4 rounded it to 1/32 px), zero
    outside the image);
  - the dual variables are reset to zero per level and kept across warps;
  - per warp, up to outer_iterations rounds of: median filter of the flow (cv::medianBlur, k x k,
    replicated border), then up to inner_iterations of (thresholding step, primal step, dual step);
    both loops stop as soon as the sum over the level of the squared flow update of the last inner
    iteration is <= epsilon^2 * (number of pixels of the level). Each pair stops on its own.
gamma (illumination term) and useInitialFlow are not supported: both are off by default in OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

MIN_LEVEL_SIDE = 16  # OpenCV stops the pyramid before a level narrower or shorter than this
FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV DualTVL1OpticalFlow's parameters, with its defaults (lambda_ is OpenCV's lambda)."""

    tau: float = 0.25                # time step of the dual update (the update uses tau / theta)
    lambda_: float = 0.15            # weight of the data term: smaller = smoother flow
    theta: float = 0.3               # coupling between the flow u and its auxiliary variable v
    nscales: int = 5                 # pyramid levels (fewer when a level would go under 16 px)
    warps: int = 5                   # warps of the second image per level
    epsilon: float = 0.01            # stopping threshold on the root mean squared flow update
    inner_iterations: int = 30
    outer_iterations: int = 10       # median filter rounds per warp
    scale_step: float = 0.8          # size ratio between consecutive pyramid levels
    gamma: float = 0.0               # illumination term: only 0 (OpenCV's default) is supported
    median_filtering: int = 5        # odd median kernel size; <= 1 switches the filter off

    def __post_init__(self):
        if self.gamma != 0:
            raise ValueError("TVL1Params.gamma != 0 (illumination term) is not implemented")
        if self.median_filtering > 1 and self.median_filtering % 2 == 0:
            raise ValueError(f"median_filtering must be odd, got {self.median_filtering}")
        if not 0 < self.scale_step < 1 or self.nscales < 1 or self.warps < 1:
            raise ValueError("need 0 < scale_step < 1, nscales >= 1 and warps >= 1")


# ---------------------------------------------------------------- resizing (cv::resize INTER_LINEAR)

def linear_resize_matrix(n_out: int, n_in: int, scale: float) -> np.ndarray:
    """(n_out, n_in) float32 weights of OpenCV's bilinear resize along one axis.

    scale is source pixels per destination pixel; destination pixel d samples the source at
    (d + 0.5) * scale - 0.5, clamped to the first and last source pixel (replicated border).
    """
    pos = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    left = np.floor(pos).astype(np.int64)
    frac = (pos - left.astype(np.float32)).astype(np.float32)
    frac[left < 0] = 0
    left[left < 0] = 0
    frac[left >= n_in - 1] = 0
    left[left >= n_in - 1] = n_in - 1
    weights = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    weights[rows, left] = np.float32(1) - frac
    right = np.minimum(left + 1, n_in - 1)
    weights[rows, right] += frac
    return weights


def resize_linear(images: torch.Tensor, size: tuple[int, int], scale: tuple[float, float]) -> torch.Tensor:
    """Bilinear resize of (..., H, W) to size (h, w); scale = (source/destination) per axis (y, x)."""
    h_in, w_in = images.shape[-2:]
    rows = torch.from_numpy(linear_resize_matrix(size[0], h_in, scale[0])).to(images.device)
    cols = torch.from_numpy(linear_resize_matrix(size[1], w_in, scale[1])).to(images.device)
    return rows @ (images @ cols.T)


def pyramid_sizes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """Level sizes, finest first: each the previous times scale_step rounded, none under 16 px."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = sizes[-1]
        nh, nw = round(h * params.scale_step), round(w * params.scale_step)
        if nh < MIN_LEVEL_SIDE or nw < MIN_LEVEL_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


def build_pyramid(images: torch.Tensor, sizes: list[tuple[int, int]], scale_step: float) -> list[torch.Tensor]:
    """Each level resized from the previous one (not from the original), as OpenCV does."""
    levels = [images]
    inv = 1.0 / scale_step
    for size in sizes[1:]:
        levels.append(resize_linear(levels[-1], size, (inv, inv)))
    return levels


def upscale_flow(flow: torch.Tensor, size: tuple[int, int], scale_step: float) -> torch.Tensor:
    """(N, 2, h, w) flow -> (N, 2, H, W) for the finer level: bilinear resize, values / scale_step."""
    h, w = flow.shape[-2:]
    scale = (1.0 / (size[0] / h), 1.0 / (size[1] / w))
    return resize_linear(flow, size, scale) * (1.0 / scale_step)


# ---------------------------------------------------------------- finite differences

def centered_gradient(image: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 2, H, W) x and y derivatives: half central differences, half one-sided on the border."""
    dx = torch.empty_like(image)
    dy = torch.empty_like(image)
    dx[..., 1:-1] = 0.5 * (image[..., 2:] - image[..., :-2])
    dx[..., 0] = 0.5 * (image[..., 1] - image[..., 0])
    dx[..., -1] = 0.5 * (image[..., -1] - image[..., -2])
    dy[..., 1:-1, :] = 0.5 * (image[..., 2:, :] - image[..., :-2, :])
    dy[..., 0, :] = 0.5 * (image[..., 1, :] - image[..., 0, :])
    dy[..., -1, :] = 0.5 * (image[..., -1, :] - image[..., -2, :])
    return torch.stack((dx, dy), 1)


def forward_gradient(u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> out (N, C, 2, H, W): forward differences, zero on the last column / row.

    out's last column (x part) and last row (y part) must already be zero; they are never written.
    """
    torch.sub(u[..., 1:], u[..., :-1], out=out[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=out[:, :, 1, :-1, :])
    return out


def divergence(p: torch.Tensor) -> torch.Tensor:
    """(N, C, 2, H, W) dual field -> (N, C, H, W) divergence by backward differences (zero before the first)."""
    px, py = p[:, :, 0], p[:, :, 1]
    div = px + py
    div[..., 1:] -= px[..., :-1]
    div[..., 1:, :] -= py[..., :-1, :]
    return div


# ---------------------------------------------------------------- warping (cv::remap INTER_CUBIC)

def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """(...,) fractional offsets in [0, 1) -> (..., 4) Keys cubic weights (a = -0.75) for taps -1, 0, 1, 2."""
    a = -0.75

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):   # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    w0, w1, w2 = far(t + 1), near(t), near(1 - t)
    return torch.stack((w0, w1, w2, 1 - w0 - w1 - w2), -1)


def remap_cubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (N, C, H, W) images at (x + flow_x, y + flow_y): bicubic, zero outside, as cv::remap.

    OpenCV 5 samples at the exact float position (OpenCV 4 rounded it to 1/32 px). The images get a
    4 px zero border and positions are clamped into it: a tap outside the image then reads zero, which
    is OpenCV's BORDER_CONSTANT, without masks.
    """
    n, c, h, w = images.shape
    device = images.device
    pad = 4
    xs = torch.arange(w, device=device, dtype=torch.float32) + flow[:, 0]
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] + flow[:, 1]
    x_floor, y_floor = xs.floor(), ys.floor()
    wx, wy = cubic_weights(xs - x_floor), cubic_weights(ys - y_floor)      # (N, H, W, 4)
    # taps floor-1 .. floor+2; a clamped position only ever reads the zero border
    x0 = x_floor.clamp(-3, w + 1).to(torch.int64) - 1 + pad
    y0 = y_floor.clamp(-3, h + 1).to(torch.int64) - 1 + pad
    padded_w = w + 2 * pad
    flat = torch.nn.functional.pad(images, (pad, pad, pad, pad)).reshape(n, c, -1)
    out = None
    for i in range(4):
        row_start = (y0 + i) * padded_w + x0
        row = None
        for j in range(4):
            index = (row_start + j).reshape(n, 1, h * w).expand(n, c, h * w)
            tap = torch.gather(flat, 2, index) * wx[..., j].reshape(n, 1, h * w)
            row = tap if row is None else row.add_(tap)
        row.mul_(wy[..., i].reshape(n, 1, h * w))
        out = row if out is None else out.add_(row)
    return out.reshape(n, c, h, w)


# ---------------------------------------------------------------- median filter (cv::medianBlur)

def _batcher_pairs(lo: int, hi: int):
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of wires lo..hi (inclusive, 2^k wires)."""
    if hi - lo >= 1:
        mid = lo + (hi - lo) // 2
        yield from _batcher_pairs(lo, mid)
        yield from _batcher_pairs(mid + 1, hi)
        yield from _batcher_merge(lo, hi, 1)


def _batcher_merge(lo: int, hi: int, r: int):
    step = 2 * r
    if step < hi - lo:
        yield from _batcher_merge(lo, hi, step)
        yield from _batcher_merge(lo + r, hi, step)
        yield from ((i, i + r) for i in range(lo + r, hi - r, step))
    else:
        yield (lo, lo + r)


_LOW, _HIGH = -1, -2  # constant nodes of a symbolic network: -inf and +inf


def _symbolic_network(wires: list[int], comparators, n_inputs: int) -> tuple[list, list[int]]:
    """Run comparators (i, j), i < j (min to i, max to j) on symbolic wires, folding the +-inf constants.

    Returns (steps, wires): steps (op, a, b) define node n_inputs + k; wires hold node ids at the end.
    """
    steps: list[tuple[str, int, int]] = []
    memo: dict[tuple[str, int, int], int] = {}

    def node(op, a, b):
        absorbing, neutral = (_LOW, _HIGH) if op == "min" else (_HIGH, _LOW)
        if a == b or b == neutral:
            return a
        if a == neutral:
            return b
        if absorbing in (a, b):
            return absorbing
        key = (op, min(a, b), max(a, b))
        if key not in memo:
            steps.append(key)
            memo[key] = n_inputs + len(steps) - 1
        return memo[key]

    wires = list(wires)
    for i, j in comparators:
        wires[i], wires[j] = node("min", wires[i], wires[j]), node("max", wires[i], wires[j])
    return steps, wires


def _pruned(steps: list, outputs: list[int], n_inputs: int) -> tuple[tuple, tuple[int, ...]]:
    """Keep only the steps the outputs depend on; renumber them. Returns (program, output ids)."""
    needed, stack = set(), list(outputs)
    while stack:
        k = stack.pop()
        if k >= n_inputs and k not in needed:
            needed.add(k)
            stack += steps[k - n_inputs][1:]
    keep = sorted(needed)
    renum = {old: n_inputs + new for new, old in enumerate(keep)}
    renum.update({i: i for i in range(n_inputs)})
    program = tuple((steps[k - n_inputs][0], renum[steps[k - n_inputs][1]], renum[steps[k - n_inputs][2]])
                    for k in keep)
    return program, tuple(renum[o] for o in outputs)


@lru_cache(maxsize=8)
def sort_network(k: int) -> tuple[tuple, tuple[int, ...]]:
    """Min/max program sorting k inputs ascending (Batcher's odd-even merge sort, padded with +inf)."""
    size = 1 << (k - 1).bit_length()
    steps, wires = _symbolic_network(list(range(k)) + [_HIGH] * (size - k), _batcher_pairs(0, size - 1), k)
    return _pruned(steps, wires[:k], k)


@lru_cache(maxsize=8)
def median_of_sorted_columns(k: int) -> tuple[tuple, int]:
    """Min/max program for the median of k*k inputs given as k ascending columns (input j*k + r is rank r
    of column j): Batcher merges of the columns (each padded to a power of two with +inf), pruned to
    what the middle element depends on."""
    block = 1 << (k - 1).bit_length()
    blocks = 1 << (k - 1).bit_length()
    wires = [_HIGH] * (block * blocks)
    for j in range(k):
        wires[j * block:j * block + k] = range(j * k, j * k + k)
    comparators, width = [], block
    while width < block * blocks:
        for lo in range(0, block * blocks, 2 * width):
            comparators += list(_batcher_merge(lo, lo + 2 * width - 1, 1))
        width *= 2
    steps, wires = _symbolic_network(wires, comparators, k * k)
    program, (out,) = _pruned(steps, [wires[k * k // 2]], k * k)
    return program, out


def _run_program(values: list, program: tuple, outputs) -> list[torch.Tensor]:
    """Evaluate a min/max program on tensors (elementwise); values are the inputs, in order."""
    values = list(values)
    last_use = {}
    for s, (_, a, b) in enumerate(program):
        last_use[a] = last_use[b] = s
    keep = set(outputs)
    for s, (op, a, b) in enumerate(program):
        values.append(torch.minimum(values[a], values[b]) if op == "min" else torch.maximum(values[a], values[b]))
        for x in (a, b):
            if last_use[x] == s and x not in keep:
                values[x] = None                           # free intermediates early
    return [values[o] for o in outputs]


def median_blur(u: torch.Tensor, k: int) -> torch.Tensor:
    """k x k median of each (H, W) plane of (N, C, H, W), replicated border (cv::medianBlur).

    Each vertical run of k pixels is sorted once (shared by the k windows that contain it); each
    window then merges its k sorted columns only as far as its middle element needs.
    """
    h, w = u.shape[-2:]
    r = k // 2
    padded = torch.nn.functional.pad(u, (r, r, r, r), mode="replicate")
    sort_program, sorted_ids = sort_network(k)
    columns = _run_program([padded[..., i:i + h, :] for i in range(k)], sort_program, sorted_ids)
    median_program, out = median_of_sorted_columns(k)
    window = [columns[rank][..., j:j + w] for j in range(k) for rank in range(k)]
    return _run_program(window, median_program, [out])[0]


# ---------------------------------------------------------------- one pyramid level

def _primal_dual_step(u, p, image_grad, neg_inv_grad, rho_c, params: TVL1Params, grad_buf):
    """One inner iteration for all pairs: thresholding (v), primal (u) and dual (p) updates.

    Returns (u, p, error) with error (N,) the sum of squared flow updates per pair.
    """
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    rho = torch.addcmul(torch.addcmul(rho_c, image_grad[:, 0], u[:, 0]), image_grad[:, 1], u[:, 1])
    # OpenCV's three cases (rho < -l_t|g|^2, rho > l_t|g|^2, in between) are a clamp of -rho/|g|^2
    step = rho.mul_(neg_inv_grad).clamp_(-l_t, l_t)
    v = torch.addcmul(u, step.unsqueeze(1), image_grad)
    u_new = torch.add(v, divergence(p), alpha=params.theta)
    error = (u_new - u).square_().sum((1, 2, 3))
    du = forward_gradient(u_new, grad_buf)
    dx, dy = du[:, :, 0], du[:, :, 1]
    norm = torch.addcmul(dx * dx, dy, dy).sqrt_().mul_(taut).add_(1.0)  # 1 + taut |grad u| (OpenCV: hypot)
    p_new = torch.add(p, du, alpha=taut).div_(norm.unsqueeze(2))
    return u_new, p_new, error


def _warp_terms(I0, I1_stack, u):
    """Warp I1 and its gradient by u; return (image gradient (N,2,H,W), -1/|grad|^2 (0 where flat), rho_c)."""
    warped = remap_cubic(I1_stack, u)
    I1w, image_grad = warped[:, 0], warped[:, 1:]
    grad = image_grad[:, 0].square() + image_grad[:, 1].square()
    rho_c = I1w - image_grad[:, 0] * u[:, 0] - image_grad[:, 1] * u[:, 1] - I0
    neg_inv_grad = torch.where(grad > 0, -1.0 / grad.clamp_min(FLT_EPSILON * FLT_EPSILON), torch.zeros_like(grad))
    return image_grad.contiguous(), neg_inv_grad, rho_c


def _select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """new where the pair's mask is set, old elsewhere (mask (N,) broadcast over the other dims)."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def stop_check_interval(device: torch.device) -> int:
    """Inner iterations between host reads of the per-pair stop flags: 1 on the CPU, 8 on a GPU."""
    return 1 if device.type == "cpu" else 8


def solve_warp(u, p, terms: tuple, params: TVL1Params, stop: float, check: int):
    """The outer/inner iterations of one warp for a batch; returns the final (u, p).

    Each pair stops on its own once its update is small: between host checks of the stop flags it
    is frozen by masking; at each check the finished pairs are written out and dropped from the batch,
    so the rest of the warp costs what the pairs still running cost.
    """
    u_out, p_out, rows = u, p, None                       # rows: batch indices of the working set
    grad_buf = torch.zeros_like(p)                         # its last row / column stay zero
    active = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    for _ in range(params.outer_iterations):
        if params.median_filtering > 1:                    # every working pair is active here
            u = median_blur(u, params.median_filtering)
        known_active = True                                # the host knows all working pairs run
        for inner in range(params.inner_iterations):
            u_new, p_new, error = _primal_dual_step(u, p, *terms, params, grad_buf)
            u, p = (u_new, p_new) if known_active else (_select(active, u_new, u), _select(active, p_new, p))
            active = active & (error > stop)
            known_active = False
            if (inner + 1) % check and inner + 1 < params.inner_iterations:
                continue
            if bool(active.all()):
                known_active = True
                continue
            if rows is None:                               # first pair to finish: outputs become copies
                u_out, p_out, rows = u.clone(), p.clone(), torch.arange(u.shape[0], device=u.device)
            done, keep = (~active).nonzero().squeeze(1), active.nonzero().squeeze(1)
            u_out[rows[done]], p_out[rows[done]] = u[done], p[done]
            if keep.numel() == 0:
                return u_out, p_out
            rows, u, p, active = rows[keep], u[keep], p[keep], active[keep]
            terms = tuple(t[keep] for t in terms)
            grad_buf = grad_buf[:keep.numel()]
            known_active = True
    if rows is None:
        return u, p
    u_out[rows], p_out[rows] = u, p
    return u_out, p_out


def solve_level(I0: torch.Tensor, I1: torch.Tensor, u: torch.Tensor, params: TVL1Params) -> torch.Tensor:
    """TV-L1 on one pyramid level: I0, I1 (N, H, W), initial flow u (N, 2, H, W) -> refined flow."""
    n, h, w = I0.shape
    I1_stack = torch.cat((I1.unsqueeze(1), centered_gradient(I1)), 1)  # gradient of the unwarped image
    p = torch.zeros(n, 2, 2, h, w, device=I0.device, dtype=I0.dtype)  # dual variables, kept across warps
    stop = params.epsilon * params.epsilon * h * w
    for _ in range(params.warps):
        terms = _warp_terms(I0, I1_stack, u)
        u, p = solve_warp(u, p, terms, params, stop, stop_check_interval(I0.device))
    return u


# ---------------------------------------------------------------- entry points

def tvl1_batch(prev: torch.Tensor, next: torch.Tensor, params: TVL1Params | None = None) -> torch.Tensor:
    """TV-L1 flow from prev to next: (N, H, W) float intensities on the 0..255 scale -> (N, H, W, 2).

    Runs on prev's device in float32; flow[..., 0] is x (columns), flow[..., 1] is y (rows), so that
    next(y + flow_y, x + flow_x) ~ prev(y, x).
    """
    params = params or TVL1Params()
    if prev.shape != next.shape or prev.dim() != 3:
        raise ValueError(f"prev and next must both be (N, H, W), got {tuple(prev.shape)} and {tuple(next.shape)}")
    I0, I1 = prev.float(), next.to(prev.device).float()
    n, h, w = I0.shape
    if h < 3 or w < 3:
        raise ValueError(f"frames of {h}x{w} px are too small for TV-L1 (need at least 3x3)")
    sizes = pyramid_sizes(h, w, params)
    with torch.no_grad():
        I0s = build_pyramid(I0, sizes, params.scale_step)
        I1s = build_pyramid(I1, sizes, params.scale_step)
        u = torch.zeros(n, 2, *sizes[-1], device=I0.device, dtype=torch.float32)
        for level in range(len(sizes) - 1, -1, -1):
            u = solve_level(I0s[level], I1s[level], u, params)
            if level:
                u = upscale_flow(u, sizes[level - 1], params.scale_step)
    return u.permute(0, 2, 3, 1).contiguous()


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tvl1(prev_gray: np.ndarray, next_gray: np.ndarray, params: TVL1Params | None = None,
         device: str | torch.device | None = None) -> np.ndarray:
    """Numpy front end with the flow step's signature: uint8 (H, W) pair -> float32 (H, W, 2) flow."""
    device = torch.device(device) if device is not None else default_device()
    a = torch.from_numpy(np.ascontiguousarray(prev_gray, dtype=np.float32)).to(device)[None]
    b = torch.from_numpy(np.ascontiguousarray(next_gray, dtype=np.float32)).to(device)[None]
    return tvl1_batch(a, b, params)[0].cpu().numpy()


__all__ = ["TVL1Params", "tvl1", "tvl1_batch", "default_device"]
