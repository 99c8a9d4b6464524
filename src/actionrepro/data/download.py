"""The download step: put a dataset's verified archives into data/raw/<ds>/, resumably.

Per archive, in this order: an archive the user passed with --archive (verified, then hard-linked
or copied in); one already in data/raw/<ds>/ that verifies; a download from each mirror in turn;
then, where the registry lists one, its alternative (UCF101: the THUMOS zip) the same ways.
Downloads stream into `<name>.part`, resume with a Range request, retry with exponential backoff,
and are renamed onto `<name>` only after the size and checksum (official, or pinned from the
first verified download) match. An archive without an official checksum is pinned only once its
full length was confirmed (registry size, Content-Length, Content-Range total or a HEAD request)
and its member list reads, so a truncated first download is never pinned. A transfer slower than
download.min_rate_bytes_s over download.stall_s is abandoned for the next mirror. A full disk
stops the step with one message (the partial file removed). A present file that fails
verification stays until a fresh copy verifies and replaces it. Temporary files of an earlier,
killed run are removed when the step starts. synth_* datasets are generated instead of downloaded.
`SHA256SUMS` (every archive in use) and then `download.json` (what came from where) are written
last; download.json is the step's completion marker, removed when the step starts.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import rarfile
import requests
import urllib3
from tqdm import tqdm

from actionrepro import __version__, config, paths
from actionrepro.data import archives
from actionrepro.data import sources as registry
from actionrepro.data.sources import Archive, Dataset
from actionrepro.errors import ActionReproError, ConfigError, DataError
from actionrepro.io import atomic_path, atomic_write_json, atomic_write_text, file_digest

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MARKER = "download.json"
SUMS = "SHA256SUMS"
MAX_BACKOFF_S = 60.0
TLS_HINT = ("set `download.verify_tls: false` in the params file or pass --insecure "
            "(archive sizes and checksums are still verified)")


class Rejected(Exception):
    """A file that is not the archive it should be; the message says why (sizes, both hashes)."""


class _DiskFull(Exception):
    """Writing the download hit ENOSPC; not an OSError, so no network handler swallows it."""


class _SourceFailed(Exception):
    """One mirror could not deliver; `permanent` failures are not retried on the same URL."""

    def __init__(self, reason: str, permanent: bool = False, restart: bool = False):
        super().__init__(reason)
        self.permanent = permanent
        self.restart = restart  # the partial file cannot be resumed: start again from byte 0


def download_dataset(dataset: str, params: dict, archives: Iterable[str | os.PathLike] = (),
                     insecure: bool = False, sources: Mapping[str, Dataset] | None = None) -> list[Path]:
    """Fetch (or, for synth_*, generate) every archive of `dataset`; return their paths in raw_dir.

    `archives`: files the user already has (`--archive`), verified and copied in instead of
    downloading. `insecure` (or params download.verify_tls: false) skips TLS verification.
    `sources` replaces the registry (tests point it at a local server).
    """
    spec = registry.get(dataset, sources, params=params)
    if spec.custom is not None:  # a list-file dataset: nothing to fetch, the lists and videos are recorded
        if list(archives):
            raise ConfigError(f"{dataset} is a custom dataset (params custom_datasets): --archive applies only to "
                              f"the real datasets")
        from actionrepro.data import listfiles

        listfiles.record(dataset, spec.custom)
        return []
    if not spec.synthetic_of:
        return download_into(spec, paths.raw_dir(dataset), params, archives, insecure)
    raw = paths.raw_dir(dataset)
    raw.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(raw)
    marker = raw / MARKER
    previous = _read_json(marker)
    marker.unlink(missing_ok=True)
    summary: dict = {"dataset": dataset}
    if list(archives):
        raise ConfigError(f"{dataset} is generated locally (actionrepro.data.synthetic); --archive applies "
                          f"only to the real datasets")
    records, summary["recipe"] = _generate(spec, params, raw, previous)
    summary["archives"] = records
    atomic_write_text(raw / SUMS, "".join(registry.pin_text(r["sha256"], r["name"]) for r in records))
    atomic_write_json(marker, summary)
    log.info("%s: %d archive(s) ready in %s", dataset, len(records), raw)
    return [raw / r["name"] for r in records]


def download_into(spec: Dataset, raw: Path, params: dict, files: Iterable[str | os.PathLike] = (),
                  insecure: bool = False) -> list[Path]:
    """Fetch every file of `spec` (a real dataset's archives, or the pretrained weights of
    actionrepro.data.weights) into `raw`: files given by hand first, then verified present ones,
    then each mirror; SHA256SUMS and the download.json marker written last."""
    raw.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(raw)
    marker = raw / MARKER
    previous = _read_json(marker)
    marker.unlink(missing_ok=True)
    cfg = _with_defaults(params["download"])
    verify_tls = bool(cfg["verify_tls"]) and not insecure
    if not verify_tls:
        why = "--insecure" if insecure else "download.verify_tls: false"
        log.warning("TLS certificate verification is OFF (%s): connections are not authenticated; "
                    "archive sizes and checksums are still verified", why)
    failures: list[dict] = []
    records = _fetch_all(spec, cfg, raw, [Path(p) for p in files], verify_tls, previous, failures)
    summary = {"dataset": spec.name, "tls_verified": verify_tls, "failures": failures, "archives": records}
    atomic_write_text(raw / SUMS, "".join(registry.pin_text(r["sha256"], r["name"]) for r in records))
    atomic_write_json(marker, summary)
    log.info("%s: %d archive(s) ready in %s", spec.name, len(records), raw)
    return [raw / r["name"] for r in records]


def _with_defaults(cfg: dict) -> dict:
    """params['download'] with the schema defaults for keys it lacks (min_rate_bytes_s, stall_s)."""
    return config.fill_defaults(cfg, config.schema()["properties"]["download"])


def _remove_stale_temporaries(raw: Path) -> None:
    """Delete what a killed run left behind: atomic-write temporaries (`.<name>.*.tmp`), generator
    folders (`.generate-*`) and `.part.json` sidecars whose `.part` is gone. `.part` files stay:
    they are resumed."""
    for path in raw.iterdir():
        name = path.name
        if name.startswith(".generate-") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".") and name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)
        elif name.endswith(".part.json") and not path.with_name(name[:-5]).exists():
            path.unlink(missing_ok=True)
        else:
            continue
        log.info("removed %s, left behind by an earlier run that did not finish", path)


def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """name -> sha256 from a `sha256sum`-format file (what the extract step checks archives against)."""
    sums = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not match:
            raise DataError(f"{path}, line {n}: expected '<sha256>  <file name>', got {line[:80]!r}; "
                            f"re-run `actionrepro download` to rewrite it")
        sums[match.group(2)] = match.group(1)
    return sums


# --- verification ------------------------------------------------------------------------------

def verify_file(path: Path, archive: Archive, pin: Path | None) -> dict:
    """Check size, format signature and checksum (official, else pinned); return the record.

    `pin` is the pin file to compare against for archives without an official checksum (None for
    generated archives, which SHA256SUMS covers instead).
    """
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise Rejected(f"size is {size:,} bytes, expected {archive.size:,}")
    sha256 = file_digest(path, "sha256")
    record = {"name": archive.name, "role": archive.role, "format": archive.format, "layout": archive.layout,
              "top_dir": archive.top_dir, "inner_format": archive.inner_format,
              "alternative_of": archive.alternative_of, "size": size, "sha256": sha256}
    if archive.checksum is not None:
        algorithm, want = archive.checksum
        got = sha256 if algorithm == "sha256" else file_digest(path, algorithm)
        if got != want:
            raise Rejected(f"{algorithm} is {got}, expected {want} (official checksum)")
        record["verified_by"] = f"official {algorithm}"
    elif pin is not None and pin.exists():
        want = registry.read_pin(pin)
        if sha256 != want:
            raise Rejected(f"sha256 is {sha256}, expected {want} (pinned in {pin} from the first verified "
                            f"download; delete that file only if the publisher really replaced the archive)")
        record["verified_by"] = "pinned sha256"
    else:
        record["verified_by"] = "size and format" if archive.size is not None else "format only"
    if archive.sha256_prefix and not sha256.startswith(archive.sha256_prefix):
        raise Rejected(f"sha256 is {sha256}, but the published file name says it starts with {archive.sha256_prefix}")
    if archive.format == "file":
        return record
    is_format = zipfile.is_zipfile if archive.format == "zip" else rarfile.is_rarfile
    if not is_format(path):
        raise Rejected(f"is not a {archive.format} archive (sha256 {sha256}; an error page or a truncated file?)")
    return record


def _unreadable(path: Path, archive: Archive | None = None) -> str | None:
    """Why the archive's member list does not read (a truncated file), or None when it does."""
    if archive is not None and archive.format == "file":  # a plain file (a checkpoint) has no member list
        return None
    try:
        archives.list_members(path)
    except DataError as err:
        return str(err)
    return None


