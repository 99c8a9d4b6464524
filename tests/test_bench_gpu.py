"""bench/gpu.py runs end to end on a CPU (its --quick mode, cut further) and ends with its JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_cpu_run_prints_the_json_line_with_every_key(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--quick", "--models", "tsn",
           "--steps", "1", "--warmup", "0", "--threads", "1", "--videos", "3", "--loader-batches", "1",
           "--loader-batch", "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"bench", "device", "device_name", "quick", "scale", "amp", "peak_bf16_tflops", "peak_source", "models",
            "loader", "tvl1", "torch", "seconds"} <= result.keys()
    assert result["bench"] == "gpu" and result["device"] == "cpu" and result["quick"] is True
    assert list(result["models"]) == ["tsn"]
    tsn = result["models"]["tsn"]
    assert {"batch", "gflops_per_clip", "eager_clips_per_s", "compiled_clips_per_s", "best", "clips_per_s",
            "train_tflops_per_s", "mfu", "peak_mem_gib"} <= tsn.keys()
    assert tsn["clips_per_s"] > 0 and tsn["gflops_per_clip"] > 0
    assert tsn["mfu"] is None and tsn["peak_mem_gib"] is None  # no peak FLOP/s or CUDA memory on a CPU
    loader = result["loader"]
    assert loader["cpu_workers_clips_per_s"] > 0 and loader["gpu_decode_clips_per_s"] > 0
    assert result["tvl1"]["size"] == "340x256" and result["tvl1"]["pairs_per_s"] > 0
    assert not list(tmp_path.iterdir())  # the frame store lived in a temporary folder


def test_peak_table_matches_device_names():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert gpu.peak_bf16("NVIDIA H200") == 989e12
    assert gpu.peak_bf16("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.peak_bf16("NVIDIA H100 PCIe") == 756e12
    assert gpu.peak_bf16("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu.peak_bf16("Some Unknown GPU") is None
