# A newcomer needs `make train` and `make test`; both create the virtual environment (.venv)
# from pyproject.toml + requirements.lock when it is missing or stale. `make train` installs
# what training needs; `make test` adds the test extras (pytest, torch for the reference
# checks). ARGS passes flags through, e.g. make train ARGS='--config.tce.t=1.0'.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CONFIG ?= configs/synthetic_tce.py
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))
RUNS ?= runs/synthetic_mcce runs/synthetic_tce
OUT ?= reports/latest
ARGS ?=
PYTEST_ARGS ?=
# Extra pip arguments, e.g. PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu'
# for PyTorch's CPU build (the test extras' torch; PyPI's default Linux build is the CUDA one).
PIP_ARGS ?=
# Test processes (pytest-xdist): XLA compiles on one core, so two workers keep two cores busy.
TEST_WORKERS ?= 2

.PHONY: train test evaluate report tensorboard install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c requirements.lock $(PIP_ARGS) -e .
	rm -f $(TEST_STAMP)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -c requirements.lock $(PIP_ARGS) -e '.[test]'
	touch $(TEST_STAMP)

# Trains CONFIG into WORKDIR (resumes it if it holds checkpoints).
train: $(STAMP)
	$(VENV)/bin/python -m tce_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) $(ARGS)

# Evaluates WORKDIR's latest checkpoint (ARGS: --flip, --scales=..., --split=...).
evaluate: $(STAMP)
	$(VENV)/bin/python -m tce_jax.evaluate --workdir=$(WORKDIR) $(ARGS)

# Compares RUNS (the first is the reference) into OUT.
report: $(STAMP)
	$(VENV)/bin/python -m tce_jax.report --runs $(RUNS) --out $(OUT) $(ARGS)

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir runs/ $(ARGS)

test: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
