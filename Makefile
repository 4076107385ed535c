# llmforge: the targets users and CI call. `make install` then `make demo` or `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On a GPU node install with `pip install -e '.[gpu]'` instead.
TORCH_SPEC ?= torch==2.13.0
DEMO ?= full
JOBS ?= auto
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from its own line, so nothing below can pull a CUDA build
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -c "import torch, llmforge; assert '+cpu' in torch.__version__ or torch.cuda.is_available(), torch.__version__"
	touch $@

demo: install
	PATH=$(abspath $(BIN)):$$PATH bash recipes/tiny/pipeline.sh $(DEMO)

test: install
	$(BIN)/python -m pytest -n $(JOBS) -p no:cacheprovider -q

test-fast: install
	$(BIN)/python -m pytest -n $(JOBS) -p no:cacheprovider -q -m "not slow and not slurm"

bench: install
	$(BIN)/python bench/tokenize_bench.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf artifacts demo-out .pytest_cache .ruff_cache
