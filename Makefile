# Two commands for a fresh clone: `make demo` and `make test`.
# Each creates .venv if missing and installs the project with its dependencies first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
DEMO_CONFIG := config/demo.yaml

.PHONY: demo test install lint clean-demo bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIG) --printshellcmds

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

bench: $(STAMP)
	for b in bench/*.py; do PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; done

clean-demo:
	rm -rf data/*/synth_ucf101 data/*/synth_hmdb51 runs/synth_* reports/* logs benchmarks .snakemake
