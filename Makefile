# The two commands of the README: `make demo` and `make test`. Both set up
# everything on a fresh Debian machine (Python deps into .venv, system
# packages through scripts/system-deps.sh when a test needs them).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test

.PHONY: demo test bench soak venv system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: venv
	$(PY) -m workbench.demo

test: venv system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

# the long fault/load/fuzz runs of RELIABILITY.md: SOAK_SECONDS=3600 make soak
SOAK_SECONDS ?= 600
soak: venv system-deps
	$(PY) -m pytest -q -s tests/test_faults.py tests/test_load.py tests/test_hostile_input.py tests/test_server_hostile.py --soak-seconds $(SOAK_SECONDS)

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
