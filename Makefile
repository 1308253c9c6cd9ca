# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing. torch==2.13.0 is installed first so that
# pip takes the CPU build instead of the newest CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-serial lint types docs mutation coverage bench golden clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,train]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cosim demo

# lint, types, the docs site (strict: a broken link or anchor fails), then the whole suite
# on every core (pytest-xdist; a test file stays on one worker, so its module fixtures are
# built once)
test: $(STAMP) lint types docs
	$(PY) -m pytest -n auto --dist loadfile

# the documentation site from mkdocs.yml and docs/, built strictly into an ignored folder
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir .site

# the same suite in one process (for debugging, or to compare timings)
test-serial: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy --strict on agents/, grid_models/ and cosim/ (pyproject.toml [tool.mypy])
types: $(STAMP)
	$(VENV)/bin/mypy

# mutation testing of the core modules (pyproject.toml [tool.mutmut]): each mutant is
# checked by the tests that cover its function; survivors are listed at the end
mutation: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,train,mutation]'
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results

# line coverage of agents/, grid_models/ and cosim/ (HTML report in runs/coverage/)
coverage: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile --cov --cov-report=term \
		--cov-report=html:runs/coverage

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
