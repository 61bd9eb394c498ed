# Two commands for a newcomer: `make demo` (pretrain SimCLR offline, then linear-probe it) and
# `make test`. Both create ./.venv on first use and reinstall when setup.cfg or constraints change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/simclr.py
PYTEST_ARGS ?=
# Test files spread over this many processes (pytest-xdist); 0 runs them in this one.
PYTEST_WORKERS ?= 2

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[tf,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m contrastive_jax.main --config=$(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
