"""Benchmark: what structural pruning buys on the CPU at paper scale.

Not a test: prints a table and, last, one JSON line. TSN-R50 (8 segments at 224x224) and R3D-18
(16x112x112), random init (magnitude pruning of random weights removes the same number of channels
as of trained ones; accuracy is not measured here), 101 classes, pruned by
actionrepro.pruning.structure at channel ratios 0.3 and 0.5 with the paper settings (l2, local,
one step, channels rounded to multiples of 8). For the dense and each pruned network:

  FLOPs       profile.count_flops per clip (batch 1; FLOPs = 2 x MACs) and the ratio dense / pruned
  latency     profile.measure_latency, eval mode, inference_mode: batch 1 (median of --repeats after
              one warm-up) and batch 8 (min of --b8-repeats, no warm-up: a dense TSN-R50 batch of 8
              clips is 64 ResNet-50 frames, ~10 s on one core), with one intra-op thread and with all
              cores; the 1-thread rows also give CPU seconds per forward (robust to other load)

OMP_WAIT_POLICY=PASSIVE is set before torch is imported (an active wait makes every oneDNN conv spin
~30 ms with 2 threads). ~3 minutes on the 2-core VM.

    .venv/bin/python bench/prune.py [--repeats 3] [--b8-repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from actionrepro import profile  # noqa: E402
from actionrepro.models.registry import build_model  # noqa: E402
from actionrepro.pruning import structure  # noqa: E402

MODELS = {"tsn_r50": "tsn", "r3d_18": "r3d"}
RATIOS = (0.3, 0.5)
PAPER_SETTINGS = {"importance": "l2", "global_pruning": False, "iterative_steps": 1, "round_to": 8}


def timed(model: torch.nn.Module, batch: int, threads: int, repeats: int, warmup: int) -> dict:
    """Latency of `model` at `batch` with `threads` intra-op threads, plus CPU seconds per forward."""
    torch.set_num_threads(threads)
    x = profile.example_inputs(model.input_spec, batch)
    cpu = time.process_time()
    out = profile.measure_latency(model, x, "cpu", repeats=repeats, warmup=warmup)
    out["cpu_s_per_forward"] = (time.process_time() - cpu) / (repeats + warmup)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed batch-1 forwards per row (after 1 warm-up)")
    parser.add_argument("--b8-repeats", type=int, default=2, help="timed batch-8 forwards per row (no warm-up)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="'all cores' thread count")
    args = parser.parse_args()
    thread_counts = sorted({1, args.threads})
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {profile.device_name('cpu')}, {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.1f}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    rows, summary = [], {}
    for key, name in MODELS.items():
        torch.manual_seed(0)
        dense = build_model(name, "paper", 101).eval()
        variants = {0.0: dense}
        for ratio in RATIOS:
            pruned = copy.deepcopy(dense)
            t = time.perf_counter()
            structure.prune_model(pruned, ratio, **PAPER_SETTINGS)
            print(f"{key}: pruned at {ratio} in {time.perf_counter() - t:.1f} s", flush=True)
            variants[ratio] = pruned.eval()
        one = profile.example_inputs(dense.input_spec, 1)
        flops = {r: profile.count_flops(m, one) for r, m in variants.items()}
        for threads in thread_counts:
            times = {}
            for ratio, model in variants.items():
                b1 = timed(model, 1, threads, args.repeats, 1)
                b8 = timed(model, 8, threads, args.b8_repeats, 0)
                times[ratio] = (b1, b8)
                print(f"{key} ratio {ratio} threads {threads}: b1 {b1['median_ms']:.0f} ms, b8 {b8['min_ms']:.0f} ms",
                      flush=True)
            for ratio, (b1, b8) in times.items():
                dense_b1, dense_b8 = times[0.0]
                row = {"model": key, "ratio": ratio, "threads": threads,
                       "params_M": profile.count_params(variants[ratio]) / 1e6, "gflops": flops[ratio] / 1e9,
                       "flops_ratio": flops[0.0] / flops[ratio],
                       "b1_ms": b1["median_ms"], "b1_speedup": dense_b1["median_ms"] / b1["median_ms"],
                       "b1_cpu_ms": 1e3 * b1["cpu_s_per_forward"] if threads == 1 else None,
                       "b8_ms": b8["min_ms"], "b8_speedup": dense_b8["min_ms"] / b8["min_ms"]}
                rows.append(row)
                if ratio:
                    tag = f"{key}_speedup_{ratio:g}"
                    suffix = "" if threads == 1 else f"_{threads}t"
                    summary[f"{tag}_b1{suffix}"] = round(row["b1_speedup"], 2)
                    summary[f"{tag}_b8{suffix}"] = round(row["b8_speedup"], 2)
                    summary[f"{key}_flops_ratio_{ratio:g}"] = round(row["flops_ratio"], 2)

    print()
    print("| model | ratio | threads | params M | GFLOPs | FLOPs ratio | b1 ms | b1 speed-up | b1 CPU ms | "
          "b8 ms | b8 speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cpu = f"{r['b1_cpu_ms']:.0f}" if r["b1_cpu_ms"] is not None else ""
        print(f"| {r['model']} | {r['ratio']:g} | {r['threads']} | {r['params_M']:.2f} | {r['gflops']:.2f} | "
              f"{r['flops_ratio']:.2f} | {r['b1_ms']:.0f} | {r['b1_speedup']:.2f}x | {cpu} | {r['b8_ms']:.0f} | "
              f"{r['b8_speedup']:.2f}x |")
    summary["load_average_end"] = round(os.getloadavg()[0], 1)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
