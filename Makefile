# Two commands for a fresh clone: `make demo` and `make test`; `make reproduce` for the paper scale.
# Each creates .venv if missing and installs the project with its dependencies first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
DEMO_CONFIG := config/demo.yaml
# Snakemake runs at most this many GPU jobs at once (each claims a free GPU itself); empty where
# nvidia-smi is absent or lists none (a CPU machine: the GPU resource is then left unbounded).
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
GPU_RESOURCES = $(if $(filter-out 0,$(GPUS)),--resources gpu=$(GPUS))

.PHONY: demo reproduce test install lint clean-demo bench dvc-code

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIG)

reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) $(GPU_RESOURCES)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

bench: $(STAMP)
	for b in bench/*.py; do PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; done

# Rewrite dvc.yaml's code deps from the imports (actionrepro.dag.with_dvc_code); a test fails while stale.
dvc-code: $(STAMP)
	$(BIN)/python -c "from pathlib import Path; from actionrepro import dag; from actionrepro.models import model_names; \
	p = Path('dvc.yaml'); p.write_text(dag.with_dvc_code(p.read_text(), model_names()))"

clean-demo:
	rm -rf data/*/synth_ucf101 data/*/synth_hmdb51 runs/synth_* reports/* logs benchmarks .snakemake
