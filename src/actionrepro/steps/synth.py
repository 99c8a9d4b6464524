"""The `actionrepro synth` command: write a synthetic dataset's archives in the official format
(what `download` does for the synth_* datasets, callable on its own for a look at the files)."""

from __future__ import annotations

from pathlib import Path

from actionrepro.data import synthetic


def add_arguments(parser) -> None:
    parser.add_argument("kind", choices=["ucf101", "hmdb51"])
    parser.add_argument("--out", type=Path, required=True, help="directory for the archives")


def run(args, params: dict) -> None:
    synthetic.write_archives(args.kind, args.out, params["synth"][args.kind], seed=params["seed"])
