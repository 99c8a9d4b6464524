"""Write checkpoint files in torchvision's layout for the smoke run (make smoke): random weights,
real files, so the smoke exercises the init path (layout detection, key mapping, load report) that
the ImageNet and Kinetics-400 files take, without downloading them.

    python tools/smoke_weights.py smoke/weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision

FACTORIES = {
    "resnet50_torchvision.pth": torchvision.models.resnet50,
    "r3d_18_torchvision.pth": torchvision.models.video.r3d_18,
    "r2plus1d_18_torchvision.pth": torchvision.models.video.r2plus1d_18,
}


def write_checkpoints(folder: Path, seed: int) -> list[Path]:
    """One state dict file per FACTORIES entry (skipped when present: the smoke's inputs stay put)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, factory in FACTORIES.items():
        path = folder / name
        if path.is_file():
            continue
        torch.manual_seed(seed)
        tmp = path.with_suffix(".tmp")
        torch.save(factory().state_dict(), tmp)
        tmp.replace(path)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_checkpoints(args.folder, args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
