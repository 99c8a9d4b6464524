"""Benchmark: what one GPU does with this pipeline: training clips/s and MFU per model, loader clips/s
with host workers and with the GPU decode path, TV-L1 flow pairs/s.

Not a test: prints a table and, last, one JSON line. On a GPU (the default, `--device cuda`):

  models   every registered model at paper scale (params.yaml `models`, each with its UCF101 recipe: input
           options, batch size, optimizer; 101 classes), random inputs of its InputSpec at the recipe's
           train.batch_size (halved on out-of-memory),
           one whole training step (actionrepro.engine.step.train_step: forward, loss + auxiliary
           loss, backward, gradient clipping, SGD step, per-step LR schedule) with the params.yaml
           train settings: bf16 autocast, channels_last weights; eager, then torch.compile where the
           time budget allows, the better of the two kept. clips/s = batch x steps / wall time.
           MFU = clips/s x 3 x forward FLOPs per clip (profile.count_flops: FLOPs = 2 x MACs,
           training ~ 3 forwards) / the device's dense bf16 peak (PEAK_BF16 below). Peak memory:
           torch.cuda.max_memory_allocated of the kept configuration.
  loader   TSN's clips (8 x 224, multi-scale crop, flip) from a synthetic frame store (341x256 JPEG q90)
           through a DataLoader with `--workers` host workers (decode + augmentation on the CPU, batch
           moved to the device), and with decode_on="device" + gpu_clips.to_device_batch (workers
           only read bytes; decode and augmentation on the device). No model: the loader alone.
  tvl1     data.tvl1.tvl1_batch on 340x256 frame pairs (`--pairs` per call).

    .venv/bin/python bench/gpu.py                     # one GPU, ~8 min at most (--budget-s 420);
                                                      # without a GPU it falls back to the --quick CPU run
    .venv/bin/python bench/gpu.py --device cpu --quick   # reduced run on a CPU: tiny scale, 2 models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# Dense (no 2:4 sparsity) BF16 tensor-core peak, FLOP/s, from NVIDIA's product datasheets (they quote
# the sparse figure, twice these, with an asterisk). Matched against torch.cuda.get_device_name in order.
PEAK_BF16 = [
    ("H100 PCIe", 756e12),   # H100 PCIe datasheet: 1,513 TFLOPS BF16 with sparsity
    ("H100 NVL", 835e12),    # H100 NVL: 1,671 with sparsity
    ("GH200", 989e12),       # GH200 Grace Hopper: same GH100 SXM compute as H100 SXM
    ("H200", 989e12),        # H200 SXM datasheet: 1,979 TFLOPS BF16 with sparsity
    ("H100", 989e12),        # H100 SXM datasheet: 1,979 TFLOPS BF16 with sparsity
    ("B200", 2250e12),       # HGX B200: 4.5 PFLOPS BF16 with sparsity per GPU
    ("A100", 312e12),        # A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity)
    ("L40S", 362e12),        # L40S datasheet: 733 TFLOPS BF16 with sparsity
    ("L4", 121e12),          # L4 datasheet: 242.5 TFLOPS BF16 with sparsity
]
PEAK_SOURCE = "NVIDIA datasheets, dense BF16 tensor-core peak (half the quoted 2:4-sparse figure)"
DATASET = "bench_gpu"


def peak_bf16(name: str) -> float | None:
    for key, flops in PEAK_BF16:
        if key.lower() in name.lower():
            return flops
    return None


# ---------------------------------------------------------------- models

def _channels_last(model) -> None:
    """As engine.loop does on CUDA: channels_last for 4D weights, channels_last_3d for 5D."""
    import torch

    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)


def bench_model(name: str, args, params: dict, device, deadline: float, compile_budget: dict) -> dict:
    import torch
    from torch import nn

    from actionrepro import config, profile
    from actionrepro.engine import optim
    from actionrepro.engine import step as engine_step
    from actionrepro.models.registry import build_model

    params = config.resolve(params, "ucf101", name)  # the model's recipe: its input options, batch, optimizer
    cfg = params["train"]
    cuda = device.type == "cuda"
    amp = torch.bfloat16 if args.amp == "bf16" else None
    torch.manual_seed(0)
    # the recipes' input options (segments, size) are paper-scale ones; --quick runs tiny models
    options = params["architectures"][name] if args.scale == "paper" else {}
    model = build_model(name, args.scale, args.classes, options).to(device)
    spec = model.input_spec
    flops = profile.count_flops(model, profile.example_inputs(spec, 1, device))
    channels_last = cuda and bool(cfg.get("channels_last", True))
    if channels_last:
        _channels_last(model)
    model.train()
    opt = optim.build_optimizer(model, cfg)
    sched = optim.build_scheduler(opt, cfg, epochs=cfg["epochs"], steps_per_epoch=1000)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(cfg["label_smoothing"]))

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def run(wrapped, batch_size: int) -> tuple[float, float | None]:
        """clips/s over args.steps timed steps after args.warmup, and peak memory in GiB."""
        inputs = profile.example_inputs(spec, batch_size, device)
        batch = {**inputs, "label": torch.randint(0, args.classes, (batch_size,), device=device)}

        def one():
            engine_step.train_step(wrapped, batch, opt, loss_fn, device=device, core=model, scheduler=sched,
                                   clip_grad_norm=cfg["clip_grad_norm"], amp_dtype=amp)

        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            one()
        sync()
        start = time.perf_counter()
        steps = 0
        while steps < args.steps and (steps == 0 or time.perf_counter() < deadline):
            one()
            steps += 1
        sync()
        elapsed = time.perf_counter() - start
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        return batch_size * steps / elapsed, mem

    def with_fallback(wrapped) -> tuple[float, float | None, int]:
        batch_size = args.batch or int(cfg["batch_size"])
        while True:
            try:
                return (*run(wrapped, batch_size), batch_size)
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                batch_size //= 2
                print(f"  {name}: out of memory, batch {batch_size * 2} -> {batch_size}", file=sys.stderr)

    eager, eager_mem, batch_size = with_fallback(model)
    row = {"batch": batch_size, "gflops_per_clip": round(flops / 1e9, 2), "eager_clips_per_s": round(eager, 2),
           "compiled_clips_per_s": None, "compile_s": None, "channels_last": channels_last,
           "amp": args.amp, "best": "eager", "clips_per_s": round(eager, 2),
           "peak_mem_gib": round(eager_mem, 2) if eager_mem is not None else None}
    want_compile = args.compile == "on" or (args.compile == "auto" and cuda)
    left = deadline - time.perf_counter()
    if want_compile and left > compile_budget["estimate_s"]:
        try:
            start = time.perf_counter()
            compiled = torch.compile(model)
            fast, fast_mem = run(compiled, batch_size)  # the first (warm-up) steps compile
            took = time.perf_counter() - start
            compile_budget["estimate_s"] = max(compile_budget["estimate_s"], took)
            row.update(compiled_clips_per_s=round(fast, 2), compile_s=round(took, 1))
            if fast > eager:
                row.update(best="compiled", clips_per_s=round(fast, 2),
                           peak_mem_gib=round(fast_mem, 2) if fast_mem is not None else None)
        except Exception as err:  # a model torch.compile cannot handle: keep eager, say why
            row["compile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    elif want_compile:
        row["compile_skipped"] = f"{left:.0f} s of budget left, compiling takes ~{compile_budget['estimate_s']:.0f} s"
    achieved = row["clips_per_s"] * 3 * flops
    row["train_tflops_per_s"] = round(achieved / 1e12, 3)
    row["mfu"] = round(achieved / args.peak, 4) if args.peak else None
    if cuda:
        torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------- loader

def build_store(videos: int, frames: int) -> None:
    """A finished decode step's output for DATASET under the cwd: textured 341x256 frames, JPEG q90."""
    import numpy as np
    import pandas as pd

    from actionrepro import paths
    from actionrepro.data import store

    root, mdir = paths.frames_dir(DATASET), paths.manifests_dir(DATASET)
    mdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:341]
    rows, index = [], []
    for v in range(videos):
        clip = []
        for t in range(frames):
            base = 128 + 70 * np.sin((x + 3 * t + 11 * v) / 9.0) * np.cos((y - 2 * t) / 13.0)
            noise = rng.integers(-25, 26, (256, 341, 3), dtype=np.int16)
            clip.append(np.clip(base[..., None] + noise, 0, 255).astype(np.uint8))
        rel = f"c{v % 4}/v{v:03d}.frames"
        store.write_store(root / rel, clip, quality=90)
        rows.append({"video_id": f"v{v:03d}", "path": f"c{v % 4}/v{v:03d}.avi", "label": v % 4,
                     "class_name": f"c{v % 4}", "subset": "train"})
        index.append({"video_id": f"v{v:03d}", "path": rows[-1]["path"], "store_path": rel, "num_frames": frames,
                      "height": 256, "width": 341})
    pd.DataFrame(rows).to_csv(mdir / "split1.csv", index=False)
    pd.DataFrame({"label": range(4), "class_name": [f"c{i}" for i in range(4)]}).to_csv(mdir / "classes.csv", index=False)
    pd.DataFrame(index).to_csv(root / "index.csv", index=False)
    pd.DataFrame(columns=["video_id", "path", "reason", "detail"]).to_csv(root / "quarantine.csv", index=False)
    (root / "summary.json").write_text("{}")


