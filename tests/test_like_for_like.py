"""The report puts our number beside a published one only like with like: same init, backbone,
split protocol and test views. Fixture run trees (tests/fixtures/runs_tree.py) are read by the
report's own collector."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actionrepro.reporting import collect
from fixtures.runs_tree import PARAMS_FILE, build_runs_tree

# the fixture's r3d runs start from Kinetics-400 through their recipe (recorded in provenance only)
RECIPES = {"r3d": {"init": "kinetics400"}}


def collect_in(root: Path, params: dict):
    old = os.getcwd()
    os.chdir(root)
    try:
        results, _ = collect.collect_results(params, collect.params_hash(params), PARAMS_FILE)
    finally:
        os.chdir(old)
    return results


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """Paper-scale fixture runs: tsn (ImageNet option), r3d (Kinetics-400 recipe), i3d (no init, splits 1-2
    on ucf101), evaluated at 1x1 and 10x3."""
    root = tmp_path_factory.mktemp("paper")
    params = build_runs_tree(root, scale="paper", recipes=RECIPES)
    return params, collect_in(root, params)


def test_the_recipe_init_recorded_in_provenance_is_the_runs_init(paper):
    params, results = paper
    inits = results.drop_duplicates("model").set_index("model")["pretrained"].to_dict()
    assert inits == {"tsn": "imagenet", "r3d": "kinetics400", "i3d": "none"}
