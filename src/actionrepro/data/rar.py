"""Write RAR 4.x archives with stored (uncompressed) entries.

Why: the synthetic datasets must ship in the same archive formats as the real ones (UCF101.rar,
hmdb51_org.rar = a rar of per-class rars, test_train_splits.rar), and no free tool writes RAR.
Stored entries (method 0x30) need no compressor, and every RAR reader, including rarfile without
external tools, reads them. Layout from the RAR 4.x technical note (unrar's technote.txt):

    marker block  "Rar!\\x1a\\x07\\x00"
    MAIN_HEAD     0x73
    FILE_HEAD     0x74 + data, one per entry (directories have no data)
    ENDARC_HEAD   0x7B

Every header starts HEAD_CRC(2) HEAD_TYPE(1) HEAD_FLAGS(2) HEAD_SIZE(2); HEAD_CRC is the low
16 bits of the CRC32 of the header from HEAD_TYPE to its end. Output is deterministic: a fixed
timestamp and the members' order, so the same members always give the same bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from datetime import datetime
from pathlib import PurePosixPath

from actionrepro.io import atomic_path

MARKER = b"Rar!\x1a\x07\x00"
HEAD_MAIN = 0x73
HEAD_FILE = 0x74
HEAD_ENDARC = 0x7B

LONG_BLOCK = 0x8000  # ADD_SIZE (packed data) follows the header
ENDARC_SKIP_IF_UNKNOWN = 0x4000  # what WinRAR sets on its end block
LHD_LARGE = 0x0100  # HIGH_PACK_SIZE / HIGH_UNP_SIZE present (entries >= 4 GiB)
LHD_UNICODE = 0x0200  # FILE_NAME = ascii name, NUL, RAR-encoded UTF-16
LHD_DIRECTORY = 0x00E0  # all dictionary bits set

HOST_WIN32 = 2  # real dataset archives were made by WinRAR: backslash separators, DOS attributes
UNP_VER = 29  # RAR 2.9 (= 3.x/4.x format), what WinRAR 3/4 writes
METHOD_STORE = 0x30
ATTR_ARCHIVE = 0x20
ATTR_DIRECTORY = 0x10

FIXED_TIME = datetime(2010, 1, 1)

_FILE_HEAD = struct.Struct("<BHHIIBIIBBHI")  # HEAD_TYPE..ATTR, after HEAD_CRC


def dos_time(when: datetime) -> int:
    """MS-DOS date/time as RAR stores it (2-second resolution, years 1980-2107)."""
    return ((when.year - 1980) << 25 | when.month << 21 | when.day << 16
            | when.hour << 11 | when.minute << 5 | when.second // 2)


def _block(body: bytes) -> bytes:
    """Prefix a header body (HEAD_TYPE onwards) with its HEAD_CRC."""
    return struct.pack("<H", zlib.crc32(body) & 0xFFFF) + body


def _encode_name(name: str) -> tuple[bytes, int]:
    """RAR 4 file-name bytes and the flag they need.

    ASCII names are stored as is. Others use the LHD_UNICODE form: an ASCII fallback, a NUL, then
    the UTF-16 code units in RAR's name coding (high byte 0, then per four units a flag byte of
    2-bit opcodes; opcode 2 = both bytes given literally).
    """
    if name.isascii():
        return name.encode("ascii"), 0
    units = name.encode("utf-16-le")
    enc = bytearray([0])
    for start in range(0, len(units), 8):
        chunk = units[start:start + 8]
        enc.append(int("10" * (len(chunk) // 2), 2) << (8 - len(chunk)))
        enc += chunk
    return name.encode("ascii", "replace") + b"\0" + bytes(enc), LHD_UNICODE


def _file_header(arcname: str, size: int, crc: int, is_dir: bool) -> bytes:
    name, flags = _encode_name(arcname.replace("/", "\\"))
    flags |= LONG_BLOCK
    if is_dir:
        flags |= LHD_DIRECTORY
    extra = b""
    if size >= 1 << 32:
        flags |= LHD_LARGE
        extra = struct.pack("<II", size >> 32, size >> 32)
    head_size = 2 + _FILE_HEAD.size + len(extra) + len(name)
    if head_size > 0xFFFF:
        raise ValueError(f"RAR member name too long ({len(name)} bytes): {arcname[:80]}...")
    low = size & 0xFFFFFFFF
    body = _FILE_HEAD.pack(HEAD_FILE, flags, head_size, low, low, HOST_WIN32, crc,
                           dos_time(FIXED_TIME), UNP_VER, METHOD_STORE, len(name),
                           ATTR_DIRECTORY if is_dir else ATTR_ARCHIVE)
    return _block(body + extra + name)


def _entries(members: list[tuple[str, bytes]]) -> list[tuple[str, memoryview | None]]:
    """Members in order, each preceded by directory entries for parents not yet seen.

    A name ending in "/" is an explicit (empty) directory; data None marks a directory.
    Parents are added only for ordinary path components, so a deliberately hostile name such as
    `../evil` (used to test extractors) is written as given without a `..` directory entry.
    """
    out: list[tuple[str, memoryview | None]] = []
    dirs: set[str] = set()
    files: set[str] = set()

    def add_dir(path: str) -> None:
        if path in files:
            raise ValueError(f"RAR member {path!r} is both a file and a folder")
        if path not in dirs:
            dirs.add(path)
            out.append((path, None))

    for arcname, data in members:
        if not isinstance(arcname, str) or not arcname.strip("/") or "\0" in arcname:
            raise ValueError(f"invalid RAR member name {arcname!r}")
        is_dir = arcname.endswith("/")
        name = arcname.rstrip("/")
        parts = PurePosixPath(name).parts
        if not name.startswith("/") and all(p not in (".", "..") and ":" not in p for p in parts):
            for depth in range(1, len(parts)):
                add_dir("/".join(parts[:depth]))
        if is_dir:
            if data:
                raise ValueError(f"RAR directory member {arcname!r} cannot carry data")
            add_dir(name)
            continue
        if name in files or name in dirs:
            raise ValueError(f"duplicate RAR member {arcname!r}")
        files.add(name)
        out.append((name, memoryview(data).cast("B")))  # no copy of large members
    return out


def write_stored_rar(path: str | os.PathLike, members: list[tuple[str, bytes]]) -> None:
    """Write `members` ((arcname, data) pairs, "/" separated) as a RAR 4.x archive at `path`.

    Sub-folders get their own directory entries, as WinRAR writes them. Written atomically.
    """
    entries = _entries(members)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(MARKER)
            fh.write(_block(struct.pack("<BHHHI", HEAD_MAIN, 0, 13, 0, 0)))
            for name, data in entries:
                if data is None:
                    fh.write(_file_header(name, 0, 0, is_dir=True))
                else:
                    fh.write(_file_header(name, len(data), zlib.crc32(data), is_dir=False))
                    fh.write(data)
            fh.write(_block(struct.pack("<BHH", HEAD_ENDARC, ENDARC_SKIP_IF_UNKNOWN, 7)))
            fh.flush()
            os.fsync(fh.fileno())
