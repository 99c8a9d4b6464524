"""requirements.lock against pyproject.toml: every declared dependency (the test extra too) pinned
at a version its specifier admits, every pin exact and hashed, and the header's input digest current.

Fails after a dependency change in pyproject.toml until `make lock` has been run. No network.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"

# The one platform the lock is made for (make lock: --python-version 3.11, x86_64-manylinux_2_28).
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _lock_inputs():
    spec = importlib.util.spec_from_file_location("lock_inputs", ROOT / "tools" / "lock_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_inputs = _lock_inputs()


def parse_lock(text: str) -> list[dict]:
    """One entry per requirement: its line (continuations joined), name, version, hashes."""
    entries = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        hashes = re.findall(r"--hash=(\S+)", line)
        requirement = re.sub(r"--hash=\S+", "", line).strip()
        entries.append({"line": requirement, "hashes": hashes})
    for entry in entries:
        if entry["line"].startswith("-"):  # an option line (-e, --index-url, -r ...): no pin
            entry["name"] = entry["version"] = None
            continue
        req = Requirement(entry["line"])
        specs = list(req.specifier)
        entry["name"] = canonicalize_name(req.name)
        entry["version"] = specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None
        entry["marker"] = req.marker
    return entries


@pytest.fixture(scope="module")
def entries():
    assert LOCK.is_file(), "requirements.lock is missing: run `make lock`"
    return parse_lock(LOCK.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pins(entries):
    return {e["name"]: e["version"] for e in entries if e["name"]}


def declared() -> list[Requirement]:
    inputs = lock_inputs.inputs(ROOT / "pyproject.toml")
    lines = inputs["dependencies"] + [r for extra in inputs["extras"].values() for r in extra]
    return [Requirement(line) for line in lines]


def test_every_line_is_an_exact_hashed_pin(entries):
    assert len(entries) > 50
    for entry in entries:
        assert entry["name"], f"not a pinned requirement: {entry['line']!r}"
        assert entry["version"], f"not pinned with ==: {entry['line']!r}"
        Version(entry["version"])  # a plain version, no wildcard
        assert entry["hashes"], f"no --hash for {entry['line']!r}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in entry["hashes"]), entry["line"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_every_declared_dependency_is_pinned_within_its_specifier(pins):
    for req in declared():
        if req.marker is not None and not req.marker.evaluate({**TARGET, "extra": "test"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {req} of pyproject.toml: run `make lock`"
        )


def test_header_records_the_current_inputs():
    recorded = lock_inputs.recorded_digest(LOCK)
    assert recorded, "requirements.lock has no '# inputs sha256:' line: run `make lock`"
    assert recorded == lock_inputs.digest(ROOT / "pyproject.toml"), (
        "pyproject.toml's dependencies changed since requirements.lock was made: run `make lock`"
    )


def test_torch_is_the_default_cuda_build(pins):
    # The default PyPI wheel pulls its CUDA runtime as wheels; a CPU-only lock would lack them.
    assert "+" not in pins["torch"] and "+" not in pins["torchvision"]
    assert "triton" in pins
    assert any(name.startswith("nvidia-") for name in pins)


def test_parser_catches_what_the_lock_must_not_have():
    bad = parse_lock("numpy>=2 \\\n    --hash=sha256:" + "0" * 64 + "\nrequests==2.0\n-e .\n")
    assert [e["version"] for e in bad] == [None, "2.0", None]
    assert [bool(e["hashes"]) for e in bad] == [True, False, False]


def test_digest_ignores_what_is_not_an_input(tmp_path):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    edited = tmp_path / "pyproject.toml"
    edited.write_text(text.replace('description = "', 'description = "Edited. '), encoding="utf-8")
    assert lock_inputs.digest(edited) == lock_inputs.digest(ROOT / "pyproject.toml")
    edited.write_text(text.replace('"tqdm>=4.66",', '"tqdm>=4.66",\n    "unrar-free>=1",'), encoding="utf-8")
    assert lock_inputs.digest(edited) != lock_inputs.digest(ROOT / "pyproject.toml")