def _worker_init(worker_id: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def bench_loader(args, params: dict, device) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from actionrepro.data import gpu_clips
    from actionrepro.data.dataset import VideoClipDataset
    from actionrepro.inputs import InputSpec

    spec = InputSpec(segments=8, size=224)  # TSN at paper scale
    aug = {"seed": 0, "augment": {"scales": params["augment"]["scales"], "hflip": {DATASET: True}}}
    cuda = device.type == "cuda"
    out = {"spec": "tsn: 8 segments x 224x224, multi-scale crop + flip + normalise",
           "batch": args.loader_batch, "workers": args.workers, "batches": args.loader_batches}

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for key, decode_on in (("cpu_workers_clips_per_s", "host"), ("gpu_decode_clips_per_s", "device")):
        data = VideoClipDataset(DATASET, 1, "train", spec, aug, mode="train", decode_on=decode_on)
        loader = DataLoader(data, batch_size=args.loader_batch, shuffle=True, num_workers=args.workers,
                            pin_memory=cuda, drop_last=True, persistent_workers=args.workers > 0,
                            worker_init_fn=_worker_init if args.workers else None,
                            collate_fn=gpu_clips.collate_encoded if decode_on == "device" else None)

        def move(batch):
            if decode_on == "device":
                return gpu_clips.to_device_batch(batch, device, spec)["rgb"]
            return batch["rgb"].to(device, non_blocking=True)

        def batches():
            epoch = 0
            while True:
                data.set_epoch(epoch)
                yield from loader
                epoch += 1

        it = batches()
        move(next(it))  # worker start-up, first decode, kernels: not timed
        sync()
        start = time.perf_counter()
        for _ in range(args.loader_batches):
            rgb = move(next(it))
        sync()
        assert rgb.shape == (args.loader_batch, spec.frames, 3, spec.size, spec.size)
        out[key] = round(args.loader_batch * args.loader_batches / (time.perf_counter() - start), 2)
        it.close()  # persistent workers go with the loader, which the next round replaces
    return out


# ---------------------------------------------------------------- TV-L1

def bench_tvl1(args, device) -> dict:
    import numpy as np
    import torch

    from actionrepro.data.tvl1 import tvl1_batch

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:340].astype(np.float32)
    prev, nxt = [], []
    for p in range(args.pairs):
        dx, dy = rng.uniform(-2.5, 2.5, 2)
        def frame(ox, oy):
            return 128 + 60 * np.sin((x + ox) / 7.0 + p) * np.cos((y + oy) / 9.0) + 30 * np.sin((x + y + ox + oy) / 23.0)
        prev.append(frame(0, 0))
        nxt.append(frame(-dx, -dy))
    prev = torch.from_numpy(np.stack(prev)).to(device)
    nxt = torch.from_numpy(np.stack(nxt)).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        tvl1_batch(prev, nxt)  # warm-up: kernels, allocator
    sync()
    start = time.perf_counter()
    for _ in range(args.tvl1_calls):
        flow = tvl1_batch(prev, nxt)
    sync()
    elapsed = time.perf_counter() - start
    assert flow.shape == (args.pairs, 256, 340, 2)
    return {"size": "340x256", "pairs_per_call": args.pairs, "calls": args.tvl1_calls,
            "pairs_per_s": round(args.pairs * args.tvl1_calls / elapsed, 3)}


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto",
                        help="cuda, cpu, ...; auto = cuda if there is one, else a --quick run on the CPU")
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: tiny scale, tsn and r3d, batch 4, 2 steps, small loader, 1 TV-L1 pair")
    parser.add_argument("--models", help="comma-separated model names (default: params.yaml models)")
    parser.add_argument("--scale", choices=("paper", "tiny"))
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--batch", type=int, help="clips per training step (default: train.batch_size)")
    parser.add_argument("--steps", type=int, help="timed training steps per model and configuration")
    parser.add_argument("--warmup", type=int, help="untimed steps before each timing")
    parser.add_argument("--amp", choices=("bf16", "none"), help="default: bf16 on CUDA, none on a CPU")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile after eager: auto = on CUDA while the budget allows")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="wall-time budget of the model part (bounds steps and compiles)")
    parser.add_argument("--workers", type=int, help="DataLoader workers for the loader part")
    parser.add_argument("--loader-batch", type=int)
    parser.add_argument("--loader-batches", type=int)
    parser.add_argument("--videos", type=int)
    parser.add_argument("--pairs", type=int, help="TV-L1 pairs per call")
    parser.add_argument("--tvl1-calls", type=int)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (CPU device)")
    args = parser.parse_args(argv)

    import torch

    from actionrepro import config, profile

    t_all = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.device == "auto":  # `make bench` on a machine without a GPU: the reduced CPU run
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.device == "cpu" and not args.quick:
            print("no CUDA device: running the reduced CPU version (--device cpu --quick)", file=sys.stderr)
            args.quick = True
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    params = config.load(ROOT / "params.yaml")
    quick = args.quick
    defaults = dict(scale="tiny" if quick else "paper", steps=2 if quick else 10, warmup=1 if quick else 3,
                    amp="bf16" if cuda else "none", workers=1 if quick else min(int(params["train"]["num_workers"]),
                                                                                 len(os.sched_getaffinity(0))),
                    loader_batch=4 if quick else int(params["train"]["batch_size"]),
                    loader_batches=2 if quick else 20, videos=6 if quick else 32,
                    pairs=1 if quick or not cuda else 8, tvl1_calls=1 if quick or not cuda else 3,
                    batch=4 if quick else None)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    models = args.models.split(",") if args.models else (["tsn", "r3d"] if quick else list(params["models"]))
    name = profile.device_name(device)
    args.peak = peak_bf16(name) if cuda and args.amp == "bf16" else None

    print(f"device {device} ({name}); peak bf16 {args.peak / 1e12 if args.peak else None} TFLOP/s; "
          f"scale {args.scale}, amp {args.amp}, steps {args.steps}", file=sys.stderr)
    deadline = time.perf_counter() + args.budget_s
    compile_budget = {"estimate_s": 60.0}
    rows = {}
    for model_name in models:
        t = time.perf_counter()
        rows[model_name] = bench_model(model_name, args, params, device, deadline, compile_budget)
        print(f"  {model_name}: {rows[model_name]} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        here = os.getcwd()
        os.chdir(tmp)
        try:
            build_store(args.videos, 40 if quick else 90)
            loader = bench_loader(args, params, device)
        finally:
            os.chdir(here)
    tvl1 = bench_tvl1(args, device)

    print(f"\n{'model':10s} {'batch':>5s} {'GFLOPs':>8s} {'eager c/s':>10s} {'compiled c/s':>12s} {'best':>8s} "
          f"{'TFLOP/s':>8s} {'MFU':>6s} {'mem GiB':>8s}")
    for model_name, r in rows.items():
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        print(f"{model_name:10s} {r['batch']:5d} {r['gflops_per_clip']:8.2f} {r['eager_clips_per_s']:10.2f} "
              f"{fmt(r['compiled_clips_per_s'], '12.2f'):>12s} {r['best']:>8s} {r['train_tflops_per_s']:8.3f} "
              f"{fmt(r['mfu'], '6.3f'):>6s} {fmt(r['peak_mem_gib'], '8.2f'):>8s}")
    print(f"loader ({loader['spec']}; batch {loader['batch']}, {loader['workers']} workers): host decode "
          f"{loader['cpu_workers_clips_per_s']} clips/s, device decode {loader['gpu_decode_clips_per_s']} clips/s")
    print(f"TV-L1 {tvl1['size']}: {tvl1['pairs_per_s']} pairs/s ({tvl1['pairs_per_call']} pairs per call)")
    result = {
        "bench": "gpu",
        "device": str(device),
        "device_name": name,
        "quick": quick,
        "scale": args.scale,
        "amp": args.amp,
        "peak_bf16_tflops": args.peak / 1e12 if args.peak else None,
        "peak_source": PEAK_SOURCE if args.peak else None,
        "models": rows,
        "loader": loader,
        "tvl1": tvl1,
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
