"""Custom list-file datasets (params custom_datasets, mmaction2 video lists): download records the
lists and the videos root, extract links the root, splits writes the usual manifests with the usual
checks (missing videos, train ∩ test, labels in range, unreadable lists)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import PIPELINE_PARAMS

from actionrepro import config, dag, paths
from actionrepro.data import download, manifests, sources
from actionrepro.errors import ConfigError, DataError
from actionrepro.steps.extract import extract_dataset
from actionrepro.steps.splits import write_manifests

VIDEOS = {"a/one.avi": 0, "a/two.avi": 0, "b/sub/three.avi": 1, "b/four five.avi": 1, "c/six.avi": 2, "c/seven.avi": 2}


def make(tmp: Path, *, train=None, test=None, classes: str | None = "0 walk\n1 run\n2 jump\n", splits=(1,)):
    root = tmp / "my videos"
    for rel in VIDEOS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not really a video")
    train = train if train is not None else "a/one.avi 0\nb/sub/three.avi 1\r\nc/six.avi 2\nb/four five.avi 1\n"
    test = test if test is not None else "a/two.avi 0\nc/seven.avi 2\n"
    declared = {}
    for k in splits:
        (tmp / f"train{k}.txt").write_text(train)
        (tmp / f"test{k}.txt").write_text(test)
        declared[k] = {"train": str(tmp / f"train{k}.txt"), "test": str(tmp / f"test{k}.txt")}
    spec = {"videos": str(root), "splits": declared}
    if classes is not None:
        (tmp / "classInd.txt").write_text(classes)
        spec["classes"] = str(tmp / "classInd.txt")
    params = yaml.safe_load(PIPELINE_PARAMS.read_text())
    params.update(custom_datasets={"mydata": spec}, datasets=["mydata"], splits=list(splits))
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return config.load(tmp / "params.yaml")


def build(params) -> Path:
    download.download_dataset("mydata", params)
    extract_dataset("mydata", params=params)
    return write_manifests("mydata", params=params)


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_list_files_become_the_usual_manifests(here):
    params = make(here, splits=(1, 4))
    out = build(params)
    assert manifests.read_manifest(out / "classes.csv")["class_name"].tolist() == ["walk", "run", "jump"]
    for k in (1, 4):
        frame = manifests.read_manifest(out / f"split{k}.csv")
        assert frame.columns.tolist() == manifests.COLUMNS
        row = frame.set_index("video_id").loc["b/four five"]
        assert (row.path, row.label, row.class_name, row.subset) == ("videos/b/four five.avi", 1, "run", "train")
        assert (paths.videos_dir("mydata") / row.path).is_file()
        assert frame.subset.value_counts().to_dict() == {"train": 4, "test": 2}
    assert not (out / "split2.csv").exists()
    assert (paths.videos_dir("mydata") / "videos").is_symlink()
    recorded = (paths.raw_dir("mydata") / "download.json").read_text()
    assert "sha256" in recorded and "listing_sha256" in recorded
    assert sources.split_numbers("mydata", params) == (1, 4)


def test_without_a_classes_file_the_labels_are_the_names(here):
    out = build(make(here, classes=None))
    assert manifests.read_manifest(out / "classes.csv")["class_name"].tolist() == ["0", "1", "2"]


def test_missing_videos_are_listed_with_their_count(here):
    train = "".join(f"gone/v{i}.avi 0\n" for i in range(12)) + "a/one.avi 0\nb/sub/three.avi 1\n"
    with pytest.raises(DataError, match=r"12 of 16 videos .* missing.*gone/v0.avi.*gone/v9.avi.* \.\.\.") as err:
        build(make(here, train=train))
    assert "gone/v11.avi" not in str(err.value)


def test_a_label_out_of_range_names_the_line(here):
    with pytest.raises(DataError, match=r"train1.txt.*:2: label 3 of 'b/sub/three.avi' is out of range"):
        build(make(here, train="a/one.avi 0\nb/sub/three.avi 3\n"))


def test_train_and_test_sharing_videos_are_named(here):
    with pytest.raises(DataError, match=r"split 1: 1 video\(s\) are in both train and test: c/seven"):
        build(make(here, train="a/one.avi 0\nc/seven.avi 2\nb/sub/three.avi 1\n"))


def test_an_unreadable_list_file_is_named(here):
    params = make(here)
    (here / "test1.txt").unlink()
    with pytest.raises(DataError, match=r"cannot read the test list of split 1 .*test1.txt"):
        download.download_dataset("mydata", params)


def test_custom_names_are_checked(here):
    params = yaml.safe_load((make(here) and here / "params.yaml").read_text())
    bad = dict(params, custom_datasets={"ucf101": params["custom_datasets"]["mydata"]}, datasets=["ucf101"])
    with pytest.raises(ConfigError, match="name of a built-in dataset"):
        config.validate(bad)
    bad = dict(params, custom_datasets={"My-Data": params["custom_datasets"]["mydata"]})
    with pytest.raises(ConfigError, match="My-Data"):
        config.validate(bad)
    with pytest.raises(ConfigError, match=r"splits.*\[2\].*'mydata' has splits \[1\]"):
        config.validate(dict(params, splits=[1, 2]))
    with pytest.raises(ConfigError, match=r"split\(s\) \[4\].*'synth_ucf101'"):
        config.validate(dict(params, datasets=["synth_ucf101", "mydata"], splits=[4],
                             custom_datasets={"mydata": {**params["custom_datasets"]["mydata"],
                                                         "splits": {4: params["custom_datasets"]["mydata"]["splits"][1]}}}))


def test_the_dag_and_the_cli_know_custom_names(here):
    params = make(here)
    assert dag.dataset_names(params)[-1] == "mydata"
    assert "mydata" not in dag.dataset_names()
    from actionrepro.cli import build_parser

    args = build_parser(["train", "mydata", "7", "tsn", "--params", str(here / "params.yaml")]).parse_args(
        ["train", "mydata", "7", "tsn", "--params", str(here / "params.yaml")])
    assert (args.dataset, args.split) == ("mydata", 7)


def test_the_builtin_constraint_is_the_registry():
    assert dag.BUILTIN_DATASETS.split("|") == list(sources.REGISTRY)
    assert dag.custom_constraint({}) == "(?!)"
