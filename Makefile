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

.PHONY: install demo test test-fast bench gpu-check gpu-wheels lint format clean

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

# One torch thread per pytest worker: two workers on two cores must not oversubscribe.
# worksteal: a worker that runs out takes tests queued behind a long one (the smoke demo
# starts first, see tests/conftest.py), so no worker idles while the other finishes.
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist worksteal -p no:cacheprovider -q

test-fast: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist worksteal -p no:cacheprovider -q -m "not slow and not slurm"

# Each benchmark compares llmforge with a baseline in the same run and prints a ratio;
# docs/benchmarks.md records the figures. About 17 minutes on an idle 2-core machine.
bench: install
	$(BIN)/python bench/tokenize_bench.py --mb 20
	$(BIN)/python bench/pretrain_bench.py
	$(BIN)/python bench/checkpoint_bench.py
	$(BIN)/python bench/kernels_memory.py --vocab 32768
	$(BIN)/python bench/sft_bench.py
	$(BIN)/python bench/eval_bench.py
	$(BIN)/python bench/rollout_bench.py --no-vllm
	$(BIN)/python bench/dedup_bench.py
	$(BIN)/python bench/hash_bench.py

# The GPU check (docs/benchmarks.md, "GPU check"): every GPU path in one run of at most 8
# minutes on a GPU node; on a machine without CUDA its dry path. Logs go to GPU_OUT.
# gpu-wheels downloads (network needed) the few wheels a bare GPU node lacks.
GPU_OUT ?= gpu-check-out
gpu-check: install
	PYTHON=$(abspath $(BIN)/python) bash scripts/gpu-check.sh $(GPU_OUT)

gpu-wheels: install
	PYTHON=$(abspath $(BIN)/python) bash scripts/gpu-wheels.sh

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf artifacts demo-out .pytest_cache .ruff_cache
