"""The data layout: where each data step writes (run directories: actionrepro.runs).

All paths are relative to the project root (the working directory of every step), so that
Snakemake, DVC and the CLI name the same files.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
REPORTS = Path("reports")
LOGS = Path("logs")


def raw_dir(dataset: str) -> Path:
    return DATA / "raw" / dataset


def videos_dir(dataset: str) -> Path:
    return DATA / "videos" / dataset


def manifests_dir(dataset: str) -> Path:
    return DATA / "manifests" / dataset


def frames_dir(dataset: str) -> Path:
    return DATA / "frames" / dataset


def flow_dir(dataset: str) -> Path:
    return DATA / "flow" / dataset



def weights_dir() -> Path:
    """Pretrained checkpoints fetched by `actionrepro weights` (the init of the per-model recipes)."""
    return DATA / "weights"
