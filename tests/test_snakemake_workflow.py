"""The Snakemake front door: lint, the planned paper-scale DAG, the SLURM profile, the workflow
report, and how a job picks its GPU. Every workflow check runs the real `snakemake` command on a
fresh working directory (~30 s in all); SLURM is faked by sbatch/sacct scripts that record calls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actionrepro import config
from actionrepro.engine import distributed
from actionrepro.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
JOB_STATS = re.compile(r"^Job stats:\n(?:.*\n){2}((?:\S+\s+\d+\n)+)", re.MULTILINE)


def snakemake(*args: str, cwd: Path = ROOT, env: dict | None = None, check: bool = True) -> str:
    """stdout + stderr of `snakemake ARGS` run in `cwd` with this workflow."""
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run([SNAKEMAKE, "-s", str(SNAKEFILE), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{out[-4000:]}")
    return out


def job_counts(output: str) -> dict[str, int]:
    match = JOB_STATS.search(output)
    assert match, output[-3000:]
    return {rule: int(n) for rule, n in (line.split() for line in match.group(1).splitlines())}


def workdir(tmp_path: Path, **overrides) -> Path:
    """A fresh working directory holding params.yaml (with `overrides` merged per section)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section] = {**params.get(section, {}), **values}
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


# ---------------------------------------------------------------- lint and planning
@pytest.mark.parametrize("configfile", [None, "config/demo.yaml"])
def test_lint_is_clean_for_the_paper_and_the_demo_params(configfile):
    out = snakemake("--lint", *(["--configfile", configfile] if configfile else []))
    assert "Congratulations, your workflow is in a good condition!" in out, out
    assert "Lints for" not in out


def test_paper_dry_run_plans_every_dataset_split_model_and_ratio_without_importing_torch(tmp_path):
    """The expected counts come from params.yaml. A `torch` that fails to import sits first on
    PYTHONPATH: planning must not need it (it tripled the planning time)."""
    stub = tmp_path / "stub" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('planning the DAG imported torch')\n")
    work = workdir(tmp_path / "work")

    out = snakemake("-n", cwd=work, env={"PYTHONPATH": str(stub.parent)})

    params = config.load(ROOT / "params.yaml")
    datasets, splits, models = len(params["datasets"]), len(params["splits"]), len(params["models"])
    ratios = len(params["prune"]["ratios"])
    runs = datasets * splits * models
    expected = {"weights": 1, "download": datasets, "extract": datasets, "splits": datasets, "decode": datasets,
                "flow": datasets if {"stpn", "stfn"} & set(params["models"]) else 0,
                "train": runs, "evaluate": runs * (1 + ratios), "prune": runs * ratios, "report": 1, "all": 1}
    expected = {rule: n for rule, n in expected.items() if n}
    assert job_counts(out) == {**expected, "total": sum(expected.values())}
    assert "workflow specific profile workflow/profiles/default" in out.replace(str(ROOT) + "/", "")


def test_the_dag_schedules_flow_for_exactly_the_registrys_two_stream_models():
    from actionrepro.dag import TWO_STREAM_MODELS
    from actionrepro.models.registry import model_names, needs_flow

    assert set(TWO_STREAM_MODELS) == {m for m in model_names() if needs_flow(m)}


def test_gpus_per_job_with_training_on_cpu_is_refused_by_name(tmp_path):
    work = workdir(tmp_path, train={"device": "cpu"}, launch={"gpus_per_job": 2})
    out = snakemake("-n", cwd=work, check=False)
    assert "launch.gpus_per_job is 2 but train.device is 'cpu'" in out, out[-3000:]


