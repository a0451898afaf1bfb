# Commands for a fresh machine:
#   make demo   installs everything into .venv and runs the demo sweep on the embedded defaults
#   make test   installs everything into .venv and runs the test suite
#   make lint   ruff (lint and import order) and mypy, configured in pyproject.toml
#   make demo-record   runs the demo from a clean state and records what it prints (tests/fixtures/demo_result.json, README.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On machines without an NVIDIA GPU, pin the CPU build of torch; GPU machines keep their own torch.
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints/cpu.txt")

.PHONY: install demo demo-record test lint bench clean

$(BIN)/hpo: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e '.[test,postgres,dashboard,trainer]'
	touch $(BIN)/hpo

install: $(BIN)/hpo

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/hpo run sweeps/demo.yaml

demo-record: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/demo_record.py

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check orchestrator trials tests bench examples
	$(BIN)/mypy

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/overhead.py

clean:
	rm -rf hpo.db* mlruns.db* mlartifacts hpo_runs
