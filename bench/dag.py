"""Benchmark: how long Snakemake takes to plan the DAG (`snakemake -n`), paper scale and demo.

Not a test: prints a table and, last, one JSON line. Each DAG is planned in a fresh temporary
working directory holding only the params file (what a fresh clone plans: every job to run), with
this checkout's workflow/Snakefile, --repeats times in fresh `snakemake` processes; the figures are
the median and the minimum wall time of the whole command (interpreter start, imports, parsing,
params validation, DAG). The CPU time of the child (user + system) is printed beside it, since wall
time on a shared machine also measures the other jobs. Reference point: `snakemake --version`, the
floor any snakemake command pays.

    .venv/bin/python bench/dag.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
JOB_STATS = re.compile(r"^Job stats:\n(?:.*\n){2}((?:\S+\s+\d+\n)+)", re.MULTILINE)


def snakemake_bin() -> str:
    local = Path(sys.executable).with_name("snakemake")
    found = str(local) if local.exists() else shutil.which("snakemake")
    if not found:
        raise SystemExit("snakemake not found: run with the project's environment (.venv/bin/python bench/dag.py)")
    return found


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, child CPU s, stdout + stderr) of one command."""
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return wall, cpu, proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {rule: jobs, ..., 'total': n}."""
    match = JOB_STATS.search(output)
    if not match:
        raise SystemExit("no 'Job stats' table in the dry run's output:\n" + output[-2000:])
    return {rule: int(n) for rule, n in (line.split() for line in match.group(1).splitlines())}


def measure(name: str, params: Path, repeats: int, exe: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"dag-{name}-") as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "params.yaml", work / "params.yaml")  # the Snakefile's default configfile
        cmd = [exe, "-n", "-s", str(SNAKEFILE)]
        if params.name != "params.yaml":
            (work / "config").mkdir()
            shutil.copy(params, work / "config" / params.name)
            cmd += ["--configfile", f"config/{params.name}"]
        runs = [timed(cmd, work) for _ in range(repeats)]
    walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
    return {"name": name, "params": params.relative_to(ROOT).as_posix(), "jobs": job_counts(runs[-1][2]),
            "median_s": statistics.median(walls), "min_s": min(walls), "cpu_s": statistics.median(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = snakemake_bin()
    load = os.getloadavg()[0]

    floor = [timed([exe, "--version"], ROOT) for _ in range(args.repeats)]
    rows = [measure("paper", ROOT / "params.yaml", args.repeats, exe),
            measure("demo", ROOT / "config" / "demo.yaml", args.repeats, exe)]

    print(f"snakemake dry runs, {args.repeats} repeats each, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print()
    print("| DAG | params | jobs | median s | min s | CPU s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print(f"| (snakemake --version) | | | {statistics.median(r[0] for r in floor):.2f} | "
          f"{min(r[0] for r in floor):.2f} | {statistics.median(r[1] for r in floor):.2f} |")
    for r in rows:
        print(f"| {r['name']} | {r['params']} | {r['jobs']['total']} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
              f"{r['cpu_s']:.2f} |")
    print()
    paper, demo = rows
    print("paper jobs per rule:", ", ".join(f"{k} {v}" for k, v in paper["jobs"].items() if k != "total"))
    print(json.dumps({"paper_dry_run_s": round(paper["median_s"], 2), "paper_jobs": paper["jobs"]["total"],
                      "paper_dry_run_cpu_s": round(paper["cpu_s"], 2), "demo_dry_run_s": round(demo["median_s"], 2),
                      "demo_jobs": demo["jobs"]["total"],
                      "snakemake_version_s": round(statistics.median(r[0] for r in floor), 2)}))


if __name__ == "__main__":
    main()
