# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: help setup demo test lint typecheck bench-serving bench-features clean

help:
	@echo "make demo    set up, then train, publish, serve, query and show metrics end to end"
	@echo "make test    set up, then lint, type-check and run every test against real servers"
	@echo "make bench-serving   load benchmark (wrk) of the prediction service vs MLServer"
	@echo "make bench-features  feature store benchmark vs Feast (materialization, reads, HTTP)"

setup: $(STAMP)

$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python k8s/install_tools.py $(BIN)
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/python -m app.demo

lint: setup
	$(BIN)/ruff check app jobs tests bench
	$(BIN)/ruff format --check app jobs tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

bench-serving: setup
	$(BIN)/python -m bench.serving

bench-features: setup
	$(BIN)/python -m bench.features

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
