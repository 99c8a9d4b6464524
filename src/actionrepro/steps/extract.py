"""The `actionrepro extract` step: data/raw/<ds>/* unpacked into data/videos/<ds> in the official
layout (UCF-101/<Class>/*.avi and ucfTrainTestlist/; HMDB51 <class>/*.avi and
testTrainMulti_7030_splits/). Archives are verified with the downloader's own checks first;
extraction goes to a temporary sibling that gets its marker file last and is renamed into place.
The archive formats, backends and limits are actionrepro.data.archives."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Mapping

from actionrepro import paths
from actionrepro.data import download, sources
from actionrepro.data.archives import MARKER, MARKER_VERSION, Limits, extract_archive
from actionrepro.data.sources import Archive, Dataset
from actionrepro.errors import DataError
from actionrepro.io import atomic_write_json, file_digest
from actionrepro.steps import add_dataset_argument

log = logging.getLogger(__name__)

_THUMOS_NAME = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g\d+_c\d+\.avi$", re.IGNORECASE)


def add_arguments(parser) -> None:
    add_dataset_argument(parser)


def run(args, params: dict) -> None:
    extract_dataset(args.dataset, params=params)


Used = list[tuple[Archive, Archive, Path]]  # (archive needed, archive used for it, its path)


def select_archives(dataset: str, registry: Mapping[str, Dataset] | None = None) -> Used:
    """(archive needed, archive used for it, its path) for each archive the dataset needs.

    An alternative (the THUMOS zip for UCF101.rar) is used only when the archive itself is absent.
    """
    ds = sources.get(dataset, registry)
    raw = paths.raw_dir(dataset)
    chosen = []
    for needed in ds.archives:
        for candidate in (needed, *ds.alternatives_for(needed.name)):
            if (raw / candidate.name).is_file():
                chosen.append((needed, candidate, raw / candidate.name))
                break
        else:
            alts = [a.name for a in ds.alternatives_for(needed.name)]
            either = f" (or its alternative {', '.join(alts)})" if alts else ""
            raise DataError(f"archive {raw / needed.name}{either} is missing; run "
                            f"`actionrepro download {dataset}` first")
    return chosen


def verify_archive(dataset: str, path: Path, archive: Archive) -> str:
    """Check `path` with the downloader's own verification (size, format, official checksum or
    pin file) and against data/raw/<ds>/SHA256SUMS when present; return its sha256."""
    try:
        sha256 = download.verify_file(path, archive, pin=sources.pin_path(path))["sha256"]
    except download.Rejected as why:
        raise DataError(f"{path}: {why}; delete it and run `actionrepro download {dataset}` "
                        "again") from None
    sums_file = path.parent / download.SUMS
    if sums_file.is_file():
        listed = download.read_sha256sums(sums_file).get(path.name)
        if listed is not None and listed != sha256:
            raise DataError(f"{path} has sha256 {sha256}, but {sums_file} lists {listed}; the "
                            f"file changed after it was downloaded: run `actionrepro download "
                            f"{dataset}` again")
    return sha256


def _count_files(root: Path) -> int:
    """Regular files under root, the marker not included."""
    return sum(len(files) for _, _, files in os.walk(root)) - (root / MARKER).is_file()


def _archive_record(path: Path, sha256: str) -> dict:
    st = path.stat()
    return {"name": path.name, "sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_complete(dest: Path, used: Used) -> bool:
    """True when dest holds a finished extraction of exactly these archives (same sha256, same
    file count). A path whose size and mtime are unchanged is not hashed again."""
    try:
        marker = json.loads((dest / MARKER).read_text())
        recorded = marker["archives"]
        if marker.get("version") != MARKER_VERSION or len(recorded) != len(used):
            return False
        for (_, _, path), rec in zip(used, recorded):
            st = path.stat()
            if rec["name"] != path.name:
                return False
            if (st.st_size, st.st_mtime_ns) != (rec["size"], rec["mtime_ns"]) and \
                    file_digest(path, "sha256") != rec["sha256"]:
                return False
        return _count_files(dest) == marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _official_ucf_names(root: Path) -> dict[str, str]:
    """lower-cased file name -> official relative path, from ucfTrainTestlist's train/test lists."""
    names: dict[str, str] = {}
    for lst in sorted((root / "ucfTrainTestlist").glob("*list0*.txt")):
        for line in lst.read_text(errors="replace").splitlines():
            if line.strip():
                rel = line.split()[0].replace("\\", "/")
                names[PurePosixPath(rel).name.lower()] = rel
    return names


