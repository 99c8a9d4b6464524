"""The Snakemake front door end to end on the synthetic test params (tests/fixtures/pipeline.yaml, in a
copy of the repository as its params.yaml): a full run, a second run that does nothing, the params
trigger of every key in actionrepro.dag.STEP_PARAMS, outputs shared through a DVC remote and
accepted by Snakemake after `dvc pull`, and a new pruning ratio that re-runs only its own jobs.

One pipeline run (about a minute on 2 cores) is shared by the tests, which run in file order; the
ratio test changes the workspace and comes last.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from conftest import PIPELINE_PARAMS, cli_call, copy_repository, run_tool, snakemake_plan

from actionrepro import config
from actionrepro.dag import STEP_PARAMS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")]

NOTHING_TO_DO = "Nothing to be done (all requested files are present and up to date)."

# One valid change per params key a step reads (a section is changed through one of its leaves).
PERTURBATIONS = {
    "download.retries": 1,
    "synth.ucf101.frames": 18,
    "seed": 1,
    "decode.short_side": 40,
    "decode.jpeg_quality": 85,
    "flow.bound": 15,
    "scale": "paper",
    "train.lr": 0.001,
    "augment.scales": [1.0, 0.875],
    "architectures": {"tsn": {"dropout": 0.3}, "stpn": {"dropout": 0.3}},
    "prune.importance": "l1",
    "prune.global_pruning": True,
    "prune.iterative_steps": 2,
    "prune.round_to": 2,
    "prune.finetune_epochs": 2,
    "prune.finetune_lr": 0.01,
    "evaluate.clips": 3,
    "evaluate.latency_repeats": 2,
    "train.batch_size": 4,
    "train.num_workers": 1,
    "train.loader_memory_gb": 4,
    "after_recipes": {"evaluate": {"batch_size": 4}},
}
NOT_PERTURBED = {
    "recipes": "narrowed per job to one model's recipe (and the weights job to the inits), so a change re-runs "
               "that model's jobs only: tests/test_recipes.py checks it, where this test expects every job of a step",
    "datasets": "the weights step reads the target lists to know which inits are needed; changing them changes "
                "which jobs exist, not the params of existing jobs",
    "models": "as datasets",
    "train.device": "every value but cpu also starts training through torchrun, which Snakemake "
                    "reports as a changed rule, not as changed params",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(root, the jobs planned for a fresh copy, the output of the run that made them)."""
    root = copy_repository(tmp_path_factory.mktemp("snakemake") / "repo", PIPELINE_PARAMS)
    planned = snakemake_plan(root)
    out = run_tool(root, "snakemake", "--cores", "2", "--configfile", "params.yaml")
    return root, planned, out


def jobs_with_changed_params(root: Path) -> list[tuple[str, ...]]:
    """The jobs whose recorded params differ from params.yaml's, from `snakemake --detailed-summary`
    (a dry run names only the first such job on each path: the rest wait for an updated input)."""
    out = run_tool(root, "snakemake", "--cores", "2", "--configfile", "params.yaml", "--detailed-summary")
    lines = out[out.index("output_file\t"):].splitlines()
    rows = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    return sorted({cli_call(row["shellcmd"]) for row in rows if row.get("status") == "params changed"})