def test_params_trigger_reruns_a_job_when_a_key_it_reads_changes_and_never_otherwise(tmp_path):
    """A real job (generating synth_hmdb51, ~3 s) leaves its params in Snakemake's metadata; then
    only a change to what `download` reads for this dataset may re-run it."""
    work = workdir(tmp_path)
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    (work / "config").mkdir()

    def plan(**changes) -> str:
        params = yaml.safe_load(yaml.safe_dump(demo))
        for dotted, value in changes.items():
            *path, last = dotted.split(".")
            node = params
            for part in path:
                node = node.setdefault(part, {})
            node[last] = value
        (work / "config" / "demo.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return snakemake("-n", "data/raw/synth_hmdb51/download.json", "--configfile", "config/demo.yaml", cwd=work)

    plan()
    snakemake("data/raw/synth_hmdb51/download.json", "--cores", "1", "--configfile", "config/demo.yaml", cwd=work)
    nothing = "Nothing to be done"
    assert nothing in plan()
    assert nothing in plan(**{"synth.ucf101.classes": 9, "prune.ratios": [0.3, 0.5], "train.epochs": 3,
                              "train.device": "auto", "launch.gpus_per_job": 2, "decode.jpeg_quality": 80})
    changed = plan(**{"synth.hmdb51.frames": 40})
    assert "Params have changed since last execution" in changed and "'frames': 40" in changed
    assert "Params have changed" in plan(seed=1)


# ---------------------------------------------------------------- SLURM
FAKE_SBATCH = """\
#!/bin/sh
# fake sbatch: record the call, answer a new job id as --parsable does
printf '%s\\n' "$*" >> "$FAKE_SLURM_LOG"
cat > /dev/null
wc -l < "$FAKE_SLURM_LOG" | awk '{print 1000 + $1}'
"""
FAKE_SACCT = """\
#!/bin/sh
# fake sacct: every submitted job has failed (ends the run); no account to guess
case "$*" in *JobIdRaw,State*) awk '{print 1000 + NR "|FAILED"}' "$FAKE_SLURM_LOG";; esac
"""


def test_slurm_profile_submits_training_with_gpus_on_one_node_and_cpu_jobs_without(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "sacct": FAKE_SACCT}.items():
        (bin_dir / name).write_text(text)
    for name in ("squeue", "sinfo", "scancel", "scontrol", "sacctmgr", "sshare"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    work = workdir(tmp_path / "work", launch={"gpus_per_job": 2})
    for ready in ("data/frames/ucf101/summary.json", "data/manifests/ucf101/summary.json",  # train's inputs
                  "data/weights/download.json",
                  "data/videos/hmdb51/.extracted.json", "data/manifests/hmdb51/summary.json"):  # decode's
        (work / ready).parent.mkdir(parents=True, exist_ok=True)
        (work / ready).touch()
    calls = tmp_path / "sbatch_calls.txt"

    out = snakemake("runs/ucf101/split1/tsm/dense/metrics.json", "data/frames/hmdb51/index.csv",
                    "--profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--allowed-rules", "train", "decode",
                    "--slurm-init-seconds-before-status-checks", "1", "--keep-going", cwd=work, check=False,
                    env={"PATH": f"{bin_dir}:{BIN}:{os.environ['PATH']}", "FAKE_SLURM_LOG": str(calls)})

    submitted = calls.read_text().splitlines() if calls.exists() else []
    train = [c for c in submitted if "--comment rule_train_" in c]
    decode = [c for c in submitted if "--comment rule_decode_" in c]
    assert len(train) == 1 and len(decode) == 1, out[-4000:]
    for flag in ("--gpus=2", "--nodes=1", "--cpus-per-task=16", "--mem 64000", "-t 1440"):
        assert flag in train[0].split(" --wrap")[0], (flag, train[0])
    assert "--gpus" not in decode[0].split(" --wrap")[0] and "--cpus-per-task=32" in decode[0]
    assert ("torchrun --standalone --nproc-per-node 2 -m actionrepro train ucf101 1 tsm --params params.yaml "
            "--threads $(( 16 / 2 > 1 ? 16 / 2 : 1 ))") in out


# ---------------------------------------------------------------- workflow report
def test_workflow_report_attaches_the_result_tables_figures_and_html_report(tmp_path):
    work = workdir(tmp_path)
    (work / "config").mkdir()
    (work / "config" / "demo.yaml").write_text((ROOT / "config" / "demo.yaml").read_text())
    reports = work / "reports"
    (reports / "tables").mkdir(parents=True)
    (reports / "figures").mkdir()
    for name in ("results", "temporal_order", "pruning", "run_status", "quarantine"):
        (reports / f"{name}.csv").write_text("dataset,top1\nsynth_ucf101,50.0\n")
    (reports / "report.md").write_text("# report\n")
    (reports / "report.html").write_text("<html><body>report</body></html>\n")
    (reports / "tables" / "main.html").write_text("<table><tr><td>tsm</td></tr></table>\n")
    (reports / "tables" / "main.md").write_text("| tsm |\n")
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4f20000000049454e44ae426082")
    (reports / "figures" / "accuracy_vs_gflops.png").write_bytes(png)
    (reports / "figures" / "accuracy_vs_gflops.svg").write_text("<svg/>")

    out = snakemake("--report", "workflow-report.html", "--configfile", "config/demo.yaml", cwd=work)

    for name in ("results.csv", "temporal_order.csv", "pruning.csv", "run_status.csv", "quarantine.csv", "main.html",
                 "accuracy_vs_gflops.png", "report.html"):
        assert f"Adding {name}" in out, (name, out[-3000:])
    assert "Adding accuracy_vs_gflops.svg" not in out and "Adding main.md" not in out
    assert "accuracy_vs_gflops.png" in (work / "workflow-report.html").read_text()


# ---------------------------------------------------------------- one GPU job per device
def no_ids():
    raise AssertionError("GPU ids were asked for, so a lock would have been taken")


@pytest.fixture
def release_claims():
    held = len(distributed._held_locks)
    yield
    while len(distributed._held_locks) > held:
        distributed._held_locks.pop().close()


def test_a_single_process_that_sees_one_gpu_uses_it_without_a_lock(tmp_path):
    assert distributed.cuda_index(1, no_ids, env={"CUDA_VISIBLE_DEVICES": "3"}, lock_dir=tmp_path) == 0
    assert distributed.cuda_index(1, no_ids, env={}, lock_dir=tmp_path) == 0
    assert list(tmp_path.iterdir()) == []


def test_jobs_sharing_several_gpus_each_claim_a_different_one(tmp_path, release_claims):
    ids = lambda: ["GPU-a", "GPU-b", "GPU-c"]  # noqa: E731
    picks = [distributed.cuda_index(3, ids, env={}, lock_dir=tmp_path) for _ in range(3)]
    assert picks == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"actionrepro-gpu-GPU-{x}.lock" for x in "abc"]
    with pytest.raises(TimeoutError, match="all 3 GPUs stayed claimed"):
        distributed.claim_gpu(ids(), tmp_path, wait_s=0.01, timeout_s=0.05)


def test_torchrun_ranks_given_their_gpus_by_cuda_visible_devices_use_local_rank(tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": "4,6"}
    assert distributed.cuda_index(2, no_ids, env=env, lock_dir=tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


def test_torchrun_ranks_on_a_shared_box_claim_free_gpus(tmp_path, release_claims):
    ids = lambda: ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]  # noqa: E731
    distributed.claim_gpu(ids(), tmp_path)  # another job holds GPU-a
    rank = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    assert distributed.cuda_index(4, ids, env=rank, lock_dir=tmp_path) == 1
    assert distributed.cuda_index(4, ids, env={**rank, "RANK": "1", "LOCAL_RANK": "1"}, lock_dir=tmp_path) == 2


def test_too_few_gpus_for_the_ranks_or_none_at_all_are_clear_errors(tmp_path):
    env = {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4", "CUDA_VISIBLE_DEVICES": "0,1"}
    with pytest.raises(ConfigError, match=r"torchrun started 4 processes on this node but only 2 GPU\(s\)"):
        distributed.cuda_index(2, no_ids, env=env, lock_dir=tmp_path)
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        distributed.cuda_index(0, no_ids, env={}, lock_dir=tmp_path)

