"""Is an evaluated run the answer to what the report is asked? A run counts only when the settings,
code and inputs recorded in its provenance_<step>.json files are the ones the params and the source tree give
now; otherwise the report calls it stale and says why, and shows no number for it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from actionrepro import provenance, runs

SHOWN_REASONS = 4


@lru_cache(maxsize=None)
def current_code(step: str, model: str) -> dict[str, str]:
    """{file: sha256} of the code as it is now (cached: one report hashes each file set once;
    collect_results clears the cache at its start)."""
    return provenance.code_files(step, model)


def stale_reasons(run: runs.RunId, params: dict) -> list[str]:
    """Why `run` is not current for `params` (empty: current)."""
    path = run.dir
    records = provenance.read(path)
    weights_step = "train" if run.variant == runs.DENSE else "prune"
    reasons = []
    for step in (weights_step, "evaluate"):
        reasons += _step_reasons(run, step, records.get(step), params)
    if run.variant != runs.DENSE:  # the pruned run starts from the dense run's weights
        reasons += [f"dense parent: {r}" for r in _step_reasons(runs.RunId(run.dataset, run.split, run.model),
                                                                "train", provenance.read(run.dense_dir).get("train"),
                                                                params)]
    reasons += _chain_reasons(path, records.get(weights_step), records.get("evaluate"))
    return reasons


def _step_reasons(run: runs.RunId, step: str, record: dict | None, params: dict) -> list[str]:
    if not record:
        return [f"no {run.dir / provenance.STEP_FILE.format(step)} (made before provenance was recorded)"]
    if not record.get("complete"):
        return [f"{step} did not finish"]
    wanted = provenance.step_settings(step, params, run.model, run.dataset)
    if step == "prune":
        wanted["ratio"] = run.ratio
    reasons = [f"{step} settings differ: {d}" for d in provenance.settings_diff(record.get("settings", {}), wanted)]
    changed = provenance.code_diff(record.get("code", {}), current_code(step, run.model))
    if changed:
        reasons.append(f"{step} code changed since: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}")
    reasons += [f"{step} input changed since: {p}" for p in _changed_inputs(record.get("inputs", {}))]
    return reasons


def _changed_inputs(recorded: dict[str, dict]) -> list[str]:
    """Data inputs whose content differs now (run checkpoints are checked as a chain instead)."""
    changed = []
    for name, was in recorded.items():
        if Path(name).name == "checkpoint.pt":
            continue
        now = provenance.input_record([Path(name)])[name]
        if now != was:
            changed.append(name)
    return changed


def _chain_reasons(path: Path, weights: dict | None, evaluation: dict | None) -> list[str]:
    """The evaluation read the checkpoint the weights step wrote, and that file is still the same."""
    if not weights or not evaluation:
        return []
    key = (path / "checkpoint.pt").as_posix()
    written = (weights.get("outputs") or {}).get("checkpoint.pt")
    read = (evaluation.get("inputs") or {}).get(key)
    if written is None or read is None or written.get("sha256") != read.get("sha256"):
        return ["evaluate read other weights than the ones this run's training wrote"]
    on_disk = (path / "checkpoint.pt").stat().st_size if (path / "checkpoint.pt").is_file() else None
    if on_disk != written.get("size"):
        return ["checkpoint.pt changed after evaluation"]
    return []


def summary(reasons: list[str]) -> str:
    more = len(reasons) - SHOWN_REASONS
    return "stale: " + "; ".join(reasons[:SHOWN_REASONS]) + (f"; and {more} more" if more > 0 else "")


def environments(records: dict[str, dict]) -> dict[str, str]:
    """{run dir: environment key} of each run's weights step, for flagging runs made elsewhere."""
    out = {}
    for run_dir, record in records.items():
        env = record.get("environment")
        if env:
            out[run_dir] = provenance.environment_key(env)
    return out

