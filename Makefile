# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install clean browser postgres
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# This machine's pip config lists local mirrors that may be absent; those warnings are noise.
PIPQUIET := grep -v 'is ignored: it is neither a file nor a directory' || true

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]' 2>&1 | { $(PIPQUIET); }
	touch $(STAMP)

# The embedded default: 4 variants on generated data, then the report (finished variants are reused).
demo: $(STAMP)
	$(BIN)/imgcls compare

test: $(STAMP) browser postgres lint
	IMGCLS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

# Debian's Chromium for the browser tests (never a browser download). Needs root to install.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } || echo "chromium not installed: the browser tests will be skipped (outside CI)"

# Debian's PostgreSQL server, for the test that shares one auto study between processes through a real
# database (the storage several machines would use); skipped where it cannot be installed. Needs root.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; }; } || echo "postgresql not installed: the PostgreSQL study test will be skipped (outside CI)"

clean:
	rm -rf $(VENV) .cache runs