def reorganize_flat_ucf(root: Path, top_dir: str = "UCF-101") -> int:
    """Move THUMOS-style flat `v_<Class>_gXX_cYY.avi` files (at root or one folder down) into
    `<top_dir>/<Class>/`, restoring the official folder and file names from the split lists
    where they differ only in case (HandstandPushups/v_HandStandPushups_*). Returns files moved."""
    official = _official_ucf_names(root)
    classes = {rel.split("/")[0].lower(): rel.split("/")[0] for rel in official.values()}
    moved = 0
    folders = [root] + [d for d in root.iterdir() if d.is_dir() and d.name != top_dir]
    for folder in folders:
        for f in sorted(folder.iterdir()):
            match = _THUMOS_NAME.match(f.name)
            if not (f.is_file() and match):
                continue
            rel = official.get(f.name.lower())
            if rel is None:
                cls = classes.get(match["cls"].lower(), match["cls"])
                rel = f"{cls}/{f.name}"
            target = root / top_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                raise DataError(f"{f} and {target} are the same video twice; the archive is not "
                                "a clean UCF101 copy")
            os.replace(f, target)
            moved += 1
        if folder != root and not any(folder.iterdir()):
            folder.rmdir()
    return moved


def _check_layout(dataset: str, root: Path, used: Used) -> None:
    for needed, _, path in used:
        if needed.top_dir and not (root / needed.top_dir).is_dir():
            raise DataError(f"extracting {path} did not produce {needed.top_dir}/ (expected "
                            f"layout: {needed.layout}); it is not the official archive: delete "
                            f"it and run `actionrepro download {dataset}` again")
    videos = sum(1 for _ in root.rglob("*.avi"))
    if videos == 0:
        names = ", ".join(str(p) for _, _, p in used)
        raise DataError(f"extracting {names} produced no .avi videos; the archives are not the "
                        f"official ones: delete them and run `actionrepro download {dataset}` again")


def extract_dataset(dataset: str, *, registry: Mapping[str, Dataset] | None = None,
                    progress: bool = True, params: Mapping | None = None) -> Path:
    """Unpack data/raw/<dataset> into data/videos/<dataset> in the official layout; return it.

    UCF101: UCF-101/<Class>/*.avi and ucfTrainTestlist/; HMDB51: <class>/*.avi and
    testTrainMulti_7030_splits/. Archives are verified first. Extraction goes to a temporary
    sibling, gets the marker file `.extracted.json` (archives' sha256, file count) last, and is
    renamed into place; if the marker already matches the archives, nothing is done.
    `params['extract']` bounds archive sizes and ratios (absent: the schema defaults).
    """
    if registry is None and params is not None and sources.get(dataset, params=params).is_custom:
        from actionrepro.data import listfiles

        return listfiles.link(dataset)
    limits = Limits.from_params(params)
    dest = paths.videos_dir(dataset)
    used = select_archives(dataset, registry)
    if _is_complete(dest, used):
        log.info("%s already extracted from the same archives; nothing to do", dest)
        return dest

    records = []
    for _, archive, path in used:
        log.info("verifying %s", path)
        records.append(_archive_record(path, verify_archive(dataset, path, archive)))

    partial = dest.parent / f".{dest.name}.partial"
    old = dest.parent / f".{dest.name}.old"
    for stale in (partial, old):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    try:
        for needed, archive, path in sorted(used, key=lambda u: u[0].role != "splits"):
            files = extract_archive(path, partial, nested=archive.inner_format is not None,
                                    progress=progress, limits=limits)
            log.info("%s: %d files extracted", path, len(files))
            if archive is not needed and archive.top_dir != needed.top_dir:
                moved = reorganize_flat_ucf(partial, needed.top_dir)
                log.info("moved %d flat videos from %s into %s/<Class>/", moved, path.name,
                         needed.top_dir)
        _check_layout(dataset, partial, used)
        atomic_write_json(partial / MARKER, {
            "version": MARKER_VERSION, "dataset": dataset, "archives": records,
            "files": _count_files(partial),
        })
        if dest.exists():
            os.replace(dest, old)
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest
