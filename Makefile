# Each target sets itself up on a fresh machine (a virtualenv in .venv), then does its job.
#   make quickstart   train, compress, export and report samples/quickstart.yaml
#   make test         the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on this project's machines `pip install torch==2.13.0` finds it on disk.
# Elsewhere, e.g.: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup quickstart test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[cpu,dev]"
	touch $@

quickstart: setup
	$(BIN)/compress run samples/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
