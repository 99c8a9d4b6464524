"""The run-directory contract: where a run lives, what its variants are called, how to redo it, and
the one loader of its weights (dense or pruned).

A run is (dataset, split, model, variant) and lives in runs/<dataset>/split<k>/<model>/<variant>,
variant `dense` or `pruned-<ratio>` (the ratio written with {:g}, as the workflow writes it).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from actionrepro.engine import checkpoint
from actionrepro.errors import ActionReproError, RunLockedError
from actionrepro.inputs import InputSpec
from actionrepro.io import remove_atomic_temps

RUNS = Path("runs")
LOCK_FILE = ".lock"
LOCK_WAIT_S = 5.0  # a short wait: a step that just finished may still be closing its files
DENSE = "dense"
PRUNED_PREFIX = "pruned-"
EXTERNAL_PREFIX = "external-"  # runs of checkpoints trained elsewhere (actionrepro evaluate-checkpoint)


@dataclass(frozen=True)
class RunId:
    dataset: str
    split: int
    model: str
    variant: str = DENSE

    @property
    def dir(self) -> Path:
        return run_dir(self.dataset, self.split, self.model, self.variant)

    @property
    def dense_dir(self) -> Path:
        return run_dir(self.dataset, self.split, self.model, DENSE)

    @property
    def ratio(self) -> float | None:
        """The pruning ratio of a pruned variant; None for dense."""
        return None if self.variant == DENSE else variant_ratio(self.variant)


def run_dir(dataset: str, split: int, model: str, variant: str = DENSE) -> Path:
    return RUNS / dataset / f"split{split}" / model / variant


def variant_name(ratio: float) -> str:
    """The run-directory name of a pruning ratio (`pruned-0.3`)."""
    return f"{PRUNED_PREFIX}{float(ratio):g}"


def external_variant(name: str) -> str:
    """The run-directory name of an external checkpoint called `name` (`external-<name>`)."""
    if not name or not all(c.isalnum() or c in "._-" for c in name) or name.startswith("."):
        raise ActionReproError(f"external run name {name!r} must be letters, digits, '.', '_' or '-' "
                               "(it names a directory); pass --name NAME")
    return EXTERNAL_PREFIX + name


def variant_names(ratios: list[float]) -> list[str]:
    """dense plus one pruned variant per ratio."""
    return [DENSE] + [variant_name(r) for r in ratios]


def variant_ratio(variant: str) -> float:
    """0 for dense, r for pruned-r; NaN for a name that is neither."""
    if variant == DENSE:
        return 0.0
    try:
        return float(variant.removeprefix(PRUNED_PREFIX))
    except ValueError:
        return float("nan")


def run_id_of(path: str | Path) -> RunId | None:
    """The RunId of a runs/<ds>/split<k>/<model>/<variant> directory; None for any other path."""
    parts = Path(path).parts
    if len(parts) < 4 or not parts[-3].startswith("split") or not parts[-3][5:].isdigit():
        return None
    return RunId(parts[-4], int(parts[-3][5:]), parts[-2], parts[-1])


# ---------------------------------------------------------------- one process per run directory
@contextlib.contextmanager
def run_lock(path: str | Path, wait_s: float = LOCK_WAIT_S, create: bool = True) -> Iterator[Path]:
    """Hold <path>/.lock (fcntl.flock) while a step works in the run directory `path`.

    Two processes training (or pruning, evaluating) into one run directory would overwrite each
    other's checkpoints; the second one waits up to `wait_s` seconds, then refuses with
    RunLockedError naming the holder's pid and host (written into the lock file). The kernel
    releases the lock when its holder dies, so a killed run never leaves a stale lock. Once held,
    the temporary files of an earlier killed or failed writer are removed (safe only now). Under
    torchrun, rank 0 holds the lock for the whole group. create=False: a missing directory is not
    made (nor locked), for steps that only read and add to an existing run (evaluate).
    """
    path = Path(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    if not _lock_rank() or not path.is_dir():
        yield path
        return
    lock = path / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, lock, wait_s)
        _write_holder(fd)
        remove_atomic_temps(path)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock_rank() -> bool:
    """False for the non-zero ranks of a torchrun group (rank 0 locks for them)."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0"


