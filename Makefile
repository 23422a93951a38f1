# Two entry points: `make demo` and `make test`. Both create .venv and install the pinned
# dependencies (requirements.lock) and the package first; nothing else needs to be installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null || \
		{ echo "need Python 3.11 or newer: run make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mnist-diffusion sample --digits 0-9 --per-digit 16 --out outputs/demo.png
	@echo "demo grid: $(CURDIR)/outputs/demo.png (one row per digit, 0 to 9)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
