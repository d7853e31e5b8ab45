# Seams between the tools: venv, tests, the demo, the Dagster UI.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test dev dev-sim lint fmt bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/fleet demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

dev: $(STAMP)
	$(BIN)/fleet dev

dev-sim: $(STAMP)
	$(BIN)/fleet dev --simulate

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint dbt_models

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/avl_backfill.py
	$(BIN)/python bench/autopi_ingest.py
	$(BIN)/python bench/kt1_drain.py
	$(BIN)/python bench/metrotec_backfill.py
	$(BIN)/python bench/facts_build.py

clean:
	rm -rf $(VENV) data dbt_models/target dbt_models/logs
