# mltrain: `make demo` (set up + run the pipelines on embedded defaults), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLTRAIN_HOME ?= $(CURDIR)/.mltrain
export DAGSTER_HOME ?= $(MLTRAIN_HOME)/dagster
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast dev lint format clean bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/mltrain demo

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not e2e and not slow and not services"

dev: install
	$(BIN)/mltrain dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf .mltrain .pytest_cache
