"""The report puts our number beside a published one only like with like: same init, backbone,
split protocol and test views. Fixture run trees (tests/fixtures/runs_tree.py) at paper and tiny
scale are read by the report's own collector; the published side is either the registry's or a
chosen `Published` swapped into the model's registry entry, so each cell is checked against a
string written by hand."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from actionrepro.models.registry import Published
from actionrepro.reporting import collect, document, tables
from fixtures.runs_tree import PARAMS_FILE, build_runs_tree

DELTA = "ours − published"
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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    params = build_runs_tree(root, splits=(1,))
    return params, collect_in(root, params)


def anchor(top1: float, **facts) -> Published:
    """A published UCF101 number measured under `facts` (init, backbone, splits, views)."""
    return Published("ucf101", top1, "code", "a protocol in words", "a source", **facts)


def delta(tree, model: str, *published: Published) -> list[str]:
    """The 'ours − published' cells of `model` on ucf101 with its registry entry's numbers replaced
    by `published` (none given: the registry's own)."""
    params, results = tree
    infos = document.model_infos(params["models"])
    if published:
        infos[model] = dataclasses.replace(infos[model], published=published)
    table = tables.main_table(results, params, infos)
    return list(table[(table["model"] == model) & (table["dataset"] == "ucf101")][DELTA])


RESNET50_SPLIT1 = {"init": "imagenet", "backbone": "ResNet-50", "splits": "split1"}


def test_a_matching_run_shows_the_numeric_delta_on_the_published_basis(paper):
    # tsn ucf101 at 10x3: 80, 70, 72.5 -> split 1 80.00, mean 74.17
    assert delta(paper, "tsn", anchor(83.03, views="10x3", **RESNET50_SPLIT1)) == ["-3.03 (ours: split 1, 10x3)"]
    mean = anchor(70.0, init="imagenet", backbone="ResNet-50", splits="mean3", views="10x3")
    assert delta(paper, "tsn", mean) == ["+4.17 (ours: mean of n=3, 10x3)"]


def test_a_published_single_view_number_is_compared_with_our_1x1_evaluation(paper):
    # tsn ucf101 split 1 at 1x1: 75.00
    assert delta(paper, "tsn", anchor(70.0, views="1x1", **RESNET50_SPLIT1)) == ["+5.00 (ours: split 1, 1x1)"]


def test_a_run_started_from_other_weights_is_not_compared_and_the_init_is_named(paper):
    # i3d has no init: a Kinetics-400 number of the same network stays apart
    k400 = anchor(70.0, init="kinetics400", backbone="I3D ResNet-50", splits="split1", views="10x3")
    assert delta(paper, "i3d", k400) == ["not compared: init none vs kinetics400"]
    # tsn started from ImageNet weights (its pretrained option)
    assert delta(paper, "tsn", anchor(56.08, init="kinetics400", backbone="ResNet-50", splits="split1",
                                      views="10x3")) == ["not compared: init imagenet vs kinetics400"]


def test_the_recipe_init_recorded_in_provenance_is_the_runs_init(paper):
    params, results = paper
    inits = results.drop_duplicates("model").set_index("model")["pretrained"].to_dict()
    assert inits == {"tsn": "imagenet", "r3d": "kinetics400", "i3d": "none"}
    same = anchor(84.4, init="kinetics400", backbone="R3D-18 (torchvision)", splits="mean3", views="10x3")
    assert delta(paper, "r3d", same) == ["+0.60 (ours: mean of n=3, 10x3)"]  # 85, 83, 87 -> 85.00


def test_views_backbone_and_unstated_facts_are_each_named(paper):
    # the registry's own anchors: TSN at 25 frames x 3 crops; Hara et al.'s network and unknown views
    assert delta(paper, "tsn") == ["not compared: views 10x3 vs 25x3"]
    assert delta(paper, "r3d") == ["not compared: backbone R3D-18 (torchvision) vs 3D-ResNet-18 (shortcut A); "
                                   "views 10x3 vs unknown"]
    unknown = anchor(90.0, init=None, backbone="ResNet-50", splits=None, views=None)
    assert delta(paper, "tsn", unknown) == ["not compared: init imagenet vs unknown; splits 1, 2, 3 vs unknown; "
                                            "views 10x3 vs unknown"]


def test_a_mean_needs_all_three_splits(paper):
    # i3d ucf101 was evaluated on splits 1 and 2 only
    mean = anchor(60.0, init="none", backbone="I3D ResNet-50", splits="mean3", views="10x3")
    assert delta(paper, "i3d", mean) == ["not compared: splits 1, 2 vs mean3"]
    split1 = anchor(60.0, init="none", backbone="I3D ResNet-50", splits="split1", views="10x3")
    assert delta(paper, "i3d", split1) == ["+0.00 (ours: split 1, 10x3)"]


def test_tiny_scale_never_compares_even_where_everything_else_matches(tiny):
    same = anchor(83.03, views="10x3", **RESNET50_SPLIT1)
    assert delta(tiny, "tsn", same) == ["not compared: backbone tiny-scale ResNet-50 vs ResNet-50"]


def test_no_run_yet_leaves_the_difference_empty(tmp_path):
    params = build_runs_tree(tmp_path / "elsewhere", scale="paper")  # only for the params
    results = collect_in(tmp_path, params)
    assert delta((params, results), "tsn", anchor(83.03, views="10x3", **RESNET50_SPLIT1)) == [""]


def test_the_report_normalises_the_video_resnets_kinetics_option_name():
    ours = tables.OurSide(init="kinetics400", backbone="R3D-18 (torchvision)", paper="10x3",
                          top1={"10x3": {1: 85.0, 2: 83.0, 3: 87.0}})
    pub = anchor(84.4, init="kinetics400", backbone="R3D-18 (torchvision)", splits="mean3", views="10x3")
    assert tables.differences(pub, ours) == ("10x3", [])
    assert tables.INIT_ALIASES["kinetics"] == "kinetics400"


@pytest.mark.parametrize("facts, match", [
    ({"init": "sports1m", "backbone": "ResNet-50", "splits": "split1", "views": "10x3"}, "init"),
    ({"init": "imagenet", "backbone": "ResNet-50", "splits": "split 1", "views": "10x3"}, "splits"),
    ({"init": "imagenet", "backbone": "ResNet-50", "splits": "split1", "views": "10×3"}, "views"),
])
def test_published_facts_outside_the_vocabulary_are_rejected(facts, match):
    with pytest.raises(ValueError, match=match):
        anchor(80.0, **facts)


def test_every_registered_number_states_its_facts_and_every_model_its_backbone():
    from actionrepro.models.registry import model_info, model_names

    for name in model_names():
        info = model_info(name)
        assert info.backbone, name
        for pub in info.published:
            assert pub.backbone and pub.source, (name, pub)
            if pub.tag == "recalled":  # an unconfirmed number says so where it is cited
                assert "recalled" in pub.source, (name, pub)
