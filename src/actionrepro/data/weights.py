"""Pretrained weights the per-model recipes start from (params recipes.<model>.init), fetched once by
`actionrepro weights` into data/weights/ with the dataset downloader (actionrepro.data.download:
streaming, resume, mirrors, retries, sha256 verified or pinned on the first verified download,
`--file` for a copy obtained by hand). Training reads them from there and never touches the network.

init is one of
  none          random initialisation (the demo)
  imagenet      ImageNet weights of the model's 2D backbone (torchvision ResNet-50)
  kinetics400   the Kinetics-400 checkpoint of the anchor's network (see SOURCES)
  a path        any checkpoint file models.checkpoints reads (torchvision, mmaction2, TDN, S2TF-Net)

How a file reaches the model (`how`):
  option      the architecture's own `pretrained` option gets the file's path at build time: the
              builder knows how to fit 2D weights into its network (inflation, a 20-channel flow stem
              from the RGB stem, STH's temporal kernels, TDN's difference stem); the run records no path
              (runs.load_model rebuilds with pretrained none and reads the run's own checkpoint)
  checkpoint  models.checkpoints.load_into after building (whole networks from other code bases, their
              layout detected), the classifier left random when its shape differs

URLs are those the reference repositories publish (torchvision's weights tables, mmaction2's model-zoo
READMEs). The 8 hex digits in their file names are the start of the file's sha256 (torchvision's
and mmaction2's publishing convention): checked before the full sha256 is pinned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from actionrepro import paths
from actionrepro.data.sources import Archive, Dataset
from actionrepro.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INIT_NAMES = ("none", "imagenet", "kinetics400")


@dataclass(frozen=True)
class WeightSource:
    """One checkpoint file as its publisher distributes it."""

    name: str                       # file name under data/weights/
    urls: tuple[str, ...]           # mirrors, in order (empty: obtain it by hand, then `--file`)
    origin: str                     # who publishes it, where the URL is listed
    sha256: str | None = None       # full digest where the publisher states it, else pinned
    note: str = ""

    @property
    def sha256_prefix(self) -> str | None:
        """The digest prefix in the file name (`name-<8 hex>.pth`), where it has one."""
        stem = self.name.rsplit(".", 1)[0]
        tail = stem.rsplit("-", 1)[-1]
        return tail if len(tail) == 8 and all(c in "0123456789abcdef" for c in tail) else None


TV = "https://download.pytorch.org/models/"
MM = "https://download.openmmlab.com/mmaction/recognition/"
SOURCES: dict[str, WeightSource] = {s.name: s for s in (
    WeightSource("resnet50-0676ba61.pth", (TV + "resnet50-0676ba61.pth",),
                 "torchvision ResNet50_Weights.IMAGENET1K_V1 (torchvision/models/resnet.py)"),
    WeightSource("r3d_18-b3b3357e.pth", (TV + "r3d_18-b3b3357e.pth",),
                 "torchvision R3D_18_Weights.KINETICS400_V1 (torchvision/models/video/resnet.py)"),
    WeightSource("r2plus1d_18-91a641e6.pth", (TV + "r2plus1d_18-91a641e6.pth",),
                 "torchvision R2Plus1D_18_Weights.KINETICS400_V1 (torchvision/models/video/resnet.py)"),
    WeightSource("tsm_r50_256p_1x1x8_50e_kinetics400_rgb_20200726-020785e2.pth",
                 (MM + "tsm/tsm_r50_256p_1x1x8_50e_kinetics400_rgb/tsm_r50_256p_1x1x8_50e_kinetics400_rgb_20200726-020785e2.pth",),
                 "mmaction2 model zoo, configs/recognition/tsm/README.md: the K400 TSM-R50 (short side 256) whose URL the "
                 "UCF101/HMDB51 configs name in load_from (tsm_k400_pretrained_r50_1x1x8_25e_*_rgb.py)"),
    WeightSource("i3d_r50_32x2x1_100e_kinetics400_rgb_20200614-c25ef9a4.pth",
                 (MM + "i3d/i3d_r50_32x2x1_100e_kinetics400_rgb/i3d_r50_32x2x1_100e_kinetics400_rgb_20200614-c25ef9a4.pth",),
                 "mmaction2 model zoo, configs/recognition/i3d/README.md"),
    WeightSource("tdn_r50_kinetics400_8f.pth", (),
                 "MCG-NJU/TDN README.md model zoo (a cloud-drive link, no direct URL)",
                 note="download TDN-R50 (8 frames, Kinetics-400) from the TDN README by hand and pass it with "
                      "`actionrepro weights --file PATH`"),
    WeightSource("i3d_nl_r50_kinetics400.pth", (),
                 "the non-local I3D-R50 Kinetics-400 checkpoint S2TF-Net fine-tunes from "
                 "(xiaoxiAries/S2TFNet README)",
                 note="obtain the non-local I3D-R50 K400 checkpoint named in the S2TF-Net README by hand and pass it "
                      "with `actionrepro weights --file PATH`"),
)}

# (model, init) -> (file in SOURCES, how it reaches the model, parts load_into may leave as built)
INITS: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    **{(m, "imagenet"): ("resnet50-0676ba61.pth", "option", ())
       for m in ("tsn", "tsm", "i3d", "ustn", "sth", "stpn", "stfn")},
    ("r3d", "kinetics400"): ("r3d_18-b3b3357e.pth", "option", ()),
    ("r2plus1d", "kinetics400"): ("r2plus1d_18-91a641e6.pth", "option", ()),
    ("tsm", "kinetics400"): ("tsm_r50_256p_1x1x8_50e_kinetics400_rgb_20200726-020785e2.pth", "checkpoint",
                             ("classifier",)),
    ("i3d", "kinetics400"): ("i3d_r50_32x2x1_100e_kinetics400_rgb_20200614-c25ef9a4.pth", "checkpoint",
                             ("classifier",)),
    ("ustn", "kinetics400"): ("tdn_r50_kinetics400_8f.pth", "checkpoint", ("classifier",)),
    ("s2tfnet", "kinetics400"): ("i3d_nl_r50_kinetics400.pth", "checkpoint", ("classifier", "saliency")),
}


@dataclass(frozen=True)
class InitPlan:
    init: str
    file: Path | None        # None: random init
    how: str                 # "none" | "option" | "checkpoint"
    allow_missing: tuple[str, ...] = ()
    source: WeightSource | None = None


def plan(model: str, init: str) -> InitPlan:
    """Where `model`'s `init` comes from; ConfigError for a named init nobody publishes for it."""
    if init == "none":
        return InitPlan("none", None, "none")
    if init in INIT_NAMES:
        if (model, init) not in INITS:
            known = sorted(i for m, i in INITS if m == model)
            raise ConfigError(f"recipes.{model}.init = {init!r}: no {init} checkpoint is registered for {model} "
                              f"(actionrepro.data.weights.INITS); use none, {', '.join(known) or '(no named init)'} "
                              "or the path of a checkpoint file")
        name, how, allow = INITS[(model, init)]
        return InitPlan(init, paths.weights_dir() / name, how, allow, SOURCES[name])
    return InitPlan(init, Path(init).expanduser(), "checkpoint", ("classifier",))


