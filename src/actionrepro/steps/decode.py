"""The `actionrepro decode` step: every video the splits name, decoded once, into data/frames/<ds>.

Outputs: one store per video, index.csv, quarantine.csv, progress.jsonl (resume journal) and
summary.json, written last (its presence means the step completed); see actionrepro.data.decode for
the per-video rules and why decord is driven in worker processes with timeouts.
"""

from __future__ import annotations

import json
import logging
import time

import pandas as pd
from tqdm import tqdm

from actionrepro import paths
from actionrepro.data import journal, manifests, store
from actionrepro.data.decode import (INDEX_COLUMNS, JOURNAL, MIN_FRAME_FRACTION, QUARANTINE_COLUMNS, REASONS,
                                     file_size, run_pool, store_relpath)
from actionrepro.errors import ActionReproError, DataError, DiskFullError
from actionrepro.io import atomic_write_csv, atomic_write_json, atomic_write_text, disk_full_guard
from actionrepro.steps import add_dataset_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_dataset_argument(parser)


def run(args, params: dict) -> None:
    decode_dataset(args.dataset, params, workers=args.threads)


def decode_dataset(dataset: str, params: dict, workers: int) -> None:
    """Decode the union of the videos named by data/manifests/<ds>/split*.csv into data/frames/<ds>."""
    cfg = params["decode"]
    short_side, quality = int(cfg["short_side"]), int(cfg["jpeg_quality"])
    timeout_s, max_bad = float(cfg["timeout_s"]), float(cfg["max_bad_fraction"])
    settings = {"short_side": short_side, "jpeg_quality": quality, "min_frame_fraction": MIN_FRAME_FRACTION,
                "store_version": store.VERSION}
    videos_by_split = manifests.read_all_splits(dataset)
    ids = videos_by_split.groupby("path")["video_id"].nunique()
    if (ids > 1).any():
        bad = ids[ids > 1].index[:5].tolist()
        raise DataError(f"data/manifests/{dataset}: the same video path has different video_ids across splits "
                        f"({bad}); re-run `actionrepro splits {dataset}`")
    unique = videos_by_split.drop_duplicates("path").sort_values("path")
    videos = list(zip(unique.video_id, unique.path))  # (video_id, path), each video once

    src_root, out_root = paths.videos_dir(dataset), paths.frames_dir(dataset)
    finished = journal.start(out_root, settings, "path")
    journal_file = out_root / JOURNAL
    t0 = time.perf_counter()

    stored: dict[str, dict] = {}
    quarantined: dict[str, dict] = {}
    todo: list[tuple[str, str]] = []
    for video_id, path in videos:
        rec = finished.get(path)
        if journal.reusable(rec, out_root / store_relpath(path), src_root / path, "store_size", "source_size"):
            stored[path] = rec
        else:
            todo.append((video_id, path))
    reused = len(stored)
    # longest first, so that one long video does not finish alone at the end
    todo.sort(key=lambda v: -file_size(src_root / v[1]))
    tasks = [(str(src_root / path), str(out_root / store_relpath(path)), short_side, quality) for _, path in todo]
    log.info("decode %s: %d videos in the splits, %d already stored, %d to decode with %d worker(s)",
             dataset, len(videos), reused, len(todo), workers)

    try:
        with disk_full_guard(journal_file), journal.open_for_append(journal_file) as jf, \
                tqdm(total=len(todo), desc=f"decode {dataset}", unit="video", mininterval=1.0) as bar:
            def on_result(t: int, record: dict) -> None:
                video_id, path = todo[t]
                if record["status"] == "stored":
                    rel = store_relpath(path)
                    rec = {"video_id": video_id, "path": path, "store_path": str(rel),
                           **{k: record[k] for k in ("num_frames", "header_frames", "height", "width", "fps")},
                           "store_size": (out_root / rel).stat().st_size, "source_size": file_size(src_root / path),
                           "settings": settings}
                    jf.write(json.dumps(rec) + "\n")
                    jf.flush()
                    stored[path] = rec
                    if rec["num_frames"] < rec["header_frames"]:
                        log.warning("%s: stored %d of the %d frames its header claims", path, rec["num_frames"],
                                    rec["header_frames"])
                elif record["status"] == "failed":
                    raise ActionReproError(f"decode {dataset}: could not process {src_root / path}: "
                                           f"{record['detail']}. Fix the cause (disk space, permissions "
                                           f"on {out_root}) and re-run; "
                                           f"the {len(stored)} stored videos are kept")
                else:
                    quarantined[path] = {"video_id": video_id, "path": path,
                                         "reason": record["reason"], "detail": record["detail"]}
                    log.warning("%s: quarantined (%s): %s", path, record["reason"], record["detail"])
                bar.update(1)

            run_pool(tasks, max(1, int(workers or 1)), timeout_s, on_result)
    except DiskFullError as err:
        raise journal.stopped_by_full_disk(err, out_root, f"decode {dataset}", len(stored)) from err

    index = pd.DataFrame([{k: stored[p][k] for k in INDEX_COLUMNS} for _, p in videos if p in stored],
                         columns=INDEX_COLUMNS)
    bad = pd.DataFrame([quarantined[p] for _, p in videos if p in quarantined], columns=QUARANTINE_COLUMNS)
    atomic_write_csv(out_root / "index.csv", index)
    atomic_write_csv(out_root / "quarantine.csv", bad)
    # compact the journal to the videos of this index
    atomic_write_text(journal_file, "".join(json.dumps(stored[p]) + "\n" for p in index.path))

    fraction = len(bad) / len(videos) if len(videos) else 0.0
    if fraction > max_bad:
        listing = "\n  ".join(f"{r.path}: {r.reason} ({r.detail})" for r in bad.head(20).itertuples())
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataError(
            f"decode {dataset}: {len(bad)} of {len(videos)} videos ({fraction:.1%}) could not be decoded, above "
            f"decode.max_bad_fraction = {max_bad:g}:\n  {listing}{more}\n"
            f"The {len(index)} stored videos are kept. See {out_root / 'quarantine.csv'}; replace or re-extract "
            f"these files (`actionrepro extract {dataset}`) and re-run, or raise decode.max_bad_fraction.")

    usable = set(index.path)
    per_split = {
        f"split{k}": {subset: {"videos": int(len(g)), "usable": int(g.path.isin(usable).sum())}
                      for subset, g in part.groupby("subset")}
        for k, part in videos_by_split.groupby("split")}
    summary = {
        "dataset": dataset,
        "videos": int(len(videos)),
        "stored": int(len(index)),
        "frames": int(index.num_frames.sum()) if len(index) else 0,
        "quarantined": {reason: int((bad.reason == reason).sum()) for reason in REASONS},
        "quarantined_total": int(len(bad)),
        "short_by_header": int((index.num_frames < index.header_frames).sum()) if len(index) else 0,
        "bad_fraction": fraction,
        "max_bad_fraction": max_bad,
        "splits": per_split,
        "settings": {**settings, "timeout_s": timeout_s, "workers": int(workers or 1)},
        "this_run": {"decoded": len(todo), "reused": reused, "seconds": round(time.perf_counter() - t0, 3)},
    }
    atomic_write_json(out_root / "summary.json", summary)
    log.info("decode %s: %d stored, %d quarantined (%s)", dataset, len(index), len(bad),
             ", ".join(f"{k} {v}" for k, v in summary["quarantined"].items() if v) or "none")
