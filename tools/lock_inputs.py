"""What requirements.lock was made from: the dependency inputs of pyproject.toml, and their digest.

`make lock` runs this after `uv pip compile` to write the digest into the lock's header;
tests/test_lock.py recomputes it, so a change of dependencies in pyproject.toml without a new
lock fails the tests. Only the inputs count (requires-python, dependencies, the locked extras),
not the rest of pyproject.toml, so editing the description does not invalidate the lock.

    python tools/lock_inputs.py                     # print the digest
    python tools/lock_inputs.py --stamp requirements.lock   # write it into the lock's header
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("test",)  # the extras that `make lock` passes to uv (--extra)
DIGEST_PREFIX = "# inputs sha256: "
# The lines the header gets after uv's own two (the command it ran).
NOTE = """\
# Locked environment for CPython 3.11 on Linux x86-64 (manylinux_2_28): every package pinned, with
# hashes, torch from PyPI (its default CUDA build, which also runs on CPU) with its nvidia-*/triton
# wheels. `make install` installs exactly this (pip --require-hashes, then the project --no-deps).
# Refresh: `make lock` (keeps these pins, adds/drops what pyproject.toml changed);
# `make lock LOCK_UPGRADE=--upgrade` moves every pin to its newest release. Made with uv {uv}.
# The digest below is that of pyproject.toml's dependency inputs (tools/lock_inputs.py)."""


def inputs(pyproject: Path = ROOT / "pyproject.toml") -> dict:
    project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    return {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(project.get("dependencies", [])),
        "extras": {extra: sorted(optional.get(extra, [])) for extra in EXTRAS},
    }


def digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    text = json.dumps(inputs(pyproject), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in Path(lock).read_text(encoding="utf-8").splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX):].strip()
    return None


def stamp(lock: Path, uv_version: str, pyproject: Path = ROOT / "pyproject.toml") -> None:
    """Put the note and the digest after uv's header comment (replacing any earlier ones)."""
    lines = Path(lock).read_text(encoding="utf-8").splitlines()
    ours = set(NOTE.format(uv=uv_version).splitlines())
    lines = [l for l in lines if not l.startswith(DIGEST_PREFIX) and l not in ours]
    head = 0
    while head < len(lines) and lines[head].startswith("#"):
        head += 1
    added = NOTE.format(uv=uv_version).splitlines() + [DIGEST_PREFIX + digest(pyproject)]
    Path(lock).write_text("\n".join(lines[:head] + added + lines[head:]) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamp", type=Path, metavar="LOCK", help="write the digest into this lock's header")
    parser.add_argument("--uv-version", default="?", help="the uv that made the lock, for the header")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    if args.stamp:
        stamp(args.stamp, args.uv_version, args.pyproject)
    else:
        print(digest(args.pyproject))
    return 0


if __name__ == "__main__":
    sys.exit(main())
