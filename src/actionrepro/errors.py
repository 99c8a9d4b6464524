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
