"""The `actionrepro` command: one subcommand per pipeline step.

Thin on purpose: parse arguments, load params, set threads, call the step, map errors to exit
codes. Snakemake rules and DVC stages call exactly these commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from actionrepro.errors import ActionReproError

log = logging.getLogger("actionrepro")

DATASETS = ["ucf101", "hmdb51", "synth_ucf101", "synth_hmdb51"]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int | None) -> int:
    """Give torch exactly the cores this job was granted.

    Two intra-op threads on a 2-core box make every oneDNN conv pay ~30 ms of OpenMP spin-wait;
    a passive wait policy (set before torch loads OpenMP) removes it.
    """
    threads = threads or available_cores()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    return threads


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"pruning ratio must be in (0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", type=Path,
                        help="params file (default: params.yaml; the demo uses config/demo.yaml)")
    common.add_argument("--threads", type=int, default=None,
                        help="CPU threads for this step (default: all cores available to the process)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    parser = argparse.ArgumentParser(
        prog="actionrepro",
        description="Reproduce video action-recognition networks on UCF101 and HMDB51: "
        "download -> extract -> splits -> decode -> flow -> train -> prune -> evaluate -> report.",
    )
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    p = sub.add_parser("synth", parents=[common], help="write a synthetic dataset's archives in the official format")
    p.add_argument("kind", choices=["ucf101", "hmdb51"])
    p.add_argument("--out", type=Path, required=True, help="directory for the archives")

    p = sub.add_parser("download", parents=[common], help="fetch (or, for synth_*, generate) a dataset's archives into data/raw/DATASET")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--archive", type=Path, action="append", default=[],
                   help="use an archive you already have (verified, then copied in); repeat per archive")
    p.add_argument("--insecure", action="store_true",
                   help="skip TLS certificate verification (sizes and hashes are still verified)")

    p = sub.add_parser("extract", parents=[common], help="unpack data/raw/DATASET into the official layout under data/videos/DATASET")
    p.add_argument("dataset", choices=DATASETS)

    p = sub.add_parser("splits", parents=[common], help="parse the official splits into data/manifests/DATASET")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--source", type=Path, default=None, help="extracted root (default data/videos/DATASET)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default data/manifests/DATASET)")

    p = sub.add_parser("decode", parents=[common], help="decode every video once into the frame store data/frames/DATASET")
    p.add_argument("dataset", choices=DATASETS)

    p = sub.add_parser("flow", parents=[common], help="compute optical flow into data/flow/DATASET")
    p.add_argument("dataset", choices=DATASETS)

    for name, helptext in [("train", "train MODEL on DATASET split SPLIT -> runs/DATASET/splitK/MODEL/dense")]:
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("dataset", choices=DATASETS)
        p.add_argument("split", type=int, choices=[1, 2, 3])
        p.add_argument("model")

    p = sub.add_parser("prune", parents=[common], help="prune a trained model structurally and fine-tune it -> pruned-RATIO")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("split", type=int, choices=[1, 2, 3])
    p.add_argument("model")
    p.add_argument("ratio", type=_ratio)

    p = sub.add_parser("evaluate", parents=[common], help="evaluate a trained (dense or pruned) model on the test list")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("split", type=int, choices=[1, 2, 3])
    p.add_argument("model")
    p.add_argument("--variant", default="dense", help="dense (default) or pruned-<ratio>")

    p = sub.add_parser("report", parents=[common], help="compile runs/ into reports/ (tables, figures, report.md/html)")
    p.add_argument("--out", type=Path, default=Path("reports"))
    return parser


def run_step(args) -> None:
    from actionrepro import config

    params = config.load(args.params)
    step = args.step
    if step == "synth":
        from actionrepro.data import synthetic

        synthetic.write_archives(args.kind, args.out, params["synth"][args.kind], seed=params["seed"])
    elif step == "download":
        from actionrepro.data import download

        download.download_dataset(args.dataset, params, archives=args.archive, insecure=args.insecure)
    elif step == "extract":
        from actionrepro.data import archives

        archives.extract_dataset(args.dataset)
    elif step == "splits":
        from actionrepro.data import splits

        splits.write_manifests(args.dataset, source=args.source, out=args.out, params=params)
    elif step == "decode":
        from actionrepro.data import decode

        decode.decode_dataset(args.dataset, params, workers=args.threads)
    elif step == "flow":
        from actionrepro.data import flow

        flow.compute_flow(args.dataset, params, workers=args.threads)
    elif step == "train":
        from actionrepro import train

        train.train(args.dataset, args.split, args.model, params)
    elif step == "prune":
        from actionrepro import prune

        prune.prune(args.dataset, args.split, args.model, args.ratio, params)
    elif step == "evaluate":
        from actionrepro import evaluate

        evaluate.evaluate(args.dataset, args.split, args.model, params, variant=args.variant)
    elif step == "report":
        from actionrepro import report

        report.build_report(params, out=args.out, params_file=args.params)
    else:  # pragma: no cover - argparse restricts the choices
        raise ActionReproError(f"unknown step {step!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.step in {"decode", "flow", "train", "prune", "evaluate"}:
        args.threads = configure_threads(args.threads)
    else:
        args.threads = args.threads or available_cores()
    try:
        run_step(args)
    except ActionReproError as err:
        print(f"actionrepro {args.step}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"actionrepro {args.step}: interrupted; finished outputs are kept, re-run to resume", file=sys.stderr)
        return 130
    return 0
