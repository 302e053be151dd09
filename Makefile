# One command for the demo, one for the tests; each installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install controlplane prometheus crd docs clean

demo: $(STAMP)                       ## the offline demo: the whole grid on this machine, then the report
	$(VENV)/bin/stilts run examples/demo.yaml

test: $(STAMP) controlplane prometheus  ## the whole suite, slow tests included (what CI runs)
	$(PY) -m pytest -ra

test-fast: $(STAMP)                  ## unit tests only
	$(PY) -m pytest -ra -m "not slow and not cluster"

install: $(STAMP)

$(STAMP): requirements.txt requirements-mlflow-server.txt contract/pyproject.toml trainer/pyproject.toml operator/pyproject.toml hack/install-tools.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e contract -e trainer -e operator
	hack/install-tools.sh $(VENV)
	# the tracking tests' `mlflow server` and `mlflow ui`: full MLflow, in a venv of its own (see the file)
	test -x $(VENV)/mlflow-server/bin/python || $(PYTHON) -m venv $(VENV)/mlflow-server
	$(VENV)/mlflow-server/bin/pip install -q -r requirements-mlflow-server.txt
	touch $(STAMP)

controlplane:                        ## etcd, kube-apiserver, controller-manager, training operator (cached by version)
	@if command -v go >/dev/null; then hack/controlplane/build.sh >/dev/null; \
	else echo "Go not found: the cluster tests will skip (install Go >= 1.26 to run them)"; fi

prometheus:                          ## Debian's Prometheus server, for the dashboard test (needs root + apt)
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; \
	  else echo "prometheus not found and cannot apt-get it here: the dashboard test will skip"; fi; }

crd: $(STAMP)                        ## regenerate crds/ (and the chart's copy) from the spec model
	$(VENV)/bin/stilts crd > crds/stilts.dev_transferexperiments.yaml
	cp crds/stilts.dev_transferexperiments.yaml charts/stilts/files/crd.yaml

docs: $(STAMP)                       ## regenerate docs/tasks.md's table from the task registry
	$(PY) hack/docs.py

clean:
	rm -rf runs .pytest_cache
