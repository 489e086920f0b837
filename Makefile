# mltrain: `make demo` (set up + run the pipelines on embedded defaults), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLTRAIN_HOME ?= $(CURDIR)/.mltrain
export DAGSTER_HOME ?= $(MLTRAIN_HOME)/dagster
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast dev lint typecheck format clean bench bench-seed lock

# Installed at the versions requirements.lock pins (as constraints, without its hashes: the lock
# carries PyPI's CUDA torch for the image, this machine takes the CPU build of the same release).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	sed -e '/--hash=/d' -e 's/ \\$$//' requirements.lock > $(VENV)/constraints.txt
	$(BIN)/pip install -q --upgrade pip setuptools wheel -c $(VENV)/constraints.txt
	$(BIN)/pip install -q -e '.[dev]' -c $(VENV)/constraints.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/mltrain demo

# Two workers (this machine's cores): one takes the e2e package, the other the rest; each test package
# stays on one worker (its fixtures built once). Three were slower here: the e2e runs are CPU-bound
# (the backfill test 165 s alone, 390 s beside one worker, 504 s beside two; BENCHMARKS.md).
# Lint and type-check first (`lint`: ruff check + ruff format --check; `typecheck`: mypy over the control plane,
# [tool.mypy] in pyproject.toml): a style, import or type error fails in seconds, not after the suite.
TEST_WORKERS ?= 2
test: lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS)

test-fast: install
	$(BIN)/pytest -m "not e2e and not slow and not services"

dev: install
	$(BIN)/mltrain dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# requirements.lock: every distribution with its hashes, for Python 3.11 on x86_64 Linux (the image;
# torch there is PyPI's CUDA build, for the GPU training pods), plus the build backend the image
# installs the project with. Existing pins are kept; `make lock LOCK_FLAGS=--upgrade` moves them.
# requirements.runtime.lock: what the image installs, the same without the dev extra (no pytest,
# moto, playwright, ruff...), resolved under requirements.lock's pins, so every version agrees.
UV_VERSION := 0.13.9
LOCK_FLAGS ?=
LOCK_TARGET := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command 'make lock' --quiet
lock:
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	printf 'setuptools>=68\nwheel\n' | $(BIN)/uv pip compile pyproject.toml - --extra dev \
		$(LOCK_TARGET) --output-file requirements.lock $(LOCK_FLAGS)
	sed -e '/--hash=/d' -e 's/ \\$$//' requirements.lock > $(VENV)/lock-constraints.txt
	printf 'setuptools>=68\nwheel\n' | $(BIN)/uv pip compile pyproject.toml - \
		--constraint $(VENV)/lock-constraints.txt --no-annotate \
		$(LOCK_TARGET) --output-file requirements.runtime.lock

# Both refuse to record (exit 75) while the machine is busy: load above the core count, or another bench
# running; `make bench-seed BENCH_FLAGS=--force` records anyway, every figure marked "under load".
BENCH_FLAGS ?=
bench: install
	$(BIN)/python bench/run_all.py $(BENCH_FLAGS)

# Seed scale (BENCHMARKS.md): a 50M-ride day on DuckDB and Spark, 20M interactions, features on DuckDB /
# classic Spark / Spark Connect, control-plane overhead and memory; one JSON line per figure (with the
# load before and after it) and each figure next to its goal; ~50 min on 2 cores.
bench-seed: install
	$(BIN)/python bench/run_all.py --seed $(BENCH_FLAGS)

clean:
	rm -rf .mltrain .pytest_cache
