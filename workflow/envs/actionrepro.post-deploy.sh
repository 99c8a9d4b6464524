#!/usr/bin/env bash
# Snakemake runs this once inside the new conda env, from the working directory (the repository
# root): install this checkout, editable, so jobs run the code of the checkout they were started from.
set -euo pipefail
python -m pip install --no-input -e .
