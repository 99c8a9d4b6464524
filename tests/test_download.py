"""The download step against a local HTTP server: resume, mirrors, checksums, pins, offline use."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import random
import socket
import zipfile
from pathlib import Path

import pytest

from actionrepro.data import sources
from actionrepro.data.download import download_dataset, read_sha256sums
from actionrepro.data.sources import Archive, Dataset
from actionrepro.errors import DataError

PARAMS = {"seed": 0, "download": {"verify_tls": True, "retries": 2, "timeout_s": 5, "backoff_s": 0}}
RAW = Path("data/raw/ucf101")


def zip_bytes(seed: int, size: int = 300_000) -> bytes:
    """A real zip archive (one stored member of random bytes), about `size` bytes."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("UCF-101/Class/v_Class_g01_c01.avi", rng.randbytes(size))
    return buf.getvalue()


def flip_member_byte(data: bytes) -> bytes:
    """Same size, still a zip, different content: what a tampered or bit-rotted file looks like."""
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


VIDEOS, SPLITS = zip_bytes(1), zip_bytes(2, size=2_000)


def registry(videos_urls, splits_urls, *, videos=VIDEOS, splits=SPLITS, alternative=None):
    """A one-dataset registry shaped like UCF101: videos pinned (no checksum), splits with sha256."""
    archives = (
        Archive(name="videos.zip", role="videos", format="zip", layout="UCF-101/<Class>/*.avi", top_dir="UCF-101",
                urls=tuple(videos_urls), size=len(videos)),
        Archive(name="splits.zip", role="splits", format="zip", layout="lists/*.txt", top_dir="lists",
                urls=tuple(splits_urls), size=len(splits), checksum=("sha256", sha256(splits))),
    )
    alts = (alternative,) if alternative else ()
    return {"ucf101": Dataset("ucf101", archives=archives, alternatives=alts, homepage="https://example.org/ucf")}


@pytest.fixture
def served(http_server, tmp_path, monkeypatch):
    """The local server holding both archives, and the project root in tmp_path."""
    monkeypatch.chdir(tmp_path)
    http_server.files.update({"/videos.zip": VIDEOS, "/splits.zip": SPLITS})
    return http_server


def standard(server) -> dict:
    return registry([server.url("/videos.zip")], [server.url("/splits.zip")])


def leftovers() -> list[str]:
    return sorted(p.name for p in RAW.iterdir()) if RAW.exists() else []


