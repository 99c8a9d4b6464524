# report: compile everything under runs/ into reports/.


def report_inputs(w):
    return [t for t in all_targets() if t not in REPORT_OUTPUTS]


rule report:
    input:
        report_inputs,
    output:
        results=report("reports/results.csv", category="Results", caption="../report/results.rst"),
        markdown="reports/report.md",
        html=report("reports/report.html", category="Report", caption="../report/report.rst"),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "actionrepro report {PARAMS} > {log} 2>&1"
