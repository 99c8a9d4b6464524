"""Atomic writes and checksums, so a killed step never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from actionrepro.errors import DiskFullError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What torch.save's C++ writer raises (a RuntimeError, no errno) when a write to its file fails.
TORCH_WRITE_FAILURES = ("basic_ios::clear", "file write failed", "unexpected pos", "failed writing file")


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, and for torch.save's failed write (RuntimeError without errno)."""
    if isinstance(err, OSError):
        return err.errno in DISK_FULL_ERRNOS
    return isinstance(err, RuntimeError) and any(m in str(err) for m in TORCH_WRITE_FAILURES)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system of `path` (its nearest existing parent); None if unknown."""
    here = Path(path).absolute()
    for folder in (here, *here.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def disk_full_error(path: str | os.PathLike, needed: int | None = None, note: str = "") -> DiskFullError:
    """The DiskFullError for a failed write of `path`, with the free space measured now."""
    return DiskFullError(path, needed, free_bytes(path), note)


@contextlib.contextmanager
def disk_full_guard(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a disk-full failure inside the block (OSError or torch's write error) into DiskFullError(path)."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(getattr(err, "filename", None) or path, needed) from err


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    A full disk (or quota) inside the block raises DiskFullError naming `final` (and `needed`
    bytes, when the caller knows them); the temporary file is removed in every case.
    """
    final = Path(final)
    tmp_path = None
    with disk_full_guard(final, needed):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            if tmp_path.exists():  # mkstemp makes 0600; outputs are shared data, so honour the umask
                os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, final)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def is_atomic_temp(name: str) -> bool:
    """True for atomic_path's temporary names: `.<final name>.<random>.tmp`."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def remove_atomic_temps(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files a killed or failed writer left in `folder`; return them.

    Only safe where no other process is writing there (a run directory under its lock, a step's
    own output folder at its start).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = [p for p in found if p.is_file() and is_atomic_temp(p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final, needed=len(data)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def atomic_write_json(final: str | os.PathLike, obj) -> None:
    atomic_write_text(final, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(final: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_path(final) as tmp:
        frame.to_csv(tmp, index=False)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, streamed so multi-GB archives do not load into memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
