# StarkMatter: `make run` starts the platform on this machine, `make test` runs every test.
# Both set themselves up from a fresh clone (virtual environment, pinned dependencies).

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Component makefiles (mk/*.mk) append their own set-up targets to TEST_PREREQS.
TEST_PREREQS :=
-include mk/*.mk

.PHONY: run test lint unit bench lock clean help
.DEFAULT_GOAL := help

help:
	@echo "make run    start the whole platform locally (embedded PostgreSQL + Redis)"
	@echo "make test   set up and run lint, type checks and every test tier"
	@echo "make bench  run the benchmarks in bench/ (prints figures and ratios)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/starkmatter dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) $(TEST_PREREQS) lint
	$(BIN)/pytest

bench: $(STAMP)
	@for b in bench/bench_*.py; do m=$${b%.py}; $(BIN)/python -m $${m//\//.} || exit 1; done

# Re-pin every transitive dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/starkmatter-lock && $(PYTHON) -m venv /tmp/starkmatter-lock
	/tmp/starkmatter-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/starkmatter-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
