"""The paper-scale smoke run (make smoke): config/smoke.yaml keeps every model's recipe at paper scale
but caps epochs, batch and views; tools/smoke_check.py expects a benchmark file from every job; the
local checkpoints of tools/smoke_weights.py load through the real init path."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from actionrepro import config
from actionrepro.data import weights

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "smoke.yaml"
BIN = ROOT / ".venv" / "bin"


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_keeps_paper_scale_and_each_recipe_but_one_epoch_of_batches_of_two():
    smoke, paper = config.load(SMOKE), config.load(ROOT / "params.yaml")
    assert smoke["scale"] == "paper" and smoke["models"] == paper["models"]
    assert smoke["flow"]["algorithm"] == "tvl1"
    assert (smoke["synth"]["hmdb51"]["width"], smoke["synth"]["hmdb51"]["height"]) == (320, 240)
    for model in smoke["models"]:
        ours, theirs = config.resolve(smoke, "synth_hmdb51", model), config.resolve(paper, "hmdb51", model)
        assert (ours["train"]["epochs"], ours["train"]["batch_size"]) == (1, 2)
        assert ours["prune"]["finetune_epochs"] == 1
        assert ours["architectures"][model] == theirs["architectures"][model]  # the paper-scale input
        for key in ("lr", "optimizer", "accumulate", "schedule", "weight_decay"):
            assert ours["train"][key] == theirs["train"][key], (model, key)
        assert ours["anchor"] == theirs["anchor"]


def test_smoke_check_expects_exactly_the_benchmark_files_of_the_smoke_dag(tmp_path):
    """The benchmark paths a dry run of the smoke DAG plans = the ones smoke_check reads."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    (tmp_path / "weights").mkdir()
    for name in ("resnet50_torchvision.pth", "r3d_18_torchvision.pth", "r2plus1d_18_torchvision.pth"):
        (tmp_path / "weights" / name).write_bytes(b"")
    out = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "workflow" / "Snakefile"), "-n",
                          "--configfile", str(SMOKE)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    planned = sorted(set(re.findall(r"benchmark: (\S+)", out.stdout + out.stderr)))
    expected = sorted(tool("smoke_check").expected_benchmarks(config.load(SMOKE)))
    assert planned == expected


def test_smoke_check_fails_above_the_limit_and_on_a_missing_file(tmp_path):
    check = tool("smoke_check")
    files = ["benchmarks/train/a.tsv", "benchmarks/train/b.tsv", "benchmarks/train/c.tsv"]
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, rss in zip(files[:2], (900.5, 17000.0)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(header + f"12.0\t0:00:12\t{rss}\t1\t1\t1\t0\t0\t50\t10\n")
    table, missing = check.peak_table(tmp_path, files)
    assert missing == ["benchmarks/train/c.tsv"]
    assert list(table["job"]) == ["train/b", "train/a"] and table["max_rss_mb"].iloc[0] == 17000.0


@pytest.mark.parametrize("model,file", [("tsn", "resnet50_torchvision.pth"), ("r3d", "r3d_18_torchvision.pth")])
def test_smoke_weights_load_through_the_checkpoint_init_path(tmp_path, model, file):
    from actionrepro.models.registry import build_model

    tool("smoke_weights").write_checkpoints(tmp_path, seed=0)
    params = {"init": str(tmp_path / file)}
    assert weights.plan(model, params["init"]).how == "checkpoint"
    net = build_model(model, "paper", 5, {})
    load = weights.initialiser(model, params, weights.init_file(model, params))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load(net)
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not v.equal(before[k])]
    assert any(k.startswith("backbone.") or "layer1" in k for k in changed)
    assert not any(k.startswith("fc.") for k in changed)  # the classifier stays as built (5 classes)
