"""RAR writing and archive extraction: real zip/rar files, traversal attacks, the dataset layouts."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import rarfile

from actionrepro import paths
from actionrepro.data import archives, sources
from actionrepro.data.archives import extract_archive, extract_dataset
from actionrepro.data.rar import write_stored_rar
from actionrepro.errors import DataError

AWKWARD = [
    "#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi",
    "!!!_Boxing_(Training)_&_Co's_[best]_cartwheel_f_cm_np1_le_med_0.avi",
    "Faith Rewarded_ride_horse_f_cm_np1_ri_med_1.avi",
]

MEMBERS = [
    ("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", os.urandom(70_000)),
    ("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi", b""),
    *[(f"hmdb/{name}", name.encode() * 3) for name in AWKWARD],
    ("ünïcode/€ 😀.txt", b"non-ascii names use the LHD_UNICODE form"),
    ("empty dir/", b""),
    ("top.txt", b"top"),
]


def _files(members):
    return [(n, d) for n, d in members if not n.endswith("/")]


def _libarchive_or_skip():
    lib = archives._libarchive()
    if lib is None:
        pytest.skip("libarchive (libarchive-c + libarchive.so) does not load here")
    return lib


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- write_stored_rar ---------------------------------------------------------------------------


def test_stored_rar_reads_back_byte_identical_with_rarfile_and_no_external_tool(tmp_path, monkeypatch):
    def no_tool(*args, **kwargs):
        raise rarfile.RarCannotExec("no tool in this test")

    monkeypatch.setattr(rarfile, "tool_setup", no_tool)  # stored entries must not need one
    write_stored_rar(tmp_path / "a.rar", MEMBERS)
    with rarfile.RarFile(tmp_path / "a.rar", errors="strict") as rf:
        rf.testrar()
        for name, data in _files(MEMBERS):
            assert rf.read(name) == data
            info = rf.getinfo(name)
            assert info.compress_type == rarfile.RAR_M0 and info.date_time == (2010, 1, 1, 0, 0, 0)
        dirs = {i.filename for i in rf.infolist() if i.is_dir()}
    assert dirs == {"UCF-101/", "UCF-101/ApplyEyeMakeup/", "hmdb/", "ünïcode/", "empty dir/"}


def test_stored_rar_reads_back_byte_identical_with_libarchive(tmp_path):
    libarchive = _libarchive_or_skip()
    write_stored_rar(tmp_path / "a.rar", MEMBERS)
    seen = {}
    with libarchive.file_reader(str(tmp_path / "a.rar"), format_name="rar") as entries:
        for entry in entries:
            if entry.isfile:
                seen[entry.pathname] = b"".join(entry.get_blocks())
    assert seen == dict(_files(MEMBERS))


RAR_TOOLS = {  # independent RAR readers, each extracting a whole archive into a folder
    "unrar": lambda arc, out: ["unrar", "x", "-inul", arc, out + "/"],
    "unar": lambda arc, out: ["unar", "-q", "-D", "-o", out, arc],
    "bsdtar": lambda arc, out: ["bsdtar", "-x", "-f", arc, "-C", out],
}


@pytest.mark.parametrize("tool", sorted(RAR_TOOLS))
def test_stored_rar_extracts_identically_with_an_installed_rar_tool(tmp_path, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    write_stored_rar(tmp_path / "a.rar", MEMBERS)
    (tmp_path / "out").mkdir()
    run = subprocess.run(RAR_TOOLS[tool](str(tmp_path / "a.rar"), str(tmp_path / "out")),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert _tree(tmp_path / "out") == dict(_files(MEMBERS))


def test_stored_rar_same_members_give_same_bytes(tmp_path):
    write_stored_rar(tmp_path / "a.rar", MEMBERS)
    write_stored_rar(tmp_path / "b.rar", MEMBERS)
    data = (tmp_path / "a.rar").read_bytes()
    assert data == (tmp_path / "b.rar").read_bytes()
    assert data.startswith(b"Rar!\x1a\x07\x00") and data.endswith(bytes.fromhex("c43d7b00400700"))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write cleaned up


@pytest.mark.parametrize("members, problem", [
    ([("x/a.avi", b"1"), ("x/a.avi", b"2")], "duplicate"),
    ([("x/a", b"1"), ("x/a/b.avi", b"2")], "both a file and a folder"),
    ([("x/a/b.avi", b"2"), ("x/a", b"1")], "duplicate"),
])
def test_stored_rar_rejects_members_that_collide(tmp_path, members, problem):
    with pytest.raises(ValueError, match=problem):
        write_stored_rar(tmp_path / "a.rar", members)
    assert not (tmp_path / "a.rar").exists()


def test_stored_rar_detects_corrupted_data_through_its_crc(tmp_path):
    write_stored_rar(tmp_path / "a.rar", [("dir/v.avi", b"A" * 1000)])
    blob = bytearray((tmp_path / "a.rar").read_bytes())
    blob[blob.index(b"A" * 1000) + 500] ^= 0xFF
    (tmp_path / "a.rar").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt"):
        extract_archive(tmp_path / "a.rar", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# --- extract_archive ----------------------------------------------------------------------------


def _zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_extract_archive_unpacks_real_zip_and_rar_identically(tmp_path):
    write_stored_rar(tmp_path / "a.rar", MEMBERS)
    _zip(tmp_path / "a.zip", MEMBERS)
    from_rar = extract_archive(tmp_path / "a.rar", tmp_path / "rar", progress=False)
    from_zip = extract_archive(tmp_path / "a.zip", tmp_path / "zip", progress=False)
    expected = dict(_files(MEMBERS))
    assert _tree(tmp_path / "rar") == expected == _tree(tmp_path / "zip")
    assert sorted(p.relative_to(tmp_path / "rar").as_posix() for p in from_rar) == sorted(expected)
    assert len(from_zip) == len(expected)
    assert (tmp_path / "rar" / "empty dir").is_dir() and (tmp_path / "zip" / "empty dir").is_dir()


def test_extract_archive_libarchive_backend_gives_the_same_files(tmp_path):
    _libarchive_or_skip()
    write_stored_rar(tmp_path / "a.rar", MEMBERS)
    extract_archive(tmp_path / "a.rar", tmp_path / "out", rar_backend_name="libarchive", progress=False)
    assert _tree(tmp_path / "out") == dict(_files(MEMBERS))


def test_extract_archive_keeps_awkward_hmdb_names(tmp_path):
    members = [(f"ride_horse/{n}", b"v") for n in AWKWARD + ["a b#c!d[e]f(g)h&i'j.avi"]]
    write_stored_rar(tmp_path / "a.rar", members)
    extract_archive(tmp_path / "a.rar", tmp_path / "out", progress=False)
    assert sorted(os.listdir(tmp_path / "out" / "ride_horse")) == sorted(n.split("/")[1] for n, _ in members)


@pytest.mark.parametrize("maker, evil", [
    ("zip", "../evil.avi"),
    ("zip", "ok/../../evil.avi"),
    ("zip", "/ABSOLUTE/evil.avi"),
    ("zip", "C:/evil.avi"),
    ("zip", "..\\evil.avi"),
    ("rar", "..\\evil.avi"),
    ("rar", "/ABSOLUTE/evil.avi"),
])
def test_extract_archive_rejects_path_traversal_before_writing(tmp_path, maker, evil):
    evil = evil.replace("/ABSOLUTE", str(tmp_path / "abs"))
    archive = tmp_path / f"bad.{maker}"
    members = [("good/first.avi", b"written first in the archive"), (evil, b"pwned")]
    if maker == "zip":
        _zip(archive, members)
    else:
        write_stored_rar(archive, members)
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(DataError) as err:
        extract_archive(archive, dest, progress=False)
    assert str(archive) in str(err.value) and "evil.avi" in str(err.value)
    assert not (tmp_path / "sub").exists()  # not even the good member, nor an empty dest
    assert [p.name for p in tmp_path.rglob("evil.avi")] == []
    assert not (tmp_path / "abs").exists()


@pytest.mark.parametrize("kind, mode", [("symlink", stat.S_IFLNK | 0o777),
                                        ("device", stat.S_IFCHR | 0o600),
                                        ("fifo", stat.S_IFIFO | 0o600)])
def test_extract_archive_rejects_links_and_devices_in_zip(tmp_path, kind, mode):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.avi", b"x")
        info = zipfile.ZipInfo("link.avi")
        info.create_system = 3
        info.external_attr = mode << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="link.avi"):
        extract_archive(archive, tmp_path / "dest", progress=False)
    assert not (tmp_path / "dest").exists()


def test_extract_archive_never_writes_through_a_symlink_already_in_dest(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "cls").symlink_to(outside)
    write_stored_rar(tmp_path / "a.rar", [("cls/v.avi", b"x")])
    with pytest.raises(DataError, match="symbolic link"):
        extract_archive(tmp_path / "a.rar", dest, progress=False)
    assert list(outside.iterdir()) == []


def test_extract_archive_rejects_a_file_that_is_no_archive(tmp_path):
    (tmp_path / "UCF101.rar").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DataError, match="neither a ZIP nor a RAR.*download it again"):
        extract_archive(tmp_path / "UCF101.rar", tmp_path / "out", progress=False)


def test_extract_archive_rejects_a_truncated_rar(tmp_path):
    write_stored_rar(tmp_path / "a.rar", [("a/v1.avi", b"1" * 5000), ("a/v2.avi", b"2" * 5000)])
    blob = (tmp_path / "a.rar").read_bytes()
    (tmp_path / "a.rar").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="a.rar"):
        extract_archive(tmp_path / "a.rar", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _mark_compressed(path: Path) -> None:
    """Relabel the first file entry as RAR 'normal' compression (0x33) with a valid header CRC,
    which is how a real compressed archive looks to a reader before it needs a decompressor."""
    blob = bytearray(path.read_bytes())
    pos = 7 + 13  # marker block, main header
    while True:
        head_type, flags, size = struct.unpack_from("<BHH", blob, pos + 2)
        pack = struct.unpack_from("<I", blob, pos + 7)[0]
        if head_type == 0x74 and (flags & 0xE0) != 0xE0:
            break
        pos += size + (pack if flags & 0x8000 else 0)
    blob[pos + 25] = 0x33  # METHOD
    struct.pack_into("<H", blob, pos, zlib.crc32(bytes(blob[pos + 2: pos + size])) & 0xFFFF)
    path.write_bytes(bytes(blob))


def _no_rar_tool(*args, **kwargs):
    raise rarfile.RarCannotExec("Cannot find working tool")


def test_compressed_rar_without_any_backend_says_what_to_install(tmp_path, monkeypatch):
    write_stored_rar(tmp_path / "a.rar", [("cls/v.avi", b"x" * 100)])
    _mark_compressed(tmp_path / "a.rar")
    monkeypatch.setattr(rarfile, "tool_setup", _no_rar_tool)
    monkeypatch.setattr(archives, "_libarchive", lambda: None)
    with pytest.raises(DataError) as err:
        extract_archive(tmp_path / "a.rar", tmp_path / "out", progress=False)
    message = str(err.value)
    assert str(tmp_path / "a.rar") in message
    for hint in ("apt-get install unar", "brew install unar", "libarchive-tools", "pip install libarchive-c"):
        assert hint in message
    assert not (tmp_path / "out").exists()


def test_compressed_rar_prefers_libarchive_then_rarfile_tools(tmp_path, monkeypatch):
    write_stored_rar(tmp_path / "a.rar", [("cls/v.avi", b"x" * 100)])
    stored_members = archives.list_members(tmp_path / "a.rar")
    _mark_compressed(tmp_path / "a.rar")
    members = archives.list_members(tmp_path / "a.rar")
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    with rarfile.RarFile(tmp_path / "a.rar") as rf:
        assert archives.rar_backend(tmp_path / "a.rar", rf, stored_members) == "rarfile"
        monkeypatch.setattr(rarfile, "tool_setup", lambda *a, **k: object())
        monkeypatch.setattr(archives, "_libarchive", lambda: object())
        assert archives.rar_backend(tmp_path / "a.rar", rf, members) == "libarchive"
        monkeypatch.setattr(archives, "_libarchive", lambda: None)
        assert archives.rar_backend(tmp_path / "a.rar", rf, members) == "rarfile"
        monkeypatch.setenv(archives.BACKEND_ENV, "libarchive")
        assert archives.rar_backend(tmp_path / "a.rar", rf, stored_members) == "libarchive"
        monkeypatch.setenv(archives.BACKEND_ENV, "unrar")
        with pytest.raises(DataError, match="ACTIONREPRO_RAR_BACKEND='unrar'"):
            archives.rar_backend(tmp_path / "a.rar", rf, members)


def test_rarfile_backend_never_passes_member_names_to_a_tool(tmp_path, monkeypatch):
    """Tools read a name like `[best]` as a pattern; rarfile passes names only for members above
    its temp-archive size limit, which extraction lifts."""
    seen = []

    class Spy(rarfile.RarFile):
        def open(self, member, *args, **kwargs):
            seen.append(rarfile.HACK_SIZE_LIMIT)
            return super().open(member, *args, **kwargs)

    monkeypatch.setattr(rarfile, "RarFile", Spy)
    limit = rarfile.HACK_SIZE_LIMIT
    write_stored_rar(tmp_path / "a.rar", [("cls/a [b].avi", b"x" * 100)])
    extract_archive(tmp_path / "a.rar", tmp_path / "out", rar_backend_name="rarfile", progress=False)
    assert seen and min(seen) > 1 << 40
    assert rarfile.HACK_SIZE_LIMIT == limit


def test_compressed_rar_that_fails_to_decompress_is_reported_and_cleaned_up(tmp_path, monkeypatch):
    _libarchive_or_skip()
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    write_stored_rar(tmp_path / "a.rar", [("cls/v.avi", b"x" * 100), ("cls/w.avi", b"y" * 100)])
    _mark_compressed(tmp_path / "a.rar")  # claims compression, holds raw bytes: undecodable
    with pytest.raises(DataError, match=r"a\.rar could not be decompressed by libarchive"):
        extract_archive(tmp_path / "a.rar", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# --- extract_dataset ----------------------------------------------------------------------------

HMDB_VIDEOS = {
    "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi", AWKWARD[0]],
    "cartwheel": [AWKWARD[1], "(Cartwheel)_Veronika_cartwheel_f_cm_np1_le_med_0.avi"],
}


def _write_fake_hmdb(raw: Path) -> None:
    raw.mkdir(parents=True)
    inner = []
    for cls, names in HMDB_VIDEOS.items():
        write_stored_rar(raw / f"{cls}.rar", [(f"{cls}/{n}", n.encode()) for n in names])
        inner.append((f"{cls}.rar", (raw / f"{cls}.rar").read_bytes()))
        (raw / f"{cls}.rar").unlink()
    write_stored_rar(raw / "hmdb51_org.rar", inner)
    splits = [(f"testTrainMulti_7030_splits/{cls}_test_split{k}.txt",
               "".join(f"{n} {1 + (i % 2)} \n" for i, n in enumerate(names)).encode())
              for cls, names in HMDB_VIDEOS.items() for k in (1, 2, 3)]
    write_stored_rar(raw / "test_train_splits.rar", splits)


def test_extract_dataset_unpacks_hmdb_rar_of_rars_into_the_official_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_fake_hmdb(paths.raw_dir("synth_hmdb51"))
    out = extract_dataset("synth_hmdb51", progress=False)
    assert out == paths.videos_dir("synth_hmdb51")
    tree = _tree(out)
    for cls, names in HMDB_VIDEOS.items():
        for n in names:
            assert tree[f"{cls}/{n}"] == n.encode()
    assert not list(out.rglob("*.rar"))  # inner archives removed
    assert len([k for k in tree if k.startswith("testTrainMulti_7030_splits/")]) == 6
    marker = json.loads((out / ".extracted.json").read_text())
    assert marker["files"] == len(tree) - 1 == 4 + 6
    assert [a["name"] for a in marker["archives"]] == ["hmdb51_org.rar", "test_train_splits.rar"]
    assert sorted(os.listdir(out.parent)) == ["synth_hmdb51"]  # no temporary siblings left


def test_extract_dataset_does_nothing_when_the_marker_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_fake_hmdb(paths.raw_dir("synth_hmdb51"))
    extract_dataset("synth_hmdb51", progress=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("extracted again although nothing changed")

    with monkeypatch.context() as patched:
        patched.setattr(archives, "extract_archive", must_not_run)
        os.utime(paths.raw_dir("synth_hmdb51") / "hmdb51_org.rar", (1, 1))  # as `dvc checkout` does
        extract_dataset("synth_hmdb51", progress=False)

    # A lost video means the extraction is no longer complete: it is redone.
    victim = paths.videos_dir("synth_hmdb51") / "brush_hair" / HMDB_VIDEOS["brush_hair"][0]
    victim.unlink()
    extract_dataset("synth_hmdb51", progress=False)
    assert victim.read_bytes() == HMDB_VIDEOS["brush_hair"][0].encode()


def test_extract_dataset_redoes_the_extraction_when_an_archive_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = paths.raw_dir("synth_hmdb51")
    _write_fake_hmdb(raw)
    out = extract_dataset("synth_hmdb51", progress=False)
    write_stored_rar(raw / "jump.rar", [("jump/new_jump_f_cm_np1_ba_med_0.avi", b"new")])
    write_stored_rar(raw / "hmdb51_org.rar", [("jump.rar", (raw / "jump.rar").read_bytes())])
    (raw / "jump.rar").unlink()
    extract_dataset("synth_hmdb51", progress=False)
    classes = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert classes == ["jump", "testTrainMulti_7030_splits"]  # the old classes are gone


def test_extract_dataset_missing_archive_says_run_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_fake_hmdb(paths.raw_dir("synth_hmdb51"))
    (paths.raw_dir("synth_hmdb51") / "test_train_splits.rar").unlink()
    with pytest.raises(DataError, match=r"test_train_splits\.rar.*run `actionrepro download synth_hmdb51` first"):
        extract_dataset("synth_hmdb51", progress=False)


def test_extract_dataset_refuses_an_archive_that_does_not_match_its_pin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = paths.raw_dir("synth_hmdb51")
    _write_fake_hmdb(raw)
    sources.pin_path(raw / "hmdb51_org.rar").write_text(sources.pin_text("0" * 64, "hmdb51_org.rar"))
    with pytest.raises(DataError, match="hmdb51_org.rar.*pinned"):
        extract_dataset("synth_hmdb51", progress=False)
    assert not paths.videos_dir("synth_hmdb51").exists()


def test_extract_dataset_failure_keeps_the_previous_extraction_and_leaves_no_partial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = paths.raw_dir("synth_hmdb51")
    _write_fake_hmdb(raw)
    good = extract_dataset("synth_hmdb51", progress=False)
    before = _tree(good)
    # A new outer archive whose inner class rar tries to escape: found only after the outer unpack.
    write_stored_rar(raw / "evil.rar", [("..\\..\\..\\escaped.avi", b"x")])
    write_stored_rar(raw / "hmdb51_org.rar", [("evil.rar", (raw / "evil.rar").read_bytes())])
    with pytest.raises(DataError, match="evil.rar.*escaped.avi"):
        extract_dataset("synth_hmdb51", progress=False)
    assert _tree(good) == before
    assert sorted(os.listdir(good.parent)) == ["synth_hmdb51"]
    assert not list(tmp_path.rglob("escaped.avi"))


def test_extract_dataset_reorganizes_the_flat_thumos_zip_into_ucf_101_class_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ucf = sources.get("ucf101")
    for name in ("UCF101.zip", "UCF101TrainTestSplits-RecognitionTask.zip"):
        ucf = sources.with_archive(ucf, name, size=None, checksum=None)
    raw = paths.raw_dir("ucf101")
    raw.mkdir(parents=True)
    official = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                "HandstandPushups/v_HandStandPushups_g01_c01.avi",
                "YoYo/v_YoYo_g25_c05.avi"]
    lists = {"ucfTrainTestlist/classInd.txt": "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n",
             "ucfTrainTestlist/trainlist01.txt": f"{official[0]} 1\r\n{official[2]} 3\r\n",
             "ucfTrainTestlist/testlist01.txt": f"{official[1]}\r\n"}
    _zip(raw / "UCF101TrainTestSplits-RecognitionTask.zip", [(k, v.encode()) for k, v in lists.items()])
    flat = ["v_ApplyEyeMakeup_g01_c01.avi", "v_HandstandPushups_g01_c01.avi", "v_YoYo_g25_c05.avi"]
    _zip(raw / "UCF101.zip", [(f"UCF101/{n}", n.encode()) for n in flat], zipfile.ZIP_STORED)

    out = extract_dataset("ucf101", registry={"ucf101": ucf}, progress=False)
    tree = _tree(out)
    assert {k for k in tree if k.startswith("UCF-101/")} == {f"UCF-101/{rel}" for rel in official}
    assert tree["UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi"] == b"v_HandstandPushups_g01_c01.avi"
    assert not (out / "UCF101").exists()
    assert (out / "ucfTrainTestlist" / "classInd.txt").is_file()


def test_extract_dataset_refuses_an_archive_that_differs_from_sha256sums(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = paths.raw_dir("synth_hmdb51")
    _write_fake_hmdb(raw)
    (raw / "SHA256SUMS").write_text(sources.pin_text("f" * 64, "test_train_splits.rar"))
    with pytest.raises(DataError, match="test_train_splits.rar.*SHA256SUMS"):
        extract_dataset("synth_hmdb51", progress=False)
    assert not paths.videos_dir("synth_hmdb51").exists()


def test_nested_archive_without_a_class_folder_goes_into_a_folder_named_after_it(tmp_path):
    write_stored_rar(tmp_path / "pour.rar", [("a.avi", b"a"), ("b.avi", b"b")])
    write_stored_rar(tmp_path / "outer.rar", [("pour.rar", (tmp_path / "pour.rar").read_bytes())])
    files = extract_archive(tmp_path / "outer.rar", tmp_path / "out", nested=True, progress=False)
    assert _tree(tmp_path / "out") == {"pour/a.avi": b"a", "pour/b.avi": b"b"}
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == ["pour/a.avi", "pour/b.avi"]


def test_stored_rar_header_for_members_over_4_gib_uses_the_large_fields(tmp_path):
    from actionrepro.data import rar

    size = (5 << 30) + 7
    path = tmp_path / "big.rar"
    with open(path, "wb") as fh:  # sparse: the 5 GiB of data cost no disk space
        fh.write(rar.MARKER + rar._block(struct.pack("<BHHHI", rar.HEAD_MAIN, 0, 13, 0, 0)))
        fh.write(rar._file_header("UCF-101/big.avi", size, 0, is_dir=False))
        fh.seek(size, os.SEEK_CUR)
        fh.write(rar._block(struct.pack("<BHH", rar.HEAD_ENDARC, 0x4000, 7)))
    with rarfile.RarFile(path, errors="strict") as rf:
        (info,) = rf.infolist()
    assert (info.filename, info.file_size, info.compress_size) == ("UCF-101/big.avi", size, size)
