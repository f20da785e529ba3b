# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DATA := .cache/demo-data
# glibc's default malloc returns big activation buffers to the kernel after every step, which
# costs CPU training up to 3x; keeping them mapped is what the PyTorch CPU tuning guide advises.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	test -d $(DEMO_DATA) || $(BIN)/imgcls demo-data $(DEMO_DATA)
	rm -rf runs/demo-attn_cnn
	$(BIN)/imgcls train --model attn_cnn --data $(DEMO_DATA) --epochs 3 --image-size 64 --out runs/demo-attn_cnn
	$(BIN)/imgcls evaluate runs/demo-attn_cnn

test: $(STAMP)
	IMGCLS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .cache runs
