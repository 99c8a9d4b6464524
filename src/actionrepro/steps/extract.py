"""The `actionrepro extract` step: data/raw/<ds> unpacked into the official layout under
data/videos/<ds> (traversal-checked, atomic, resumable; actionrepro.data.archives)."""

from __future__ import annotations

from actionrepro.data import archives
from actionrepro.steps import add_dataset_argument


def add_arguments(parser) -> None:
    add_dataset_argument(parser)


def run(args, params: dict) -> None:
    archives.extract_dataset(args.dataset)
