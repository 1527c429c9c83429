# The two commands a newcomer needs: `make train` and `make test`. Both create the virtual
# environment (.venv) from pyproject.toml + requirements.lock when it is missing or stale.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= configs/synthetic_tce.py
WORKDIR ?= runs/$(basename $(notdir $(CONFIG)))
PYTEST_ARGS ?=

.PHONY: train test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python -m tce_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
