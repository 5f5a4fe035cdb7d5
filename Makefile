# One entry point for people and CI. Every target creates .venv when it is missing.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# The CPU build of torch: pinned first, so pip never resolves a multi-GB CUDA build on a CPU machine.
TORCH  ?= torch==2.13.0
CONFIG ?= configs/movielens100k.yaml

.PHONY: install demo test test-slow test-docker lint bench serve clean

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

clean:
	rm -rf checkpoints bundles mlruns mlartifacts lightning_logs .pytest_cache
