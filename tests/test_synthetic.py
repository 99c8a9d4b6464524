"""The synthetic datasets: official archive formats, real decodable video, reversal pairs, corruption."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import decord
import numpy as np
import pytest
import rarfile
import yaml

from actionrepro import cli
from actionrepro.data import synthetic as S
from actionrepro.errors import ConfigError

UCF = dict(classes=3, groups=21, clips_per_group=1, width=32, height=24, fps=10, frames=8, corrupt_fraction=0.1)
HMDB = dict(classes=3, train_per_class=3, test_per_class=2, unused_per_class=1, width=32, height=24, fps=15,
            frames=8, corrupt_fraction=0.25)


def read_archive(archive: Path) -> dict[str, bytes]:
    """name -> bytes of every file member (rar via rarfile, zip via zipfile), nested rars opened."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    out = {}
    with rarfile.RarFile(archive) as rf:
        for info in rf.infolist():
            if not info.is_dir():
                out[info.filename.replace("\\", "/")] = rf.read(info)
    return out


def decode(data: bytes, tmp_path: Path, name: str = "v.avi") -> tuple[np.ndarray, float]:
    path = tmp_path / name
    path.write_bytes(data)
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy(), vr.get_avg_fps()


@pytest.fixture(scope="module")
def ucf_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_ucf")
    S.write_archives("ucf101", out, UCF, seed=3)
    return out


@pytest.fixture(scope="module")
def hmdb_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_hmdb")
    S.write_archives("hmdb51", out, HMDB, seed=3)
    return out


def test_ucf101_archives_have_official_names_layout_and_crlf_lists(ucf_dir):
    assert sorted(p.name for p in ucf_dir.iterdir()) == [
        "UCF101.rar", "UCF101TrainTestSplits-RecognitionTask.zip", "synth_meta.json"]
    videos = read_archive(ucf_dir / "UCF101.rar")
    names = S.class_names("ucf101", 3)
    assert len(videos) == 3 * 21
    assert all(re.fullmatch(r"UCF-101/(\w+)/v_\w+_g\d\d_c01\.avi", n) for n in videos)
    with zipfile.ZipFile(ucf_dir / "UCF101TrainTestSplits-RecognitionTask.zip") as zf:
        assert "ucfTrainTestlist/" in zf.namelist()
    lists = read_archive(ucf_dir / "UCF101TrainTestSplits-RecognitionTask.zip")
    assert sorted(lists) == sorted(f"ucfTrainTestlist/{n}" for n in
                                   ["classInd.txt"] + [f"{s}list0{k}.txt" for s in ("train", "test") for k in (1, 2, 3)])
    assert lists["ucfTrainTestlist/classInd.txt"] == "".join(f"{i} {n}\r\n" for i, n in enumerate(names, 1)).encode()
    for k in (1, 2, 3):
        train = lists[f"ucfTrainTestlist/trainlist0{k}.txt"].decode()
        test = lists[f"ucfTrainTestlist/testlist0{k}.txt"].decode()
        assert train.endswith("\r\n") and test.endswith("\r\n") and "\n" not in train.replace("\r\n", "")
        test_groups = {int(g) for g in re.findall(r"_g(\d\d)_", test)}
        train_groups = {int(g) for g in re.findall(r"_g(\d\d)_", train)}
        assert test_groups == set(range(7 * k - 6, 7 * k + 1)) and not train_groups & test_groups
        assert train_groups | test_groups == set(range(1, 22))
        for line in train.split("\r\n")[:-1]:
            entry, label = line.split(" ")
            assert int(label) == names.index(entry.split("/")[0]) + 1        # 1-based, by class
            assert f"UCF-101/{entry}" in videos
        assert all(" " not in line and f"UCF-101/{line}" in videos for line in test.split("\r\n")[:-1])


def test_handstand_pushups_folder_holds_handstand_capital_s_files(ucf_dir):
    assert "HandstandPushups" in S.class_names("ucf101", 2)
    videos = read_archive(ucf_dir / "UCF101.rar")
    quirk = [n for n in videos if n.startswith("UCF-101/HandstandPushups/")]
    assert quirk and all(n.split("/")[-1].startswith("v_HandStandPushups_g") for n in quirk)
    train = read_archive(ucf_dir / "UCF101TrainTestSplits-RecognitionTask.zip")["ucfTrainTestlist/trainlist01.txt"]
    assert b"HandstandPushups/v_HandStandPushups_g08_c01.avi" in train


