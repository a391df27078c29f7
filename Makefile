# `make demo` and `make test` work on a fresh machine: both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# Without a GPU, install the CPU torch wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch; \
	else \
		$(BIN)/pip install -q torch==2.13.0; \
	fi
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/omnigpt demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/decode_throughput.py
	$(BIN)/python bench/text_quality.py
	$(BIN)/python bench/image_pipeline.py
	$(BIN)/python bench/caption_quality.py
	$(BIN)/python bench/audio_pipeline.py
	$(BIN)/python bench/asr_quality.py
	$(BIN)/python bench/fusion_quality.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
