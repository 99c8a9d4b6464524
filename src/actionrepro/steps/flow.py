"""The `actionrepro flow` step: optical flow for every stored video of data/frames/<ds> into
data/flow/<ds> (stores, index.csv, quarantine.csv, progress.jsonl, summary.json written last)."""

from __future__ import annotations

import json
import logging
import time

import pandas as pd
from tqdm import tqdm

from actionrepro import paths
from actionrepro.data import journal, store
from actionrepro.data.flow import (ALGORITHMS, FARNEBACK, IMPLEMENTATION, INDEX_COLUMNS, JOURNAL, QUARANTINE_COLUMNS,
                                   flow_results)
from actionrepro.errors import ActionReproError, DataError, DiskFullError
from actionrepro.io import atomic_write_csv, atomic_write_json, atomic_write_text, disk_full_guard
from actionrepro.steps import add_dataset_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_dataset_argument(parser)


def run(args, params: dict) -> None:
    compute_flow(args.dataset, params, workers=args.threads)


def read_frames_index(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(index, quarantine) of the decode step's output; DataError if decode has not finished."""
    root = paths.frames_dir(dataset)
    if not (root / "summary.json").is_file() or not (root / "index.csv").is_file():
        raise DataError(f"{root} has no finished frame store (index.csv and summary.json are written when "
                        f"decoding completes); run `actionrepro decode {dataset}` first")
    index = pd.read_csv(root / "index.csv", dtype={"video_id": str, "path": str, "store_path": str},
                        keep_default_na=False, na_filter=False)
    missing = [c for c in ("video_id", "path", "store_path", "num_frames") if c not in index.columns]
    if missing:
        raise DataError(f"{root / 'index.csv'} lacks column(s) {', '.join(missing)}; "
                        f"re-run `actionrepro decode {dataset}`")
    quarantine_file = root / "quarantine.csv"
    quarantine = (pd.read_csv(quarantine_file, dtype=str, keep_default_na=False, na_filter=False)
                  if quarantine_file.is_file() else pd.DataFrame(columns=QUARANTINE_COLUMNS))
    return index, quarantine


def compute_flow(dataset: str, params: dict, workers: int) -> None:
    """Compute optical flow for every stored video of data/frames/<ds> into data/flow/<ds>."""
    algorithm, bound = params["flow"]["algorithm"], float(params["flow"]["bound"])
    if algorithm not in ALGORITHMS:
        raise ActionReproError(f"flow.algorithm is {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    quality = int(params["decode"]["jpeg_quality"])
    settings = {"algorithm": algorithm, "bound": bound, "jpeg_quality": quality, "store_version": store.VERSION}
    if algorithm == "farneback":
        settings["farneback"] = FARNEBACK
    else:
        settings["implementation"] = IMPLEMENTATION[algorithm]

    frames_root, out_root = paths.frames_dir(dataset), paths.flow_dir(dataset)
    index, decode_quarantine = read_frames_index(dataset)
    finished = journal.start(out_root, settings, "store_path")
    journal_file = out_root / JOURNAL
    t0 = time.perf_counter()

    done: dict[str, dict] = {}
    todo: list[int] = []
    for i, row in index.iterrows():
        if journal.reusable(finished.get(row.store_path), out_root / row.store_path, frames_root / row.store_path,
                            "flow_size", "frames_size"):
            done[row.store_path] = finished[row.store_path]
        else:
            todo.append(i)
    reused = len(done)
    todo.sort(key=lambda i: -int(index.num_frames[i]))  # longest first: no long video finishes alone
    tasks = [(str(frames_root / index.store_path[i]), str(out_root / index.store_path[i]), algorithm, bound, quality)
             for i in todo]
    workers = max(1, int(workers or 1))
    log.info("flow %s (%s, bound %g): %d stored videos, %d already done, %d to compute with %d worker(s); "
             "%d quarantined by decode are skipped", dataset, algorithm, bound, len(index), reused, len(todo),
             min(workers, max(len(todo), 1)), len(decode_quarantine))

    quarantined: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    compute_s = 0.0
    try:
        with disk_full_guard(journal_file), journal.open_for_append(journal_file) as jf, \
                tqdm(total=len(todo), desc=f"flow {dataset}", unit="video", mininterval=1.0) as bar:
            for t, record in flow_results(tasks, workers):
                row = index.loc[todo[t]]
                entry = {"video_id": row.video_id, "path": row.path}
                if record["status"] == "stored":
                    compute_s += record["seconds"]
                    rec = {**entry, "store_path": row.store_path,
                           **{k: record[k] for k in ("num_frames", "height", "width")},
                           "flow_size": (out_root / row.store_path).stat().st_size,
                           "frames_size": (frames_root / row.store_path).stat().st_size,
                           "seconds": round(record["seconds"], 4), "settings": settings}
                    jf.write(json.dumps(rec) + "\n")
                    jf.flush()
                    done[row.store_path] = rec
                else:
                    target = quarantined if record["status"] == "quarantined" else failed
                    target[row.store_path] = {**entry, "reason": record["reason"], "detail": record["detail"]}
                    log.warning("%s: no flow (%s): %s", row.path, record["reason"], record["detail"])
                bar.update(1)
    except DiskFullError as err:
        raise journal.stopped_by_full_disk(err, out_root, f"flow {dataset}", len(done)) from err

    order = list(index.store_path)
    flow_index = pd.DataFrame([done[s] for s in order if s in done], columns=INDEX_COLUMNS)
    bad = pd.DataFrame([quarantined[s] for s in order if s in quarantined], columns=QUARANTINE_COLUMNS)
    atomic_write_text(journal_file, "".join(json.dumps(done[s]) + "\n" for s in order if s in done))
    if failed:
        listing = "\n  ".join(f"{r['path']}: {r['detail']}" for r in list(failed.values())[:20])
        raise DataError(f"flow {dataset}: {len(failed)} frame store(s) could not be read:\n  {listing}\n"
                        f"The {len(done)} finished flow stores are kept. Delete the broken stores under {frames_root}, "
                        f"re-run `actionrepro decode {dataset}`, then `actionrepro flow {dataset}` (it resumes).")
    atomic_write_csv(out_root / "index.csv", flow_index)
    atomic_write_csv(out_root / "quarantine.csv", bad)

    wall_s = time.perf_counter() - t0
    computed = {index.store_path[i] for i in todo}
    computed_frames = sum(rec["num_frames"] for s, rec in done.items() if s in computed)
    summary = {
        "dataset": dataset,
        "algorithm": algorithm,
        "bound": bound,
        "quantisation": "q = round((clip(v, -bound, bound) + bound) * 255 / (2 * bound)); "
                        "v = q * 2 * bound / 255 - bound",
        "videos": int(len(index)),
        "stored": int(len(flow_index)),
        "flow_frames": int(flow_index.num_frames.sum()) if len(flow_index) else 0,
        "quarantined": {"too_short": int(len(bad))},
        "skipped_quarantined_by_decode": int(len(decode_quarantine)),
        "settings": {**settings, "workers": workers},
        "this_run": {"computed": len(todo) - len(quarantined), "reused": reused,
                     "wall_s": round(wall_s, 3), "compute_s": round(compute_s, 3),
                     "ms_per_flow_frame": round(1000 * compute_s / computed_frames, 3) if computed_frames else None},
    }
    atomic_write_json(out_root / "summary.json", summary)
    log.info("flow %s: %d stored, %d too short, %d skipped (quarantined by decode), %.1f s",
             dataset, len(flow_index), len(bad), len(decode_quarantine), wall_s)