def set_key(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = params
    for part in path:
        node = node[part]
    node[last] = value


def covers(key: str, changed: str) -> bool:
    """Whether a step reading `key` reads the changed key (one holds the other)."""
    return key == changed or changed.startswith(key + ".") or key.startswith(changed + ".")


def files_under(root: Path, *paths: str) -> dict[str, tuple[int, str]]:
    """{relative path: (mtime_ns, sha256)} of every file at or under `paths`."""
    found = {}
    for top in paths:
        for path in [root / top] if (root / top).is_file() else sorted((root / top).rglob("*")):
            if path.is_file():
                found[path.relative_to(root).as_posix()] = (path.stat().st_mtime_ns,
                                                            hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def test_snakemake_runs_the_whole_pipeline_on_the_test_params(workspace):
    root, planned, out = workspace
    params = config.load(root / "params.yaml")
    assert Counter(job["rule"] for job in planned) == {
        "weights": 1, "download": 1, "extract": 1, "splits": 1, "decode": 1, "flow": 1, "train": 2, "prune": 2,
        "evaluate": 4, "report": 1}
    assert f"{len(planned) + 1} of {len(planned) + 1} steps (100%) done" in out
    for model in params["models"]:
        for variant in ["dense", "pruned-0.3"]:
            assert (root / f"runs/synth_ucf101/split1/{model}/{variant}/eval.json").is_file()
            assert (root / f"runs/synth_ucf101/split1/{model}/{variant}/checkpoint.pt").is_file()
    assert (root / "reports" / "report.html").stat().st_size > 0


def test_a_second_snakemake_run_does_nothing(workspace):
    root, _, _ = workspace
    before = files_under(root, "data", "runs", "reports")
    assert NOTHING_TO_DO in run_tool(root, "snakemake", "--cores", "2", "--configfile", "params.yaml")
    assert files_under(root, "data", "runs", "reports") == before


def test_the_perturbations_change_every_params_key_a_step_reads():
    keys = {key for step_keys in STEP_PARAMS.values() for key in step_keys}
    untested = {key for key in keys if not any(covers(key, changed) for changed in PERTURBATIONS)}
    assert untested == set(NOT_PERTURBED)


REORDERED = "(every section's keys sorted, no value changed)"


@pytest.fixture(scope="module")
def params_trigger(workspace, tmp_path_factory) -> dict[str, list[tuple[str, ...]]]:
    """{changed key: the jobs whose params Snakemake then finds changed}, for every perturbation of
    params.yaml and for REORDERED, written in place (its name is part of every command, so another
    file is a code change) in two copies of the finished workspace working in parallel."""
    root, _, _ = workspace
    original = yaml.safe_load((root / "params.yaml").read_text())
    copies = [tmp_path_factory.mktemp("trigger") / "repo" for _ in range(2)]

    def probe(copy: Path, keys: list[str]) -> dict[str, list[tuple[str, ...]]]:
        shutil.copytree(root, copy, symlinks=True)  # keeps mtimes and Snakemake's metadata
        found = {}
        for changed in keys:
            params = deepcopy(original)
            if changed != REORDERED:
                set_key(params, changed, PERTURBATIONS[changed])
            (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=changed == REORDERED))
            found[changed] = jobs_with_changed_params(copy)
        return found

    keys = [*PERTURBATIONS, REORDERED]
    with ThreadPoolExecutor(len(copies)) as pool:
        parts = list(pool.map(probe, copies, [keys[i::len(copies)] for i in range(len(copies))]))
    return {key: jobs for part in parts for key, jobs in part.items()}


@pytest.mark.parametrize("changed", list(PERTURBATIONS))
def test_changing_a_params_key_reruns_exactly_the_jobs_of_the_steps_that_read_it(workspace, params_trigger, changed):
    """Snakemake's params trigger against STEP_PARAMS: the jobs whose params changed are all jobs of
    the steps reading the key, and the report (which reads the whole file)."""
    _, planned, _ = workspace
    steps = {step for step, keys in STEP_PARAMS.items() if any(covers(key, changed) for key in keys)} | {"report"}
    assert params_trigger[changed] == sorted(cli_call(job["shell"]) for job in planned if job["rule"] in steps)


def test_reordering_the_keys_of_params_yaml_reruns_nothing(params_trigger):
    assert params_trigger[REORDERED] == []


def test_dvc_push_and_pull_restore_deleted_stores_byte_identical_and_snakemake_accepts_them(workspace, tmp_path):
    """Snakemake computed; `dvc commit --force` records its outputs as the stages' results and `dvc
    push` shares them. A deleted checkpoint and frame store come back from the remote with new mtimes, and
    Snakemake still has nothing to do: it recorded a checksum of every (small) input file of every
    job and ignores a newer file whose content is unchanged."""
    root, _, _ = workspace
    run_tool(root, "dvc", "commit", "--force")
    assert "Data and pipelines are up to date." in run_tool(root, "dvc", "status")
    run_tool(root, "dvc", "remote", "add", "--default", "shared", str(tmp_path / "remote"))
    run_tool(root, "dvc", "push")
    checkpoint, frames = "runs/synth_ucf101/split1/tsn/dense/checkpoint.pt", "data/frames/synth_ucf101"
    before = files_under(root, checkpoint, frames)
    (root / checkpoint).unlink()
    shutil.rmtree(root / frames)
    assert "deleted" in run_tool(root, "dvc", "status")

    run_tool(root, "dvc", "pull")

    after = files_under(root, checkpoint, frames)
    assert {path: digest for path, (_, digest) in after.items()} == {path: digest for path, (_, digest) in before.items()}
    assert all(after[path][0] > before[path][0] for path in after)  # written anew, with new mtimes
    assert snakemake_plan(root) == []
    assert "Data and pipelines are up to date." in run_tool(root, "dvc", "status")


def test_adding_a_pruning_ratio_reruns_only_that_ratios_prune_evaluate_and_report_jobs(workspace):
    root, _, _ = workspace
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prune"]["ratios"] = [0.3, 0.5]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = files_under(root, "data", "runs")

    planned = sorted(cli_call(job["shell"]) for job in snakemake_plan(root))
    run_tool(root, "snakemake", "--cores", "2", "--configfile", "params.yaml")

    assert planned == sorted([("prune", "synth_ucf101", "1", "tsn", "0.5"), ("prune", "synth_ucf101", "1", "stpn", "0.5"),
                              ("evaluate", "synth_ucf101", "1", "tsn", "--variant", "pruned-0.5"),
                              ("evaluate", "synth_ucf101", "1", "stpn", "--variant", "pruned-0.5"), ("report",)])
    after = files_under(root, "data", "runs")
    changed = {path for path in after if before.get(path) != after[path]}
    assert changed and all("/pruned-0.5/" in path for path in changed), sorted(changed)
    assert {path.split("/")[3] for path in changed} == {"tsn", "stpn"}
    assert snakemake_plan(root) == []
