"""User-facing errors: the CLI prints these without a traceback and exits non-zero.

Every message names what is wrong (file, key, video, URL) and what would fix it.
"""


class ActionReproError(Exception):
    """A failure the user can act on; `str(err)` is the whole message."""

    exit_code = 1


class ConfigError(ActionReproError):
    """params.yaml (or a --configfile) does not match the schema."""

    exit_code = 2


class DataError(ActionReproError):
    """Input data is missing, corrupt, or does not match the official format."""


def _size(n: int | None) -> str:
    """Bytes as a short human string (`1.5 GB`); `unknown` for None."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


class DiskFullError(ActionReproError):
    """No space (or quota) left while writing `path`: one message with the space needed and free.

    Plain fields (path, needed, free, note) so a worker process can send it back as a record and
    the step re-raise it unchanged.
    """

    def __init__(self, path, needed: int | None = None, free: int | None = None, note: str = ""):
        self.path, self.needed, self.free, self.note = str(path), needed, free, note
        need = f"about {_size(needed)} needed, " if needed is not None else ""
        super().__init__(
            f"no space left on the device holding {self.path} ({need}{_size(free)} free). "
            f"Free space there (or move the data folder to a larger disk) and re-run; "
            f"finished outputs are kept and the step resumes{'. ' + note if note else ''}")

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return type(self), (self.path, self.needed, self.free, self.note)

    def record(self) -> dict:
        """The fields as a plain dict (a worker's result record)."""
        return {"path": self.path, "needed": self.needed, "free": self.free}


class RunLockedError(ActionReproError):
    """Another process holds the run directory's lock."""
