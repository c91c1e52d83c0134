# The README's two commands are `make run` and `make test`; both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Kedro's telemetry plugin would try to reach the internet; keep it off (see also .telemetry).
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install run benchmark test test-triton lint viz viz-build clean-data

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/kedro run

# The full grid (conf/benchmark): every attack and defence, three seeds.
benchmark: install
	$(BIN)/kedro run --env benchmark

test: install
	$(BIN)/python -m pytest

# The kernel tests (and their callers) once more with the Triton code run by its CPU
# interpreter; the variable must be set before Python starts.
test-triton: install
	TRITON_INTERPRET=1 $(BIN)/python -m pytest tests/kernels tests/defences tests/unlearning

lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/lint-imports

viz: install
	$(BIN)/kedro viz run --no-browser

viz-build: install
	$(BIN)/python scripts/viz_build.py

clean-data:
	find data -type f ! -name .gitkeep -delete
