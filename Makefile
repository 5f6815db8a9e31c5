# Set-up and everyday tasks. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# llama-cpp-python compiles llama.cpp. Its default "native" build turns on AMX kernels on CPUs
# that advertise AMX, and those crash (SIGSEGV) in the virtual machines we run on. So build for
# AVX2, and AVX-512 where the CPU has it, explicitly.
# GPU=cuda (NVIDIA, needs the CUDA toolkit) or GPU=metal (Apple silicon) builds it for that GPU
# instead; then --gpu-layers N offloads layers (the venv is rebuilt when GPU changes).
GPU ?=
ifeq ($(GPU),cuda)
LLAMA_CMAKE_ARGS := -DGGML_CUDA=ON
else ifeq ($(GPU),metal)
LLAMA_CMAKE_ARGS := -DGGML_METAL=ON
else ifeq ($(GPU),)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
ifneq ($(shell grep -m1 -o -w avx512f /proc/cpuinfo 2>/dev/null),)
LLAMA_CMAKE_ARGS += -DGGML_AVX512=ON
endif
else
$(error GPU is cuda or metal, or empty for the CPU build; not '$(GPU)')
endif
BUILD := $(if $(GPU),$(GPU),cpu)
PIP := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(shell nproc) $(BIN)/pip install --quiet

QUESTION ?= What is the capital of France?

.PHONY: run test test-quick test-lowest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama-cpp-python built for this machine's CPU, or for GPU=...; rebuilt when that changes. A GPU
# build bypasses pip's wheel cache, so it never lands there in place of the CPU one.
$(VENV)/.llama-$(BUILD): | $(BIN)/python
	rm -f $(VENV)/.llama-* $(VENV)/.installed $(VENV)/.installed-test
	$(PIP) --force-reinstall --no-deps $(if $(GPU),--no-cache-dir) 'llama-cpp-python>=0.3.36,<0.4'
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.llama-$(BUILD) | $(BIN)/python
	$(PIP) -e .
	touch $@

# torch 2.13.0 is pinned first: on this machine kind it is a CPU wheel on local disk,
# where any other version would download a multi-GB CUDA build.
$(VENV)/.installed-test: pyproject.toml tests/scripted/pyproject.toml $(VENV)/.llama-$(BUILD) | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]' -e tests/scripted
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/untuned ask "$(QUESTION)"

test: $(VENV)/.installed-test
	bash .ci/chromium
	$(BIN)/ruff check src tests bench docs
	$(BIN)/pytest

test-quick: $(VENV)/.installed-test
	bash .ci/chromium
	$(BIN)/pytest -m "not slow"

# every direct dependency at the minimum pyproject.toml declares, in a venv of its own: `untuned report` with an
# LC fit, and the statistics' tests (.ci/lowest)
test-lowest:
	bash .ci/lowest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/serve_concurrency.py
	$(BIN)/python bench/single_stream.py
	$(BIN)/python bench/batch_runs.py

clean:
	rm -rf $(VENV) .venv-lowest build src/*.egg-info
