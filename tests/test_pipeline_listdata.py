"""A list-file dataset through the Snakemake front door: the synthetic UCF101 videos moved into a
layout of the researcher's own (nested for one class, flat for the other), mmaction2 train/test
lists with 0-based labels for split 5, one model (tsn, tiny, 1 epoch, no pruning) to a report row."""

from __future__ import annotations

import csv
import shutil

import pytest
import yaml
from conftest import PIPELINE_PARAMS, copy_repository, run_tool

from actionrepro import config
from actionrepro.data import download
from actionrepro.steps.extract import extract_dataset

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")]


def own_layout(scratch, params) -> tuple[dict, int]:
    """The synthetic UCF101 videos copied into scratch/mine (class 0 nested, class 1 flat), with
    train/test lists (groups 1-7 test, as UCF101's split 1); return the custom_datasets entry."""
    download.download_dataset("synth_ucf101", params)
    official = extract_dataset("synth_ucf101", params=params) / "UCF-101"
    mine = scratch / "mine"
    classes = sorted(p.name for p in official.iterdir() if p.is_dir())
    lines = {"train": [], "test": []}
    for label, name in enumerate(classes):
        for video in sorted((official / name).glob("*.avi")):
            rel = f"nested/{name.lower()}/{video.name}" if label == 0 else f"flat_{video.name}"
            (mine / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, mine / rel)
            group = int(video.stem.split("_g")[1][:2])
            lines["test" if group <= 7 else "train"].append(f"{rel} {label}\n")
    for subset, rows in lines.items():
        (scratch / f"{subset}5.txt").write_text("".join(rows))
    (scratch / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(classes)))
    return {"videos": str(mine), "classes": str(scratch / "classInd.txt"),
            "splits": {5: {"train": str(scratch / "train5.txt"), "test": str(scratch / "test5.txt")}}}, \
        len(lines["test"])


def test_a_list_file_dataset_runs_through_snakemake_to_a_report_row(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    base = yaml.safe_load(PIPELINE_PARAMS.read_text())
    custom, tests = own_layout(scratch, config.validate(base))

    params = dict(base, datasets=["mydata"], splits=[5], models=["tsn"], custom_datasets={"mydata": custom})
    params["prune"] = dict(base["prune"], ratios=[])
    params["augment"] = dict(base["augment"], hflip={"mydata": True})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    root = copy_repository(tmp_path / "repo", tmp_path / "params.yaml")

    out = run_tool(root, "snakemake", "--cores", "2", "--configfile", "params.yaml")
    assert "steps (100%) done" in out
    manifest = list(csv.DictReader((root / "data/manifests/mydata/split5.csv").open()))
    assert sum(row["subset"] == "test" for row in manifest) == tests
    assert any(row["path"].startswith("videos/nested/") for row in manifest)
    rows = list(csv.DictReader((root / "reports/results.csv").open()))
    assert [r for r in rows if r.get("dataset") == "mydata" and str(r.get("split")) == "5"], rows
