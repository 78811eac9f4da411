# The two commands a newcomer needs: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# This machine has a CPU build of torch 2.13.0 on disk; the package itself asks only torch>=2.3.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test fuzz lint bench bench-scripts clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/amlab retrieve --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

fuzz: setup
	AMLAB_FUZZ_PROFILE=explore $(BIN)/python -m pytest tests/test_fuzz.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/amlab bench

bench-scripts: setup
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