def _pin_if_new(final: Path, archive: Archive, record: dict, length_known: bool) -> None:
    """Pin the first verified copy of an archive that has no official checksum, but only when its
    full length was confirmed and its members list: a pinned truncated file would reject every
    good copy for good."""
    pin = registry.pin_path(final)
    if archive.pinned and not pin.exists():
        problem = None if length_known else "its full length could not be confirmed (no size " \
            "in the registry, and the server sent neither Content-Length nor a Content-Range total)"
        problem = problem or _unreadable(final, archive)
        if problem:
            record["verified_by"] += ", not pinned"
            log.warning("%s is kept but NOT pinned: %s; it is checked again on every run and "
                        "pinned once a download confirms it", final, problem)
            return
        atomic_write_text(pin, registry.pin_text(record["sha256"], archive.name))
        record["verified_by"] += ", sha256 pinned now"
        log.info("%s has no official checksum: pinned its sha256 %s in %s", archive.name, record["sha256"], pin)


# --- real datasets: user files, present files, mirrors -------------------------------------------

def _fetch_all(spec: Dataset, cfg: dict, raw: Path, user_files: list[Path], verify_tls: bool,
               previous: dict | None, failures: list[dict]) -> list[dict]:
    adopted = _adopt(spec, raw, user_files)
    before = {r["name"]: r for r in (previous or {}).get("archives", [])}
    records = {}
    with requests.Session() as session:
        session.verify = verify_tls
        session.headers.update({"User-Agent": f"actionrepro/{__version__}",
                                "Accept-Encoding": "identity"})  # byte ranges of the file itself
        # the small splits archive first: a broken mirror or TLS problem shows up in seconds
        for archive in sorted(spec.archives, key=lambda a: a.role != "splits"):
            records[archive.name] = _provide(spec, archive, raw, adopted, before, session, cfg, failures)
    return [records[a.name] for a in spec.archives]


