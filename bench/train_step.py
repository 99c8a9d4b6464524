"""Benchmark: clips/s of the engine's training step against a plain PyTorch loop.

Ours: actionrepro.engine.step.train_step (forward, cross-entropy + auxiliary loss, backward, gradient
clipping, SGD step over the weight-decay groups, per-step LR schedule) on the registry's TSN at
paper scale (ResNet-50, 8 segments, 224x224). Plain: torchvision's resnet50 on the same B*T frames,
average over T, cross-entropy, backward, SGD step. Same batch, same process, steps interleaved
(ours, plain, plain, ours, ...) after one warm-up step each, so drift in machine load hits both
alike. On CPU the ratio uses process CPU time (one thread: the step's own work, robust to other
jobs sharing the cores); wall times are reported beside it. On a GPU it uses wall time.

    .venv/bin/python bench/train_step.py            # ~2 min on one CPU thread
Last line: JSON with clips_per_s of both and step_vs_plain (= ours / plain; target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="clips per batch (B)")
    parser.add_argument("--segments", type=int, default=8, help="frames per clip (T)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--repeats", type=int, default=4, help="timed steps of each loop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch
    import torchvision
    from torch import nn

    from actionrepro import config
    from actionrepro.engine import step as engine_step
    from actionrepro.engine import optim
    from actionrepro.models.registry import build_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params = config.load(os.path.join(os.path.dirname(__file__), "..", "params.yaml"))
    cfg = params["train"]

    torch.manual_seed(0)
    ours = build_model("tsn", "paper", args.classes, {"segments": args.segments, "size": args.size}).to(device)
    opt = optim.build_optimizer(ours, cfg)
    sched = optim.build_scheduler(opt, cfg, epochs=cfg["epochs"], steps_per_epoch=1000)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(cfg["label_smoothing"]))
    ours.train()

    plain = torchvision.models.resnet50(num_classes=args.classes).to(device)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                weight_decay=cfg["weight_decay"])
    plain_loss = nn.CrossEntropyLoss()
    plain.train()

    b, t, s = args.batch, args.segments, args.size
    batch = {"rgb": torch.randn(b, t, 3, s, s), "label": torch.randint(0, args.classes, (b,)), "index": torch.arange(b)}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step_ours() -> None:
        engine_step.train_step(ours, batch, opt, loss_fn, device=device, scheduler=sched,
                               clip_grad_norm=cfg["clip_grad_norm"])

    def step_plain() -> None:
        x, y = batch["rgb"].to(device), batch["label"].to(device)
        logits = plain(x.reshape(b * t, 3, s, s)).reshape(b, t, -1).mean(1)
        plain_loss(logits, y).backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    clock = "process_cpu" if device.type == "cpu" else "wall"

    def timed(step) -> tuple[float, float]:
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        sync()
        return time.perf_counter() - wall, time.process_time() - cpu

    warm = (timed(step_ours), timed(step_plain))
    print(f"warm-up (wall): ours {warm[0][0]:.2f} s, plain {warm[1][0]:.2f} s per step", file=sys.stderr)
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
    for r in range(args.repeats):
        for name, step in (("ours", step_ours), ("plain", step_plain)) if r % 2 == 0 else \
                (("plain", step_plain), ("ours", step_ours)):
            times[name].append(timed(step))
        (ow, oc), (pw, pc) = times["ours"][-1], times["plain"][-1]
        print(f"repeat {r + 1}/{args.repeats}: ours {oc:.3f} s cpu / {ow:.3f} s wall, "
              f"plain {pc:.3f} s cpu / {pw:.3f} s wall", file=sys.stderr)

    pick = 1 if clock == "process_cpu" else 0
    med = {k: statistics.median(x[pick] for x in v) for k, v in times.items()}
    wall = {k: statistics.median(x[0] for x in v) for k, v in times.items()}
    result = {
        "bench": "train_step",
        "model": "tsn (registry, paper scale: ResNet-50)",
        "batch": f"{b} clips x {t} segments x {s}x{s}",
        "device": str(device),
        "threads": args.threads,
        "repeats": args.repeats,
        "clock": clock,
        "wall_step_s_ours": round(wall["ours"], 4),
        "wall_step_s_plain": round(wall["plain"], 4),
        "step_s_ours": round(med["ours"], 4),
        "step_s_plain": round(med["plain"], 4),
        "clips_per_s_ours": round(b / med["ours"], 4),
        "clips_per_s_plain": round(b / med["plain"], 4),
        "step_vs_plain": round(med["plain"] / med["ours"], 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