def test_download_resumes_with_range_after_the_connection_drops_mid_file(served):
    served.drop_after["/videos.zip"] = 150_000
    paths = download_dataset("ucf101", PARAMS, sources=standard(served))

    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    video_requests = [r for r in served.requests if r.path == "/videos.zip"]
    assert len(video_requests) == 2
    assert "Range" not in video_requests[0].headers
    start = int(video_requests[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 150_000
    assert paths == [RAW / "videos.zip", RAW / "splits.zip"]
    assert leftovers() == ["SHA256SUMS", "download.json", "splits.zip", "videos.zip", "videos.zip.sha256"]


def test_server_ignoring_range_gets_a_clean_restart_not_a_doubled_file(served):
    served.range_support = False
    served.drop_after["/videos.zip"] = 100_000
    download_dataset("ucf101", PARAMS, sources=standard(served))

    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    video_requests = [r for r in served.requests if r.path == "/videos.zip"]
    assert len(video_requests) == 2 and "Range" in video_requests[1].headers  # asked, got 200


def test_checksum_mismatch_leaves_nothing_finished_and_names_url_and_both_hashes(served):
    served.files["/splits.zip"] = wrong = zip_bytes(3, size=2_000)
    assert len(wrong) == len(SPLITS)
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, sources=standard(served))

    message = str(err.value)
    assert served.url("/splits.zip") in message
    assert sha256(wrong) in message and sha256(SPLITS) in message
    assert leftovers() == []  # no splits.zip, no .part, no SHA256SUMS, no download.json


def test_stale_partial_file_that_fails_the_checksum_is_restarted_from_byte_zero(served):
    RAW.mkdir(parents=True)
    (RAW / "splits.zip.part").write_bytes(b"garbage from an older version!")
    download_dataset("ucf101", PARAMS, sources=standard(served))

    assert (RAW / "splits.zip").read_bytes() == SPLITS
    ranges = [r.headers.get("Range") for r in served.requests if r.path == "/splits.zip"]
    assert ranges == ["bytes=30-", None]


def test_404_on_the_first_mirror_falls_back_to_the_second(served):
    served.files["/mirror2/videos.zip"] = VIDEOS
    mirrors = (served.url("/gone/videos.zip"), served.url("/mirror2/videos.zip"))
    reg = {"ucf101": sources.with_archive(standard(served)["ucf101"], "videos.zip", urls=mirrors)}
    download_dataset("ucf101", PARAMS, sources=reg)

    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    assert served.count("/gone/videos.zip") == 1  # a 404 is not retried
    record = json.loads((RAW / "download.json").read_text())
    videos = record["archives"][0]
    assert videos["source"] == {"kind": "url", "url": served.url("/mirror2/videos.zip")}
    assert record["failures"][0]["url"] == served.url("/gone/videos.zip")
    assert "404" in record["failures"][0]["error"]


def test_server_errors_are_retried_then_the_next_mirror_is_tried(served):
    served.files["/mirror2/videos.zip"] = VIDEOS
    served.status["/busy/videos.zip"] = 503
    reg = registry([served.url("/busy/videos.zip"), served.url("/mirror2/videos.zip")], [served.url("/splits.zip")])
    download_dataset("ucf101", PARAMS, sources=reg)

    assert served.count("/busy/videos.zip") == 1 + PARAMS["download"]["retries"]
    assert (RAW / "videos.zip").read_bytes() == VIDEOS


def test_a_second_concurrent_download_of_the_same_archive_is_refused(served):
    RAW.mkdir(parents=True)
    with open(RAW / "splits.zip.part", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running download holds
        with pytest.raises(DataError, match="another process is downloading splits.zip"):
            download_dataset("ucf101", PARAMS, sources=standard(served))
    assert served.count() == 0


def closed_port_url(path: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_every_mirror_failing_raises_an_error_naming_each_url_and_the_manual_way_out(served):
    dead = closed_port_url("/videos.zip")
    reg = registry([served.url("/gone/videos.zip"), dead], [served.url("/splits.zip")])
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, sources=reg)

    message = str(err.value)
    assert served.url("/gone/videos.zip") in message and "HTTP 404" in message
    assert dead in message and "connection failed" in message
    assert "actionrepro download ucf101 --archive PATH" in message
    assert "https://example.org/ucf" in message
    assert not (RAW / "videos.zip").exists() and not (RAW / "download.json").exists()


def test_first_verified_download_is_pinned_and_a_later_tampered_file_is_replaced(served, caplog):
    download_dataset("ucf101", PARAMS, sources=standard(served))
    pin = RAW / "videos.zip.sha256"
    assert sources.read_pin(pin) == sha256(VIDEOS)
    assert read_sha256sums(RAW / "SHA256SUMS") == {"videos.zip": sha256(VIDEOS), "splits.zip": sha256(SPLITS)}

    (RAW / "videos.zip").write_bytes(flip_member_byte(VIDEOS))  # same size: only the pin can tell
    before = served.count("/videos.zip")
    with caplog.at_level(logging.WARNING):
        download_dataset("ucf101", PARAMS, sources=standard(served))

    assert served.count("/videos.zip") == before + 1
    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    assert "pinned" in caplog.text and sha256(flip_member_byte(VIDEOS)) in caplog.text


def test_tampered_file_is_kept_and_reported_against_its_pin_when_no_mirror_can_replace_it(served):
    download_dataset("ucf101", PARAMS, sources=standard(served))
    tampered = flip_member_byte(VIDEOS)
    (RAW / "videos.zip").write_bytes(tampered)
    served.status["/videos.zip"] = 404
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, sources=standard(served))

    message = str(err.value)
    assert str(RAW / "videos.zip.sha256") in message
    assert sha256(tampered) in message and sha256(VIDEOS) in message
    assert (RAW / "videos.zip").read_bytes() == tampered  # replaced only by a verified copy
    assert not (RAW / "download.json").exists()


def test_already_present_verified_archives_are_not_downloaded_again(served):
    download_dataset("ucf101", PARAMS, sources=standard(served))
    first = (RAW / "download.json").read_text()
    served.requests.clear()

    paths = download_dataset("ucf101", PARAMS, sources=standard(served))

    assert served.count() == 0
    assert paths == [RAW / "videos.zip", RAW / "splits.zip"]
    assert (RAW / "download.json").read_text() == first  # same record: sources carried over


def test_archive_option_verifies_the_users_files_and_links_them_in_without_network(served, tmp_path):
    mine = tmp_path / "downloads"
    mine.mkdir()
    (mine / "videos.zip").write_bytes(VIDEOS)
    (mine / "splits.zip").write_bytes(SPLITS)
    download_dataset("ucf101", PARAMS, archives=[mine / "videos.zip", mine / "splits.zip"],
                     sources=standard(served))

    assert served.count() == 0
    assert os.path.samefile(RAW / "videos.zip", mine / "videos.zip")  # hard link, not a 2nd copy
    assert sources.read_pin(RAW / "videos.zip.sha256") == sha256(VIDEOS)
    record = json.loads((RAW / "download.json").read_text())
    assert record["archives"][1]["source"]["kind"] == "file"
    assert record["archives"][1]["verified_by"] == "official sha256"


def test_archive_option_rejects_a_wrong_file_and_copies_nothing(served, tmp_path):
    bad = tmp_path / "splits.zip"
    bad.write_bytes(zip_bytes(3, size=2_000))
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, archives=[bad], sources=standard(served))

    assert str(bad) in str(err.value) and sha256(SPLITS) in str(err.value)
    assert not (RAW / "splits.zip").exists()
    assert served.count() == 0


