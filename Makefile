# Two commands do everything on a fresh machine:
#   make run    set up, generate the bundled synthetic sample, materialize the whole asset graph
#   make test   set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
SAMPLE ?= data/sample
# `make run MODEL=charattr-tiny PRETRAINED=random`: the whole graph with the tiny test model.
MODEL ?=
PRETRAINED ?=
RUN_OPTIONS := $(if $(MODEL),--model $(MODEL)) $(if $(PRETRAINED),--pretrained $(PRETRAINED))
# One source, one namespace: each source has its own Dagster instance,
# data/sources/<name>-<hash>/dagster_home (charattr_core/namespaces.py); `make ui` opens the sample's.

.PHONY: setup run test bench ui app clean fuzz cluster-demo evidence int8-accuracy

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,app,onnx,openvino]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/charattr demo-data $(SAMPLE) --images 200 --shards 4 --seed 0
	$(BIN)/charattr run $(SAMPLE) $(RUN_OPTIONS)

test: setup
	$(PY) -m pytest

# The property tests of hostile input with many more examples than `make test` runs (minutes).
fuzz: setup
	CHARATTR_HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/test_properties_badinput.py -q

bench: setup
	$(PY) -m benchmarks

ui: export CHARATTR_SOURCE ?= $(abspath $(SAMPLE))
ui: export DAGSTER_HOME ?= $(shell CHARATTR_SOURCE=$(abspath $(SAMPLE)) $(PY) -m charattr_core.settings --dagster-home)
ui: setup
	$(PY) -m charattr_dagster.instance >/dev/null  # charattr's dagster.yaml in a new DAGSTER_HOME
	$(if $(MODEL),CHARATTR_MODEL=$(MODEL)) $(if $(PRETRAINED),CHARATTR_PRETRAINED=$(PRETRAINED)) \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# docs/fusion-evidence.md: adapt charattr-small to each synthetic sample's tags, then score every
# source, strategy and the policy on held-out images (EVIDENCE_IMAGES per seed, two seeds).
EVIDENCE_IMAGES ?= 5000
evidence: setup
	$(PY) scripts/fusion_evidence.py --images $(EVIDENCE_IMAGES) --seeds 0 1 \
		--work /tmp/charattr-evidence --out data/reports/evidence/evidence.md

# README "int8 and accuracy": the same held-out images embedded in fp32 (PyTorch, the reference)
# and in int8 (what `--precision int8` picks: ONNX Runtime QInt8 when installed), each path with
# its own probes; paired difference of zero-shot and probe accuracy, overall and per attribute.
# MODEL_DIR: a `charattr train-clip` folder; without it a quick charattr-small is adapted first.
# INT8_SAMPLE: the source (default: a synthetic sample written there first).
INT8_WORK ?= /tmp/charattr-int8-accuracy
INT8_SAMPLE ?= $(INT8_WORK)/sample
INT8_IMAGES ?= 1500
MODEL_DIR ?=
INT8_MODEL := $(if $(MODEL_DIR),$(MODEL_DIR),$(INT8_WORK)/model)
int8-accuracy: setup
	test -e $(INT8_SAMPLE) || $(BIN)/charattr demo-data $(INT8_SAMPLE) --images $(INT8_IMAGES) --size 128 --seed 0
	$(if $(MODEL_DIR),,test -f $(INT8_MODEL)/adapted_clip.json || $(BIN)/charattr train-clip $(INT8_SAMPLE) \
		--out $(INT8_MODEL) -q)
	$(PY) -c "from charattr_core.cpu_features import read_cpu_features as r; print('CPU:', r().describe())"
	$(BIN)/charattr eval $(INT8_SAMPLE) --pretrained $(INT8_MODEL) --precision fp32 --compare-precision int8 \
		--out-dir data/reports/int8-accuracy

# The web app on http://127.0.0.1:7860 (`charattr app --help`: --host, --port, model options).
app: setup
	$(BIN)/charattr app $(RUN_OPTIONS)

# Redis, PostgreSQL, dagster-daemon and two Celery workers (default + gpu) on this machine, the
# sample through them, then everything stopped (docs/cluster.md).
cluster-demo: setup
	$(BIN)/charattr demo-data $(SAMPLE) --images 200 --shards 4 --seed 0
	BIN=$(BIN) scripts/cluster-demo.sh $(SAMPLE) $(RUN_OPTIONS)

clean:
	rm -rf data/sources data/warehouse data/dagster_home data/reports data/charattr.db* $(SAMPLE)
