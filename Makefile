# Every target builds .venv itself when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test eval lint bench fmt clean graphs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agentheal demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

eval: $(STAMP)
	$(BIN)/agentheal eval run eval/scenarios --json eval-results.json --markdown eval-report.md

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
	rm -rf $(VENV) .agentheal bench-results.json eval-results.json eval-report.md agentheal-demo-report.*
