"""Config variants: a params file that names a `base:` states only what it changes, and
`after_recipes` imposes settings on every model over its recipe (what the smoke run needs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from actionrepro import config, dag
from actionrepro.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_file_is_overlaid_key_by_key_and_lists_replace(tmp_path):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    write(tmp_path / "params.yaml", base)
    variant = write(tmp_path / "config" / "variant.yaml",
                    {"base": "../params.yaml", "datasets": ["hmdb51"], "train": {"epochs": 3},
                     "recipes": {"tsm": {"init": "none"}}})
    params = config.load(variant)
    assert params["datasets"] == ["hmdb51"]                   # a list replaces
    assert params["train"]["epochs"] == 3                     # a key of a mapping replaces ...
    assert params["train"]["lr"] == base["train"]["lr"]      # ... and the others stay
    assert params["recipes"]["tsm"]["init"] == "none"
    assert params["recipes"]["tsm"]["anchor"] == base["recipes"]["tsm"]["anchor"]
    assert "base" not in params


def test_base_cycle_and_missing_base_are_named(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        config.load(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"base": "nowhere.yaml"})
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        config.load(tmp_path / "c.yaml")


def test_after_recipes_win_over_the_recipe_and_its_dataset_part():
    params = config.load(ROOT / "params.yaml")
    assert config.resolve(params, "hmdb51", "tsn")["train"]["epochs"] == 50  # the recipe's hmdb51 part
    params["after_recipes"] = {"train": {"epochs": 1, "batch_size": 2}, "evaluate": {"batch_size": 1}}
    for model in params["models"]:
        resolved = config.resolve(params, "hmdb51", model)
        assert (resolved["train"]["epochs"], resolved["train"]["batch_size"]) == (1, 2), model
        assert resolved["evaluate"]["batch_size"] == 1
    resolved = config.resolve(params, "hmdb51", "tsn")
    assert resolved["train"]["lr"] == 0.025 and resolved["architectures"]["tsn"]["segments"] == 8  # rest kept


def test_after_recipes_are_validated_like_a_recipe_block():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["after_recipes"] = {"train": {"epochz": 1}}
    with pytest.raises(ConfigError, match="epochz"):
        config.validate(params)


def test_after_recipes_reach_the_rule_params_of_train_prune_and_evaluate():
    params = config.load(ROOT / "params.yaml")
    for step in ("train", "prune", "evaluate"):
        assert "after_recipes" in dag.STEP_PARAMS[step]
    dvc = (ROOT / "dvc.yaml").read_text()
    assert dvc.count("- after_recipes") == 4  # train, prune, evaluate dense, evaluate pruned
    assert dag.step_params("train", params)["after_recipes"] == {}
