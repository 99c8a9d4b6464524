"""Check the smoke run's memory (make smoke): every job of the DAG left a Snakemake benchmark file,
and no job's peak RSS (Snakemake's max_rss, the job's whole process tree) passed the limit.

    python tools/smoke_check.py smoke --params config/smoke.yaml --limit-gb 16

Prints one line per job, largest first; exits 1 naming what is missing or over the limit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from actionrepro import config


def expected_benchmarks(params: dict) -> list[str]:
    """The benchmark files (relative to the run folder) the smoke DAG's jobs write."""
    files = ["benchmarks/weights.tsv", "benchmarks/report.tsv"]
    variants = ["dense"] + [f"pruned-{r:g}" for r in params["prune"]["ratios"]]
    for ds in params["datasets"]:
        files += [f"benchmarks/{step}/{ds}.tsv" for step in ("download", "extract", "splits", "decode", "flow")]
        for split in params["splits"]:
            for model in params["models"]:
                run = f"{ds}-split{split}-{model}"
                files.append(f"benchmarks/train/{run}.tsv")
                files += [f"benchmarks/prune/{run}-{r:g}.tsv" for r in params["prune"]["ratios"]]
                files += [f"benchmarks/evaluate/{run}-{v}.tsv" for v in variants]
    return files


def peak_table(folder: Path, files: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(job, seconds, max_rss in MB) of each benchmark file present; the missing ones."""
    rows, missing = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        bench = pd.read_csv(path, sep="\t")
        rows.append({"job": name.removeprefix("benchmarks/").removesuffix(".tsv"),
                     "s": float(bench["s"].max()), "max_rss_mb": float(bench["max_rss"].max())})
    table = pd.DataFrame(rows, columns=["job", "s", "max_rss_mb"])
    return table.sort_values("max_rss_mb", ascending=False, ignore_index=True), missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder the smoke DAG ran in")
    parser.add_argument("--params", default="config/smoke.yaml")
    parser.add_argument("--limit-gb", type=float, default=16.0)
    args = parser.parse_args()
    params = config.load(args.params)
    table, missing = peak_table(args.folder, expected_benchmarks(params))
    print(table.to_string(index=False))
    limit_mb = args.limit_gb * 1e9 / 2**20  # Snakemake's max_rss is in MiB
    over = table[table["max_rss_mb"] > limit_mb]
    print(f"{len(table)} jobs, peak RSS {table['max_rss_mb'].max():.0f} MiB, total {table['s'].sum():.0f} s of job time")
    if missing:
        print(f"missing benchmark files (did the run finish?): {', '.join(missing)}", file=sys.stderr)
    if len(over):
        print(f"over {args.limit_gb:g} GB: {', '.join(over['job'])}", file=sys.stderr)
    return 1 if missing or len(over) else 0


if __name__ == "__main__":
    sys.exit(main())