def _provide(spec: Dataset, archive: Archive, raw: Path, adopted: dict, before: dict,
             session: requests.Session, cfg: dict, failures: list[dict]) -> dict:
    candidates = [archive, *spec.alternatives_for(archive.name)]
    for c in candidates:
        if c.name in adopted:
            return adopted[c.name]
    problems = []
    for c in candidates:
        final = raw / c.name
        if not final.exists():
            continue
        try:
            record = verify_file(final, c, registry.pin_path(final))
        except Rejected as why:
            log.warning("%s is present but %s; downloading a fresh copy, which replaces it only once verified",
                        final, why)
            problems.append(f"{final} (already present): {why}")
            continue
        _pin_if_new(final, c, record, length_known=c.size is not None)
        record["source"] = {"kind": "present"}
        old = before.get(c.name, {})
        if old.get("sha256") == record["sha256"]:  # same bytes as last run: keep their provenance
            record.update({k: old[k] for k in ("source", "verified_by") if k in old})
        log.info("%s already present and verified (%s); not downloading", final, record["verified_by"])
        return record
    tried = []
    for c in candidates:
        if c is not archive and c.urls:
            log.warning("every mirror of %s failed; trying its alternative %s (%s)", archive.name, c.name, c.note)
        for url in c.urls:
            try:
                return _download(c, url, raw, session, cfg)
            except _SourceFailed as err:
                log.warning("%s: %s", url, err)
                failures.append({"archive": c.name, "url": url, "error": str(err)})
                tried.append(f"{url}: {err}" + ("" if c is archive else f" (alternative {c.name})"))
    raise DataError(_all_failed(spec, archive, candidates, tried, problems))


