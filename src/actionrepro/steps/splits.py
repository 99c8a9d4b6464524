"""The `actionrepro splits` step: the official split files of one dataset -> data/manifests/<ds>/.

Every video a list names must be found on disk, train and test must be disjoint, and the counts
must be the official ones (or, for synthetic data, the ones its params imply); otherwise the step
fails and says why.

Outputs (each written atomically; summary.json last):
  classes.csv        label (0-based), class_name
  split<k>.csv       video_id, path (relative to the extracted root), label, class_name, subset
  reversal_pairs.csv synthetic datasets only: class_a, class_b, label_a, label_b
  summary.json       per split train/test/unused counts and classes: the manifests' metadata
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from actionrepro import paths
from actionrepro.data.manifests import (COLUMNS, HMDB_SPLIT_DIR, SPLITS, UCF_LIST_DIR, UCF_VIDEO_ROOT,
                                        check_counts, check_disjoint, counts, require_dir, synthetic_pairs,
                                        expected_counts, list_format, parse_hmdb51, parse_ucf101, resolve)
from actionrepro.data import listfiles, sources
from actionrepro.errors import DataError
from actionrepro.steps import add_dataset_argument
from actionrepro.io import atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_dataset_argument(parser)
    parser.add_argument("--source", type=Path, default=None, help="extracted root (default data/videos/DATASET)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default data/manifests/DATASET)")


def run(args, params: dict) -> None:
    write_manifests(args.dataset, source=args.source, out=args.out, params=params)


def write_manifests(dataset: str, source: str | Path | None = None, out: str | Path | None = None,
                    params: dict | None = None) -> Path:
    """Parse `dataset`'s official split files under `source` into manifests in `out`; return `out`.

    Defaults: source = data/videos/<dataset>, out = data/manifests/<dataset>.
    """
    custom = sources.get(dataset, params=params).custom
    fmt = "list" if custom is not None else list_format(dataset)
    source = Path(source) if source is not None else paths.videos_dir(dataset)
    out = Path(out) if out is not None else paths.manifests_dir(dataset)
    require_dir(source, dataset, "extracted dataset folder")
    split_numbers = custom.split_numbers if custom is not None else SPLITS
    if custom is not None:
        list_dir, video_root_rel = source / listfiles.LISTS, listfiles.VIDEOS_LINK
        require_dir(source / listfiles.VIDEOS_LINK, dataset, "videos folder (link)")
        classes, entries = listfiles.parse(source, custom)
    elif fmt == "ucf101":
        list_dir, video_root_rel = source / UCF_LIST_DIR, UCF_VIDEO_ROOT
        require_dir(list_dir, dataset, "UCF101 split folder")
        require_dir(source / UCF_VIDEO_ROOT, dataset, "UCF101 video folder")
        classes, entries = parse_ucf101(list_dir)
    else:
        list_dir, video_root_rel = source / HMDB_SPLIT_DIR, ""
        require_dir(list_dir, dataset, "HMDB51 split folder")
        classes, entries = parse_hmdb51(list_dir)
    label_of = {name: i for i, name in enumerate(classes)}

    if custom is not None:  # no official counts to check: the lists are the definition
        listfiles.check_disjoint(dataset, entries)
        expected = {"why": f"params custom_datasets.{dataset} (no official counts)", "classes": len(classes),
                    "splits": {k: counts(entries[k]) for k in split_numbers}}
        pairs = None
    else:
        check_disjoint(dataset, entries)
        expected = expected_counts(dataset, params)
        check_counts(dataset, list_dir, classes, entries, expected)
        pairs = synthetic_pairs(dataset, classes, params)

    # Every listed video (train, test and unused) must exist; count and name the missing ones.
    video_root = source / video_root_rel if video_root_rel else source
    cache: dict = {}
    found: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    for k in split_numbers:
        for e in entries[k]:
            if e.listed in found or e.listed in missing:
                if e.listed in missing:
                    missing[e.listed].append(e.source)
                continue
            rel = resolve(video_root, e.listed, cache)
            if rel is None:
                missing[e.listed] = [e.source]
            else:
                found[e.listed] = f"{video_root_rel}/{rel}" if video_root_rel else rel
    if missing:
        shown = "; ".join(f"{name} (named by {srcs[0]}{f' and {len(srcs) - 1} more' if len(srcs) > 1 else ''})"
                          for name, srcs in list(missing.items())[:10])
        raise DataError(f"{dataset}: {len(missing):,} of {len(found) + len(missing):,} videos named by the split "
                        f"files are missing under {video_root}: {shown}{' ...' if len(missing) > 10 else ''}. "
                        + (f"Check the list files and custom_datasets.{dataset}.videos" if custom is not None else
                           f"Re-extract the dataset (`actionrepro extract {dataset}`) or check --source"))

    classes_df = pd.DataFrame({"label": range(len(classes)), "class_name": classes})
    atomic_write_csv(out / "classes.csv", classes_df)
    summary_splits = {}
    for k in split_numbers:
        rows = [(e.video_id, found[e.listed], label_of[e.class_name], e.class_name, e.subset)
                for e in entries[k] if e.subset != "unused"]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame = frame.sort_values("subset", kind="stable", key=lambda s: s.map({"train": 0, "test": 1}))
        atomic_write_csv(out / f"split{k}.csv", frame)
        split_counts = counts(entries[k])
        summary_splits[str(k)] = {
            **split_counts,
            "classes": len(classes),
            "train_classes": int(frame.loc[frame.subset == "train", "label"].nunique()),
            "test_classes": int(frame.loc[frame.subset == "test", "label"].nunique()),
        }
    if pairs is not None:
        atomic_write_csv(out / "reversal_pairs.csv", pd.DataFrame(
            [(a, b, label_of[a], label_of[b]) for a, b in pairs],
            columns=["class_a", "class_b", "label_a", "label_b"]))
    summary = {
        "dataset": dataset,
        "format": fmt,
        "source": str(source),
        "split_files": str(list_dir),
        "classes": len(classes),
        "videos_listed": len(found),
        "expected": {"why": expected["why"], "classes": expected["classes"],
                     "splits": {str(k): v for k, v in expected["splits"].items()}},
        "splits": summary_splits,
        "reversal_pairs": len(pairs) if pairs is not None else None,
    }
    atomic_write_json(out / "summary.json", summary)
    log.info("%s: %d classes; %s -> %s", dataset, len(classes),
             ", ".join(f"split{k} {v['train']}/{v['test']} train/test ({v['unused']} unused)"
                       for k, v in summary_splits.items()), out)
    return out
