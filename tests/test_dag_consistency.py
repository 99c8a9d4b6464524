"""One DAG behind two front doors: for a given params file the Snakefile and dvc.yaml run the same
`actionrepro` commands, write the same outputs, and DVC knows every dependency Snakemake knows.

Both sides come from the tools themselves, never from reading the files: Snakemake's
`--dry-run --printshellcmds` (every job with its rule, inputs, outputs and shell command) and
DVC's parsed stages (dvc.repo.Repo: what `dvc stage list` and `dvc dag` print). A job is identified
by the CLI call it makes (`cli_call`), so e.g. Snakemake's `evaluate` job for pruned-0.3 meets
DVC's `evaluate_pruned@...-0.3` stage. The params keys of every DVC stage are checked against
actionrepro.dag.STEP_PARAMS here; Snakemake's are checked by behaviour (which jobs its params
trigger re-runs) in tests/test_pipeline_snakemake.py, because it records param values, not names.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from conftest import PIPELINE_PARAMS, REPO_ROOT, cli_call, copy_repository, snakemake_plan

from actionrepro import config, dag
from actionrepro.dag import STEP_PARAMS
from actionrepro.models.registry import needs_flow

# Steps that read the whole params file (dag.py: "the report reads the whole file"): Snakemake gives
# the report rule the whole config as params, DVC the whole params.yaml.
WHOLE_FILE_STEPS = {"report"}
# DVC stage names that differ from the step they run.
STAGE_STEP = {"evaluate_pruned": "evaluate"}
# DVC tracks a step's store as one directory where Snakemake names the files the step finishes with:
# {directory out (relative to its dataset's dir under data/): the Snakemake outputs inside it}.
DIRECTORY_OUTS = {
    "raw": {"download.json"},
    "videos": {".extracted.json"},
    "manifests": {"classes.csv", "split1.csv", "split2.csv", "split3.csv", "summary.json"},
    "frames": {"index.csv", "quarantine.csv", "summary.json"},
    "flow": {"index.csv", "summary.json"},
    "weights": {"download.json"},
}
# Outputs only DVC declares (file names). Snakemake leaves checkpoint.pt undeclared on purpose (it
# deletes declared outputs before a job runs, which would make a killed training start over; see
# train.smk), and chains evaluation through eval.json alone. DVC must declare every file a stage
# writes under runs/: the report depends on that whole directory, and `dvc pull` restores only
# declared outputs, so an undeclared file would leave a fresh clone's report stage out of date.
DVC_ONLY_OUTS = re.compile(r"checkpoint\.pt|eval_\d+x\d+\.json|predictions_\d+x\d+\.csv|scores_\d+x\d+\.npy"
                           r"|provenance_\w+\.json|tb")
# What a DVC stage depends on beyond Snakemake's edges, by step: DVC re-runs a stage only when its own
# deps change, so a stage lists every store its command reads (dvc.yaml's header), and the report's
# `runs` directory holds the train and prune checkpoints. Flow feeds every train stage (see below).
DVC_DIRECT_READS = {
    "train": {"flow"},
    "prune": {"splits", "decode", "flow"},
    "evaluate": {"splits", "decode", "flow"},
    "report": {"train", "prune"},
}

PARAMS_FILES = {
    "pipeline-test": PIPELINE_PARAMS,
    "demo": REPO_ROOT / "config" / "demo.yaml",
    "paper": REPO_ROOT / "params.yaml",
    "rgb-only": None,  # the test params with tsn alone: no model reads flow
}

# dvc 3.67's own index code warns on every stage (pygtrie's _NoneStep.value); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")


class Job:
    """One job of one front door: its step, outputs, and the calls it depends on."""

    def __init__(self, step: str):
        self.step = step
        self.outs: set[str] = set()
        self.needs: set[tuple[str, ...]] = set()
        self.params: list | None = None  # DVC: the params dependencies, [(file, keys)]
        self.code: set[str] = set()  # the source files it depends on


def snakemake_jobs(root: Path) -> dict[tuple[str, ...], Job]:
    plan = snakemake_plan(root)
    producer = {path: cli_call(job["shell"]) for job in plan for path in job["output"]}
    jobs: dict[tuple[str, ...], Job] = {}
    for planned in plan:
        call = cli_call(planned["shell"])
        assert call not in jobs, f"two Snakemake jobs run {call}"
        job = jobs[call] = Job(planned["rule"])
        job.outs = set(planned["output"])
        job.needs = {producer[path] for path in planned["input"] if path in producer}
        job.code = {path for path in planned["input"] if path.startswith("src/")}
        orphans = [p for p in planned["input"] if p not in producer and p not in job.code]
        assert not orphans, f"{call}: inputs no job makes and no source file: {orphans}"

    return jobs


def dvc_jobs(root: Path) -> dict[tuple[str, ...], Job]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    jobs: dict[tuple[str, ...], Job] = {}
    with Repo(str(root)) as repo:
        call_of = {stage: cli_call(stage.cmd) for stage in repo.index.stages}
        for stage, call in call_of.items():
            name = stage.name.split("@")[0]
            job = jobs[call] = Job(STAGE_STEP.get(name, name))
            job.outs = {out.def_path for out in stage.outs}
            job.params = [(dep.def_path, list(dep.params)) for dep in stage.deps if isinstance(dep, ParamsDependency)]
            job.code = {dep.def_path for dep in stage.deps if dep.def_path.startswith("src/")}
        for dependent, dependency in repo.index.graph.edges:
            jobs[call_of[dependent]].needs.add(call_of[dependency])
    return jobs


@pytest.fixture(scope="module", params=list(PARAMS_FILES))
def front_doors(request, tmp_path_factory):
    """(params, Snakemake's jobs, DVC's jobs) for one params file, in a copy of the repository."""
    source = PARAMS_FILES[request.param]
    root = tmp_path_factory.mktemp(f"dag-{request.param}")
    if source is None:
        params = yaml.safe_load(PIPELINE_PARAMS.read_text())
        params["models"] = ["tsn"]
        params["evaluate"].update(clips=1, crops=1)  # one view protocol: DVC's two sets of outs name the same files
        source = root / "rgb-only.yaml"
        source.write_text(yaml.safe_dump(params, sort_keys=False))
    copy_repository(root / "repo", source)
    params = config.load(root / "repo" / "params.yaml")
    return params, snakemake_jobs(root / "repo"), dvc_jobs(root / "repo")


def flow_calls_only_dvc_runs(params: dict) -> set[tuple[str, ...]]:
    """The known divergence: DVC cannot choose a dependency per model, so it computes flow for every
    dataset; Snakemake only when a listed model reads flow (registry.needs_flow)."""
    if any(needs_flow(m) for m in params["models"]):
        return set()
    return {("flow", ds) for ds in params["datasets"]}


def test_both_front_doors_run_the_same_actionrepro_commands(front_doors):
    params, snakemake, dvc = front_doors
    assert set(snakemake) == set(dvc) - flow_calls_only_dvc_runs(params)
    assert set(snakemake) <= set(dvc)
    for call, job in snakemake.items():
        assert job.step == dvc[call].step == call[0], call
    expected_runs = len(params["datasets"]) * len(params["splits"]) * len(params["models"])
    steps = defaultdict(int)
    for call in snakemake:
        steps[call[0]] += 1
    assert steps["train"] == expected_runs
    assert steps["evaluate"] == expected_runs * (1 + len(params["prune"]["ratios"]))


def test_both_front_doors_write_the_same_outputs(front_doors):
    _, snakemake, dvc = front_doors
    for call, job in snakemake.items():
        covered = defaultdict(set)  # DVC out -> the Snakemake outputs it holds
        for path in job.outs:
            holders = [out for out in dvc[call].outs if path == out or path.startswith(out + "/")]
            assert len(holders) == 1, f"{call}: Snakemake's output {path} is in DVC outs {holders}"
            covered[holders[0]].add(path)
        for out in dvc[call].outs:
            parts = out.split("/")
            if DVC_ONLY_OUTS.fullmatch(parts[-1]):
                assert out not in covered, out
            elif parts[0] == "data":
                assert {p.removeprefix(out + "/") for p in covered[out]} == DIRECTORY_OUTS[parts[1]], out
            else:
                assert covered[out] == {out}, f"{call}: DVC out {out} holds Snakemake outputs {covered[out]}"


def test_dvc_stages_depend_on_what_snakemake_jobs_do_plus_every_store_their_command_reads(front_doors):
    params, snakemake, dvc = front_doors
    only_dvc = flow_calls_only_dvc_runs(params)
    for call, job in snakemake.items():
        reads = DVC_DIRECT_READS.get(job.step, set())
        direct = {need for need in dvc if need[0] in reads and (job.step == "report" or need[1] == call[1])}
        extra = direct | (only_dvc if job.step == "report" else set())
        assert dvc[call].needs == job.needs | extra, (
            f"{call}: DVC only {sorted(dvc[call].needs - job.needs - extra)}, "
            f"missing in DVC {sorted((job.needs | extra) - dvc[call].needs)}")
    for call, job in snakemake.items():  # the flow divergence, stated both ways
        if job.step == "train":
            assert any(need[0] == "flow" for need in job.needs) == needs_flow(call[3]), call
            assert any(need[0] == "flow" for need in dvc[call].needs), call


def test_every_dvc_stage_lists_exactly_the_params_keys_its_step_reads(front_doors):
    _, _, dvc = front_doors
    for call, job in dvc.items():
        if job.step in WHOLE_FILE_STEPS:
            assert job.params == [("params.yaml", [])], f"{call} must depend on the whole params.yaml"
        elif STEP_PARAMS[job.step]:
            # `recipes` is narrowed to the job's model in DVC (recipes.${item.model}) as in Snakemake
            per_model = job.step in ("train", "prune", "evaluate")
            wanted = sorted(f"recipes.{call[3]}" if key == "recipes" and per_model else key
                            for key in STEP_PARAMS[job.step])
            assert [(f, sorted(keys)) for f, keys in job.params] == [("params.yaml", wanted)], call
        else:
            assert job.params == [], call


def test_both_front_doors_depend_on_the_code_each_step_runs(front_doors):
    """Snakemake: a job depends on its step's files and, for training, its own model's files; DVC
    cannot choose files per model, so its train stages add the model files other models share."""
    from actionrepro.models import model_names

    _, snakemake, dvc = front_doors
    shared = set(dag.shared_model_code(model_names()))  # dvc.yaml serves every registered model
    for call, job in snakemake.items():
        model_files = set(dag.model_code(call[3])) if job.step == "train" else set()
        assert job.code == set(dag.step_code(job.step)) | model_files, call
        assert job.code <= dvc[call].code, f"{call}: DVC lacks {sorted(job.code - dvc[call].code)}"
        assert dvc[call].code - job.code <= shared, f"{call}: DVC only {sorted(dvc[call].code - job.code - shared)}"
        if job.step == "train":
            assert f"src/actionrepro/models/{call[3]}.py" in job.code


def test_dvc_yaml_lists_the_code_deps_dag_computes():
    """dvc.yaml's code deps are written by `make dvc-code` (actionrepro.dag.with_dvc_code): a moved
    import makes this fail until it is re-run."""
    from actionrepro.models import model_names

    text = (REPO_ROOT / "dvc.yaml").read_text()
    assert dag.with_dvc_code(text, model_names()) == text, "dvc.yaml's code deps are stale: run `make dvc-code`"
