#!/usr/bin/env bash
# Snakemake runs this once inside the new conda env, from the working directory (the repository
# root): install this checkout, editable, so jobs run the code of the checkout they were started from.
# On Linux x86-64 the dependencies are exactly requirements.lock (as `make install` installs them);
# elsewhere the lock does not apply, and pip resolves pyproject.toml's ranges.
set -euo pipefail
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && [ -f requirements.lock ]; then
    python -m pip install --no-input --require-hashes -r requirements.lock
    python -m pip install --no-input --no-deps -e .
else
    python -m pip install --no-input -e .
fi
