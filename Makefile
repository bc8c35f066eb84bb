# Set-up and the everyday commands. Each creates the virtual environment on first use
# (torch pinned to the local CPU wheel).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
TORCH   = torch==2.13.0
PYTEST  = OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest

.PHONY: demo test reproduce test-kernels lint docs test-all bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,neural,kafka,distributed]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/poisonsim run scenarios/centroid_shift.toml --out results/demo

test: $(STAMP)  # every module's tests but the long reproductions; starts its own Kafka broker
	$(PYTEST) -n 2 -m "not slow"  # two pytest-xdist workers, each with its own broker

reproduce: $(STAMP)  # the long reproductions: papers' figures over seeds, Kafka deployments end to end
	$(PYTEST) -m slow  # one worker: the reproductions run their seeds on two processes themselves

test-kernels: $(STAMP)  # the regression corpus again under each forced alternative CPU kernel path
	OMP_WAIT_POLICY=PASSIVE $(PY) tests/regression/kernels.py --check

lint: $(STAMP)  # ruff, configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

docs: $(STAMP)  # the documentation site, from docs/ (mkdocs, material theme), into site/; a warning fails it
	$(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test-all: lint docs test reproduce test-kernels  # what CI runs

bench: $(STAMP)  # rows into results/bench/ (docs/data/ holds the rows the docs' tables show: --data there adds yours)
	$(PY) benchmarks/centroid_throughput.py --data results/bench/centroid_throughput.csv
	$(PY) benchmarks/neural_throughput.py --data results/bench/neural_throughput.csv

clean:
	rm -rf $(VENV) results .pytest_cache site
