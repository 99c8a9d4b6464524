"""Per-model recipes (config.resolve), their place in provenance and in both front doors' re-run
logic, `actionrepro recipe`, and the pretrained weights step (local 127.0.0.1 server only)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT

from actionrepro import config, dag, provenance
from actionrepro.data import download, weights
from actionrepro.errors import DataError

PAPER = config.load(REPO_ROOT / "params.yaml")
DEMO = config.load(REPO_ROOT / "config" / "demo.yaml")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- resolve
def test_recipe_overlays_global_blocks_and_the_dataset_part():
    tsm = config.resolve(PAPER, "ucf101", "tsm")
    assert tsm["train"]["lr"] == 0.0015 and tsm["train"]["schedule"] == "step"
    assert tsm["train"]["device"] == PAPER["train"]["device"]  # untouched keys stay global
    assert tsm["init"] == "kinetics400"
    tsn_ucf, tsn_hmdb = config.resolve(PAPER, "ucf101", "tsn"), config.resolve(PAPER, "hmdb51", "tsn")
    assert tsn_ucf["architectures"]["tsn"]["segments"] == 3 and tsn_hmdb["architectures"]["tsn"]["segments"] == 8
    assert tsn_ucf["train"]["lr"] != tsn_hmdb["train"]["lr"]
    assert tsn_ucf["anchor"]["file"].endswith("ucf101_rgb.py") and tsn_hmdb["anchor"]["file"].endswith("hmdb51_imagenet_rgb.py")
    assert tsn_ucf["anchor"]["source"] == tsn_hmdb["anchor"]["source"]  # the recipe's anchor, the part's file
    # a synthetic stand-in follows the recipe of the dataset it imitates
    assert config.resolve(PAPER, "synth_ucf101", "tsn")["architectures"]["tsn"]["segments"] == 3
    # idempotent, and the input is not modified
    before = copy.deepcopy(PAPER)
    assert config.resolve(tsm, "ucf101", "tsm") == tsm
    assert PAPER == before


def test_every_paper_model_has_an_anchor_and_an_init_other_than_none():
    for model in PAPER["models"]:
        for dataset in PAPER["datasets"]:
            run = config.resolve(PAPER, dataset, model)
            assert run["init"] != "none", (dataset, model)
            assert run["anchor"].get("source"), (dataset, model)
            weights.plan(model, run["init"])  # a registered source for every named init


def test_the_anchored_recipes_differ_where_their_anchors_do():
    keys = ("lr", "epochs", "batch_size", "weight_decay", "schedule", "nesterov")
    trains = {m: tuple(config.resolve(PAPER, "ucf101", m)["train"][k] for k in keys)
              for m in ("tsn", "tsm", "ustn", "s2tfnet")}
    assert len(set(trains.values())) == 4, trains


def test_classifier_lr_mult_is_set_where_the_anchor_trains_the_classifier_faster():
    for model in PAPER["models"]:
        for dataset in PAPER["datasets"]:
            mult = config.resolve(PAPER, dataset, model)["train"]["classifier_lr_mult"]
            assert mult == (5 if model == "tsm" else 1.0), (dataset, model)  # mmaction2 fc_lr5


def test_the_demo_resolves_to_itself():
    for model in DEMO["models"]:
        run = config.resolve(DEMO, "synth_ucf101", model)
        for block in config.RECIPE_BLOCKS:
            assert run[block] == DEMO[block], (model, block)
        assert run["architectures"][model] == (DEMO["architectures"].get(model) or {})
        assert run["init"] == "none"


# ---------------------------------------------------------------- re-run logic
def _with_tsm_train(params: dict, **train) -> dict:
    changed = copy.deepcopy(params)
    changed["recipes"]["tsm"]["train"].update(train)
    return changed


@pytest.mark.parametrize("key,value", [("lr", 0.003), ("classifier_lr_mult", 10)])
def test_changing_one_models_recipe_changes_only_that_models_settings(key, value):
    changed = _with_tsm_train(PAPER, **{key: value})
    for step in ("train", "prune", "evaluate"):
        for model in PAPER["models"]:
            same = provenance.step_settings(step, PAPER, model, "ucf101") == \
                provenance.step_settings(step, changed, model, "ucf101")
            assert same == (model != "tsm"), (step, model)
    # the recorded settings are the resolved ones
    assert provenance.step_settings("train", changed, "tsm", "ucf101")["train"][key] == value
    # a change in one dataset's part leaves the other dataset's runs alone
    hmdb_only = copy.deepcopy(PAPER)
    hmdb_only["recipes"]["tsn"]["datasets"]["hmdb51"]["train"]["lr"] = 0.5
    assert provenance.step_settings("train", PAPER, "tsn", "ucf101") == \
        provenance.step_settings("train", hmdb_only, "tsn", "ucf101")
    assert provenance.step_settings("train", PAPER, "tsn", "hmdb51") != \
        provenance.step_settings("train", hmdb_only, "tsn", "hmdb51")
    # an anchor's words are not settings
    reworded = copy.deepcopy(PAPER)
    reworded["recipes"]["tsm"]["anchor"]["note"] = "other words"
    assert provenance.step_settings("train", PAPER, "tsm", "ucf101") == \
        provenance.step_settings("train", reworded, "tsm", "ucf101")


@pytest.mark.parametrize("key,value", [("lr", 0.003), ("classifier_lr_mult", 10)])
def test_snakemake_rule_params_narrow_the_recipe_to_the_jobs_model(key, value):
    changed = _with_tsm_train(PAPER, **{key: value})
    for step in ("train", "prune", "evaluate"):
        old = dag.rule_params(step, PAPER, recipes=dag.recipe_of(PAPER))["recipes"]
        new = dag.rule_params(step, changed, recipes=dag.recipe_of(changed))["recipes"]
        for model in PAPER["models"]:
            job = SimpleNamespace(model=model, dataset="ucf101")
            assert (old(job) == new(job)) == (model != "tsm"), (step, model)


def test_dvc_stages_list_the_models_recipe_key():
    text = (REPO_ROOT / "dvc.yaml").read_text()
    assert text.count("- recipes.${item.model}") == 4  # train, prune, evaluate, evaluate_pruned
    for name, params in {"paper": PAPER, "demo": DEMO}.items():  # DVC needs the key for every model
        assert set(params["models"]) <= set(params["recipes"]), name


# ---------------------------------------------------------------- actionrepro recipe
def test_recipe_command_prints_the_resolved_settings():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "actionrepro", "recipe", "ucf101", "tsm",
                           "--params", str(REPO_ROOT / "params.yaml")],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"init", "train", "evaluate", "prune", "input", "anchor"} <= set(out)
    assert out["init"]["name"] == "kinetics400" and out["train"]["lr"] == 0.0015
    assert out["train"]["classifier_lr_mult"] == 5 and out["overrides"]["train"]["classifier_lr_mult"] == 5
    assert out["input"]  # the built model's InputSpec
    assert out["anchor"]["repository"] == "open-mmlab/mmaction2"


# ---------------------------------------------------------------- initialisation
def test_train_init_from_a_checkpoint_file(tmp_path):
    import torch

    from actionrepro.models.registry import build_model

    torch.manual_seed(1)
    source = build_model("tsn", "tiny", 5, {})
    path = tmp_path / "tsn.pth"
    torch.save(source.state_dict(), path)
    params = {**config.resolve(DEMO, "synth_ucf101", "tsn"), "init": str(path)}
    file = weights.init_file("tsn", params)
    assert file == path and weights.build_options("tsn", params, file) == {}
    torch.manual_seed(2)
    target = build_model("tsn", "tiny", 5, {})
    weights.initialiser("tsn", params, file)(target)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_a_named_init_is_read_from_data_weights_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = config.resolve(PAPER, "ucf101", "tsn")
    with pytest.raises(DataError, match="actionrepro weights"):
        weights.init_file("tsn", run)
    file = tmp_path / "data" / "weights" / "resnet50-0676ba61.pth"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"x")
    assert weights.init_file("tsn", run) == Path("data/weights/resnet50-0676ba61.pth")
    assert weights.build_options("tsn", run, Path("f")) == {"pretrained": "f"}  # the builder fits ImageNet R50


def test_needed_lists_each_file_once_for_every_run_that_uses_it():
    need = weights.needed(PAPER)
    assert set(need["resnet50-0676ba61.pth"]) >= {"ucf101/tsn", "hmdb51/sth"}
    assert "tsm_r50_256p_1x1x8_50e_kinetics400_rgb_20200726-020785e2.pth" in need
    assert weights.needed(DEMO) == {}


# ---------------------------------------------------------------- the weights step's downloads
PARAMS = {"download": {"verify_tls": True, "retries": 2, "timeout_s": 5, "backoff_s": 0.01}}
BLOB = os.urandom(200_000)


def _table(server, sha: str | None = None, name: str = "net.pth") -> dict:
    return {name: weights.WeightSource(name, (server.url("/" + name),), "test", sha256=sha)}


@pytest.fixture
def served(http_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    http_server.files["/net.pth"] = BLOB
    return http_server


def test_weights_resume_after_a_dropped_connection_and_pin(served):
    served.drop_after["/net.pth"] = 70_000
    [path] = download.download_into(weights.as_dataset(["net.pth"], _table(served)), Path("data/weights"), PARAMS)
    assert path.read_bytes() == BLOB
    got = [r for r in served.requests if r.path == "/net.pth" and r.method == "GET"]
    assert len(got) == 2 and got[1].headers["Range"].startswith("bytes=")
    assert (path.parent / "net.pth.sha256").read_text().startswith(sha256(BLOB))  # pinned on first download
    # a second run downloads nothing
    before = served.count("/net.pth")
    download.download_into(weights.as_dataset(["net.pth"], _table(served)), Path("data/weights"), PARAMS)
    assert served.count("/net.pth") == before


def test_weights_checksum_mismatch_keeps_nothing(served):
    with pytest.raises(DataError) as err:
        download.download_into(weights.as_dataset(["net.pth"], _table(served, sha256(b"other"))),
                               Path("data/weights"), PARAMS)
    assert sha256(BLOB) in str(err.value) and sha256(b"other") in str(err.value)
    assert not Path("data/weights/net.pth").exists()
    assert "actionrepro weights --file PATH" in str(err.value)


def test_weights_name_digest_prefix_is_checked(served):
    name = "net-0000abcd.pth"
    served.files["/" + name] = BLOB
    with pytest.raises(DataError, match="0000abcd"):
        download.download_into(weights.as_dataset([name], _table(served, name=name)), Path("data/weights"), PARAMS)


def test_weights_offline_file_is_verified_and_copied_without_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "elsewhere" / "net.pth"
    mine.parent.mkdir()
    mine.write_bytes(BLOB)
    table = {"net.pth": weights.WeightSource("net.pth", (), "by hand", sha256=sha256(BLOB))}
    [path] = download.download_into(weights.as_dataset(["net.pth"], table), Path("data/weights"), PARAMS, [mine])
    assert path.read_bytes() == BLOB
    assert json.loads(Path("data/weights/download.json").read_text())["archives"][0]["source"]["kind"] == "file"
    # without the file and without a URL the step says how to provide it
    Path("data/weights/net.pth").unlink()
    with pytest.raises(DataError, match="--file"):
        download.download_into(weights.as_dataset(["net.pth"], table), Path("data/weights"), PARAMS)
