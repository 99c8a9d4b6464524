"""The `actionrepro predict` command: a trained run's top-5 classes for video files of your own.

Each video is decoded into a temporary frame store by the decode step's own worker (same resize
rule and JPEG quality as params["decode"], so its frames equal a dataset store's), then read by
VideoClipDataset in test mode over that store: the same frame sampling and crops as the evaluate
step. Default views 1x1, the evaluate step's fast protocol, whose top-1 equals the run's
predictions_1x1.csv for a test video. Prints one JSON line per video:
  {"video": PATH, "views": "1x1", "top5": [{"class": NAME, "label": INDEX, "prob": P}, ...]}
RGB models only: a two-stream model would also need the video's optical flow.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from actionrepro import runs
from actionrepro.data import decode, gpu_clips, manifests
from actionrepro.engine import distributed
from actionrepro.engine.evaluation import predict_all
from actionrepro.errors import ActionReproError, DataError

log = logging.getLogger(__name__)

TOP_K = 5


def views_argument(text: str) -> tuple[int, int]:
    """CLIPSxCROPS, e.g. 1x1 or 10x3."""
    import argparse

    try:
        clips, crops = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"views must be CLIPSxCROPS (e.g. 1x1, 10x3), got {text!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise argparse.ArgumentTypeError(f"views {text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, help="a trained run, e.g. runs/synth_ucf101/split1/tsm/dense")
    parser.add_argument("videos", type=Path, nargs="+", metavar="VIDEO", help="video file(s) to classify")
    parser.add_argument("--views", type=views_argument, default=(1, 1), metavar="CLIPSxCROPS",
                        help="test views per video (default 1x1, the evaluate step's fast protocol)")


def run(args, params: dict) -> None:
    for line in predict(args.run_dir, args.videos, params, args.views, workers=args.threads or 1):
        print(json.dumps(line), flush=True)


def check_videos(videos: list[Path]) -> None:
    for video in videos:
        if not Path(video).is_file():
            raise DataError(f"{video} not found (or not a file); pass the path of a video file")


def run_dataset(run_dir: Path) -> str:
    """The dataset a run was trained on: model.json's "dataset", else the run directory's path."""
    meta = runs.read_model_record(Path(run_dir))
    dataset = meta.get("dataset") or getattr(runs.run_id_of(run_dir), "dataset", None)
    if not dataset:
        raise ActionReproError(f"{Path(run_dir) / 'model.json'} names no dataset and {run_dir} is not a "
                               "runs/<ds>/split<k>/<model>/<variant> directory; pass such a run directory")
    return dataset


def decode_videos(videos: list[Path], out_root: Path, params: dict, workers: int) -> pd.DataFrame:
    """Decode every video into out_root; the stores table VideoClipDataset reads. DataError naming
    each video that is not a readable video (the decode step's quarantine reasons)."""
    cfg = params["decode"]
    records = decode.decode_files(videos, out_root, int(cfg["short_side"]), int(cfg["jpeg_quality"]),
                                  float(cfg["timeout_s"]), workers=max(1, min(workers, len(videos))))
    bad = [f"{v} ({r.get('reason', r.get('status'))}: {r.get('detail', '')})"
           for v, r in zip(videos, records) if r.get("status") != "stored"]
    if bad:
        raise DataError(f"not decodable as video: {'; '.join(bad)}; pass video files the decode step can read "
                        "(e.g. .avi/.mp4)")
    return pd.DataFrame({"video_id": [str(v) for v in videos], "path": [str(v) for v in videos],
                         "label": 0, "store_path": [r["store_path"] for r in records],
                         "num_frames": [int(r["num_frames"]) for r in records]})


def top_classes(scores: np.ndarray, names: list[str], k: int = TOP_K) -> list[dict]:
    """The k highest scores of one video, ties broken by lower label (as predictions_*.csv)."""
    order = np.argsort(-scores, kind="stable")[:min(k, len(names))]
    return [{"class": names[i], "label": int(i), "prob": float(scores[i])} for i in order]


def predict(run_dir: Path, videos: list[Path], params: dict, views: tuple[int, int] = (1, 1),
            workers: int = 1) -> list[dict]:
    """One {"video", "views", "top5"} record per video, in order."""
    from actionrepro.data.dataset import StoreTable, VideoClipDataset

    check_videos(videos)
    dataset = run_dataset(run_dir)
    names = manifests.read_classes(dataset)
    device = distributed.select_device(params["train"]["device"])
    model = runs.load_model(run_dir).to(device)
    if model.input_spec.flow:
        raise ActionReproError(f"{run_dir}: model needs optical flow, which predict does not compute; "
                               "use an RGB run (e.g. tsn, tsm)")
    with tempfile.TemporaryDirectory(prefix="actionrepro-predict-") as tmp:
        table = StoreTable(Path(tmp), decode_videos(videos, Path(tmp), params, workers), len(names))
        data = VideoClipDataset(dataset, 0, "test", model.input_spec, params, mode="test", views=views,
                                stores=table, **gpu_clips.dataset_options(device))
        _, _, scores = predict_all(model, data, int(params["evaluate"]["batch_size"]), device, progress=False,
                                   desc="predict", max_clips=int(params["evaluate"]["chunk_clips"]),
                                   loader_memory_gb=float(params["train"]["loader_memory_gb"]))
    if scores.shape[1] != len(names):
        raise ActionReproError(f"{run_dir}: the model outputs {scores.shape[1]} classes but "
                               f"data/manifests/{dataset}/classes.csv lists {len(names)}; re-run `actionrepro splits "
                               f"{dataset}` or pass the run trained on it")
    label = f"{views[0]}x{views[1]}"
    return [{"video": str(v), "views": label, "top5": top_classes(s, names)} for v, s in zip(videos, scores)]
