# make run: install, then serve on the embedded default (SQLite, local folder, in-process runner).
# make test: install, then lint and run every test (PostgreSQL and Redis must be running).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install browser run test lint quickstart

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# pyproject.toml pins PyPI's torch / torchvision pair (~5 GB with its CUDA wheels; see README).
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# Debian's Chromium: tests/api/test_swagger_ui.py renders /docs in it and tests/api/test_dashboard.py
# drives the dashboard in it through Playwright, headless (CI runs as root).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

run: install
	$(BIN)/dfkd serve --host 127.0.0.1 --port 8000

test: install browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
