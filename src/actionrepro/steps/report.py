"""The `actionrepro report` step: compile runs/ (and the data steps' summaries) into reports/.

Writes, each file atomically:
  results.csv         one row per dataset x split x model x variant x view protocol (percent)
  temporal_order.csv  reversed-pair accuracy per synthetic dataset, model and variant (+ McNemar vs tsn)
  pruning.csv         pruned vs dense per dataset, model, ratio, view protocol: Δ top-1, McNemar p_value
  run_status.csv      every run the params expect and how far it got
  quarantine.csv      every video a data step set aside, with its reason
  tables/             the main, pruning and temporal-order tables (Markdown and HTML)
  figures/            PNG + SVG of every figure
  report.md, report.html (self-contained: inline CSS, base64 figures), written last.
The report shows what exists: a partial run gives a partial report that names what is missing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from actionrepro import paths, provenance
from actionrepro.errors import ActionReproError
from actionrepro.io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text
from actionrepro.reporting import collect, document, figures, html, tables

log = logging.getLogger(__name__)

def build_report(params: dict, out: Path = paths.REPORTS, params_file: str | Path | None = None) -> dict[str, Path]:
    """Build every report file under `out` from what the steps wrote; return {name: path}.

    params: the validated params the runs were made with (the expected runs, the view protocols,
    the hash). params_file: the file they came from, used in the reproduce commands; if not given,
    the params.yaml or config/*.yaml that holds exactly these params is named.
    """
    out = Path(out)
    params_file = resolve_params_file(params, params_file)
    git, phash = provenance.git_state(), collect.params_hash(params)
    refuse_other_report(out, params_file, phash)
    results, status = collect.collect_results(params, phash, params_file)
    paper = tables.paper_views(params)
    infos = document.model_infos(params["models"])

    main = tables.main_table(results, params, infos)
    pruning_csv = tables.pruning_tests(results, params)
    pruning = tables.pruning_table(results, params, pruning_csv) if params["prune"]["ratios"] else pd.DataFrame()
    temporal, temporal_csv = tables.temporal_order(results, params)
    stores = collect.store_summaries(params["datasets"])
    quarantine = collect.quarantined_videos(params["datasets"])
    figure_list = document.make_figures(results, params, paper)

    written: dict[str, Path] = {}

    def put(name: str, path: Path, writer, payload) -> None:
        writer(path, payload)
        written[name] = path

    external = collect.external_results(phash)  # extra rows, never in the tables' aggregates
    put("results", out / "results.csv", atomic_write_csv,
        pd.concat([results, external], ignore_index=True) if len(external) else results)
    put("temporal_order", out / "temporal_order.csv", atomic_write_csv, temporal_csv)
    put("pruning", out / "pruning.csv", atomic_write_csv, pruning_csv)
    put("run_status", out / "run_status.csv", atomic_write_csv, status)
    put("quarantine", out / "quarantine.csv", atomic_write_csv, quarantine)
    for name, frame, caption in (("main", main, document.main_caption(params)),
                                 ("pruning", pruning, document.PRUNING_CAPTION),
                                 ("temporal_order", temporal, document.TEMPORAL_CAPTION)):
        put(f"table_{name}_md", out / "tables" / f"{name}.md", atomic_write_text,
            html.render_markdown([("table", frame, caption)]))
        put(f"table_{name}_html", out / "tables" / f"{name}.html", atomic_write_text,
            html.render_html([("table", frame, caption)], f"{document.TITLE}: {name}"))
    figure_blocks = []
    for name, fig, caption in figure_list:
        png, svg = figures.render(fig)
        put(f"figure_{name}_png", out / "figures" / f"{name}.png", atomic_write_bytes, png)
        put(f"figure_{name}_svg", out / "figures" / f"{name}.svg", atomic_write_bytes, svg)
        figure_blocks.append(("figure", name, png, caption))
    remove_stale_figures(out / "figures", {p.name for p in written.values()})

    blocks = document.report_blocks(params, params_file, git, phash, results, status, main, pruning, temporal,
                           stores, quarantine, figure_blocks, root_link=project_link(out))
    put("report_md", out / "report.md", atomic_write_text, html.render_markdown(blocks))
    put("report_html", out / "report.html", atomic_write_text, html.render_html(blocks, document.TITLE))
    put("provenance", out / provenance.FILE_NAME, atomic_write_json,
        {"params_file": params_file, "params_hash": phash, "git": git})
    evaluated = int((status["state"] == collect.EVALUATED).sum())
    log.info("report: %d of %d expected runs evaluated, %d figures -> %s", evaluated, len(status),
             len(figure_blocks), out / "report.html")
    return written


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, default=Path("reports"))


def run(args, params: dict) -> None:
    from actionrepro.io import remove_atomic_temps

    remove_atomic_temps(args.out, recursive=True)  # figures/tables a failed or killed build left half-written
    build_report(params, out=args.out, params_file=args.params)


def refuse_other_report(out: Path, params_file: str, phash: str) -> None:
    """A report folder belongs to one params file: another one's report is not replaced silently."""
    made = provenance.read_file(out / provenance.FILE_NAME)
    if made and made.get("params_file") != params_file and made.get("params_hash") != phash:
        raise ActionReproError(f"{out} holds the report of {made.get('params_file')}; this command reads {params_file}. "
                               f"Refusing to replace it: pass --out DIR for this report, or --params "
                               f"{made.get('params_file')} to rebuild that one")


# ---------------------------------------------------------------- inputs
def resolve_params_file(params: dict, given: str | Path | None = None) -> str:
    """The params file to name in the reproduce commands."""
    if given is not None:
        return Path(given).as_posix()
    from actionrepro import config

    for candidate in [Path("params.yaml"), *sorted(Path("config").glob("*.yaml"))]:
        try:
            if candidate.is_file() and config.load(candidate) == params:
                return candidate.as_posix()
        except ActionReproError:
            continue
    return "PARAMS_FILE"


def project_link(out: Path) -> str:
    """The project root (the working directory) as a relative link from the report folder `out`."""
    try:
        rel = Path(os.path.relpath(Path.cwd(), Path(out).resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative link exists
        return Path.cwd().as_uri() + "/"
    return "" if rel == "." else rel + "/"


def remove_stale_figures(folder: Path, keep: set[str]) -> None:
    """Delete figures of an earlier build that this build did not draw (e.g. a dropped model)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.suffix in (".png", ".svg") and path.name not in keep:
                path.unlink()