def test_hmdb51_is_a_rar_of_class_rars_with_012_split_files(hmdb_dir, tmp_path):
    names = S.class_names("hmdb51", 3)
    assert names == ["brush_hair", "cartwheel", "catch"]
    with rarfile.RarFile(hmdb_dir / "hmdb51_org.rar") as outer:
        assert [i.filename for i in outer.infolist()] == [f"{c}.rar" for c in names]
        inner = {c: rarfile.RarFile(io.BytesIO(outer.read(f"{c}.rar"))) for c in names}
    splits = read_archive(hmdb_dir / "test_train_splits.rar")
    assert sorted(splits) == sorted(f"testTrainMulti_7030_splits/{c}_test_split{k}.txt"
                                    for c in names for k in (1, 2, 3))
    all_names = []
    for c in names:
        videos = [n for n in inner[c].namelist() if n.endswith(".avi")]
        assert all(n.startswith(f"{c}/") for n in videos) and len(videos) == 6
        stems = sorted(n.split("/", 1)[1] for n in videos)
        all_names += stems
        assignments = []
        for k in (1, 2, 3):
            text = splits[f"testTrainMulti_7030_splits/{c}_test_split{k}.txt"].decode()
            lines = text.split("\n")[:-1]
            assert all(line.endswith(" ") for line in lines)                 # trailing space, as released
            parsed = dict(line[:-1].rsplit(" ", 1) for line in lines)
            assert sorted(parsed) == stems
            ids = sorted(parsed.values())
            assert ids == ["0", "1", "1", "1", "2", "2"]                    # exact per-class counts
            assignments.append(parsed)
        assert assignments[0] != assignments[1] != assignments[2] != assignments[0]
    joined = "".join(all_names)
    for ch in "#![]()&' ":
        assert ch in joined, ch
    assert any(n.startswith("#") for n in all_names)


def test_videos_decode_with_decord_at_requested_size_fps_and_frames(ucf_dir, hmdb_dir, tmp_path):
    meta = S.read_meta(ucf_dir)
    bad = {c["path"] for c in meta["corrupted"]}
    good = [(n, d) for n, d in read_archive(ucf_dir / "UCF101.rar").items() if n not in bad][:4]
    for i, (name, data) in enumerate(good):
        frames, fps = decode(data, tmp_path, f"u{i}.avi")
        assert frames.shape == (UCF["frames"], UCF["height"], UCF["width"], 3)
        assert fps == pytest.approx(UCF["fps"])
        assert data[:4] == b"RIFF" and data[8:12] == b"AVI " and b"FMP4" in data[:2000]   # MPEG-4 Part 2 in AVI
        assert frames.std() > 5                                            # real content, not a flat frame
    with rarfile.RarFile(hmdb_dir / "hmdb51_org.rar") as outer:
        inner = rarfile.RarFile(io.BytesIO(outer.read("catch.rar")))
    bad = {c["path"] for c in S.corrupt_videos(hmdb_dir)}
    name = next(n for n in inner.namelist() if n.endswith(".avi") and n not in bad)
    frames, fps = decode(inner.read(name), tmp_path, "h.avi")
    assert frames.shape == (HMDB["frames"], HMDB["height"], HMDB["width"], 3) and fps == pytest.approx(15)


def test_reversed_class_clip_is_the_forward_clip_played_backwards(tmp_path):
    for motion in S.PAIR_MOTIONS:
        fwd = S.render_clip(motion, 2, 64, 32, 12, np.random.default_rng(7))
        rev = S.render_clip(motion, 2, 64, 32, 12, np.random.default_rng(7), reverse=True)
        assert np.array_equal(rev, fwd[::-1]), motion
        assert not np.array_equal(fwd, fwd[::-1])
    # and after MPEG-4 encoding (P-frames differ with the order), within codec tolerance:
    # the two decodes are closer to each other than either is to the raw frames or to the wrong order
    a, _ = decode(S.encode_avi(fwd, 25), tmp_path, "f.avi")
    b, _ = decode(S.encode_avi(rev, 25), tmp_path, "r.avi")
    a, b, raw = a.astype(int), b.astype(int), fwd.astype(int)
    codec_error = np.abs(a - raw).mean()
    assert codec_error < 6
    assert np.abs(a - b[::-1]).mean() < min(codec_error, np.abs(a - b).mean())


def test_pairs_share_appearance_and_differ_only_by_direction():
    specs = S.class_specs("ucf101", 11)
    pairs = S.reversal_pairs("ucf101", 11)
    assert len(pairs) == len(S.PAIR_MOTIONS)
    by_name = {s.name: s for s in specs}
    for a, b in pairs:
        sa, sb = by_name[a], by_name[b]
        assert (sa.motion, sa.appearance, sa.reverse, sb.reverse) == (sb.motion, sb.appearance, False, True)
    unpaired = [s for s in specs if s.pair is None]
    assert [s.motion for s in unpaired] == ["sway", "blink", "pulse"]
    looks = [S.appearance_of(s.appearance) for s in specs if not s.reverse]
    assert len(set(looks)) == len(looks)                                   # one look per pair / class
    assert len({S.appearance_of(i) for i in range(101)}) == 101
    assert S.reversal_pairs("hmdb51", 3) == [("brush_hair", "cartwheel")]


