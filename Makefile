# Two commands do everything on a fresh machine:
#   make run    set up, generate the bundled synthetic sample, materialize the whole asset graph
#   make test   set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
SAMPLE ?= data/sample
export DAGSTER_HOME := $(CURDIR)/data/dagster_home

.PHONY: setup run test bench ui clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/charattr demo-data $(SAMPLE) --images 200 --shards 4 --seed 0
	$(BIN)/charattr run $(SAMPLE)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m benchmarks

ui: setup
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data/warehouse data/dagster_home data/reports data/charattr.db* $(SAMPLE)
