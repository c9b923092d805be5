# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export SAMTUNE_DATA_DIR ?= $(CURDIR)/data
# Every install takes exact versions from the lock files (`make lock` refreshes them); pyproject.toml keeps
# the ranges that library users get.
LOCK := requirements/lock.txt
SDK_LOCK := requirements/sdk-lock.txt
ROBOFLOW_LOCK := requirements/roboflow-lock.txt
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(LOCK))

.PHONY: install install-dev run test test-long lint format demo clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	@echo ">> Installing PyTorch $(TORCH_VERSION) and torchvision: a CUDA build that also runs on the CPU,"
	@echo ">> about 5.8 GB in $(VENV) with its NVIDIA libraries; expect a few minutes of unpacking."
	$(BIN)/pip install --progress-bar on -c $(LOCK) torch torchvision
	@echo ">> Installing samtune and its other dependencies at the versions $(LOCK) pins."
	$(BIN)/pip install --progress-bar on -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(SDK_LOCK) $(ROBOFLOW_LOCK)
	@echo ">> Installing the test tools ([dev] extra, pinned by $(LOCK))."
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	@# Roboflow's own client, in a venv of its own (it pins opencv-python, which would clash with ours):
	@# tests/models/test_roboflow_compat.py drives samtune with it.
	@echo ">> Installing Roboflow's inference-sdk into .venv-sdk (pinned by $(SDK_LOCK))."
	$(PYTHON) -m venv .venv-sdk
	.venv-sdk/bin/pip install --quiet -r $(SDK_LOCK)
	@# Roboflow's Python package, in a third venv (its numpy and opencv pins differ from inference-sdk's):
	@# tests/roboflow/ drive samtune's Roboflow REST API with it.
	@echo ">> Installing Roboflow's roboflow package into .venv-roboflow (pinned by $(ROBOFLOW_LOCK))."
	$(PYTHON) -m venv .venv-roboflow
	.venv-roboflow/bin/pip install --quiet -r $(ROBOFLOW_LOCK)
	touch $@

## make lock: resolve the lock files from pyproject.toml and requirements/*.in (Python 3.11, Linux x86_64)
## with pip-tools in a venv of its own, keeping current pins that still fit; `make lock UPGRADE=1` takes the
## newest releases. Commit the result; `make install` then brings a venv to it.
# Exact pins only: no extras (pip refuses them in a constraints file), no index or mirror addresses.
PIP_COMPILE = .venv-lock/bin/pip-compile --quiet $(if $(UPGRADE),--upgrade) --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet 'pip-tools>=7.4'
	$(PIP_COMPILE) --all-extras -o $(LOCK) pyproject.toml requirements/pins.in
	$(PIP_COMPILE) -o $(SDK_LOCK) requirements/sdk.in
	$(PIP_COMPILE) -o $(ROBOFLOW_LOCK) requirements/roboflow.in

# tests/ui drive Debian's headless Chromium (Playwright's own browser download is never used).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@# Waits for another apt run's lock (a machine's own updates at boot) instead of failing at once.
	apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium

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

## make test-docker: build the image (a Docker engine with its bridge off, installed and started when missing)
## and run docker-compose.yml's samtune services in containers through the whole flow (tests/docker/).
.PHONY: test-docker
test-docker: install-dev
	bash deploy/ci/test-docker.sh

## make lint: ruff's lint and format check, then mypy on what [tool.mypy] in pyproject.toml names.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-sdk .venv-roboflow .venv-lock .pytest_cache
