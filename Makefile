# Set-up and the two everyday commands. `make demo` and `make test` create the
# virtual environment on first use (torch pinned to the local CPU wheel).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
TORCH   = torch==2.13.0

.PHONY: demo test test-all bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,neural,kafka,distributed]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/poisonsim run scenarios/centroid_shift.toml --out results/demo

test: $(STAMP)  # the fast tests: everything not marked slow
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m "not slow"

test-all: $(STAMP)  # the whole suite, slow reproductions and Kafka runs included (what CI runs)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/centroid_throughput.py
	$(PY) benchmarks/neural_throughput.py

clean:
	rm -rf $(VENV) results .pytest_cache
