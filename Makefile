# `make demo` and `make test` work on a fresh machine: both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# What `make install` adds to torch: the demo's extras (47 s less than the test extras on a fresh 2-core
# machine, time `make demo` gives to training); `make install EXTRAS=all` for every feature.
EXTRAS ?= demo

.PHONY: install install-test demo test test-fast bench clean

install: $(STAMP)

# The test suite's extras (every feature's, pytest, transformers as the reference) on top of `make install`.
install-test: $(TEST_STAMP)

# torch first, for the hardware found: a torch already in the venv within pyproject's range is kept; with an NVIDIA GPU, the default
# (CUDA) build of pyproject's range; without one, the CPU build from PyTorch's CPU index (a bare requirement
# would pull the multi-GB CUDA build on Linux), or where that index is out of reach (a machine that sees only a
# package mirror with the CPU wheel) from the configured indexes. TORCH_CPU is a tested release in the range.
TORCH_RANGE := $(shell sed -n 's/^ *"\(torch[<>=][^"]*\)".*/\1/p' pyproject.toml)
TORCH_CPU ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# No byte-compiling at install: it took 45 of the 115 s of a fresh 2-core install (torch 33 s -> 14 s), and
# Python compiles just the modules it imports, once, on first use.
PIP := $(BIN)/pip install -q --no-compile

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	if $(BIN)/python -c "import sys, torch; from pip._vendor.packaging.requirements import Requirement; \
			sys.exit(not Requirement('$(TORCH_RANGE)').specifier.contains(torch.__version__, prereleases=True))" 2>/dev/null; then \
		echo "keeping torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PIP) "$(TORCH_RANGE)"; \
	elif $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; then \
		$(PIP) --extra-index-url $(TORCH_CPU_INDEX) "$(TORCH_CPU)"; \
	else \
		echo "$(TORCH_CPU_INDEX) is out of reach: $(TORCH_CPU) from the configured indexes (PyPI's is a CUDA build)"; \
		$(PIP) "$(TORCH_CPU)"; \
	fi
	$(PIP) -e '.[$(EXTRAS)]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e '.[test]'
	touch $(TEST_STAMP)

demo: install
	$(BIN)/omnigpt demo

# Two pytest workers of one thread each (tests/conftest.py): most tests are too small for a second thread to
# pay, so two workers finish the suite in ~55% of one's time on 2 cores. TEST_WORKERS=1: one process.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS))
test: install-test
	$(BIN)/python -m pytest $(PYTEST_WORKERS)

# The unit and parity tests; skips the end-to-end recipes (tests/recipes) and others marked slow.
test-fast: install-test
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_WORKERS)

bench: install-test
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/decode_throughput.py
	$(BIN)/python bench/text_quality.py
	$(BIN)/python bench/image_pipeline.py
	$(BIN)/python bench/caption_quality.py
	$(BIN)/python bench/audio_pipeline.py
	$(BIN)/python bench/asr_quality.py
	$(BIN)/python bench/fusion_quality.py
	$(BIN)/python bench/text_tasks.py
	$(BIN)/python bench/serve_load.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