def _object_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels of the saturated object (the background is nearly grey)."""
    f = frame.astype(float)
    return (f.max(-1) - f.min(-1)) / np.maximum(f.max(-1), 1) > 0.4


@pytest.mark.parametrize("motion", S.PAIR_MOTIONS)
def test_pair_motion_runs_in_its_direction(motion):
    """rise moves up, grow grows, fade_in and reveal go from (almost) nothing to a full object."""
    clip = S.render_clip(motion, 0, 64, 48, 16, np.random.default_rng(11))
    first, last = _object_mask(clip[0]), _object_mask(clip[-1])
    rows = np.arange(48)[:, None]
    if motion == "rise":
        assert (rows * last).sum() / last.sum() < (rows * first).sum() / first.sum() - 8
    elif motion == "grow":
        assert last.sum() > 2.5 * first.sum() > 0
    else:
        assert first.sum() < 0.1 * last.sum() and last.sum() > 60


def test_same_seed_gives_same_bytes_and_another_seed_other_bytes(tmp_path):
    small = dict(HMDB, classes=2)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    pa, pb = S.write_archives("hmdb51", a, small, seed=5), S.write_archives("hmdb51", b, small, seed=5)
    S.write_archives("hmdb51", c, small, seed=6)
    assert [p.name for p in pa] == ["hmdb51_org.rar", "test_train_splits.rar"]
    for x, y in zip(pa, pb):
        assert x.read_bytes() == y.read_bytes()
    assert (a / "synth_meta.json").read_bytes() == (b / "synth_meta.json").read_bytes()
    assert (c / "hmdb51_org.rar").read_bytes() != (a / "hmdb51_org.rar").read_bytes()


def test_corrupt_fraction_writes_truncated_and_garbage_videos_still_listed(ucf_dir, tmp_path):
    corrupted = S.corrupt_videos(ucf_dir)
    assert len(corrupted) == round(0.1 * 63) == 6
    assert [c["corruption"] for c in corrupted] == ["truncated", "garbage"] * 3
    videos = read_archive(ucf_dir / "UCF101.rar")
    lists = b"".join(read_archive(ucf_dir / "UCF101TrainTestSplits-RecognitionTask.zip").values()).decode()
    by_id = {v.video_id: v for v in S.ucf_videos(S.class_specs("ucf101", 3), UCF)}
    for i, c in enumerate(corrupted):
        data = videos[c["path"]]
        assert c["path"] == f"UCF-101/{c['video_id']}.avi" and f"{c['video_id']}.avi" in lists
        v = by_id[c["video_id"]]
        intact = S.encode_avi(S.clip_frames(v.spec, "ucf101", 3, v.index, UCF), UCF["fps"])
        movi = intact.index(b"movi") + 4
        assert data[:movi] == intact[:movi]                                # headers intact
        path = tmp_path / f"c{i}.avi"
        path.write_bytes(data)
        if c["corruption"] == "truncated":
            assert data == intact[:movi + int(0.4 * (len(intact) - movi))]
            assert 0 < len(decord.VideoReader(str(path))) < UCF["frames"]   # only the first frames are left
        else:
            assert len(data) == len(intact) and data[movi:] != intact[movi:]
            with pytest.raises(decord.DECORDError):
                decord.VideoReader(str(path)).get_batch([0, 1]).asnumpy()


def test_meta_records_classes_pairs_params_and_archive_hashes(hmdb_dir):
    meta = S.read_meta(hmdb_dir)
    assert meta["seed"] == 3 and meta["params"] == HMDB and meta["dataset"] == "synth_hmdb51"
    assert [c["name"] for c in meta["classes"]] == S.class_names("hmdb51", 3)
    assert meta["reversal_pairs"] == [["brush_hair", "cartwheel"]]
    assert meta["videos"] == 18 and len(meta["corrupted"]) == 5
    assert set(meta["archives"]) == {"hmdb51_org.rar", "test_train_splits.rar"}


def test_class_names_are_real_names_in_official_order_and_bad_params_are_refused():
    assert len(S.UCF101_CLASSES) == 101 and len(S.HMDB51_CLASSES) == 51
    assert S.HMDB51_CLASSES == sorted(S.HMDB51_CLASSES)
    assert S.UCF101_CLASSES == sorted(S.UCF101_CLASSES, key=str.lower)
    assert S.class_names("ucf101", 101) == S.UCF101_CLASSES
    for n in (2, 8, 50):
        names = S.class_names("ucf101", n)
        assert len(names) == n and "HandstandPushups" in names
        assert names == sorted(names, key=S.UCF101_CLASSES.index)
    with pytest.raises(ConfigError, match="between 2 and 51"):
        S.class_names("hmdb51", 52)
    with pytest.raises(ConfigError, match="even"):
        S.write_archives("ucf101", Path("unused"), dict(UCF, width=33), seed=0)
    with pytest.raises(ConfigError, match="unknown synthetic"):
        S.class_names("kinetics", 5)


def test_cli_synth_writes_the_archives(tmp_path):
    params = yaml.safe_load(Path(__file__).parents[1].joinpath("config/demo.yaml").read_text())
    params["synth"]["hmdb51"] = dict(HMDB, classes=2, corrupt_fraction=0.0)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    rc = cli.main(["synth", "hmdb51", "--out", str(tmp_path / "raw"), "--params", str(tmp_path / "p.yaml")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "hmdb51_org.rar", "synth_meta.json", "test_train_splits.rar"]
