"""The `actionrepro download` step: a dataset's archives into data/raw/<ds> (verified, resumable,
mirrors in order; the synth_* datasets are generated instead). The downloader is
actionrepro.data.download."""

from __future__ import annotations

from pathlib import Path

from actionrepro.data import download
from actionrepro.steps import add_dataset_argument


def add_arguments(parser) -> None:
    add_dataset_argument(parser)
    parser.add_argument("--archive", type=Path, action="append", default=[],
                        help="use an archive you already have (verified, then copied in); repeat per archive")
    parser.add_argument("--insecure", action="store_true",
                        help="skip TLS certificate verification (sizes and hashes are still verified)")


def run(args, params: dict) -> None:
    download.download_dataset(args.dataset, params, archives=args.archive, insecure=args.insecure)