def init_file(model: str, params: dict) -> Path | None:
    """The checkpoint file a (resolved) run of `model` starts from, checked present; None for random init.
    Never downloads: a missing file names the step that fetches it."""
    p = plan(model, params.get("init", "none"))
    if p.file is None:
        return None
    if not p.file.is_file():
        fix = ("run `actionrepro weights` first (it fetches every checkpoint the params need)" if p.source
               else "give the path of an existing checkpoint file")
        raise DataError(f"{model}: init {p.init!r} needs {p.file}, which is missing; {fix}")
    return p.file


def build_options(model: str, params: dict, file: Path | None) -> dict:
    """Options added at build time only (not recorded in model.json): the `pretrained` file path."""
    p = plan(model, params.get("init", "none"))
    return {"pretrained": str(file)} if file is not None and p.how == "option" else {}


def initialiser(model: str, params: dict, file: Path | None) -> Callable | None:
    """For whole-network checkpoints, a callable loading `file` into the built model (classifier
    allowed to stay random); None otherwise."""
    p = plan(model, params.get("init", "none"))
    if file is None or p.how != "checkpoint":
        return None

    def load(net):
        from actionrepro.models.checkpoints import load_into

        report = load_into(net, file, allow_missing=p.allow_missing)
        log.info("%s: initialised from %s (%s)", model, file, _summary(report))
        return net

    return load


def _summary(report: dict) -> str:
    return ", ".join(f"{k}: {len(v) if isinstance(v, (list, tuple, dict)) else v}" for k, v in report.items())[:300]


# ---------------------------------------------------------------- what the params need
def needed(params: dict) -> dict[str, list[str]]:
    """{file name in SOURCES: [the dataset/model pairs whose init needs it]} for the params' runs."""
    from actionrepro.config import resolve

    out: dict[str, list[str]] = {}
    for dataset in params["datasets"]:
        for model in params["models"]:
            p = plan(model, resolve(params, dataset, model)["init"])
            if p.source is not None:
                out.setdefault(p.source.name, []).append(f"{dataset}/{model}")
    return out


def as_dataset(names: list[str], sources: dict[str, WeightSource] | None = None) -> Dataset:
    """The files as one downloader 'dataset' (format "file": verified by size/sha256 only)."""
    table = sources or SOURCES
    archives = []
    for name in names:
        s = table[name]
        archives.append(Archive(name=s.name, role=f"weights {s.name}", format="file", layout="", top_dir="", urls=s.urls,
                                checksum=("sha256", s.sha256) if s.sha256 else None, note=s.note or s.origin,
                                sha256_prefix=s.sha256_prefix))
    return Dataset(name="weights", archives=tuple(archives), homepage="see actionrepro.data.weights.SOURCES",
                   manual_hint="actionrepro weights --file PATH")
