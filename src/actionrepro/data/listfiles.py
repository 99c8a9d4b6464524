"""Custom datasets: a researcher's own videos with split lists in mmaction2's video-list format.

Declared in the params file alone (params `custom_datasets`, read by sources.custom_registry):

    custom_datasets:
      mydata:
        videos: /path/to/videos            # root the list paths are relative to
        classes: /path/to/classInd.txt     # optional: "<index> <name>" per line (0..N-1 or 1..N)
        splits: {1: {train: /path/train1.txt, test: /path/test1.txt}}

Each list line is `relative/path <label>` with a 0-based label (the path may hold spaces: the label
is the last field). The steps, like the official datasets':
  download  copies every list file into data/raw/<ds>/lists/ and records its sha256, and the videos
            root with a digest of its listing (relative path and size of every file): nothing to fetch
  extract   makes data/videos/<ds>/ with lists/ (the copies) and `videos`, a symlink to the root
  splits    parses the copies into the same manifests (paths `videos/<relative path>`), checking that
            every listed video exists, train and test are disjoint and every label is in range
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path, PurePosixPath

from actionrepro import paths
from actionrepro.data.archives import MARKER as EXTRACTED, MARKER_VERSION
from actionrepro.data.manifests import Entry, _read_lines, read_class_index
from actionrepro.data.sources import CustomSpec
from actionrepro.errors import DataError
from actionrepro.io import atomic_write_json, file_digest

log = logging.getLogger(__name__)

DOWNLOADED = "download.json"
LISTS = "lists"
VIDEOS_LINK = "videos"
_LIST_LINE = re.compile(r"^(?P<path>.*?\S)\s+(?P<label>\S+)\s*$")
_CLASS_LINE = re.compile(r"^\s*(?P<idx>\d+)\s+(?P<name>.*?\S)\s*$")


def _resolve(path: str) -> Path:
    """A declared path, relative ones from the working directory (the repository root)."""
    return Path(path).expanduser().resolve()


def listing_digest(root: Path) -> tuple[str, int]:
    """sha256 of "relative path<TAB>size" of every file under `root` (sorted), and the file count:
    cheap to compute, and it changes when a video is added, removed, renamed or resized."""
    rows = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in files:
            full = Path(folder) / name
            rows.append(f"{full.relative_to(root).as_posix()}\t{full.stat().st_size}\n")
    rows.sort()
    return hashlib.sha256("".join(rows).encode("utf-8")).hexdigest(), len(rows)


# --------------------------------------------------------------------------------- download
def record(dataset: str, spec: CustomSpec) -> Path:
    """The download step of a custom dataset: copy the list files into data/raw/<ds>/lists/ with
    their sha256 and record the videos root; return data/raw/<ds>/download.json."""
    raw = paths.raw_dir(dataset)
    videos = _resolve(spec.videos)
    if not videos.is_dir():
        raise DataError(f"custom dataset {dataset}: videos folder {spec.videos} ({videos}) not found or not a folder")
    lists = raw / LISTS
    partial = raw / f".{LISTS}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    records = []
    for role, declared in spec.list_files():
        source = _resolve(declared)
        try:
            data = source.read_bytes()
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            kind = role.rstrip("0123456789")
            what = "classes file" if role == "classes" else f"{kind} list of split {role[len(kind):]}"
            raise DataError(f"custom dataset {dataset}: cannot read the {what} {declared}: "
                            f"{err.strerror or err}") from None
        (partial / f"{role}.txt").write_bytes(data)
        records.append({"role": role, "source": str(source), "declared": declared, "name": f"{role}.txt",
                        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    (raw / DOWNLOADED).unlink(missing_ok=True)
    shutil.rmtree(lists, ignore_errors=True)
    os.replace(partial, lists)
    digest, count = listing_digest(videos)
    atomic_write_json(raw / DOWNLOADED, {
        "dataset": dataset, "custom": True, "lists": records,
        "videos": {"root": str(videos), "declared": spec.videos, "files": count, "listing_sha256": digest},
        "splits": list(spec.split_numbers),
    })
    log.info("%s: %d list file(s) recorded, videos root %s (%d files)", dataset, len(records), videos, count)
    return raw / DOWNLOADED


# --------------------------------------------------------------------------------- extract
def link(dataset: str) -> Path:
    """The extract step of a custom dataset: data/videos/<ds>/ holding lists/ (the recorded copies)
    and `videos`, a symlink to the recorded videos root; return data/videos/<ds>."""
    raw = paths.raw_dir(dataset)
    marker = raw / DOWNLOADED
    if not marker.is_file():
        raise DataError(f"{marker} is missing; run `actionrepro download {dataset}` first")
    recorded = json.loads(marker.read_text())
    for item in recorded["lists"]:
        copy = raw / LISTS / item["name"]
        if not copy.is_file() or file_digest(copy) != item["sha256"]:
            raise DataError(f"{copy} is missing or changed since it was recorded; run `actionrepro download "
                            f"{dataset}` again")
    root = Path(recorded["videos"]["root"])
    if not root.is_dir():
        raise DataError(f"custom dataset {dataset}: videos folder {root} is gone; fix custom_datasets.{dataset}.videos "
                        f"and run `actionrepro download {dataset}` again")
    dest = paths.videos_dir(dataset)
    partial = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copytree(raw / LISTS, partial / LISTS)
    os.symlink(root, partial / VIDEOS_LINK, target_is_directory=True)
    atomic_write_json(partial / EXTRACTED, {
        "version": MARKER_VERSION, "dataset": dataset, "custom": True, "videos": recorded["videos"],
        "lists": recorded["lists"],
    })
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    os.replace(partial, dest)
    log.info("%s: %s -> %s", dataset, dest / VIDEOS_LINK, root)
    return dest


# --------------------------------------------------------------------------------- splits
def parse_classes(path: Path, shown: str) -> list[str]:
    """Class names in label order from "<index> <name>" lines, indices 0..N-1 or 1..N."""
    index = read_class_index(path, shown, _CLASS_LINE, "<index> <class name>")
    if not index:
        raise DataError(f"{shown} lists no classes")
    first = min(index)
    if first not in (0, 1) or sorted(index) != list(range(first, first + len(index))):
        raise DataError(f"{shown}: class indices must be 0..{len(index) - 1} or 1..{len(index)} without gaps, "
                        f"got {sorted(index)[:5]}...")
    return [index[i] for i in range(first, first + len(index))]


def parse_list(path: Path, shown: str, subset: str, num_classes: int | None) -> list[tuple[Entry, int]]:
    """(entry, label) per line of one video list; labels checked against `num_classes` when known."""
    out = []
    for n, line in _read_lines(path):
        where = f"{shown}:{n}"
        m = _LIST_LINE.match(line.strip())
        if not m:
            raise DataError(f"{where}: expected '<relative/path> <label>', got {line!r}")
        listed, label = m["path"].replace("\\", "/"), m["label"]
        rel = PurePosixPath(listed)
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{where}: video path {listed!r} must be relative to the videos folder, without '..'")
        listed = rel.as_posix()
        if not re.fullmatch(r"-?\d+", label):
            raise DataError(f"{where}: label {label!r} of {listed!r} is not an integer (0-based labels)")
        value = int(label)
        if value < 0 or (num_classes is not None and value >= num_classes):
            bound = f"0..{num_classes - 1} (the classes file lists {num_classes})" if num_classes else "0 or more"
            raise DataError(f"{where}: label {value} of {listed!r} is out of range; labels are 0-based, {bound}")
        video_id = listed.rsplit(".", 1)[0] if "." in rel.name else listed
        out.append((Entry(video_id=video_id, listed=listed, class_name="", subset=subset, source=where), value))
    return out


def parse(source: Path, spec: CustomSpec) -> tuple[list[str], dict[int, list[Entry]]]:
    """Classes (label order) and per-split entries from the list copies under `source`/lists."""
    marker = source / EXTRACTED
    declared = {}
    if marker.is_file():
        declared = {item["name"]: item["declared"] for item in json.loads(marker.read_text()).get("lists", [])}

    def shown(name: str) -> str:
        copy = source / LISTS / name
        return f"{declared[name]} (copied to {copy})" if name in declared else str(copy)

    def path(name: str) -> Path:
        copy = source / LISTS / name
        if not copy.is_file():
            raise DataError(f"{copy} not found: the list files were not recorded; run `actionrepro download` and "
                            f"`actionrepro extract` for this dataset again")
        return copy

    classes = parse_classes(path("classes.txt"), shown("classes.txt")) if spec.classes else None
    limit = len(classes) if classes is not None else None
    labelled = {k: parse_list(path(f"train{k}.txt"), shown(f"train{k}.txt"), "train", limit)
                + parse_list(path(f"test{k}.txt"), shown(f"test{k}.txt"), "test", limit)
                for k in spec.split_numbers}
    if classes is None:
        top = max((label for rows in labelled.values() for _, label in rows), default=-1)
        if top < 1:
            raise DataError(f"the lists in {source / LISTS} name fewer than two classes")
        classes = [str(i) for i in range(top + 1)]
    entries = {k: [Entry(e.video_id, e.listed, classes[label], e.subset, e.source) for e, label in rows]
               for k, rows in labelled.items()}
    for k, rows in entries.items():
        if not any(e.subset == "train" for e in rows) or not any(e.subset == "test" for e in rows):
            raise DataError(f"split {k}: the train or the test list is empty")
    return classes, entries


def check_disjoint(dataset: str, entries: dict[int, list[Entry]]) -> None:
    """Train and test of a split share no video, and no list names a video twice; names them."""
    for k, rows in entries.items():
        train = {e.video_id: e for e in rows if e.subset == "train"}
        test = {e.video_id: e for e in rows if e.subset == "test"}
        both = [v for v in train if v in test]
        if both:
            shown = "; ".join(f"{v} ({train[v].source} and {test[v].source})" for v in both[:10])
            raise DataError(f"{dataset} split {k}: {len(both):,} video(s) are in both train and test: {shown}"
                            f"{' ...' if len(both) > 10 else ''}")
        for subset in ("train", "test"):
            seen: dict[str, Entry] = {}
            for e in (r for r in rows if r.subset == subset):
                if e.video_id in seen:
                    raise DataError(f"{dataset} split {k}: video {e.video_id!r} is listed twice in the {subset} "
                                    f"list ({seen[e.video_id].source} and {e.source})")
                seen[e.video_id] = e
