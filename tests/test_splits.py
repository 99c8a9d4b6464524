"""Official split parsing: UCF101 and HMDB51 formats, on hand-written fixtures and on synthetic data."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import rarfile
import yaml

from actionrepro import cli
from actionrepro.data import manifests, synthetic
from actionrepro.steps import splits as splits_step
from actionrepro.errors import DataError

ROOT = Path(__file__).parents[1]

# ---------------------------------------------------------------------------------------------
# Hand-written fixtures, byte for byte in the published formats

CLASSIND = b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n"
G01 = [b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", b"HandstandPushups/v_HandStandPushups_g01_c01.avi"]
G08 = [b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", b"HandstandPushups/v_HandStandPushups_g08_c01.avi"]


def ucf_trainlist(entries):
    return b"".join(e + b" " + str(1 + ("Handstand" in e.decode())).encode() + b"\r\n" for e in entries)


def ucf_testlist(entries):
    return b"".join(e + b"\r\n" for e in entries)


UCF_LISTS = {
    "classInd.txt": CLASSIND,
    "trainlist01.txt": ucf_trainlist(G08), "testlist01.txt": ucf_testlist(G01),
    "trainlist02.txt": ucf_trainlist(G01), "testlist02.txt": ucf_testlist(G08),
    "trainlist03.txt": ucf_trainlist(G08), "testlist03.txt": ucf_testlist(G01),
}
TINY_UCF_COUNTS = {"classes": 2, "splits": {k: (2, 2) for k in (1, 2, 3)}}


def make_ucf(root: Path, lists=UCF_LISTS, files=None) -> Path:
    """An extracted UCF101 tree: ucfTrainTestlist/ + UCF-101/<Class>/<file> (empty: existence only)."""
    (root / "ucfTrainTestlist").mkdir(parents=True)
    for name, data in lists.items():
        (root / "ucfTrainTestlist" / name).write_bytes(data)
    for rel in files if files is not None else [e.decode() for e in G01 + G08]:
        (root / "UCF-101" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "UCF-101" / rel).write_bytes(b"")
    return root


AWKWARD = {
    "clap": ["#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", "Tom_&_Jerry_clap_h_cm_np2_le_med_0.avi",
             "NA_clap_f_nm_np1_ba_bad_0.avi"],
    "wave": ["Glory_&_Honor!_[HD]_(part 2)_wave_u_cm_np1_fr_med_0.avi", "Bruce_Lee's_Fist_wave_f_nm_np1_le_bad_1.avi",
             "plain_wave_u_nm_np1_fr_goo_2.avi"],
    "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "Blonde_Hair (2)_brush_hair_h_nm_np1_le_goo_0.avi",
                   "#122_Cleaning_brush_hair_f_cm_np1_fr_med_1.avi"],
}
IDS = {1: ["1", "2", "0"], 2: ["2", "1", "0"], 3: ["0", "1", "2"]}   # per split, ids of the 3 videos
TINY_HMDB_COUNTS = {"classes": 3, "splits": {k: (3, 3) for k in (1, 2, 3)}}


def make_hmdb(root: Path, awkward=AWKWARD, crlf_class="wave") -> Path:
    """An extracted HMDB51 tree; the split folder and a stray folder sit among the class folders."""
    split_dir = root / "testTrainMulti_7030_splits"
    split_dir.mkdir(parents=True)
    for cls, names in awkward.items():
        (root / cls).mkdir()
        for name in names:
            (root / cls / name).write_bytes(b"")
        end = "\r\n" if cls == crlf_class else "\n"
        for k, ids in IDS.items():
            text = "".join(f"{n} {i} {end}" for n, i in zip(names, ids))      # trailing space, as released
            (split_dir / f"{cls}_test_split{k}.txt").write_text(text, newline="")
    (root / "aaa_stray_folder").mkdir()
    (root / "aaa_stray_folder" / "x.avi").write_bytes(b"")
    (split_dir / "README").write_text("not a split file")
    return root


@pytest.fixture
def tiny_official(monkeypatch):
    """Let the hand-written fixtures pass as 'ucf101'/'hmdb51' by shrinking the official counts."""
    monkeypatch.setitem(manifests.OFFICIAL, "ucf101", TINY_UCF_COUNTS)
    monkeypatch.setitem(manifests.OFFICIAL, "hmdb51", TINY_HMDB_COUNTS)


# ---------------------------------------------------------------------------------------------
# UCF101 format


def test_ucf101_crlf_lists_become_manifests_with_0_based_labels(tmp_path, tiny_official):
    src = make_ucf(tmp_path / "src")
    out = splits_step.write_manifests("ucf101", src, tmp_path / "out")
    assert out == tmp_path / "out"
    classes = manifests.read_manifest(out / "classes.csv")
    assert classes.to_dict("list") == {"label": [0, 1], "class_name": ["ApplyEyeMakeup", "HandstandPushups"]}
    s1 = manifests.read_manifest(out / "split1.csv")
    assert list(s1.columns) == ["video_id", "path", "label", "class_name", "subset"]
    assert s1.values.tolist() == [
        ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0, "ApplyEyeMakeup", "train"],
        ["HandstandPushups/v_HandStandPushups_g08_c01", "UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi", 1, "HandstandPushups", "train"],
        ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0, "ApplyEyeMakeup", "test"],
        ["HandstandPushups/v_HandStandPushups_g01_c01", "UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi", 1, "HandstandPushups", "test"],
    ]
    s2 = manifests.read_manifest(out / "split2.csv")
    assert set(s2[s2.subset == "test"].video_id) == set(s1[s1.subset == "train"].video_id)
    for k in (1, 2, 3):
        text = (out / f"split{k}.csv").read_bytes()
        assert b"\r" not in text
        frame = manifests.read_manifest(out / f"split{k}.csv")
        assert not set(frame[frame.subset == "train"].video_id) & set(frame[frame.subset == "test"].video_id)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["1"] == {"train": 2, "test": 2, "unused": 0, "classes": 2,
                                      "train_classes": 2, "test_classes": 2}
    assert not (out / "reversal_pairs.csv").exists()


def test_thumos_renamed_files_and_folders_resolve_case_insensitively(tmp_path, tiny_official):
    # the THUMOS mirror's file names (v_HandstandPushups_*) in a renamed folder (HandStandPushups)
    files = [e.decode() for e in G01 + G08]
    files = [f.replace("HandstandPushups/v_HandStandPushups", "HandStandPushups/v_HandstandPushups") for f in files]
    out = splits_step.write_manifests("ucf101", make_ucf(tmp_path / "src", files=files), tmp_path / "out")
    s1 = manifests.read_manifest(out / "split1.csv").set_index("video_id")
    row = s1.loc["HandstandPushups/v_HandStandPushups_g08_c01"]          # keyed by the list entry
    assert row.path == "UCF-101/HandStandPushups/v_HandstandPushups_g08_c01.avi"   # where the file is
    assert (tmp_path / "src" / row.path).is_file() and row.label == 1


def test_names_differing_only_in_case_are_ambiguous(tmp_path, tiny_official):
    files = [e.decode() for e in G01 + G08 if b"Handstand" not in e] + [
        "HandstandPushups/v_HandstandPushups_g01_c01.avi", "HandstandPushups/v_HANDSTANDPUSHUPS_g01_c01.avi",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi"]
    with pytest.raises(DataError, match=r"v_HandStandPushups_g01_c01.avi.*differ only in case"):
        splits_step.write_manifests("ucf101", make_ucf(tmp_path / "src", files=files), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_trainlist_label_disagreeing_with_classind_is_an_error(tmp_path, tiny_official):
    lists = dict(UCF_LISTS, **{"trainlist02.txt": UCF_LISTS["trainlist02.txt"].replace(b".avi 1", b".avi 2")})
    with pytest.raises(DataError, match=r"trainlist02.txt:1: .*has label 2 but classInd.txt gives ApplyEyeMakeup index 1"):
        splits_step.write_manifests("ucf101", make_ucf(tmp_path / "src", lists=lists), tmp_path / "out")


def test_missing_videos_are_named_with_their_split_file_and_counted(tmp_path, tiny_official):
    src = make_ucf(tmp_path / "src")
    (src / "UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi").unlink()
    (src / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi").unlink()
    with pytest.raises(DataError) as err:
        splits_step.write_manifests("ucf101", src, tmp_path / "out")
    msg = str(err.value)
    assert "2 of 4 videos" in msg
    assert "HandstandPushups/v_HandStandPushups_g08_c01.avi (named by trainlist01.txt:2 and 2 more)" in msg
    assert "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi (named by testlist01.txt:1" in msg
    assert "actionrepro extract ucf101" in msg
    assert not (tmp_path / "out").exists()


def test_video_in_train_and_test_of_one_split_is_an_error(tmp_path, tiny_official):
    lists = dict(UCF_LISTS, **{"testlist03.txt": ucf_testlist(G01[:1] + G08[:1])})
    with pytest.raises(DataError, match=r"split 3: video 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01' is listed in both train and test"):
        splits_step.write_manifests("ucf101", make_ucf(tmp_path / "src", lists=lists), tmp_path / "out")


def test_official_counts_are_enforced_for_the_real_datasets(tmp_path):
    with pytest.raises(DataError) as err:
        splits_step.write_manifests("ucf101", make_ucf(tmp_path / "ucf"), tmp_path / "out")
    msg = str(err.value)
    assert "official ucf101 splits" in msg and "2 classes (expected 101)" in msg
    assert "split 1: 2 train videos (expected 9,537)" in msg and "split 3: 2 test videos (expected 3,696)" in msg
    with pytest.raises(DataError, match=r"3 classes \(expected 51\).*split 2: 3 train videos \(expected 3,570\)"):
        splits_step.write_manifests("hmdb51", make_hmdb(tmp_path / "hmdb"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_split_folder_says_to_run_extract(tmp_path):
    (tmp_path / "src" / "UCF-101").mkdir(parents=True)
    with pytest.raises(DataError, match=r"ucfTrainTestlist not found .*run `actionrepro extract ucf101` first"):
        splits_step.write_manifests("ucf101", tmp_path / "src", tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# HMDB51 format


def test_hmdb51_classes_are_alphabetical_from_split_file_names_and_unused_left_out(tmp_path, tiny_official):
    out = splits_step.write_manifests("hmdb51", make_hmdb(tmp_path / "src"), tmp_path / "out")
    classes = manifests.read_manifest(out / "classes.csv")
    assert classes.class_name.tolist() == ["brush_hair", "clap", "wave"]   # not aaa_stray_folder / the split folder
    summary = json.loads((out / "summary.json").read_text())
    for k in ("1", "2", "3"):
        assert summary["splits"][k]["unused"] == 3 and summary["splits"][k]["train"] == 3
        frame = manifests.read_manifest(out / f"split{k}.csv")
        assert len(frame) == 6 and set(frame.subset) == {"train", "test"}
    s1 = manifests.read_manifest(out / "split1.csv")
    assert s1[s1.subset == "train"].video_id.tolist() == [
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", "clap/#20_Rhythm_clap_u_nm_np1_fr_goo_0",
        "wave/Glory_&_Honor!_[HD]_(part 2)_wave_u_cm_np1_fr_med_0"]
    assert "wave/plain_wave_u_nm_np1_fr_goo_2" not in set(s1.video_id)        # id 0: unused in split 1
    assert s1.set_index("video_id").loc["clap/Tom_&_Jerry_clap_h_cm_np2_le_med_0"].tolist() == [
        "clap/Tom_&_Jerry_clap_h_cm_np2_le_med_0.avi", 1, "clap", "test"]


def test_awkward_names_round_trip_through_the_csvs(tmp_path, tiny_official):
    src = make_hmdb(tmp_path / "src")
    out = splits_step.write_manifests("hmdb51", src, tmp_path / "out")
    listed = {f"{c}/{n}" for c, names in AWKWARD.items() for n in names}
    seen = set()
    for k in (1, 2, 3):
        frame = manifests.read_manifest(out / f"split{k}.csv")
        assert all((src / p).is_file() for p in frame.path)
        assert (frame.video_id + ".avi").tolist() == frame.path.tolist()
        plain = pd.read_csv(out / f"split{k}.csv", dtype=str, keep_default_na=False)
        assert plain.video_id.tolist() == frame.video_id.tolist()              # no row eaten, no NaN
        seen |= set(frame.path)
    assert seen == listed
    assert any(p.split("/")[1].startswith("#") for p in seen) and any(p.startswith("clap/NA_") for p in seen)


def test_hmdb51_class_without_all_three_split_files_is_an_error(tmp_path, tiny_official):
    src = make_hmdb(tmp_path / "src")
    (src / "testTrainMulti_7030_splits" / "clap_test_split2.txt").unlink()
    with pytest.raises(DataError, match=r"classes without all three split files: clap \(has \[1, 3\]\)"):
        splits_step.write_manifests("hmdb51", src, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Synthetic datasets, generated and extracted (the demo's path)

SYNTH = {
    "ucf101": dict(classes=3, groups=21, clips_per_group=1, width=32, height=24, fps=10, frames=8, corrupt_fraction=0.1),
    "hmdb51": dict(classes=3, train_per_class=3, test_per_class=2, unused_per_class=1, width=32, height=24, fps=10,
                   frames=8, corrupt_fraction=0.2),
}


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or rar (and the rars inside a rar) into dest, as the extract step lays it out."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
        return
    with rarfile.RarFile(archive) as rf:
        for info in rf.infolist():
            if info.is_dir():
                continue
            data = rf.read(info)
            if info.filename.endswith(".rar"):
                inner = dest / f".{info.filename}"
                inner.write_bytes(data)
                extract(inner, dest)
                inner.unlink()
            else:
                target = dest / info.filename.replace("\\", "/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)


@pytest.fixture(scope="module")
def synth_params() -> dict:
    params = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    params["synth"] = {k: dict(v) for k, v in SYNTH.items()}
    return params


@pytest.fixture(scope="module")
def synth_sources(tmp_path_factory, synth_params) -> dict[str, Path]:
    roots = {}
    for kind in ("ucf101", "hmdb51"):
        raw = tmp_path_factory.mktemp(f"raw_{kind}")
        root = tmp_path_factory.mktemp(f"videos_{kind}")
        for archive in synthetic.write_archives(kind, raw, synth_params["synth"][kind], seed=1):
            extract(archive, root)
        roots[kind] = root
        roots[f"{kind}_raw"] = raw
    return roots


def test_synthetic_ucf101_parses_with_param_counts_pairs_and_quirk(tmp_path, synth_sources, synth_params):
    out = splits_step.write_manifests("synth_ucf101", synth_sources["ucf101"], tmp_path / "m", synth_params)
    names = synthetic.class_names("ucf101", 3)
    assert manifests.read_manifest(out / "classes.csv").class_name.tolist() == names
    for k in (1, 2, 3):
        frame = manifests.read_manifest(out / f"split{k}.csv")
        assert (frame.subset == "train").sum() == 3 * 14 and (frame.subset == "test").sum() == 3 * 7
        test_groups = {int(v.rsplit("_g", 1)[1][:2]) for v in frame[frame.subset == "test"].video_id}
        assert test_groups == set(range(7 * k - 6, 7 * k + 1))
    frame = manifests.read_manifest(out / "split1.csv")
    quirk = frame[frame.class_name == "HandstandPushups"]
    assert quirk.path.str.startswith("UCF-101/HandstandPushups/v_HandStandPushups_g").all()
    corrupt = {c["video_id"] for c in synthetic.corrupt_videos(synth_sources["ucf101_raw"])}
    assert corrupt and corrupt <= set(frame.video_id)                  # listed: decode quarantines them
    pairs = manifests.read_manifest(out / "reversal_pairs.csv")
    assert pairs.values.tolist() == [["ApplyEyeMakeup", "ApplyLipstick", 0, 1]]


def test_synthetic_hmdb51_through_the_cli_with_default_paths(tmp_path, synth_sources, synth_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    videos = Path("data/videos/synth_hmdb51")
    videos.parent.mkdir(parents=True)
    videos.symlink_to(synth_sources["hmdb51"], target_is_directory=True)
    Path("p.yaml").write_text(yaml.safe_dump(synth_params))
    assert cli.main(["splits", "synth_hmdb51", "--params", "p.yaml"]) == 0
    out = Path("data/manifests/synth_hmdb51")
    summary = json.loads((out / "summary.json").read_text())
    assert {k: (v["train"], v["test"], v["unused"]) for k, v in summary["splits"].items()} == {
        k: (9, 6, 3) for k in ("1", "2", "3")}
    s1, s2 = (manifests.read_manifest(out / f"split{k}.csv") for k in (1, 2))
    assert set(s1[s1.subset == "test"].video_id) != set(s2[s2.subset == "test"].video_id)
    for ch in "#!&'[( ":
        assert s1.video_id.str.contains(ch, regex=False).any(), ch
    assert manifests.read_manifest(out / "reversal_pairs.csv").values.tolist() == [["brush_hair", "cartwheel", 0, 1]]


def test_synthetic_data_from_other_params_is_refused(tmp_path, synth_sources, synth_params):
    params = {**synth_params, "synth": {**synth_params["synth"], "hmdb51": dict(SYNTH["hmdb51"], train_per_class=4)}}
    with pytest.raises(DataError, match=r"params synth.hmdb51 .*split 1: 9 train videos \(expected 12\).*regenerate"):
        splits_step.write_manifests("synth_hmdb51", synth_sources["hmdb51"], tmp_path / "m", params)