def _acquire(fd: int, lock: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RunLockedError(
                    f"{lock.parent} is in use by another process ({lock_holder(lock)}, recorded in {lock}); "
                    "two processes must not write one run directory. Wait for it to finish or stop it, "
                    "then re-run (the lock is freed the moment that process ends)") from None
            time.sleep(0.1)


def _write_holder(fd: int) -> None:
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n".encode(), 0)


def lock_holder(lock: Path) -> str:
    """What the lock file says about its holder: `pid N on host H since T`."""
    try:
        return lock.read_text().strip() or "holder not recorded yet"
    except OSError:
        return "holder unknown"


@contextlib.contextmanager
def no_stale_metrics(path: str | Path) -> Iterator[None]:
    """If the block fails, drop a metrics.json older than checkpoint.pt: it describes an earlier run
    whose checkpoint this failed run has already replaced, so it must not look finished."""
    try:
        yield
    except BaseException:
        metrics, ckpt = Path(path) / "metrics.json", Path(path) / "checkpoint.pt"
        with contextlib.suppress(OSError):
            if metrics.stat().st_mtime_ns < ckpt.stat().st_mtime_ns:
                metrics.unlink()
        raise


# ---------------------------------------------------------------- redo commands
def step_commands(run: RunId, params_file: str | None = None) -> list[str]:
    """The CLI steps that produce this run's weights and evaluation, once the data steps are done."""
    opt = f" --params {params_file}" if params_file else ""
    if run.variant.startswith(EXTERNAL_PREFIX):
        name = run.variant.removeprefix(EXTERNAL_PREFIX)
        return [f"actionrepro evaluate-checkpoint {run.dataset} {run.split} {run.model} CHECKPOINT --name {name}{opt}"]
    cmds = [f"actionrepro train {run.dataset} {run.split} {run.model}{opt}"]
    if run.variant != DENSE:
        cmds.append(f"actionrepro prune {run.dataset} {run.split} {run.model} "
                    f"{run.variant.removeprefix(PRUNED_PREFIX)}{opt}")
    cmds.append(f"actionrepro evaluate {run.dataset} {run.split} {run.model} --variant {run.variant}{opt}")
    return cmds


def weights_command(path: str | Path) -> str:
    """The command that (re)makes the weights of the run directory `path` (train, or prune)."""
    run = run_id_of(path)
    if run is None:
        return "actionrepro train DATASET SPLIT MODEL (or prune DATASET SPLIT MODEL RATIO)"
    commands = step_commands(run)
    return commands[0] if run.variant.startswith(EXTERNAL_PREFIX) else commands[-2]


def reproduce_command(run: RunId, params_file: str) -> str:
    """One Snakemake command that (re)builds this run's eval.json and everything it depends on."""
    config = "" if params_file == "params.yaml" else f" --configfile {params_file}"
    return f"snakemake --cores all{config} {run.dir.as_posix()}/eval.json"


# ---------------------------------------------------------------- run files
def read_json(path: Path, redo: str = "re-run the step that writes it") -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ActionReproError(f"{path} not found; {redo}") from err
    except json.JSONDecodeError as err:
        raise ActionReproError(f"{path} is not valid JSON ({err}); {redo}") from err


def read_model_record(path: Path) -> dict:
    """model.json of a run: how to rebuild its network (name, scale, options, classes, pruning)."""
    redo = f"re-run `{weights_command(path)}`"
    meta_path = path / "model.json"
    if not meta_path.is_file():
        raise ActionReproError(f"{meta_path} not found: run `{weights_command(path)}` first or check the run directory")
    meta = read_json(meta_path, redo)
    missing = [k for k in ("name", "scale", "num_classes") if k not in meta]
    if missing:
        raise ActionReproError(f"{meta_path} lacks key(s) {', '.join(missing)}; {redo}")
    return meta


def plain_state_dict(state: dict) -> dict:
    """A state dict without the wrappers' prefixes (DistributedDataParallel, torch.compile)."""
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def finished_weights(path: Path) -> dict:
    """The selected weights of a finished run (checkpoint.pt, weights_only)."""
    redo = weights_command(path)
    ckpt_path = path / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise ActionReproError(f"{ckpt_path} not found: run `{redo}` first or check the run directory")
    state = checkpoint.load(ckpt_path)
    if state.get("complete") is not True:
        raise ActionReproError(f"{ckpt_path} is from a run that has not finished (epoch "
                               f"{state.get('epoch', '?')}); re-run `{redo}` to resume it")
    if not isinstance(state.get("model"), dict):
        raise ActionReproError(f"{ckpt_path} holds no 'model' state dict; delete it and re-run `{redo}`")
    return plain_state_dict(state["model"])


def load_model(path: str | Path) -> nn.Module:
    """The run's network in eval mode on the CPU: rebuilt from model.json (a pruned run replays its
    recorded structure), then its checkpoint's weights; nothing is unpickled."""
    from actionrepro.models.registry import build_model

    path = Path(path)
    meta = read_model_record(path)
    redo = weights_command(path)
    record = meta.get("pruning")
    pruned = path.name.startswith(PRUNED_PREFIX)
    if pruned and not isinstance(record, dict):
        raise ActionReproError(f"{path / 'model.json'} holds no pruning record: {path} is not a pruned run "
                               f"(dense runs load with their own state dict); re-run `{redo}`")
    options = dict(meta.get("options") or {})
    if pruned:
        from actionrepro.models.registry import model_options

        if "pretrained" in model_options(meta["name"]):
            options["pretrained"] = "none"  # every weight comes from the checkpoint: fetch no pretrained file
    with torch.inference_mode(False):  # a pruning replay traces the model through autograd
        model = build_model(meta["name"], meta["scale"], int(meta["num_classes"]), options)
        if pruned:
            from actionrepro.pruning import structure

            try:
                structure.replay(model, record)
            except ValueError as err:
                raise ActionReproError(f"{path / 'model.json'}: the recorded pruning does not fit model "
                                       f"{meta['name']!r} as built now (its code or options changed since "
                                       f"pruning): {err}. Re-run `{redo}`") from err
        weights = finished_weights(path)
        try:
            model.load_state_dict(weights)
        except RuntimeError as err:
            what = "the pruned structure recorded in" if pruned else f"model {meta['name']!r} built from"
            raise ActionReproError(f"{path / 'checkpoint.pt'} does not fit {what} {path / 'model.json'} "
                                   f"(the model code or its options changed since): {err}. Re-run `{redo}`") from err
    _check_input_spec(model, meta, path, redo)
    return model.eval()


def _check_input_spec(model: nn.Module, meta: dict, path: Path, redo: str) -> None:
    spec = getattr(model, "input_spec", None)
    if not isinstance(spec, InputSpec):
        raise ActionReproError(f"the model loaded from {path} declares no input_spec (InputSpec); "
                               "the registry must attach one to every model")
    recorded = meta.get("input_spec")
    if recorded is not None and dict(recorded) != spec.to_dict():
        raise ActionReproError(f"{path / 'model.json'} records input_spec {recorded} but model {meta['name']!r} "
                               f"now declares {spec.to_dict()}; re-run `{redo}` or restore the options")


# ---------------------------------------------------------------- provenance and starting over
WEIGHT_FILES = ("checkpoint.pt", "history.csv", "metrics.json")
EVAL_PATTERNS = ("eval.json", "eval_*.json", "predictions_*.csv", "scores_*.npy")


def data_inputs(dataset: str, split: int, two_stream: bool) -> list[Path]:
    """The data files a model step reads: the split's manifest and class index, the store summaries."""
    from actionrepro import paths

    files = [paths.manifests_dir(dataset) / f"split{split}.csv", paths.manifests_dir(dataset) / "classes.csv",
             paths.frames_dir(dataset) / "summary.json"]
    return files + ([paths.flow_dir(dataset) / "summary.json"] if two_stream else [])


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain process: the one that writes run records."""
    import os

    return os.environ.get("RANK", "0") == "0"


def begin_step(path: Path, key: str, record: dict) -> None:
    """Before a step writes into run directory `path`: refuse outputs made from another params file
    under other settings (they are not ours to replace), and when the settings, code or inputs differ
    from the recorded ones, remove what the old run left, so nothing stale can look current."""
    from actionrepro import provenance

    if not is_main_process():
        return
    previous = provenance.read(path).get(key)
    if previous:
        _refuse_other_params_file(path, key, previous, record)
        if _differs(previous, record):
            start_over(path, key)
    elif _has_outputs(path, key):  # made before provenance was recorded: nothing says what it is
        start_over(path, key)
    provenance.write(path, key, {**record, "complete": False})


def finish_step(path: Path, key: str, record: dict, outputs: list[str]) -> None:
    """Record the step as complete, with digests of the files it leaves for the next step."""
    from actionrepro import provenance

    if not is_main_process():
        return
    done = {name: provenance.input_record([path / name])[(path / name).as_posix()] for name in outputs}
    provenance.write(path, key, {**record, "complete": True, "outputs": done})


def start_over(path: Path, key: str) -> None:
    """Remove a step's outputs and everything derived from them (evaluation after new weights)."""
    from actionrepro import provenance

    patterns = EVAL_PATTERNS if key == "evaluate" else WEIGHT_FILES + EVAL_PATTERNS
    for pattern in patterns:
        for old in path.glob(pattern):
            old.unlink()
    provenance.write(path, key, None)
    if key != "evaluate":
        provenance.write(path, "evaluate", None)


def _has_outputs(path: Path, key: str) -> bool:
    patterns = EVAL_PATTERNS if key == "evaluate" else WEIGHT_FILES
    return any(any(path.glob(p)) for p in patterns)


def _differs(previous: dict, record: dict) -> bool:
    return (previous.get("settings") != record["settings"] or previous.get("code") != record["code"]
            or previous.get("inputs") != record["inputs"])


def _refuse_other_params_file(path: Path, key: str, previous: dict, record: dict) -> None:
    theirs, ours = previous.get("params_file"), record.get("params_file")
    if theirs and ours and theirs != ours and previous.get("settings") != record["settings"]:
        raise ActionReproError(
            f"{path} holds {key} outputs made from {theirs} under other settings; this command reads {ours}. "
            f"Refusing to replace them: pass --params {theirs} to continue that run, or delete {path} "
            f"to redo it under {ours}")
