# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export SAMTUNE_DATA_DIR ?= $(CURDIR)/data
# torch is pinned here, not in pyproject.toml: this exact pair installs from the local wheel cache
# (a CUDA build that also runs on the CPU); a looser pin would download gigabytes.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install install-dev run test test-long lint format demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	# Roboflow's own client, in a venv of its own (it pins opencv-python, which would clash with ours):
	# tests/jobs/test_roboflow_compat.py drives samtune with it.
	$(PYTHON) -m venv .venv-sdk
	.venv-sdk/bin/pip install --quiet 'inference-sdk==1.8.3'
	touch $@

# tests/ui drive Debian's headless Chromium (Playwright's own browser download is never used).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The web UI's browser files (Chart.js): package-lock.json pins them, app/ui/vendor.py serves them.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund

install: $(VENV)/.installed node_modules/.package-lock.json

install-dev: $(VENV)/.installed-dev node_modules/.package-lock.json $(CHROMIUM)

## make run: install, migrate, print a first API key, then serve API + worker + beat on the embedded default.
run: install
	$(BIN)/samtune bootstrap
	$(BIN)/samtune up --host $(HOST) --port $(PORT)

## make demo: start samtune in a temporary folder and fine-tune the bundled base on concepts it never saw,
## through the public API, printing the lift (about 5 minutes on a laptop CPU).
demo: install
	$(BIN)/samtune demo

## make test: install everything and run the whole suite (PostgreSQL, Redis and an S3 endpoint for real).
test: install-dev
	$(BIN)/python -m pytest -q

test-long: install-dev
	$(BIN)/python -m pytest -q -m slow

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache
