# Two commands for a fresh clone: `make demo` and `make test`; `make reproduce` for the paper scale.
# Each creates .venv if missing and installs the project with its dependencies first: exactly the
# locked set in requirements.lock (CPython 3.11, Linux x86-64, with hashes); `make lock` refreshes it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The lock is made by uv (pinned here), in a venv of its own so that it stays out of the locked set.
UV_VERSION := 0.13.9
LOCK_VENV := .venv-lock
# `make lock LOCK_UPGRADE=--upgrade` moves every pin to its newest release; plain `make lock` keeps
# the pins of the present lock and only adds or drops what pyproject.toml changed.
LOCK_UPGRADE ?=
CORES ?= all
DEMO_CONFIG := config/demo.yaml
# The paper-scale smoke run works in its own folder: the demo's and the real run's files stay untouched.
SMOKE_DIR := smoke
# Snakemake runs at most this many GPU jobs at once (each claims a free GPU itself); empty where
# nvidia-smi is absent or lists none (a CPU machine: the GPU resource is then left unbounded).
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
GPU_RESOURCES = $(if $(filter-out 0,$(GPUS)),--resources gpu=$(GPUS))

.PHONY: demo smoke reproduce test install lock lint clean-demo clean-smoke bench dvc-code

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Two pip calls: --require-hashes admits no editable requirement, so the project itself comes
# second, without dependencies (the lock has them all).
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

$(LOCK_VENV)/bin/uv:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# Resolves against PyPI, uv's default index (uv reads no pip.conf; --no-config: nor any uv.toml).
lock: | $(LOCK_VENV)/bin/uv
	$(LOCK_VENV)/bin/uv pip compile --no-config --quiet pyproject.toml --extra test \
		--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(LOCK_UPGRADE) --output-file $(LOCK)
	$(LOCK_VENV)/bin/python tools/lock_inputs.py --stamp $(LOCK) --uv-version $(UV_VERSION)

# A killed Snakemake leaves its lock: unlock first, unless another Snakemake is running here.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/unlock_if_idle.py $(BIN)/snakemake --configfile $(DEMO_CONFIG)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIG)

# Paper scale on six synthetic videos (config/smoke.yaml): every model, its recipe, one epoch, one
# prune; then every job's peak RSS (Snakemake benchmark files) is checked against 16 GB.
smoke: $(STAMP)
	mkdir -p $(SMOKE_DIR)
	$(BIN)/python tools/smoke_weights.py $(SMOKE_DIR)/weights
	cd $(SMOKE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/python $(CURDIR)/tools/unlock_if_idle.py \
		$(CURDIR)/$(BIN)/snakemake -s $(CURDIR)/workflow/Snakefile --configfile $(CURDIR)/config/smoke.yaml
	cd $(SMOKE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/snakemake -s $(CURDIR)/workflow/Snakefile \
		--cores $(CORES) --configfile $(CURDIR)/config/smoke.yaml
	$(BIN)/python tools/smoke_check.py $(SMOKE_DIR) --params config/smoke.yaml --limit-gb 16

reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/unlock_if_idle.py $(BIN)/snakemake
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

clean-smoke:
	rm -rf $(SMOKE_DIR)

clean-demo:
	rm -rf data/*/synth_ucf101 data/*/synth_hmdb51 runs/synth_* reports/* logs benchmarks .snakemake
