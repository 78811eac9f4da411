# The two commands a newcomer needs: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# This machine has a CPU build of torch 2.13.0 on disk; the package itself asks only torch>=2.3.
TORCH  ?= torch==2.13.0
# the onnx extra (the explainer's ONNX export and its tests), pinned: the committed ONNX files
# are compared byte for byte with a fresh export, and another onnx release may serialise the
# same graph differently
ONNX_PINS ?= onnx==1.23.2 onnxruntime==1.32.0

.PHONY: setup demo test fuzz lint docs bench bench-scripts clean web web-test browser-deps

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,onnx,docs]" $(ONNX_PINS)
	touch $(STAMP)

demo: setup
	$(BIN)/amlab retrieve --out runs/demo
	$(BIN)/amlab explain

test: setup web-test browser-deps docs
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest web/e2e

fuzz: setup
	AMLAB_FUZZ_PROFILE=explore $(BIN)/python -m pytest tests/test_fuzz.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the documentation site into site/; strict: a broken link or API reference fails the build
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: setup
	$(BIN)/amlab bench

bench-scripts: setup browser-deps
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache .hypothesis
	rm -rf web/node_modules web/public/data web/test-vectors web/test-artifacts

# -- the browser explainer: web/ (Svelte + TypeScript) built into src/amlab/explain/static ------
# The build is committed, so `pip install` and `make demo` need no node; `make test` rebuilds it
# from web/ and the exported data, type-checks it (svelte-check), runs vitest, then the browser
# tests (Playwright + Chromium).
APT_INSTALL  := apt-get update -qq && apt-get install -y -qq
NPM_STAMP    := web/node_modules/.installed
PW_STAMP     := $(VENV)/.playwright
CHROMIUM     := /usr/bin/chromium
EXPORTED     := web/test-vectors/.exported

$(NPM_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "installing node and npm (apt)"; $(APT_INSTALL) nodejs npm; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# the app's data (web/public/data) and the test vectors of its math, from the Python package
# (the Energy Transformer and the denoiser go out as ONNX: the onnx extra, installed by setup)
$(EXPORTED): $(STAMP) $(shell find src/amlab -name '*.py') $(wildcard src/amlab/explain/models/*/*) \
		$(shell find src/amlab/explain/shipped-gallery -type f)
	$(BIN)/amlab export --out web/public/data --vectors web/test-vectors/vectors.json
	touch $@

web: $(NPM_STAMP) $(EXPORTED)
	cd web && npm run --silent build -- --logLevel warn
	@if [ -n "$$CI" ] && git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$$(git status --porcelain -- src/amlab/explain/static)" ]; then \
		echo "error: the committed build in src/amlab/explain/static is stale: run make web and commit it"; exit 1; fi

web-test: web
	cd web && npm run --silent check
	cd web && npx vitest run

$(CHROMIUM):
	$(APT_INSTALL) chromium

$(PW_STAMP): $(STAMP)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e ".[browser]"
	touch $@

browser-deps: $(CHROMIUM) $(PW_STAMP)
