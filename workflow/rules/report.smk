# report: compile everything under runs/ into reports/. Every file it writes is an output; the
# tables and figures go into `snakemake --report` (categories and captions under workflow/report/).


rule report:
    input:
        runs=dag.run_targets(config),
        code=dag.step_code("report"),
    output:
        results=report(REPORT_FILES["results"], category="Results", subcategory="Tables",
                       caption="../report/results.rst", labels={"file": "results.csv"}),
        temporal_order=report(REPORT_FILES["temporal_order"], category="Results", subcategory="Tables",
                              caption="../report/temporal_order.rst", labels={"file": "temporal_order.csv"}),
        pruning=report(REPORT_FILES["pruning"], category="Results", subcategory="Tables",
                       caption="../report/pruning.rst", labels={"file": "pruning.csv"}),
        provenance=REPORT_FILES["provenance"],
        run_status=report(REPORT_FILES["run_status"], category="Runs", caption="../report/run_status.rst",
                          labels={"file": "run_status.csv"}),
        quarantine=report(REPORT_FILES["quarantine"], category="Runs", caption="../report/quarantine.rst",
                          labels={"file": "quarantine.csv"}),
        tables=report(directory(REPORT_DIRS["tables"]), patterns=["{name}.html"], category="Results",
                      subcategory="Tables", caption="../report/tables.rst", labels={"table": "{name}"}),
        figures=report(directory(REPORT_DIRS["figures"]), patterns=["{name}.png"], category="Figures",
                       caption="../report/figures.rst", labels={"figure": "{name}"}),
        markdown=REPORT_FILES["markdown"],
        html=report(REPORT_FILES["html"], category="Report", caption="../report/report.rst",
                    labels={"file": "report.html"}),
    params:
        # the report reads the whole params file (target lists, protocols, provenance, params hash)
        whole_params=dag.key_sorted(config),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/actionrepro.yaml"
    shell:
        dag.cli("report", PARAMS_FILE)
