"""Benchmark: peak host memory (RSS) of one training step and of one test video, every model at
paper scale with its own recipe (params.yaml `recipes`, UCF101's part: 101 classes, its input
options, optimizer, evaluate.chunk_clips) and the paper view protocol (evaluate.clips x crops).

Each measurement runs in a fresh interpreter, so its peak (getrusage ru_maxrss) is its own:

  train b   build the model, two whole training steps (actionrepro.engine.step.train_step: forward,
            loss, backward, gradient clipping, SGD/AdamW step over the recipe's groups) on random
            inputs of its InputSpec at b videos per step (b = 1 and 2; the recipe's own per-step batch
            is extrapolated linearly from the two: peak(b) = base + b x per-video, marked "extrap.").
  test      model.eval(), one video's views (clips x crops, as the loader hands them over) folded into
            the batch and forwarded `chunk_clips` views at a time (engine.evaluation.forward_in_chunks).
  reference the same two measurements for torchvision's plain ResNet-50 over 8 frames per video (a
            TSN-8 without our code): the ratios divide each model's increment over its build by the
            reference's, in the same run.

On CPU there is no autocast: float32 throughout. A GPU run (`--device cuda`) reports
torch.cuda.max_memory_allocated instead, with the recipe's amp (bf16).

    .venv/bin/python bench/memory.py                       # every model, ~20 min on one CPU thread
    .venv/bin/python bench/memory.py --models tsn stfn     # a subset
Last line: JSON with every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
DATASET = "ucf101"
CLASSES = 101
REFERENCE = "resnet50-8f"


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _build(model_name: str, params: dict, device):
    """(model, resolved params) as a run of the recipe builds it (random weights: memory is the same)."""
    from actionrepro import config
    from actionrepro.models.registry import build_model

    resolved = config.resolve(params, DATASET, model_name)
    net = build_model(model_name, "paper", CLASSES, resolved["architectures"].get(model_name, {}))
    return net.to(device), resolved


def _reference(device):
    """torchvision ResNet-50 consuming (B, 8, 3, 224, 224) like a TSN: mean of the frame logits."""
    import torch
    import torchvision
    from torch import nn

    from actionrepro.inputs import InputSpec

    class PlainTSN(nn.Module):
        input_spec = InputSpec(rgb=True, segments=8)

        def __init__(self):
            super().__init__()
            self.net = torchvision.models.resnet50(num_classes=CLASSES)

        def forward(self, rgb: torch.Tensor) -> torch.Tensor:
            b, t = rgb.shape[:2]
            return self.net(rgb.flatten(0, 1)).reshape(b, t, -1).mean(1)

        def auxiliary_loss(self):
            return None

    return PlainTSN().to(device)


def measure_train(model_name: str, batch: int, params: dict, device) -> dict:
    import torch
    from torch import nn

    from actionrepro.engine import optim
    from actionrepro.engine import step as engine_step
    from actionrepro.engine.settings import TrainSettings
    from actionrepro.profile import example_inputs

    if model_name == REFERENCE:
        net, resolved = _reference(device), params
    else:
        net, resolved = _build(model_name, params, device)
    settings = TrainSettings.from_params(resolved)
    built = _peak_mb(device)
    net.train()
    opt = optim.optimizer_for(net, settings)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    amp = torch.bfloat16 if device.type == "cuda" and settings.amp == "bf16" else None
    inputs = example_inputs(net.input_spec, batch, device)
    data = {**inputs, "label": torch.zeros(batch, dtype=torch.long), "index": torch.arange(batch)}
    start = time.process_time()
    for _ in range(2):
        engine_step.train_step(net, data, opt, loss_fn, device=device, clip_grad_norm=settings.clip_grad_norm,
                               amp_dtype=amp)
    return {"built_mb": built, "peak_mb": _peak_mb(device), "cpu_s": time.process_time() - start,
            "recipe_batch": settings.batch_size}


def measure_test(model_name: str, params: dict, device) -> dict:
    import torch

    from actionrepro.engine.evaluation import forward_in_chunks
    from actionrepro.profile import example_inputs

    if model_name == REFERENCE:
        net, resolved = _reference(device), params
    else:
        net, resolved = _build(model_name, params, device)
    evaluate = resolved["evaluate"]
    views = int(evaluate["clips"]) * int(evaluate["crops"])
    built = _peak_mb(device)
    net.eval()
    inputs = example_inputs(net.input_spec, views, device)  # one video's views, folded into the batch
    start = time.process_time()
    with torch.inference_mode():
        forward_in_chunks(net, inputs, int(evaluate["chunk_clips"]))
    return {"built_mb": built, "peak_mb": _peak_mb(device), "cpu_s": time.process_time() - start,
            "views": views, "input_mb": sum(v.numel() * v.element_size() for v in inputs.values()) / 2**20}


def child(args) -> None:
    import torch

    from actionrepro import config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    params = config.load(args.params)
    out = (measure_train(args.model, args.batch, params, device) if args.phase == "train"
           else measure_test(args.model, params, device))
    print(json.dumps(out))


def run_child(model: str, phase: str, batch: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--phase", phase, "--batch", str(batch),
           "--device", args.device, "--threads", str(args.threads), "--params", args.params]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(model: str, train: dict[int, dict], test: dict) -> dict:
    """Per model: measured peaks, the linear extrapolation to the recipe's batch, increments."""
    row = {"model": model}
    if any("error" in t for t in train.values()):
        row["train_error"] = next(t["error"] for t in train.values() if "error" in t)
    else:
        p1, p2 = train[1]["peak_mb"], train[2]["peak_mb"]
        per_video = max(0.0, p2 - p1)
        recipe_batch = train[1]["recipe_batch"]
        row.update({"train_peak_b1_mb": p1, "train_peak_b2_mb": p2, "train_per_video_mb": per_video,
                    "recipe_batch": recipe_batch, "train_recipe_batch_mb_extrap": p1 + (recipe_batch - 1) * per_video,
                    "train_increment_b2_mb": p2 - train[2]["built_mb"], "train_cpu_s_b2": train[2]["cpu_s"]})
    if "error" in test:
        row["test_error"] = test["error"]
    else:
        row.update({"test_views": test["views"], "test_input_mb": test["input_mb"], "test_peak_mb": test["peak_mb"],
                    "test_increment_mb": test["peak_mb"] - test["built_mb"], "test_cpu_s": test["cpu_s"]})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: params.yaml's models")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("train", "test"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from actionrepro import config

    models = args.models or config.load(args.params)["models"]
    rows = []
    for model in [REFERENCE, *models]:
        train = {b: run_child(model, "train", b, args) for b in (1, 2)}
        rows.append(summarise(model, train, run_child(model, "test", 1, args)))
        print(json.dumps(rows[-1]), flush=True)
    ref = rows[0]
    for row in rows[1:]:
        if "train_increment_b2_mb" in row and "train_increment_b2_mb" in ref:
            row["train_vs_reference"] = row["train_increment_b2_mb"] / ref["train_increment_b2_mb"]
        if "test_increment_mb" in row and "test_increment_mb" in ref:
            row["test_vs_reference"] = row["test_increment_mb"] / ref["test_increment_mb"]
    print(f"\n{'model':12s} {'train b1':>9s} {'train b2':>9s} {'per video':>9s} {'recipe b':>8s} "
          f"{'at recipe b':>12s} {'vs ref':>7s} {'test views':>10s} {'test peak':>9s} {'vs ref':>7s}   (MiB)")
    for r in rows:
        if "train_error" in r or "test_error" in r:
            print(f"{r['model']:12s} error: {r.get('train_error') or r.get('test_error')}")
            continue
        print(f"{r['model']:12s} {r['train_peak_b1_mb']:9.0f} {r['train_peak_b2_mb']:9.0f} "
              f"{r['train_per_video_mb']:9.0f} {r['recipe_batch']:8d} {r['train_recipe_batch_mb_extrap']:12.0f} "
              f"{r.get('train_vs_reference', 1.0):7.2f} {r['test_views']:10d} {r['test_peak_mb']:9.0f} "
              f"{r.get('test_vs_reference', 1.0):7.2f}")
    print(json.dumps({"device": args.device, "dataset": DATASET, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
