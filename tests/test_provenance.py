"""Numbers a reader can trust: every run records what it was made from, a step never replaces
outputs made from another params file under other settings, a step whose settings, code or inputs
changed starts over, and the report shows a run only while its record matches what it is asked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures.runs_tree import build_runs_tree

from actionrepro import config, provenance, runs
from actionrepro.errors import ActionReproError
from actionrepro.reporting import collect
from actionrepro.steps import report as report_step

REPO = Path(__file__).resolve().parents[1]


def demo_params(**train) -> dict:
    params = config.load(REPO / "config" / "demo.yaml")
    params["train"].update(train)
    return config.validate(params)


# ---------------------------------------------------------------- what a record holds
def test_a_record_holds_code_environment_settings_inputs_and_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data/manifests/synth_ucf101").mkdir(parents=True)
    Path("data/manifests/synth_ucf101/split1.csv").write_text("video_id,path,label,class_name,subset\n")
    params = demo_params()
    record = provenance.make_record("train", params, params_file="config/demo.yaml", model="sth",
                                    inputs=runs.data_inputs("synth_ucf101", 1, two_stream=False))
    assert set(record["git"]) == {"commit", "dirty"}
    assert record["environment"]["packages"]["torch"] and record["environment"]["packages"]["python"]
    assert record["environment"]["cpu"]["model"] and len(record["environment"]["cpu"]["flags_sha256"]) == 16
    assert record["settings"]["train"] == params["train"] and record["settings"]["architectures"] == {"sth": {}}
    assert record["settings_sha256"] == provenance.digest(record["settings"])
    assert record["seed"] == 0 and record["params_file"] == "config/demo.yaml"
    assert any(p.endswith("models/sth.py") for p in record["code"])
    assert not any(p.endswith("models/tsm.py") for p in record["code"])  # only the model this run runs
    assert record["inputs"]["data/manifests/synth_ucf101/split1.csv"]["size"] > 0
    assert record["inputs"]["data/frames/synth_ucf101/summary.json"] == {"missing": True}


def test_settings_diff_names_each_changed_key():
    assert provenance.settings_diff({"train": {"epochs": 25, "lr": 0.1}}, {"train": {"epochs": 3, "lr": 0.1}}) == [
        "train.epochs: 25 -> 3"]


# ---------------------------------------------------------------- no mixed, no stale outputs
def _evaluated_run(path: Path, params_file: str, params: dict) -> dict:
    path.mkdir(parents=True)
    for name in ("checkpoint.pt", "metrics.json", "eval.json", "eval_1x1.json", "predictions_1x1.csv"):
        (path / name).write_text(name)
    record = provenance.make_record("evaluate", params, params_file=params_file, model="tsm", inputs=[])
    runs.finish_step(path, "evaluate", record, ["eval.json"])
    return record


def test_outputs_of_another_params_file_under_other_settings_are_refused_and_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/synth_ucf101/split1/tsm/dense")
    _evaluated_run(run, "config/demo.yaml", demo_params())
    before = (run / "eval.json").read_bytes()
    paper = config.load(REPO / "params.yaml")
    record = provenance.make_record("evaluate", paper, params_file="params.yaml", model="tsm", inputs=[])
    with pytest.raises(ActionReproError, match=r"made from config/demo.yaml .* reads params.yaml"):
        runs.begin_step(run, "evaluate", record)
    assert (run / "eval.json").read_bytes() == before


def test_the_same_params_file_with_new_settings_starts_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/synth_ucf101/split1/tsm/dense")
    _evaluated_run(run, "config/demo.yaml", demo_params())
    changed = demo_params()
    changed["evaluate"]["clips"] = 5
    runs.begin_step(run, "evaluate", provenance.make_record("evaluate", changed, params_file="config/demo.yaml",
                                                            model="tsm", inputs=[]))
    assert not (run / "eval.json").exists() and not (run / "predictions_1x1.csv").exists()
    assert (run / "checkpoint.pt").exists() and (run / "metrics.json").exists()  # the weights are not evaluate's
    assert provenance.read(run)["evaluate"]["complete"] is False


def test_unchanged_settings_keep_the_outputs_for_a_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/synth_ucf101/split1/tsm/dense")
    record = _evaluated_run(run, "config/demo.yaml", demo_params())
    runs.begin_step(run, "evaluate", record)
    assert (run / "eval.json").exists()


def test_new_weights_discard_the_old_evaluation_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/synth_ucf101/split1/tsm/dense")
    _evaluated_run(run, "config/demo.yaml", demo_params())
    runs.finish_step(run, "train", provenance.make_record("train", demo_params(), params_file="config/demo.yaml",
                                                          model="tsm", inputs=[]), ["checkpoint.pt"])
    runs.begin_step(run, "train", provenance.make_record("train", demo_params(epochs=2),
                                                         params_file="config/demo.yaml", model="tsm", inputs=[]))
    assert not any((run / name).exists() for name in ("checkpoint.pt", "metrics.json", "eval.json"))
    assert "evaluate" not in provenance.read(run)


def test_outputs_without_any_record_are_not_trusted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/synth_ucf101/split1/tsm/dense")
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    runs.begin_step(run, "train", provenance.make_record("train", demo_params(), params_file="config/demo.yaml",
                                                         model="tsm", inputs=[]))
    assert not (run / "metrics.json").exists()


# ---------------------------------------------------------------- the report
@pytest.fixture
def tree(tmp_path, monkeypatch):
    params = build_runs_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    return params


def test_the_report_shows_no_dense_result_as_current_after_a_training_setting_changed(tree, tmp_path):
    changed = json.loads(json.dumps(tree))
    changed["train"]["epochs"] = tree["train"]["epochs"] + 1
    results, status = collect.collect_results(changed, "hash", "changed.yaml")
    assert results.empty
    stale = status[status.state == collect.STALE]
    assert len(stale) == (status.state != "not run").sum() - (status.state == "trained, not evaluated").sum()
    assert all("train settings differ: train.epochs" in d for d in stale.detail)
    current, _ = collect.collect_results(tree, "hash", "config/fixture.yaml")
    assert len(current) > 0 and set(current["commit"]) == {"unknown"}


def test_changed_code_or_data_or_swapped_weights_make_a_run_stale(tree):
    run = Path("runs/ucf101/split1/tsn/dense")
    record = provenance.read(run)
    record["train"]["code"][next(iter(record["train"]["code"]))] = "0" * 64
    provenance.write(run, "train", record["train"])
    Path("data/frames/synth_hmdb51/summary.json").write_text("{}")
    (Path("runs/ucf101/split2/tsn/dense") / "checkpoint.pt").write_bytes(b"other weights, longer than before")
    _, status = collect.collect_results(tree, "hash", "config/fixture.yaml")
    detail = {(r.dataset, r.split, r.model, r.variant): r.detail for r in status.itertuples()}
    assert "train code changed since" in detail[("ucf101", 1, "tsn", "dense")]
    assert "input changed since: data/frames/synth_hmdb51/summary.json" in detail[("synth_hmdb51", 1, "tsn", "dense")]
    assert "checkpoint.pt changed after evaluation" in detail[("ucf101", 2, "tsn", "dense")]
    assert detail[("ucf101", 3, "tsn", "dense")] == ""


def test_results_carry_each_runs_own_commit_torch_and_environment_flag(tree):
    run = Path("runs/ucf101/split1/tsn/dense")
    record = provenance.read(run)
    record["train"]["environment"]["packages"]["torch"] = "0.0-elsewhere"
    provenance.write(run, "train", record["train"])
    results, _ = collect.collect_results(tree, "hash", "config/fixture.yaml")
    odd = results[results.run_dir == run.as_posix()]
    assert set(odd["torch"]) == {"0.0-elsewhere"} and odd["environment_differs"].all()
    assert not results[results.run_dir != run.as_posix()]["environment_differs"].any()
    assert set(results["torch"]) - {"0.0-elsewhere"} == {provenance.package_versions()["torch"]}


def test_report_refuses_to_replace_a_report_built_from_another_params_file(tree, tmp_path):
    report_step.build_report(tree, out=Path("reports"), params_file="config/fixture.yaml")
    before = Path("reports/report.md").read_bytes()
    other = config.load(REPO / "params.yaml")
    with pytest.raises(ActionReproError, match="config/fixture.yaml"):
        report_step.build_report(other, out=Path("reports"), params_file="params.yaml")
    assert Path("reports/report.md").read_bytes() == before
    report_step.build_report(other, out=Path("elsewhere"), params_file="params.yaml")  # another folder is fine
    assert os.path.isfile("elsewhere/report.md")
