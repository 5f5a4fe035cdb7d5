# One entry point for people and CI. Every target creates .venv when it is missing.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# torch, installed first and pinned. PyPI's torch for Linux is the multi-GB CUDA build; where pip has no
# CPU wheel at hand (this project's machines keep one on disk), ask PyTorch's CPU index instead:
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0
CONFIG ?= configs/movielens100k.yaml

.PHONY: install demo test test-slow test-browser test-docker lint bench serve clean

$(BIN)/wdrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/wdrec

## Train the default job (MovieLens-100k, L1O), track it in ./mlflow.db and register `wdrec`.
demo: install
	$(BIN)/wdrec fit --config $(CONFIG)
	@echo
	@echo "Inspect:  $(BIN)/mlflow ui            (http://127.0.0.1:5000, runs in ./mlflow.db)"
	@echo "Serve:    $(BIN)/wdrec-serve --model models:/wdrec@champion"

## The default test suite (under ten minutes on 2 cores).
test: install
	$(BIN)/python -m pytest -m "not slow" -q

## Long suites: load, faults, DDP, full training runs.
test-slow: install
	$(BIN)/python -m pytest -m slow -q || test $$? -eq 5  # 5: no slow test selected

## The demo page (GET /) in headless Chromium against a real wdrec-serve (tests/browser; about 2 minutes, most of it
## the short training run it serves). Needs Chromium: Debian's `chromium` package, or WDREC_CHROMIUM=/path/to/it.
## Screenshots land in artifacts/browser/ (or WDREC_TEST_ARTIFACTS/browser/).
test-browser: install
	$(BIN)/python -m pip install --quiet -e ".[browser]"
	$(BIN)/python -m pytest -m browser -q tests/browser

## The container stack end to end (tests/docker, about 15 minutes): a private Docker daemon builds every
## image and runs docker/compose.yaml. Needs dockerd, and mmdebstrap where no image registry is reachable.
test-docker: install
	$(BIN)/python -m pip install --quiet -e ".[docker]"
	$(BIN)/python -m pytest -m docker -q tests/docker

lint: install
	$(BIN)/ruff check src serving tests benchmarks

bench: install
	mkdir -p benchmarks/results
	$(BIN)/python benchmarks/data_pipeline.py --json benchmarks/results/data_pipeline.json
	$(BIN)/python benchmarks/train_throughput.py --json benchmarks/results/train_throughput.json
	$(BIN)/python benchmarks/quality.py --json benchmarks/results/quality.json
	$(BIN)/python benchmarks/serve_latency.py --json benchmarks/results/serve_latency.json

serve: install
	$(BIN)/wdrec-serve --model models:/wdrec@champion

## Everything a run leaves in the working directory. The tracking store goes too (and the tune study store, which names its runs): it would point at
## deleted artifacts. (The data cache in ~/.cache/wdrec and the venv stay.)
clean:
	rm -rf checkpoints bundles mlruns mlartifacts lightning_logs .pytest_cache mlflow.db optuna.db
