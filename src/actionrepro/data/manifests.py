"""The official UCF101/HMDB51 split files and the manifests made from them: parsing, checks, reading.

Why this needs care: the split files are where datasets silently go wrong (CRLF endings, labels
that only trainlists carry, the HandstandPushups/HandStand file-name quirk, HMDB51 names with `#`,
`!`, `[`, `(`, `&`, `'` and spaces, a class index that must not come from a directory listing).
So every video a list names must be found on disk, train and test must be disjoint, and the counts
must be the official ones (or, for synthetic data, the ones its params imply); otherwise the step
fails and says why. Nothing is dropped without being counted.

Outputs (data/manifests/<ds>/, each written atomically; summary.json last):
  classes.csv        label (0-based), class_name
  split<k>.csv       video_id, path (relative to the extracted root), label, class_name, subset
  reversal_pairs.csv synthetic datasets only: class_a, class_b, label_a, label_b
  summary.json       per split train/test/unused counts and classes: the manifests' metadata
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from actionrepro import paths
from actionrepro.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = (1, 2, 3)
UCF_FORMAT = ("ucf101", "synth_ucf101")
HMDB_FORMAT = ("hmdb51", "synth_hmdb51")
UCF_VIDEO_ROOT = "UCF-101"
UCF_LIST_DIR = "ucfTrainTestlist"
HMDB_SPLIT_DIR = "testTrainMulti_7030_splits"
HMDB_IDS = {"1": "train", "2": "test", "0": "unused"}
COLUMNS = ["video_id", "path", "label", "class_name", "subset"]

# Official sizes of the published splits: (train, test) videos per split, and classes.
OFFICIAL = {
    "ucf101": {"classes": 101, "splits": {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}},
    "hmdb51": {"classes": 51, "splits": {k: (3570, 1530) for k in SPLITS}},
}

_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>\d+)\.txt$")
_HMDB_LINE = re.compile(r"^(?P<name>.*?\S)\s+(?P<id>\S+)\s*$")
_CLASSIND_LINE = re.compile(r"^\s*(?P<idx>\d+)\s+(?P<name>\S+)\s*$")
_UCF_LINE = re.compile(r"^(?P<entry>\S+)(?:\s+(?P<label>\S+))?\s*$")


@dataclass(frozen=True)
class Entry:
    """One line of a split file, as listed (before the video is looked up on disk)."""

    video_id: str      # list entry without .avi, e.g. HandstandPushups/v_HandStandPushups_g08_c01
    listed: str        # relative to the videos folder, as the list spells it
    class_name: str
    subset: str        # train | test | unused
    source: str        # "<split file>:<line>"


def list_format(dataset: str) -> str:
    """"ucf101" or "hmdb51": which official split format `dataset` uses."""
    if dataset in UCF_FORMAT:
        return "ucf101"
    if dataset in HMDB_FORMAT:
        return "hmdb51"
    raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(UCF_FORMAT + HMDB_FORMAT)}")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines, whatever the line endings (CRLF, LF, CR)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]


def _strip_avi(name: str) -> str:
    return name[:-4] if name.lower().endswith(".avi") else name


def require_dir(path: Path, dataset: str, what: str) -> None:
    if not path.is_dir():
        parent = path.parent
        found = sorted(e.name for e in os.scandir(parent))[:10] if parent.is_dir() else []
        hint = f" ({parent} holds: {', '.join(found)})" if found else ""
        raise DataError(f"{what} {path} not found{hint}; run `actionrepro extract {dataset}` first "
                        f"(or pass --source DIR pointing at the extracted dataset)")


# ---------------------------------------------------------------------------------------------
# UCF101: ucfTrainTestlist/classInd.txt, trainlist0k.txt (with labels), testlist0k.txt (without)


def read_class_index(path: Path, shown: str, line_pattern: re.Pattern, form: str) -> dict[int, str]:
    """{index: class name} from a class-index file of "<index> <name>" lines (UCF101's classInd.txt,
    a list-file dataset's classes file); a malformed or repeated line names the file and line."""
    index: dict[int, str] = {}
    for n, line in _read_lines(path):
        m = line_pattern.match(line)
        if not m:
            raise DataError(f"{shown}:{n}: expected '{form}', got {line!r}")
        idx, name = int(m["idx"]), m["name"]
        if idx in index or name in index.values():
            raise DataError(f"{shown}:{n}: index {idx} or class {name!r} appears twice")
        index[idx] = name
    return index


def parse_ucf101(list_dir: Path) -> tuple[list[str], dict[int, list[Entry]]]:
    """Classes (label order) and per-split entries from an ucfTrainTestlist folder."""
    class_file = list_dir / "classInd.txt"
    if not class_file.is_file():
        raise DataError(f"{class_file} not found: the UCF101 split archive is not extracted there")
    index = read_class_index(class_file, str(class_file), _CLASSIND_LINE, "<index> <ClassName>")
    if sorted(index) != list(range(1, len(index) + 1)):
        raise DataError(f"{class_file}: class indices must be 1..{len(index)} without gaps, got {sorted(index)[:5]}...")
    classes = [index[i] for i in range(1, len(index) + 1)]
    label_of = {name: i for i, name in enumerate(classes)}

    entries: dict[int, list[Entry]] = {}
    for k in SPLITS:
        rows: list[Entry] = []
        for subset, fname in (("train", f"trainlist{k:02d}.txt"), ("test", f"testlist{k:02d}.txt")):
            path = list_dir / fname
            if not path.is_file():
                raise DataError(f"{path} not found: the UCF101 split archive is incomplete; re-extract it")
            for n, line in _read_lines(path):
                m = _UCF_LINE.match(line.strip())
                where = f"{fname}:{n}"
                if not m or "/" not in m["entry"]:
                    form = "Class/v_Class_gXX_cYY.avi" + (" <label>" if subset == "train" else "")
                    raise DataError(f"{path}:{n}: expected '{form}', got {line!r}")
                entry = m["entry"].replace("\\", "/")
                cls = entry.split("/", 1)[0]
                if cls not in label_of:
                    raise DataError(f"{path}:{n}: class {cls!r} of {entry!r} is not in {class_file.name}")
                if m["label"] is not None:
                    if not m["label"].isdigit() or int(m["label"]) != label_of[cls] + 1:
                        raise DataError(f"{path}:{n}: {entry!r} has label {m['label']} but {class_file.name} "
                                        f"gives {cls} index {label_of[cls] + 1}; the lists do not belong together")
                elif subset == "train":
                    raise DataError(f"{path}:{n}: trainlist entry {entry!r} has no label")
                rows.append(Entry(_strip_avi(entry), entry, cls, subset, where))
        entries[k] = rows
    return classes, entries


# ---------------------------------------------------------------------------------------------
# HMDB51: testTrainMulti_7030_splits/<class>_test_split<k>.txt, lines "<video>.avi <id> "


def parse_hmdb51(split_dir: Path) -> tuple[list[str], dict[int, list[Entry]]]:
    """Classes (alphabetical, from the split-file names) and per-split entries (unused included)."""
    files: dict[str, dict[int, Path]] = {}
    with os.scandir(split_dir) as it:
        for e in it:
            m = _HMDB_FILE.match(e.name)
            if not m or not e.is_file():
                log.debug("ignoring %s in %s", e.name, split_dir)
                continue
            k = int(m["k"])
            if k not in SPLITS:
                raise DataError(f"{split_dir / e.name}: unexpected split number {k}; HMDB51 has splits 1-3")
            files.setdefault(m["cls"], {})[k] = Path(e.path)
    if not files:
        raise DataError(f"{split_dir} holds no <class>_test_split<k>.txt files; re-extract test_train_splits.rar")
    incomplete = [f"{cls} (has {sorted(ks)})" for cls, ks in sorted(files.items()) if sorted(ks) != list(SPLITS)]
    if incomplete:
        raise DataError(f"{split_dir}: classes without all three split files: {', '.join(incomplete[:10])}")
    classes = sorted(files)
    entries: dict[int, list[Entry]] = {k: [] for k in SPLITS}
    for cls in classes:
        for k in SPLITS:
            path = files[cls][k]
            for n, line in _read_lines(path):
                m = _HMDB_LINE.match(line)
                if not m or m["id"] not in HMDB_IDS:
                    raise DataError(f"{path}:{n}: expected '<video>.avi <0|1|2>', got {line!r}")
                name = m["name"]
                if "/" in name or "\\" in name:
                    raise DataError(f"{path}:{n}: video name {name!r} must not contain a path separator")
                entries[k].append(Entry(f"{cls}/{_strip_avi(name)}", f"{cls}/{name}", cls,
                                        HMDB_IDS[m["id"]], f"{path.name}:{n}"))
    return classes, entries


# ---------------------------------------------------------------------------------------------
# Finding the listed videos on disk


def _listing(directory: Path, cache: dict) -> dict[str, bool] | None:
    """{name: is_dir} of a directory (one os.scandir, cached); None if it does not exist."""
    if directory not in cache:
        try:
            with os.scandir(directory) as it:
                cache[directory] = {e.name: e.is_dir() for e in it}
        except (FileNotFoundError, NotADirectoryError):
            cache[directory] = None
    return cache[directory]


def resolve(root: Path, listed: str, cache: dict) -> str | None:
    """Where `listed` ("Class/file.avi") really is under `root`, relative to it; None if absent.

    Each component matches exactly or, failing that, case-insensitively (the THUMOS mirror renames
    v_HandStandPushups_* to v_HandstandPushups_*; some copies rename the folder). Two
    case-insensitive candidates and no exact one is an error: which video was meant is unknowable.
    Only exact joins and directory listings: names are never shell strings or glob patterns.
    """
    parts = listed.split("/")
    current, found = root, []
    for depth, part in enumerate(parts):
        names = _listing(current, cache)
        if names is None:
            return None
        want_dir = depth < len(parts) - 1
        if part in names and names[part] == want_dir:
            match = part
        else:
            candidates = [n for n, is_dir in names.items() if n.lower() == part.lower() and is_dir == want_dir]
            if not candidates:
                return None
            if len(candidates) > 1:
                raise DataError(f"{listed!r} matches several {'folders' if want_dir else 'files'} in {current} "
                                f"that differ only in case ({', '.join(sorted(candidates))}); keep one of them")
            match = candidates[0]
        found.append(match)
        current = current / match
    return "/".join(found)


# ---------------------------------------------------------------------------------------------
# Expected counts


def expected_counts(dataset: str, params: dict | None) -> dict:
    """{"classes": N, "splits": {k: {"train": n, "test": n, "unused": n | None}}, "why": text}."""
    fmt = list_format(dataset)
    if not dataset.startswith("synth_"):
        off = OFFICIAL[fmt]
        return {"classes": off["classes"],
                "splits": {k: {"train": tr, "test": te, "unused": 0 if fmt == "ucf101" else None}
                           for k, (tr, te) in off["splits"].items()},
                "why": f"the official {dataset} splits"}
    if not params or "synth" not in params or fmt not in params["synth"]:
        raise ConfigError(f"{dataset}: the expected counts come from params synth.{fmt}; pass the params")
    s = params["synth"][fmt]
    c = s["classes"]
    if fmt == "ucf101":
        splits = {k: {"train": c * (s["groups"] - 7) * s["clips_per_group"],
                      "test": c * 7 * s["clips_per_group"], "unused": 0} for k in SPLITS}
        why = (f"params synth.ucf101 (classes={c}, groups={s['groups']}, "
               f"clips_per_group={s['clips_per_group']})")
    else:
        splits = {k: {"train": c * s["train_per_class"], "test": c * s["test_per_class"],
                      "unused": c * s["unused_per_class"]} for k in SPLITS}
        why = (f"params synth.hmdb51 (classes={c}, train/test/unused per class="
               f"{s['train_per_class']}/{s['test_per_class']}/{s['unused_per_class']})")
    return {"classes": c, "splits": splits, "why": why}


def counts(entries: list[Entry]) -> dict[str, int]:
    out = {"train": 0, "test": 0, "unused": 0}
    for e in entries:
        out[e.subset] += 1
    return out


def check_counts(dataset: str, where: Path, classes: list[str], entries: dict[int, list[Entry]],
                  expected: dict) -> None:
    problems = []
    if len(classes) != expected["classes"]:
        problems.append(f"{len(classes)} classes (expected {expected['classes']:,})")
    for k in SPLITS:
        got = counts(entries[k])
        for subset in ("train", "test", "unused"):
            want = expected["splits"][k][subset]
            if want is not None and got[subset] != want:
                problems.append(f"split {k}: {got[subset]:,} {subset} videos (expected {want:,})")
    if problems:
        if dataset.startswith("synth_"):
            fix = (f"the synthetic archives were generated with other params: regenerate them "
                   f"(`actionrepro download {dataset} --params FILE`, then `actionrepro extract {dataset}`)")
        else:
            fix = ("the split files are incomplete or not the official ones: re-download and re-extract "
                   f"them (`actionrepro download {dataset}`, `actionrepro extract {dataset}`)")
        raise DataError(f"{dataset}: the split lists in {where} do not have the counts of {expected['why']}: "
                        + "; ".join(problems) + f". Nothing is dropped silently; {fix}")


def check_disjoint(dataset: str, entries: dict[int, list[Entry]]) -> None:
    for k, rows in entries.items():
        seen: dict[str, Entry] = {}
        for e in rows:
            if e.video_id in seen:
                first = seen[e.video_id]
                what = "in both train and test" if first.subset != e.subset else "twice"
                raise DataError(f"{dataset} split {k}: video {e.video_id!r} is listed {what} "
                                f"({first.source} and {e.source}); the split files are corrupt")
            seen[e.video_id] = e


def synthetic_pairs(dataset: str, classes: list[str], params: dict | None) -> list[tuple[str, str]] | None:
    """The reversal pairs of a synthetic dataset, after checking its classes are the generator's."""
    if not dataset.startswith("synth_"):
        return None
    from actionrepro.data import synthetic

    kind = list_format(dataset)
    want = synthetic.class_names(kind, params["synth"][kind]["classes"])
    if classes != want:
        raise DataError(f"{dataset}: the split files name classes {classes[:6]}... but params synth.{kind} "
                        f"generate {want[:6]}...; regenerate the dataset (`actionrepro download {dataset} "
                        f"--params FILE`, then `actionrepro extract {dataset}`)")
    return synthetic.reversal_pairs(kind, params["synth"][kind]["classes"])


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A split or classes CSV back as written: names stay strings (`#`, 'NA', 'null' included)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    for col in ("label", "label_a", "label_b"):
        if col in frame:
            frame[col] = frame[col].astype("int64")
    return frame


def read_classes(dataset: str) -> list[str]:
    """Class names in label order from data/manifests/<ds>/classes.csv: the one reader of the class index."""
    path = paths.manifests_dir(dataset) / "classes.csv"
    fix = f"re-run `actionrepro splits {dataset}`"
    if not path.is_file():
        raise DataError(f"{path} not found: parse the splits first (actionrepro splits {dataset})")
    classes = read_manifest(path)
    if not {"label", "class_name"} <= set(classes.columns) or len(classes) < 2:
        raise DataError(f"{path} must have 'label' and 'class_name' columns and at least two classes; {fix}")
    labels = sorted(int(v) for v in classes["label"])
    if labels != list(range(len(labels))):
        raise DataError(f"{path}: labels must be 0..{len(labels) - 1} without gaps, got {labels[:5]}...; {fix}")
    names = dict(zip(classes["label"].astype(int), classes["class_name"]))
    return [names[i] for i in range(len(labels))]


_SPLIT_FILE = re.compile(r"split(\d+)\.csv")
MANIFEST_COLUMNS = COLUMNS


def read_all_splits(dataset: str) -> pd.DataFrame:
    """All split<k>.csv rows of `dataset` with a `split` column; DataError if absent or malformed."""
    folder = paths.manifests_dir(dataset)
    files = sorted((int(m.group(1)), entry.path) for entry in (os.scandir(folder) if folder.is_dir() else [])
                   if (m := _SPLIT_FILE.fullmatch(entry.name)))
    if not files:
        raise DataError(f"no split manifests (split<k>.csv) in {folder}; run `actionrepro splits {dataset}` first")
    frames = []
    for k, file in files:
        table = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False)
        missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(f"{file} lacks column(s) {', '.join(missing)} (expected {', '.join(MANIFEST_COLUMNS)}); "
                            f"re-run `actionrepro splits {dataset}`")
        for p in table["path"]:
            rel = PurePosixPath(p)
            if not p or rel.is_absolute() or ".." in rel.parts:
                raise DataError(f"{file} names video path {p!r}, which is not relative to data/videos/{dataset}; "
                                f"re-run `actionrepro splits {dataset}`")
        frames.append(table.assign(split=k))
    return pd.concat(frames, ignore_index=True)