def _all_failed(spec: Dataset, archive: Archive, candidates: list[Archive], tried: list[str],
                problems: list[str]) -> str:
    lines = [f"could not get {archive.name} for {spec.name}: every source failed"]
    lines += [f"  - {t}" for t in problems + tried]
    if not tried:
        lines.append("  (the registry lists no URL for it)")
    where = "; ".join(f"{c.name}: {', '.join(c.urls) or 'no known URL'}" for c in candidates)
    manual = spec.manual_hint or f"actionrepro download {spec.name} --archive PATH"
    lines.append(f"Download it yourself ({spec.homepage}; {where}) and run `{manual}`.")
    if any("TLS certificate" in t for t in tried):
        lines.append(f"If only the certificate check failed: {TLS_HINT}.")
    return "\n".join(lines)


def _download(archive: Archive, url: str, raw: Path, session: requests.Session, cfg: dict) -> dict:
    """Fetch one URL into `<name>.part` with retries; verify; rename onto `<name>`."""
    final = raw / archive.name
    part = final.with_name(final.name + ".part")
    attempts, restarted = int(cfg["retries"]) + 1, False
    attempt = 0
    while True:
        attempt += 1
        try:
            resumed, total = _fetch(session, url, part, archive, cfg)
        except _SourceFailed as err:
            if err.permanent or attempt >= attempts:
                if part.exists() and part.stat().st_size == 0:
                    _discard(part)
                raise
            delay = min(float(cfg["backoff_s"]) * 2 ** (attempt - 1), MAX_BACKOFF_S)
            log.warning("%s: %s; retry %d of %d in %.1f s%s", url, err, attempt, attempts - 1, delay,
                        " (resuming the partial file)" if part.exists() and part.stat().st_size else "")
            time.sleep(delay)
            continue
        try:
            record = verify_file(part, archive, registry.pin_path(final))
        except Rejected as why:
            _discard(part)
            if resumed and not restarted:  # the kept part may be stale: one clean retry from byte 0
                restarted = True
                log.warning("%s: the resumed download %s; restarting it from byte 0", url, why)
                continue
            raise _SourceFailed(f"downloaded file rejected: {why}", permanent=True) from None
        problem = _unreadable(part, archive) if archive.checksum is None else None
        if problem:  # no checksum to catch it: a file cut short must not pass as the archive
            _discard(part)
            if attempt < attempts:
                log.warning("%s: the download does not open as an archive (%s); retrying", url, problem)
                continue
            raise _SourceFailed(f"downloaded file does not open as an archive, probably cut short "
                                f"({problem})", permanent=True)
        length_known = archive.size is not None or record["size"] in (
            total, _head_length(session, url, float(cfg["timeout_s"])))
        os.replace(part, final)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        _pin_if_new(final, archive, record, length_known)
        record["source"] = {"kind": "url", "url": url}
        log.info("%s: downloaded and verified (%s)", final, record["verified_by"])
        return record


