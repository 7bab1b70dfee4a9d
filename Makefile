# lmm_sparse developer tasks. Every target installs what it needs first (`make setup`).
#
#   make setup      system packages (only if missing), .venv, editable install with [test]
#   make test       full test suite, slow large-data tests included
#   make test-fast  tests without the ones marked slow
#   make lint       ruff check
#   make demo       run lmm_sparse.demo
#   make bench      the benchmark suite against lme4 (R), mixedlm and statsmodels
#                   (benchmarks/run.py; e.g. make bench BENCH_ARGS=--quick)
#   make bench-dask 20M rows from Parquet through Dask (benchmarks/dask_20m.py)
#   make docs       the documentation site (mkdocs.yml, docs/) built into site/
#   make clean      build artefacts, caches and site/; make distclean also removes .venv

SHELL := /bin/bash
.DEFAULT_GOAL := setup

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
DOCS_STAMP := $(VENV)/.docs-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

# CHOLMOD headers/libraries for building scikit-sparse 0.4.x, and a threaded OpenBLAS.
SYS_PKGS := libsuitesparse-dev libopenblas0-pthread
# lme4 reference implementation for the benchmarks.
BENCH_SYS_PKGS := r-base-core r-cran-lme4 r-cran-lmertest r-cran-pbkrtest
SKSPARSE_REQ := scikit-sparse>=0.4.12,<0.5

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: setup system-deps demo test test-fast lint bench-setup bench docs-setup docs clean distclean

setup: $(STAMP)

system-deps:
	@missing=""; \
	for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  $(APT_GET) update && $(APT_GET) install -y --no-install-recommends $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

# scikit-sparse 0.4.x has no wheels: pip builds it from the sdist against the system
# SuiteSparse headers (/usr/include/suitesparse). The plain isolated build works; if it
# ever fails, retry once without build isolation with cython/numpy preinstalled.
$(STAMP): pyproject.toml | system-deps $(PY)
	$(PIP) install -e '.[test]' || { \
	  echo "Retrying the scikit-sparse build without build isolation"; \
	  $(PIP) install setuptools wheel cython 'numpy>=2' && \
	  $(PIP) install --no-build-isolation '$(SKSPARSE_REQ)' && \
	  $(PIP) install -e '.[test]'; }
	$(PY) -c "import sksparse.cholmod, formulaic, pandas"
	touch $@

demo: setup
	$(PY) -m lmm_sparse.demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

bench-setup: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml $(STAMP)
	@if ! command -v Rscript >/dev/null 2>&1 || \
	    ! Rscript -e 'library(lme4); library(lmerTest); library(pbkrtest)' >/dev/null 2>&1; then \
	  echo "Installing R and lme4"; \
	  $(APT_GET) update && $(APT_GET) install -y --no-install-recommends $(BENCH_SYS_PKGS); \
	fi
	$(PIP) install -e '.[test,bench]'
	touch $@

# Writes docs/benchmarks.md, docs/benchmarks.json and docs/img/benchmarks_fit_time.png. The
# full suite takes long (lme4 may use its 1200 s cap on the largest designs); see
# benchmarks/README.md for subsets.
bench: bench-setup
	$(PY) -m benchmarks.run $(BENCH_ARGS)

# lmm_sparse, lme4 and statsmodels side by side on five packaged data sets; writes
# docs/comparison.md. Columns of a tool that is not installed (R with lme4, statsmodels)
# say n/a; make bench-setup installs both.
.PHONY: bench-compare
bench-compare: setup
	$(PY) -m benchmarks.compare

# 1,000 parametric bootstrap refits of sleepstudy, lmm_sparse against lme4's bootMer in
# the same run; writes docs/bootstrap_benchmark.md (BENCH_ARGS: --nsim N, --no-parallel).
# A 20M-row crossed design in Parquet files, fitted through a Dask LocalCluster; writes
# docs/benchmarks_dask.json and its section of docs/benchmarks.md (BENCH_ARGS: --dir DIR).
.PHONY: bench-dask
bench-dask: setup
	$(PY) -m benchmarks.dask_20m $(BENCH_ARGS)

.PHONY: bench-bootstrap
bench-bootstrap: bench-setup
	$(PY) -m benchmarks.bootstrap $(BENCH_ARGS)

# The documentation site. --strict turns every warning (a missing page, a broken link or
# anchor) into an error.
docs-setup: $(DOCS_STAMP)

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(PIP) install -e '.[test,docs]'
	touch $@

docs: docs-setup
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf build dist site *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
