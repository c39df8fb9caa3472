# Two commands on a fresh machine do all set-up: `make run` and `make test`.
# Every target creates .venv when missing. torch is installed first, pinned to the CPU wheel,
# so that nothing later pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
UNSLOTH_VERSION ?= 2026.10.9
PROFILE ?= demo
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

CHROMIUM ?= /usr/bin/chromium

.PHONY: venv browser run ablation test lint format bench gpu-check interop lab clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# the GPU backend's wheel, unpacked by nothing: the API-drift tests read its signatures
	$(PY) -m pip download --quiet --no-deps --dest $(VENV)/wheels "unsloth==$(UNSLOTH_VERSION)"
	touch $@

# one training process at a time: it may use every core (tests keep one thread per process);
# while it runs, each stage times its steps on all of them and on one, and keeps the faster
# (v2lo_utils/threads.py: beside another session's busy process one thread is ~10x faster);
# V2LO_THREADS=fixed keeps RUN_THREADS throughout
RUN_THREADS ?= $(shell nproc 2>/dev/null || echo 1)

run: venv
	OMP_NUM_THREADS=$(RUN_THREADS) MKL_NUM_THREADS=$(RUN_THREADS) $(VENV)/bin/v2lo run --profile $(PROFILE)

# the paper's claims at CPU scale (notebook 06, profile ablation): about an hour on 2 cores;
# run again after an interruption with RUN_ID=<its folder name> to resume without retraining
RUN_ID ?=
ablation: venv
	OMP_NUM_THREADS=$(RUN_THREADS) MKL_NUM_THREADS=$(RUN_THREADS) $(VENV)/bin/v2lo run --profile ablation $(if $(RUN_ID),--run-id $(RUN_ID),)

# Debian's chromium for the JupyterLab browser test (Playwright drives it; no browser download)
browser:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser test will say so"

test: venv browser
	$(PY) -m pytest -q

# On a GPU machine: the 7B recipe's code paths at 7B shape, timed (bench/bench_gpu.py), within 8
# minutes in all. The gpu extra (unsloth, vllm) is installed beside the pinned set when missing;
# where it cannot be, the parts that need it say what is missing.
# GPU_PY=python3 uses a Python that already holds the pinned set (an offline GPU image) instead
# of .venv.
GPU_CHECK_SECONDS ?= 480
GPU_PY ?=
GPY = $(or $(GPU_PY),$(PY))
gpu-check: $(if $(GPU_PY),,venv)
	@$(GPY) -c "import unsloth, vllm" >/dev/null 2>&1 || $(GPY) -m pip install --quiet -e ".[gpu]" || \
	  echo "gpu-check: could not install the gpu extra (unsloth, vllm) beside the pinned set"
	OMP_NUM_THREADS=$(RUN_THREADS) MKL_NUM_THREADS=$(RUN_THREADS) timeout $(GPU_CHECK_SECONDS) \
	  $(GPY) bench/bench_gpu.py --time-limit $$(( $(GPU_CHECK_SECONDS) - 15 ))

# The exports and a preset read by the real clients' own code, in a venv of its own: ms-swift
# 4.6.0 pins trl<1.0, peft<0.21, datasets<4.8.5 and EasyR1 needs transformers<5, so neither fits
# beside the project's set. .venv-interop holds torch 2.14.1 + torchvision 0.29.1 (the stock
# Qwen2.5-VL processor's video half), transformers 4.57.6 (both clients accept it) and
# qwen-vl-utils (ms-swift's Qwen2.5-VL loader); it is reused while its pins are unchanged.
# EasyR1 is not on the package registry: EASYR1_DIR=<an EasyR1 checkout> runs its check and adds
# what its RLHFDataset and reward manager import (ray, tensordict, codetiming).
INTEROP_VENV ?= .venv-interop
MS_SWIFT_VERSION ?= 4.6.0
INTEROP_PINS := torch==2.14.1 torchvision==0.29.1 ms-swift==$(MS_SWIFT_VERSION) \
  transformers==4.57.6 qwen-vl-utils==0.0.14
EASYR1_PINS := ray==2.60.0 tensordict==0.15.3 codetiming==1.4.0
EASYR1_DIR ?=
INTEROP_OUT := outputs/interop
IPY := $(INTEROP_VENV)/bin/python
interop: venv
	test -x $(IPY) || $(PYTHON) -m venv $(INTEROP_VENV)
	test "$$(cat $(INTEROP_VENV)/.pins 2>/dev/null)" = "$(INTEROP_PINS)" || { \
	  $(IPY) -m pip install --quiet $(INTEROP_PINS) && echo "$(INTEROP_PINS)" > $(INTEROP_VENV)/.pins; }
	test -z "$(EASYR1_DIR)" || test "$$(cat $(INTEROP_VENV)/.pins-easyr1 2>/dev/null)" = "$(EASYR1_PINS)" || { \
	  $(IPY) -m pip install --quiet $(EASYR1_PINS) && echo "$(EASYR1_PINS)" > $(INTEROP_VENV)/.pins-easyr1; }
	rm -rf $(INTEROP_OUT)
	$(VENV)/bin/v2lo data build --out $(INTEROP_OUT)/data --scenes 3 --image-size 224 --workers 1
	$(VENV)/bin/v2lo data export --data $(INTEROP_OUT)/data --format ms-swift --out $(INTEROP_OUT)/swift.jsonl
	$(VENV)/bin/v2lo data export --data $(INTEROP_OUT)/data --format easyr1 --out $(INTEROP_OUT)/easyr1.jsonl
	$(PY) tests/interop/write_preset_ids.py $(INTEROP_OUT) $(INTEROP_OUT)/swift.jsonl
	@status=0; \
	$(IPY) tests/interop/check_ms_swift.py $(INTEROP_OUT)/swift.jsonl || status=1; \
	$(IPY) tests/interop/check_preset.py $(INTEROP_OUT)/preset_ids.json || status=1; \
	if [ -z "$(EASYR1_DIR)" ]; then \
	  echo "EasyR1 check skipped: EASYR1_DIR is not set (EasyR1 is not on the package registry;" \
	    "run make interop EASYR1_DIR=<an EasyR1 checkout, commit b44b311>)"; \
	elif [ ! -f "$(EASYR1_DIR)/verl/utils/dataset.py" ]; then \
	  echo "EasyR1 check failed: $(EASYR1_DIR) is not an EasyR1 checkout (no verl/utils/dataset.py)"; \
	  status=1; \
	else \
	  PYTHONPATH="$(abspath $(EASYR1_DIR)):$(CURDIR)" $(IPY) tests/interop/check_easyr1.py \
	    $(INTEROP_OUT)/easyr1.jsonl $(INTEROP_OUT)/swift.jsonl --config configs/easyr1_grpo.yaml \
	    || status=1; \
	fi; \
	exit $$status

lab: venv
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) notebooks/01_data_inspection.ipynb

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	$(PY) bench/bench_core.py
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_threads.py
	$(PY) bench/bench_generate.py

clean:
	rm -rf $(VENV) $(INTEROP_VENV) .pytest_cache .ruff_cache .hypothesis
