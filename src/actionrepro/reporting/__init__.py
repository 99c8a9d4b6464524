"""Pieces of the benchmark report (the report step): collect, tables, figures, html.

collect reads what the pipeline steps wrote; tables and figures turn that into numbers and plots;
html renders one list of blocks both as Markdown and as a self-contained HTML page.
"""
