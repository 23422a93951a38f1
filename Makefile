# Two entry points: `make demo` and `make test`. Both create .venv and install the pinned
# dependencies (requirements.lock) and the package first; nothing else needs to be installed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mnist-diffusion sample --digits 0-9 --per-digit 16 --out outputs/demo.png
	@echo "demo grid: $(CURDIR)/outputs/demo.png (one row per digit, 0 to 9)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
