# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# glibc's default malloc hands big activation buffers back to the kernel after every step; keeping
# them mapped (what the PyTorch CPU tuning guide advises) measured attn_cnn NCHW training 64 -> 81 img/s here.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296

.PHONY: demo test install clean browser
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# This machine's pip config lists local mirrors that may be absent; those warnings are noise.
PIPQUIET := grep -v 'is ignored: it is neither a file nor a directory' || true

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]' 2>&1 | { $(PIPQUIET); }
	touch $(STAMP)

# The embedded default: 4 variants on generated data, then the report (finished variants are reused).
demo: $(STAMP)
	$(BIN)/imgcls compare

test: $(STAMP) browser
	IMGCLS_OFFLINE=1 $(BIN)/python -m pytest -q

# Debian's Chromium for the browser tests (never a browser download). Needs root to install.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } || echo "chromium not installed: the browser tests will be skipped (outside CI)"

clean:
	rm -rf $(VENV) .cache runs
