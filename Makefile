# Run Ledger — targets a newcomer can guess.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint format docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its dev tools

demo: install  ## record a sample agent run into sqlite:///ledger.db and print it back
	$(BIN)/ledger demo

test: install  ## the whole suite (Postgres from $$LEDGER_TEST_URL or a throwaway cluster)
	$(BIN)/pytest -q

test-fast: install  ## skip the long concurrency and crash tests
	$(BIN)/pytest -q -m "not slow"

bench: install  ## benchmarks against raw psycopg, raw sqlite3 and eventsourcing baselines
	$(BIN)/python -m bench

lint: install  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check ledger projections replay cli tests bench
	$(BIN)/ruff format --check ledger projections replay cli tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix ledger projections replay cli tests bench
	$(BIN)/ruff format ledger projections replay cli tests bench

clean:
	rm -rf $(VENV) *.egg-info ledger.db ledger.db-wal ledger.db-shm
