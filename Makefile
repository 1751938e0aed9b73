# Two commands for a new user: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-quick test lint install install-dev clean

# The main job: the package's sweep of small GPTs on the embedded corpus (examples/tiny_gpt/sweep.yaml), planned
# stage by stage, two local workers, logged to ./mlflow.db, the law refitted once per stage. Re-running continues it.
demo: $(VENV)/.installed
	$(VENV)/bin/lightning-scaling sweep --config examples/tiny_gpt/sweep.yaml

demo-quick: $(VENV)/.installed
	$(VENV)/bin/lightning-scaling sweep --config examples/tiny_gpt/sweep_quick.yaml

test: lint
	sh tools/ensure_debian_package.sh chromium /usr/bin/chromium "the browser test"
	sh tools/ensure_debian_package.sh postgresql "/usr/lib/postgresql/*/bin/initdb" "the PostgreSQL tests"
	sh tools/ensure_debian_package.sh munge /usr/sbin/munged "the SLURM tests"
	sh tools/ensure_debian_package.sh slurm-wlm /usr/sbin/slurmctld "the SLURM tests"
	$(PY) -m pytest

# The linters, first: ruff (rules and limits in pyproject.toml) and the import layers (import-linter).
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade setuptools wheel

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml tools/install.py
	$(PY) tools/install.py
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) tools/install.py --dev
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
