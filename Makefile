# cxr: every command a user needs. `make install` is idempotent: it reinstalls only when
# pyproject.toml or constraints.txt changed since the last install into .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxr-installed
PYTHON ?= python3

# No run-time downloads: no hub weights, no albumentations update check.
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install test test-fast lint format demo models augment-grids bench reproduce-tables clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c constraints.txt pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,sweep]'
	@touch $(STAMP)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check cxr tests

format: install
	$(VENV)/bin/ruff format cxr tests

demo: install
	$(PY) -m cxr.cli.demo

models: install
	$(VENV)/bin/cxr-models

# Input pipeline, models (CPU, and GPU with bf16 + channels_last where present) and the RSNA metric:
# experiments/results/bench-<cpu|gpu>.json, .md and .png (~10 min on 2 idle cores). ARGS=--compile also times
# torch.compile on a GPU; `.venv/bin/cxr-bench --quick --out /tmp/bench` is a smoke run that keeps the results.
bench: install
	$(PY) -m cxr.bench --out experiments/results $(ARGS)

# README's augmentation pictures, from a synthetic RSNA set (no dataset needed).
GRID_DATA := logs/synthetic/rsna
augment-grids: install
	@test -f $(GRID_DATA)/stage_2_train_labels.csv || $(VENV)/bin/cxr-synth rsna $(GRID_DATA) --n 40 --seed 0 --size 512
	for set in none paper_da light heavy heavy_norot heavy_customrot; do \
	  $(VENV)/bin/cxr-augment-grid augment=$$set datamodule=rsna datamodule.data_dir=$(GRID_DATA) \
	    datamodule.image_size=256 datamodule.num_workers=0 rows=3 cols=4 out=experiments/figures/augment_$$set.png || exit 1; \
	done

# Every table of both papers, ours beside theirs: experiments/results/$(PROFILE)/*.md, *.csv, *.png
# (see experiments/README.md). PROFILE=smoke (default): synthetic data, CPU, < 20 min on 2 cores.
# PROFILE=paper DATA_ROOT=/data (chest_xray/ and rsna/ inside): the papers' settings, on a GPU.
# Re-running skips finished runs and resumes interrupted ones. ARGS="--tables go2020_table2 -- hydra/launcher=slurm"
PROFILE ?= smoke
DATA_ROOT ?=
DATA_NOTE ?=
ARGS ?=
reproduce-tables: install
	$(PY) -m cxr.cli.reproduce --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT),) \
	  $(if $(DATA_NOTE),--data-note "$(DATA_NOTE)",) $(ARGS)

clean:
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