def thumos_like(server) -> tuple[dict, bytes]:
    flat = zip_bytes(4)
    alt = Archive(name="videos-flat.zip", role="videos", format="zip", layout="UCF101/*.avi", top_dir="UCF101",
                  urls=(server.url("/flat/videos_all.zip"),), size=len(flat), checksum=("sha256", sha256(flat)),
                  aliases=("videos_all.zip",), alternative_of="videos.zip")
    return registry([server.url("/gone/videos.zip")], [server.url("/splits.zip")], alternative=alt), flat


def test_alternative_archive_is_fetched_when_every_mirror_of_the_primary_fails(served):
    reg, flat = thumos_like(served)
    served.files["/flat/videos_all.zip"] = flat
    paths = download_dataset("ucf101", PARAMS, sources=reg)

    assert paths == [RAW / "videos-flat.zip", RAW / "splits.zip"]
    assert (RAW / "videos-flat.zip").read_bytes() == flat
    record = json.loads((RAW / "download.json").read_text())
    assert record["archives"][0]["alternative_of"] == "videos.zip"


def test_alternative_passed_with_archive_under_its_published_name_stands_in_for_the_primary(served, tmp_path):
    reg, flat = thumos_like(served)
    user_file = tmp_path / "videos_all.zip"
    user_file.write_bytes(flat)
    paths = download_dataset("ucf101", PARAMS, archives=[user_file], sources=reg)

    assert paths[0] == RAW / "videos-flat.zip"
    assert served.count("/gone/videos.zip") == 0 and served.count("/flat/videos_all.zip") == 0


def test_certificate_failure_explains_the_option_and_insecure_still_checks_hashes(https_server, tmp_path,
                                                                               monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    https_server.files.update({"/videos.zip": VIDEOS, "/splits.zip": SPLITS})
    reg = standard(https_server)
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, sources=reg)
    message = str(err.value)
    assert "certificate" in message and "verify_tls: false" in message and "--insecure" in message

    with caplog.at_level(logging.WARNING):
        download_dataset("ucf101", PARAMS, insecure=True, sources=reg)
    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    assert "TLS certificate verification is OFF" in caplog.text and "still verified" in caplog.text
    assert json.loads((RAW / "download.json").read_text())["tls_verified"] is False


def test_registry_synthetic_twins_use_the_official_archive_names_and_layouts():
    for real, synth in (("ucf101", "synth_ucf101"), ("hmdb51", "synth_hmdb51")):
        r, s = sources.get(real), sources.get(synth)
        assert [(a.name, a.role, a.format, a.layout, a.top_dir) for a in r.archives] == \
               [(a.name, a.role, a.format, a.layout, a.top_dir) for a in s.archives]
        assert s.synthetic_of == real and all(not a.urls for a in s.archives)
    ucf = sources.get("ucf101")
    assert ucf.archive("UCF101.rar").size == 6_932_971_618 and ucf.archive("UCF101.rar").pinned
    assert ucf.alternatives_for("UCF101.rar")[0].checksum[1].startswith("dabf56f5")
    assert sources.get("hmdb51").archive("test_train_splits.rar").checksum == \
        ("md5", "15e67781e70dcfbdce2d7dbb9b3344b5")


TINY_SYNTH = {"classes": 2, "train_per_class": 2, "test_per_class": 1, "unused_per_class": 0, "width": 16,
              "height": 16, "fps": 25, "frames": 8, "corrupt_fraction": 0.0}


def test_synthetic_dataset_is_generated_with_sha256sums_and_reused_for_the_same_recipe(tmp_path, monkeypatch):
    synthetic = pytest.importorskip("actionrepro.data.synthetic")
    monkeypatch.chdir(tmp_path)
    calls = []
    real_write = synthetic.write_archives
    monkeypatch.setattr(synthetic, "write_archives", lambda *a, **k: calls.append(a) or real_write(*a, **k))
    params = {"seed": 0, "synth": {"hmdb51": TINY_SYNTH}}
    raw = Path("data/raw/synth_hmdb51")

    paths = download_dataset("synth_hmdb51", params)
    assert [p.name for p in paths] == ["hmdb51_org.rar", "test_train_splits.rar"]
    sums = read_sha256sums(raw / "SHA256SUMS")
    assert sums == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temp dirs left

    download_dataset("synth_hmdb51", params)
    assert len(calls) == 1  # same recipe, archives verified: not regenerated
    download_dataset("synth_hmdb51", {**params, "seed": 1})
    assert len(calls) == 2 and read_sha256sums(raw / "SHA256SUMS") != sums
