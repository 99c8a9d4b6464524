"""What a run was made from, recorded beside it, so that a number can be traced and checked: the
code (commit, dirty tree, digests of the files the step ran), the environment (package versions,
CPU model and flags or GPU), the settings the step read (the params keys of actionrepro.dag), the
params file and any one-off overrides, the inputs (digests) and the seed.

Each run directory holds one record per step that wrote into it: provenance_train.json (or
provenance_prune.json) and provenance_evaluate.json, one file per step so that each front door can
declare it as that step's output. The report compares these records with what it is asked about and
calls a result stale, never current, when settings, inputs or code differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from actionrepro import config, dag
from actionrepro.io import atomic_write_json, file_digest

FILE_NAME = "provenance.json"  # the report folder's record
STEP_FILE = "provenance_{}.json"
PACKAGES = ("torch", "torchvision", "torch-pruning", "decord", "opencv-contrib-python-headless", "numpy",
            "actionrepro")
# Steps whose settings depend on the model: the model's own options, and its code.
MODEL_STEPS = ("train", "prune", "evaluate")


# ---------------------------------------------------------------- settings and code
def step_settings(step: str, params: dict, model: str | None = None, dataset: str | None = None) -> dict:
    """The values of the params keys `step` reads (dag.STEP_PARAMS), the architectures narrowed to
    `model`'s own options and the recipes to `model`'s recipe (its anchor left out: words, not
    settings): what a change must touch for this run to be redone. With `dataset` too, the values
    are the resolved ones of that run (config.resolve: global blocks overlaid with the recipe)."""
    if model is not None and dataset is not None and step in MODEL_STEPS:
        params = config.resolve(params, dataset, model)
    values = {key: dag.lookup(params, key) for key in dag.STEP_PARAMS[step]}
    if model is not None and "architectures" in values:
        values["architectures"] = {model: (values["architectures"] or {}).get(model, {})}
    if model is not None and "recipes" in values:
        values["recipes"] = {model: dag.recipe_settings(params, model, dataset)}
    return dag.key_sorted(values)


def digest(value) -> str:
    """sha256 of the canonical JSON of `value`."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_files(step: str, model: str | None = None) -> dict[str, str]:
    """{source file: sha256} of everything a job of `step` runs (and of `model`'s files)."""
    files = set(dag.step_code(step))
    if model is not None and step in MODEL_STEPS:
        files |= set(dag.model_code(model))
    return {path: file_digest(_source(path)) for path in sorted(files)}


def _source(shown: str) -> Path:
    path = Path(shown)
    return path if path.is_absolute() else Path.cwd() / path


# ---------------------------------------------------------------- environment
def git_state(root: str | Path = ".") -> dict:
    """{"commit": HEAD or "unknown", "dirty": tracked files differ from HEAD (None: unknown)}."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit if commit and len(commit) == 40 else "unknown",
            "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_info() -> dict:
    """CPU model and a digest of its instruction-set flags (a different kernel path can change bits)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = value.strip()
    except OSError:
        pass
    return {"model": model, "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "avx512": "avx512f" in flags.split(), "cores": os.cpu_count()}


def gpu_info() -> dict | None:
    """GPU name, driver-visible CUDA and cuDNN versions when torch sees a GPU; None otherwise."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    return {"name": torch.cuda.get_device_name(index), "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "capability": list(torch.cuda.get_device_capability(index))}


def environment() -> dict:
    torch = sys.modules.get("torch")
    return {"packages": package_versions(), "cpu": cpu_info(), "gpu": gpu_info(),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "platform": platform.platform()}


def environment_key(env: dict) -> str:
    """What must agree for two runs' numbers to be comparable bit for bit: versions, CPU, GPU."""
    return digest({"packages": env.get("packages"), "cpu": {k: (env.get("cpu") or {}).get(k)
                                                            for k in ("model", "flags_sha256")},
                   "gpu": (env.get("gpu") or {}).get("name")})


# ---------------------------------------------------------------- records
def input_record(paths: list[Path]) -> dict[str, dict]:
    """{path: {"sha256", "size"}} of the files a step read (absent files recorded as missing)."""
    record = {}
    for path in paths:
        path = Path(path)
        record[path.as_posix()] = ({"sha256": file_digest(path), "size": path.stat().st_size}
                                   if path.is_file() else {"missing": True})
    return record


def make_record(step: str, params: dict, *, params_file: str | None, model: str | None, inputs: list[Path],
                overrides: list[str] = (), dataset: str | None = None) -> dict:
    settings = step_settings(step, params, model, dataset)
    return {
        "step": step,
        "params_file": params_file,
        "overrides": list(overrides),
        "settings": settings,
        "settings_sha256": digest(settings),
        "seed": params.get("seed"),
        "code": code_files(step, model),
        "git": git_state(),
        "environment": environment(),
        "inputs": input_record(inputs),
    }


def read_file(path: Path) -> dict:
    """A JSON record ({} when absent or unreadable: nothing is known)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read(run_dir: Path) -> dict:
    """{step: record} of every step that recorded itself in `run_dir`."""
    prefix, suffix = STEP_FILE.split("{}")
    records = {}
    for path in sorted(Path(run_dir).glob(STEP_FILE.format("*"))):
        record = read_file(path)
        if record:
            records[path.name[len(prefix):-len(suffix)]] = record
    return records


def write(run_dir: Path, key: str, record: dict | None) -> None:
    """Set (or, with None, remove) one step's record in `run_dir`, atomically."""
    path = Path(run_dir) / STEP_FILE.format(key)
    if record is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, record)


def settings_diff(recorded: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, each as 'key: old -> new' (for messages and the report)."""
    out = []
    for key in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(key, "<absent>"), wanted.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            out += settings_diff(old, new, name + ".")
        elif old != new:
            out.append(f"{name}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}")
    return out


def code_diff(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """Source files added, removed or changed since the record."""
    return sorted(p for p in set(recorded) | set(current) if recorded.get(p) != current.get(p))
