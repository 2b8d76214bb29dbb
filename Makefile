# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-oldest quick lint bench clean system-packages

# The suite starts a real redis-server, counts instructions under valgrind, and files
# CA certificates by hash with openssl. Where one is missing, root on Debian or Ubuntu
# gets it from apt-get; anyone else is told what to install.
SYSTEM_PACKAGES := redis-server valgrind openssl

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when the package's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/asyncchat demo

system-packages:
	@missing=""; \
	for name in $(SYSTEM_PACKAGES); do command -v $$name >/dev/null || missing="$$missing $$name"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "the tests need$$missing: apt-get install$$missing (or your system's packages)" >&2; \
		exit 1; \
	fi; \
	echo "== installing$$missing"; \
	apt-get update -qq && apt-get install -y -qq $$missing >/dev/null

test: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m pytest -q

# The suite on the oldest version of each dependency pyproject.toml admits, pinned in
# .ci/oldest-versions.txt. Not the sdist's test (it needs the dev extra's build) or the
# benchmarks' (minutes under valgrind, counting rather than checking): `make test` runs those.
# CI runs it under the oldest Python: PYTHON=... OLDEST=.venv-oldest-<version>.
OLDEST := .venv-oldest
$(OLDEST)/.installed: pyproject.toml .ci/oldest-versions.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -c .ci/oldest-versions.txt -e '.[test]'
	touch $@

test-oldest: $(OLDEST)/.installed system-packages
	$(OLDEST)/bin/python -m pytest -q --ignore tests/test_packaging.py --ignore tests/test_benchmarks.py

quick: $(VENV)/.installed-dev system-packages  # the suite without the few tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check asyncchat tests benchmarks
	$(BIN)/mypy --strict asyncchat

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache build *.egg-info
