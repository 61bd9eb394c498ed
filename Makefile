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
# PyTorch for the export tests, CPU build: this index first, PyPI (CUDA builds) after it. A
# machine that cannot reach it takes a local CPU wheel where pip finds one, else PyPI's.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# `make test-jax-only`: a GPU host's environment on this machine. Python 3.12, jax 0.11.2 and the
# base install without the tf extra (no TensorFlow, TFDS or clu), plus the test tools, in
# ./.venv-jax; flax 0.12.8 does not import under jax 0.11.2, hence its pin here.
PYTHON_JAX ?= python3.12
VENV_JAX := .venv-jax
STAMP_JAX := $(VENV_JAX)/.installed
JAX_ONLY_PINS := jax==0.11.2 jaxlib==0.11.2 flax==0.12.12

.PHONY: demo test test-jax-only venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[tf,test]'
	$(BIN)/python -m pip install -q --retries 1 --extra-index-url $(TORCH_INDEX) \
	  -c constraints.txt torch torchvision
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m contrastive_jax.main --config=$(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

$(STAMP_JAX): setup.cfg pyproject.toml constraints.txt
	$(PYTHON_JAX) -m venv $(VENV_JAX)
	$(VENV_JAX)/bin/python -m pip install -q --upgrade pip
	grep -v -E '^(jax|jaxlib|flax)==' constraints.txt > $(VENV_JAX)/constraints.txt
	$(VENV_JAX)/bin/python -m pip install -q -c $(VENV_JAX)/constraints.txt $(JAX_ONLY_PINS) \
	  -e '.[test]'
	touch $(STAMP_JAX)

# Every test that does not need TensorFlow (tests/conftest.py reports the others as skipped,
# naming why), then the GPU benchmark suite's CPU smoke run (its parts without torch).
test-jax-only: $(STAMP_JAX)
	CJ_JAX_ONLY=1 $(VENV_JAX)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile \
	  $(PYTEST_ARGS)
	SMOKE=1 PARTS=r50,augment,ntxent PYTHON=$(VENV_JAX)/bin/python \
	  bash benchmarks/gpu_suite.sh results/jax-only-smoke

clean:
	rm -rf $(VENV) $(VENV_JAX) runs
