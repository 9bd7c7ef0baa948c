# Watch Server: `make run` starts everything, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-unit lint format migrate asyncapi bench bench-prober bench-ingest bench-api clean

# A venv with every service and the embedded NATS/PostgreSQL wheels, rebuilt when pyproject changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m deploy.local.run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services deploy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install
	$(BIN)/python -m deploy.local.run --migrate-only

asyncapi: install
	$(BIN)/python -m deploy.asyncapi

# Benchmarks: figures next to a baseline measured in the same run (never timed tests).
bench: bench-prober bench-ingest bench-api

bench-prober: install
	$(BIN)/python bench/bench_prober.py $(BENCH_ARGS)

bench-ingest: install
	$(BIN)/python bench/bench_ingest.py

bench-api: install
	$(BIN)/python bench/bench_api.py $(BENCH_ARGS)

clean:
	rm -rf .data watch-server.log .pytest_cache .mypy_cache .ruff_cache
