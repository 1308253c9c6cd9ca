# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing. torch==2.13.0 is installed first so that
# pip takes the CPU build instead of the newest CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint coverage bench golden clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cosim demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# line coverage of agents/, grid_models/ and cosim/ (HTML report in runs/coverage/)
coverage: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term --cov-report=html:runs/coverage

# refresh the golden reference runs ON PURPOSE (after a change that is meant to alter
# results; say why in the commit): replaces only runs that cosim made there
GOLDEN_STEPS := 240
golden: $(STAMP)
	$(VENV)/bin/cosim run scenarios/paper_fig1d.yaml --steps $(GOLDEN_STEPS) --quiet \
		--set output.plots=false --out data/golden/paper_fig1d --force
	$(VENV)/bin/cosim run scenarios/lv_semiurb_40.yaml --steps $(GOLDEN_STEPS) --quiet \
		--set output.plots=false --out data/golden/lv_semiurb_40 --force

clean-venv:
	rm -rf $(VENV)
