# Two entry points (see README "Quick start"): `make run` and `make test`.
# Both create .venv once and reuse it; the stamp files make reruns cheap.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: run test install clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,slurm]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
