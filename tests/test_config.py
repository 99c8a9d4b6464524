"""params validation: a wrong params file fails before any job runs, naming key, value and allowed values."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actionrepro import config
from actionrepro.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def paper() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("name", ["params.yaml", "config/demo.yaml"])
def test_shipped_params_files_validate_against_the_one_schema(name):
    params = config.load(ROOT / name)
    assert params["train"]["accumulate"] >= 1  # schema defaults are filled in


def test_paper_params_cover_both_datasets_all_splits_and_every_model():
    params = config.load(ROOT / "params.yaml")
    assert params["datasets"] == ["ucf101", "hmdb51"]
    assert params["splits"] == [1, 2, 3]
    assert params["scale"] == "paper"
    allowed = config.schema()["$defs"]["model"]["enum"]
    assert params["models"] == allowed


def test_unknown_model_names_key_value_and_allowed_values():
    bad = paper()
    bad["models"] = ["tsn", "resnet9000"]
    with pytest.raises(ConfigError) as err:
        config.validate(bad, "params.yaml")
    msg = str(err.value)
    assert "models[1]" in msg and "'resnet9000'" in msg and "'tsm'" in msg and "'s2tfnet'" in msg


def test_unknown_dataset_is_rejected_with_allowed_values():
    bad = paper()
    bad["datasets"] = ["kinetics400"]
    with pytest.raises(ConfigError, match=r"datasets\[0\].*'kinetics400'.*'ucf101', 'hmdb51'"):
        config.validate(bad)


def test_unknown_key_is_rejected_with_the_allowed_keys():
    bad = paper()
    bad["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'learning_rate' under 'train'; allowed keys: .*lr"):
        config.validate(bad)


def test_wrong_type_names_the_expected_type():
    bad = paper()
    bad["decode"]["short_side"] = "256px"
    with pytest.raises(ConfigError, match=r"decode.short_side' has value '256px' of type str; expected integer"):
        config.validate(bad)


def test_every_violation_is_reported_at_once():
    bad = paper()
    bad["seed"] = -1
    bad["flow"]["algorithm"] = "raft"
    bad["prune"]["ratios"] = [1.5]
    msg = str(pytest.raises(ConfigError, config.validate, bad).value)
    assert "seed" in msg and "'raft'" in msg and "prune.ratios[0]" in msg


def test_defaults_do_not_override_given_values():
    params = copy.deepcopy(paper())
    params["train"]["momentum"] = 0.5
    assert config.validate(params)["train"]["momentum"] == 0.5


def test_missing_params_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="not found; run from the project root or pass --params"):
        config.load(tmp_path / "nope.yaml")


def test_cli_exits_2_with_the_message_before_doing_anything(tmp_path):
    bad = paper()
    bad["models"] = ["tsn", "nope"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "actionrepro", "splits", "ucf101", "--params", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "models[1]" in proc.stderr and "'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_cli_help_lists_every_step():
    out = subprocess.run([sys.executable, "-m", "actionrepro", "--help"], capture_output=True, text=True).stdout
    for step in ["synth", "download", "extract", "splits", "decode", "flow", "weights", "train", "prune", "evaluate",
                 "report", "recipe"]:
        assert step in out


def test_unquoted_off_reads_as_the_string_yaml_1_2_writers_such_as_dvc_exp_leave(tmp_path):
    # `dvc exp run -S` rewrites params.yaml and drops the quotes of amp: "off"
    text = (ROOT / "config/demo.yaml").read_text().replace('amp: "off"', "amp: off")
    assert "amp: off" in text
    (tmp_path / "params.yaml").write_text(text)
    assert config.load(tmp_path / "params.yaml")["train"]["amp"] == "off"


def test_true_and_false_still_read_as_booleans(tmp_path):
    text = (ROOT / "config/demo.yaml").read_text().replace("global_pruning: false", "global_pruning: TRUE")
    (tmp_path / "params.yaml").write_text(text)
    assert config.load(tmp_path / "params.yaml")["prune"]["global_pruning"] is True


# ---------------------------------------------------------------- one-off overrides (--set)
def test_set_overrides_one_value_with_a_yaml_value_and_validates_it(tmp_path):
    from actionrepro.errors import ConfigError

    demo = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
    params = config.load(demo, ["train.epochs=1", "prune.ratios=[0.5, 0.7]", "train.amp=off"])
    assert params["train"]["epochs"] == 1 and params["prune"]["ratios"] == [0.5, 0.7]
    assert params["train"]["amp"] == "off"  # YAML 1.2: off stays a string
    assert config.load(demo)["train"]["epochs"] == 25  # the file itself is untouched
    with pytest.raises(ConfigError, match=r"--set train.epochs=-1.*train\.epochs"):
        config.load(demo, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.load(demo, ["train.epochs"])
    with pytest.raises(ConfigError, match="unknown key"):
        config.load(demo, ["train.epoch=3"])
