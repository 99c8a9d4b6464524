"""The DVC front door end to end on the synthetic test params (tests/fixtures/pipeline.yaml, in a copy
of the repository as its params.yaml): `dvc repro` runs every stage, a second `dvc repro` runs none,
`dvc exp run -S` with one more pruning ratio runs only that ratio's stages and the report, and
`dvc metrics diff` / `dvc plots diff` show exactly the new ratio's results against the baseline, and
a fresh clone gets every output from a DVC remote with `dvc pull`.

One `dvc repro` (about a minute on 2 cores) is shared by the tests, which run in file order.
Restoring deleted outputs into a workspace where Snakemake ran is in tests/test_pipeline_snakemake.py.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from conftest import PIPELINE_PARAMS, copy_repository, run_tool

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")]

UP_TO_DATE = "Data and pipelines are up to date."
RUN = "runs/synth_ucf101/split1"


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` ran, from its 'Running stage' lines."""
    return sorted(re.findall(r"^Running stage '([^']+)':", output, re.MULTILINE))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(root, the output of the first `dvc repro`)."""
    root = copy_repository(tmp_path_factory.mktemp("dvc") / "repo", PIPELINE_PARAMS)
    return root, run_tool(root, "dvc", "repro")


def test_dvc_repro_runs_every_stage_once(workspace):
    root, out = workspace
    stages = sorted(run_tool(root, "dvc", "stage", "list", "--name-only").split())
    assert len(stages) == 15  # weights, download, extract, splits, decode, flow, 2 x (train, evaluate, prune, evaluate_pruned), report
    assert ran(out) == stages
    for model in ["tsn", "stpn"]:
        for variant in ["dense", "pruned-0.3"]:
            assert json.loads((root / f"{RUN}/{model}/{variant}/eval.json").read_text())["protocols"]
            assert (root / f"{RUN}/{model}/{variant}/checkpoint.pt").is_file()
    assert (root / "reports" / "report.html").stat().st_size > 0
    assert (root / "dvc.lock").is_file()


def test_a_second_dvc_repro_runs_nothing(workspace):
    root, _ = workspace
    out = run_tool(root, "dvc", "repro")
    assert ran(out) == [] and UP_TO_DATE in out
    assert UP_TO_DATE in run_tool(root, "dvc", "status")


def test_dvc_exp_run_with_another_pruning_ratio_runs_only_its_prune_evaluate_and_report_stages(workspace):
    root, _ = workspace
    run_tool(root, "git", "add", "dvc.lock")
    run_tool(root, "git", "commit", "-q", "--no-verify", "-m", "baseline: dvc repro of the test params")

    out = run_tool(root, "dvc", "exp", "run", "-S", "prune.ratios=[0.3,0.5]")

    assert ran(out) == sorted(["prune@synth_ucf101-1-tsn-0.5", "prune@synth_ucf101-1-stpn-0.5",
                               "evaluate_pruned@synth_ucf101-1-tsn-0.5", "evaluate_pruned@synth_ucf101-1-stpn-0.5",
                               "report"])
    assert (root / f"{RUN}/stpn/pruned-0.5/eval.json").is_file()
    assert UP_TO_DATE in run_tool(root, "dvc", "status")


def test_dvc_metrics_diff_shows_the_new_ratios_metrics_and_nothing_else(workspace):
    root, _ = workspace
    diff = json.loads(run_tool(root, "dvc", "metrics", "diff", "--json"))
    assert sorted(diff) == sorted(f"{RUN}/{model}/pruned-0.5/{name}"
                                  for model in ["tsn", "stpn"] for name in ["metrics.json", "eval.json"])
    top1 = diff[f"{RUN}/tsn/pruned-0.5/eval.json"]["protocols.1x1.top1"]
    assert top1["old"] is None and 0 <= top1["new"] <= 1


def test_dvc_plots_diff_shows_the_new_ratios_training_history_in_the_workspace_only(workspace):
    root, _ = workspace
    plots = json.loads(run_tool(root, "dvc", "plots", "diff", "--json"))["data"]
    new = plots[f"{RUN}/tsn/pruned-0.5/history.csv"][0]
    assert new["revisions"] == ["workspace"]
    assert [row["epoch"] for row in new["content"]["data"]["values"]] == ["1"]
    assert sorted(plots[f"{RUN}/tsn/dense/history.csv"][0]["revisions"]) == ["HEAD", "workspace"]


def test_a_fresh_clone_pulls_every_output_byte_identical_and_both_tools_find_nothing_to_do(workspace, tmp_path):
    """Every file a stage writes is a declared output, so `dvc pull` into a clone restores all of
    them; Snakemake, with no record of its own there, adopts them with `--touch`."""
    root, _ = workspace
    run_tool(root, "dvc", "remote", "add", "--default", "shared", str(tmp_path / "remote"))
    run_tool(root, "dvc", "push")
    run_tool(root, "git", "add", ".dvc/config", "dvc.lock", "params.yaml")
    run_tool(root, "git", "commit", "-q", "--no-verify", "-m", "results with ratio 0.5")
    clone = tmp_path / "clone"
    run_tool(tmp_path, "git", "clone", "-q", str(root), str(clone))

    run_tool(clone, "dvc", "pull")

    def digests(top) -> dict[str, str]:
        return {path.relative_to(top).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                for sub in ["data", "runs", "reports"] for path in sorted((top / sub).rglob("*"))
                if path.is_file() and "dvc_plots" not in path.parts
                and path.name != ".lock"}  # the run lock (runs.run_lock), .dvcignored: not an output
    assert digests(clone) == digests(root)
    assert UP_TO_DATE in run_tool(clone, "dvc", "status")
    run_tool(clone, "snakemake", "--cores", "2", "--configfile", "params.yaml", "--touch")
    assert "Nothing to be done" in run_tool(clone, "snakemake", "--dry-run", "--configfile", "params.yaml")
    assert UP_TO_DATE in run_tool(clone, "dvc", "status")  # its timestamps in output dirs are .dvcignored