def _head_length(session: requests.Session, url: str, timeout: float) -> int | None:
    """The Content-Length a HEAD request reports, or None (no header, or the request failed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = session.head(url, timeout=timeout, allow_redirects=True, verify=session.verify)
    except requests.RequestException:
        return None
    length = response.headers.get("Content-Length", "")
    return int(length) if response.status_code == 200 and length.isdigit() else None


class _RateGuard:
    """Abandons a transfer that averages under `min_rate` bytes/s over `window` seconds: a server
    dripping a byte every few seconds never trips the per-read timeout."""

    def __init__(self, min_rate: float, window: float):
        self.min_rate, self.window = min_rate, window
        self.start, self.got = time.monotonic(), 0

    def update(self, n: int) -> None:
        self.got += n
        elapsed = time.monotonic() - self.start
        if elapsed < self.window:
            return
        rate = self.got / elapsed
        if rate < self.min_rate:
            raise _SourceFailed(f"transfer too slow: {rate:,.0f} bytes/s over the last {elapsed:.1f} s, "
                                f"under download.min_rate_bytes_s={self.min_rate:,.0f}; abandoning this "
                                f"mirror", permanent=True)
        self.start, self.got = time.monotonic(), 0


def _write_chunk(fh, chunk: bytes) -> None:
    """Append one chunk; a full disk becomes _DiskFull (handled once, with the space needed)."""
    try:
        fh.write(chunk)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _DiskFull(str(err)) from None
        raise


def _disk_full(part: Path, archive: Archive, total: int | None, start: int) -> DataError:
    """The one message for a full disk: which file, how much space is needed."""
    free = shutil.disk_usage(part.parent).free
    need = f"{total:,} bytes in all" if total is not None else \
        (f"{archive.size:,} bytes" if archive.size else "an unknown number of bytes (the server "
         "does not say)")
    return DataError(f"no space left on the device while downloading {archive.name} into {part}: "
                     f"it needs {need}, {free:,} bytes are free there. The partial file was removed; "
                     f"free space in {part.parent} (or point data/ at a larger disk) and run the "
                     f"download again")


def _check_space(part: Path, archive: Archive, total: int | None, start: int) -> None:
    """Refuse a download that cannot fit before writing a byte of it."""
    if total is not None and total - start > shutil.disk_usage(part.parent).free:
        _discard(part)
        raise _disk_full(part, archive, total, start)


def _body(response: requests.Response) -> Iterable[bytes]:
    """The response body as it arrives (read1: whatever one socket read brings), so that the
    rate check runs even when a server sends a byte at a time."""
    while chunk := response.raw.read1(CHUNK, decode_content=True):
        yield chunk


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


def _fetch(session: requests.Session, url: str, part: Path, archive: Archive,
           cfg: dict) -> tuple[bool, int | None]:
    """One HTTP attempt, appending to `part` from where it ends; (True if it resumed a partial
    file, the file's total size as the server states it, or None).

    The sidecar `<part>.json` remembers which URL (and ETag/Last-Modified) the bytes came from:
    a part from another mirror is resumed only when an official checksum will catch a mix-up.
    """
    meta_path = part.with_name(part.name + ".json")
    meta = _read_json(meta_path) or {}
    timeout = float(cfg["timeout_s"])
    read_timeout = min(timeout, float(cfg["stall_s"]))  # no byte for stall_s: stalled
    total, start, full = None, 0, False
    with open(part, "ab") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another process is downloading {archive.name} into {part}; "
                            f"wait for it to finish (or stop it) and re-run") from None
        offset = os.fstat(fh.fileno()).st_size
        if offset and (meta.get("url") != url and archive.checksum is None
                       or archive.size is not None and offset > archive.size):
            log.info("%s: discarding a partial file from another source", part)
            fh.truncate(0)
            offset = 0
        if archive.size is not None and offset == archive.size:
            return True, archive.size  # complete from an earlier run: straight to verification
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if meta.get("url") == url and meta.get("validator"):
                headers["If-Range"] = meta["validator"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                # verify per request: a session-level False loses to REQUESTS_CA_BUNDLE (requests #3829)
                response = session.get(url, stream=True, timeout=(timeout, read_timeout), headers=headers,
                                       verify=session.verify)
            with response:
                try:
                    start, total = _plan(response, offset, archive)
                except _SourceFailed as err:
                    if err.restart:
                        fh.truncate(0)
                    raise
                if start == -1:
                    return True, total  # 416: the part already holds the whole file
                if start == 0 and offset:
                    fh.truncate(0)
                validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
                atomic_write_json(meta_path, {"url": url, "validator": validator, "total": total})
                log.info("downloading %s from %s%s", archive.name, url,
                         f" (resuming at byte {start:,})" if start else "")
                _check_space(part, archive, total, start)
                guard = _RateGuard(float(cfg["min_rate_bytes_s"]), float(cfg["stall_s"]))
                with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=archive.name, disable=None, mininterval=1.0) as bar:
                    for chunk in _body(response):
                        _write_chunk(fh, chunk)
                        bar.update(len(chunk))
                        guard.update(len(chunk))
        except _DiskFull:
            full = True
        except requests.exceptions.SSLError as err:
            raise _SourceFailed(f"TLS certificate verification failed ({_reason(err)}); if you trust this "
                                f"server, {TLS_HINT}", permanent=True) from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            raise _SourceFailed(f"connection failed: {_reason(err)}") from None
        except requests.RequestException as err:
            raise _SourceFailed(f"request failed: {_reason(err)}", permanent=True) from None
        except urllib3.exceptions.HTTPError as err:  # raised by raw reads (read1), unwrapped
            raise _SourceFailed(f"connection failed: {_reason(err)}") from None
        finally:
            full = full or not _flushed(fh)
        got = os.fstat(fh.fileno()).st_size
    if full:
        _discard(part)
        raise _disk_full(part, archive, total, start)
    if total is not None and got != total:
        raise _SourceFailed(f"connection ended at byte {got:,} of {total:,}")
    return start > 0, total


def _flushed(fh) -> bool:
    """Flush and fsync; False if the disk is full (the caller reports it once)."""
    try:
        fh.flush()
        os.fsync(fh.fileno())
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        return False
    return True


def _plan(response: requests.Response, offset: int, archive: Archive) -> tuple[int, int | None]:
    """(byte the body starts at, total file size or None) from the status and headers; -1 = complete."""
    code = response.status_code
    if code == 416:
        total = _range_total(response.headers.get("Content-Range", ""))
        if total is not None and total == offset:
            return -1, total
        raise _SourceFailed(f"HTTP 416: the partial file ({offset:,} bytes) does not fit the server's "
                            f"{total if total is not None else 'unknown'} bytes; restarting", restart=True)
    if code in (404, 410):
        raise _SourceFailed(f"HTTP {code} {response.reason or ''}".rstrip() + " (not on this mirror)", permanent=True)
    if code in (408, 429) or code >= 500:
        raise _SourceFailed(f"HTTP {code} {response.reason or ''}".rstrip())
    if code not in (200, 206):
        raise _SourceFailed(f"HTTP {code} {response.reason or ''}".rstrip(), permanent=True)
    if code == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise _SourceFailed(f"HTTP 206 with an unexpected Content-Range {response.headers.get('Content-Range')!r} "
                                f"for a request from byte {offset:,}", restart=True)
        start = offset
        total = None if match.group(3) == "*" else int(match.group(3))
    else:
        if offset:
            log.info("%s: the server answered the whole file instead of a range; restarting from byte 0",
                     archive.name)
        start = 0
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    if archive.size is not None and total is not None and total != archive.size:
        raise _SourceFailed(f"the server offers {total:,} bytes, expected {archive.size:,}",
                            permanent=True, restart=True)
    return start, total


def _range_total(content_range: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", content_range)
    return int(match.group(1)) if match else None


def _reason(err: Exception) -> str:
    """The informative part of a requests/urllib3 error ("certificate verify failed: ...", ...)."""
    text = str(err)
    for pattern in (r"certificate verify failed: [^'\")]+", r"\[Errno -?\d+\] [^'\")]+",
                    r"Connection broken: [^'\"]+", r"Read timed out[^'\"]*", r"Connection aborted[^'\"]*"):
        match = re.search(pattern, text)
        if match:
            return re.sub(r"\s*\(_ssl\.c:\d+$", "", match.group(0).strip())
    return text[:300] or type(err).__name__


# --- --archive: the user's own files -------------------------------------------------------------

def _adopt(spec: Dataset, raw: Path, user_files: list[Path]) -> dict[str, dict]:
    """Verify each user-supplied archive and hard-link (else copy) it into raw_dir."""
    adopted: dict[str, dict] = {}
    for src in user_files:
        src = src.expanduser()
        if not src.is_file():
            raise DataError(f"--archive {src}: no such file")
        archive = _match(spec, src)
        role_taken = [r["name"] for r in adopted.values() if r["role"] == archive.role]
        if role_taken:
            raise DataError(f"--archive {src} and {role_taken[0]} both provide the {archive.role} of {spec.name}; "
                            f"pass only one")
        dest = raw / archive.name
        try:
            record = verify_file(src, archive, registry.pin_path(dest))
        except Rejected as why:
            raise DataError(f"--archive {src} is not a valid {archive.name} for {spec.name}: {why}. "
                            f"Nothing was copied; re-download it from {', '.join(archive.urls) or spec.homepage}"
                            ) from None
        method = _link_or_copy(src, dest)
        _pin_if_new(dest, archive, record, length_known=archive.size is not None)
        record["source"] = {"kind": "file", "path": str(src.resolve()), "method": method}
        log.info("%s verified (%s) and %s into %s", src, record["verified_by"], method, dest)
        adopted[archive.name] = record
    return adopted


def _match(spec: Dataset, src: Path) -> Archive:
    """Which registry archive a user file is: by name (or a published alias), else by exact size."""
    for a in spec.all_archives():
        if src.name == a.name or src.name in a.aliases:
            return a
    size = src.stat().st_size
    by_size = [a for a in spec.all_archives() if a.size == size]
    if len(by_size) == 1:
        return by_size[0]
    expected = ", ".join(a.name + (f" ({a.size:,} bytes)" if a.size else "") for a in spec.all_archives())
    raise DataError(f"--archive {src}: cannot tell which archive of {spec.name} this is; expected one of: "
                    f"{expected}. Rename the file to its published name.")


def _link_or_copy(src: Path, dest: Path) -> str:
    if dest.exists() and os.path.samefile(src, dest):
        return "kept in place"
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
            method = "hard-linked"
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(src, tmp)
            method = "copied"
        if tmp.stat().st_size != src.stat().st_size:
            raise DataError(f"copying {src} to {dest} produced {tmp.stat().st_size:,} bytes instead of "
                            f"{src.stat().st_size:,}; check free space in {dest.parent}")
    return method


# --- synth_*: generated archives -----------------------------------------------------------------

def _generate(spec: Dataset, params: dict, raw: Path, previous: dict | None) -> tuple[list[dict], dict]:
    """Generate the synthetic archives (unless the same recipe already produced them) and check them."""
    kind = spec.synthetic_of
    recipe = {"generator": "actionrepro.data.synthetic.write_archives", "kind": kind,
              "params": params["synth"][kind], "seed": params["seed"]}
    if previous and previous.get("recipe") == recipe:
        try:
            records = _check_generated(spec, raw)
            log.info("%s: archives from the same recipe already present and verified; not regenerating", spec.name)
            return records, recipe
        except Rejected as why:
            log.info("%s: regenerating (%s)", spec.name, why)
    synthetic = importlib.import_module("actionrepro.data.synthetic")
    tmp = Path(tempfile.mkdtemp(prefix=".generate-", dir=raw))
    try:
        written = synthetic.write_archives(kind, tmp, recipe["params"], seed=recipe["seed"])
        made = {Path(p).name: Path(p) for p in written}
        want = sorted(a.name for a in spec.archives)
        if sorted(made) != want:
            raise ActionReproError(f"synthetic.write_archives({kind!r}) wrote {sorted(made)}; "
                                   f"{spec.name} needs exactly {want} (the official archive names)")
        records = []
        for archive in spec.archives:
            try:
                record = verify_file(made[archive.name], archive, pin=None)
            except Rejected as why:
                raise ActionReproError(f"synthetic {archive.name} for {spec.name} is broken: {why}") from None
            shutil.move(made[archive.name], raw / archive.name)
            record["source"] = {"kind": "generated", "generator": recipe["generator"]}
            records.append(record)
        for extra in sorted(tmp.iterdir()):  # the generator's own notes (synth_meta.json) go along
            if extra.is_file() and not extra.name.startswith("."):
                os.replace(extra, raw / extra.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return records, recipe


def _check_generated(spec: Dataset, raw: Path) -> list[dict]:
    sums_file = raw / SUMS
    if not sums_file.exists():
        raise Rejected(f"{sums_file} is missing")
    sums = read_sha256sums(sums_file)
    records = []
    for archive in spec.archives:
        path = raw / archive.name
        if not path.exists() or archive.name not in sums:
            raise Rejected(f"{path} is missing or not listed in {sums_file}")
        record = verify_file(path, archive, pin=None)
        if record["sha256"] != sums[archive.name]:
            raise Rejected(f"{path} has sha256 {record['sha256']}, {sums_file} says {sums[archive.name]}")
        record["source"] = {"kind": "generated", "generator": "actionrepro.data.synthetic.write_archives"}
        records.append(record)
    return records


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
