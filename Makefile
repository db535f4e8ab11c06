# Every target builds .venv itself when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench fmt clean graphs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agentheal demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests eval bench
	$(BIN)/ruff format --check src tests eval bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests eval bench
	$(BIN)/ruff check --fix src tests eval bench

bench: $(STAMP)
	$(BIN)/python bench/run.py

graphs: $(STAMP)
	$(BIN)/agentheal graphs export

clean:
	rm -rf $(VENV) .agentheal bench-results.json
