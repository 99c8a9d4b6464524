"""The download step against a local HTTP server: resume, mirrors, checksums, pins, offline use."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import random
import shutil
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


# --- a raw server for what http.server will not do: no Content-Length, a byte-at-a-time drip ------

import errno  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from actionrepro.data import download  # noqa: E402


class RawServer:
    """A bounded, self-stopping HTTP/1.1 server on 127.0.0.1. routes: path -> (body, mode) with
    mode "plain" (Content-Length), "nolength" (no length, the body then close) or "drip" (one
    byte per `drip_s`, at most `drip_max` bytes, then close)."""

    def __init__(self, drip_s: float = 0.2, drip_max: int = 100):
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: list[tuple[str, str]] = []
        self.drip_s, self.drip_max = drip_s, drip_max
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            method, path = request.split(b" ", 2)[:2]
            method, path = method.decode(), path.decode()
            self.hits.append((method, path))
            body, mode = self.routes.get(path, (b"", "missing"))
            try:
                self._answer(conn, method, body, mode)
            except OSError:  # the client gave up (what a drip is for)
                pass

    def _answer(self, conn: socket.socket, method: str, body: bytes, mode: str) -> None:
        if mode == "missing":
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        length = "" if mode == "nolength" else f"Content-Length: {len(body)}\r\n"
        conn.sendall(f"HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n".encode())
        if method == "HEAD":
            return
        if mode != "drip":
            conn.sendall(body)
            return
        for byte in body[:self.drip_max]:
            if self.stop.wait(self.drip_s):
                return
            conn.sendall(bytes([byte]))


@pytest.fixture
def raw_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = RawServer()
    yield server
    server.close()


def unsized(reg: dict) -> dict:
    """The registry with videos.zip as UCF101.rar really is published: no size, no checksum."""
    return {"ucf101": sources.with_archive(reg["ucf101"], "videos.zip", size=None)}


def stored_rar(tmp_path: Path) -> bytes:
    """A real RAR (stored members), as UCF101.rar and hmdb51_org.rar are RARs."""
    from actionrepro.data.rar import write_stored_rar

    rng = random.Random(5)
    write_stored_rar(tmp_path / "v.rar", [(f"UCF-101/C/v_C_g01_c0{i}.avi", rng.randbytes(60_000))
                                          for i in range(1, 5)])
    return (tmp_path / "v.rar").read_bytes()


def test_truncated_first_download_without_size_or_checksum_is_not_pinned(raw_server, tmp_path):
    """A cut-short RAR still starts with the RAR magic bytes: only its member list tells."""
    videos = stored_rar(tmp_path)
    raw_server.routes["/videos.rar"] = (videos[:150_000], "nolength")  # cut short, nothing to tell
    raw_server.routes["/splits.zip"] = (SPLITS, "plain")
    reg = registry([], [raw_server.url("/splits.zip")])["ucf101"]
    rar = Archive(name="videos.rar", role="videos", format="rar", layout="UCF-101/<Class>/*.avi",
                  top_dir="UCF-101", urls=(raw_server.url("/videos.rar"),))
    reg = {"ucf101": Dataset("ucf101", archives=(rar, reg.archives[1]), homepage=reg.homepage)}
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, sources=reg)

    assert "does not open as an archive" in str(err.value) and "cut short" in str(err.value)
    assert not (RAW / "videos.rar.sha256").exists() and not (RAW / "videos.rar").exists()
    assert not (RAW / "videos.rar.part").exists()
    assert [h for h in raw_server.hits if h[1] == "/videos.rar"] == [("GET", "/videos.rar")] * 3  # retried

    raw_server.routes["/videos.rar"] = (videos, "plain")  # the server mends: the right file passes
    download_dataset("ucf101", PARAMS, sources=reg)
    assert sources.read_pin(RAW / "videos.rar.sha256") == sha256(videos)


def test_complete_download_of_unknown_length_is_kept_unpinned_with_a_warning(raw_server, caplog):
    raw_server.routes["/videos.zip"] = (VIDEOS, "nolength")
    raw_server.routes["/splits.zip"] = (SPLITS, "plain")
    reg = unsized(registry([raw_server.url("/videos.zip")], [raw_server.url("/splits.zip")]))
    with caplog.at_level(logging.WARNING):
        download_dataset("ucf101", PARAMS, sources=reg)

    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    assert not (RAW / "videos.zip.sha256").exists()
    assert "NOT pinned" in caplog.text and "full length could not be confirmed" in caplog.text
    assert ("HEAD", "/videos.zip") in raw_server.hits  # it asked before giving up on the length
    record = json.loads((RAW / "download.json").read_text())
    assert record["archives"][0]["verified_by"] == "format only, not pinned"


def test_download_of_unknown_registry_size_is_pinned_when_the_server_states_the_length(served):
    reg = unsized(standard(served))
    download_dataset("ucf101", PARAMS, sources=reg)
    assert sources.read_pin(RAW / "videos.zip.sha256") == sha256(VIDEOS)


def test_a_dripping_mirror_is_abandoned_for_the_next_within_the_configured_bound(raw_server):
    raw_server.routes["/slow/videos.zip"] = (VIDEOS, "drip")  # a byte per 0.2 s: no read timeout trips
    raw_server.routes["/fast/videos.zip"] = (VIDEOS, "plain")
    raw_server.routes["/splits.zip"] = (SPLITS, "plain")
    params = {**PARAMS, "download": {**PARAMS["download"], "min_rate_bytes_s": 1000, "stall_s": 1.0}}
    reg = registry([raw_server.url("/slow/videos.zip"), raw_server.url("/fast/videos.zip")],
                   [raw_server.url("/splits.zip")])
    began = time.monotonic()
    download_dataset("ucf101", params, sources=reg)
    took = time.monotonic() - began

    assert (RAW / "videos.zip").read_bytes() == VIDEOS
    assert took < 2 * params["download"]["stall_s"] + 1.5  # measured over stall_s, then the next mirror
    assert raw_server.hits.count(("GET", "/slow/videos.zip")) == 1  # not retried: too slow is the mirror
    record = json.loads((RAW / "download.json").read_text())
    assert record["archives"][0]["source"]["url"] == raw_server.url("/fast/videos.zip")
    assert "too slow" in record["failures"][0]["error"]


class FullDisk:
    """A file object whose writes fail as they do on a full disk."""

    def write(self, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_downloading_stops_at_once_with_one_clear_message(served, monkeypatch):
    real_write, writes = download._write_chunk, []

    def fill_up(fh, chunk):  # the module's own write, on a disk that fills after two chunks
        writes.append(len(chunk))
        real_write(fh if len(writes) <= 2 else FullDisk(), chunk)

    monkeypatch.setattr(download, "_write_chunk", fill_up)
    with pytest.raises(DataError) as err:
        download_dataset("ucf101", PARAMS, sources=standard(served))

    message = str(err.value)
    assert "no space left" in message and str(RAW / "videos.zip.part") in message
    assert f"{len(VIDEOS):,} bytes" in message and "free space in" in message
    assert not isinstance(err.value.__cause__, OSError)  # one message, not a chained traceback
    assert served.count("/videos.zip") == 1  # stopped at once: no retry, no other mirror
    assert not (RAW / "videos.zip").exists() and not (RAW / "videos.zip.part").exists()
    assert not (RAW / "download.json").exists()


def test_a_download_that_cannot_fit_is_refused_before_writing(served, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(DataError, match=r"no space left.*splits.zip.*bytes are free"):
        download_dataset("ucf101", PARAMS, sources=standard(served))
    assert not list(RAW.glob("*.part"))


def test_temporaries_of_a_killed_run_are_removed_when_the_step_runs_again(served):
    RAW.mkdir(parents=True)
    (RAW / ".SHA256SUMS.x1y2.tmp").write_text("half")
    (RAW / "old.zip.part.json").write_text("{}")  # its .part is gone
    (RAW / ".generate-abc").mkdir()
    (RAW / ".generate-abc" / "x.rar").write_bytes(b"x")
    download_dataset("ucf101", PARAMS, sources=standard(served))
    assert leftovers() == ["SHA256SUMS", "download.json", "splits.zip", "videos.zip", "videos.zip.sha256"]
    assert not [p for p in RAW.iterdir() if p.name.startswith(".")]
