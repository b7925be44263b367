# growth-pipelines: `make run` and `make test` are all a fresh clone needs.
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CONFIG  ?= pipelines/configs/digits.toml
SET     ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# A local multi-node Ray cluster on 127.0.0.1 (cluster-up / submit / cluster-down): every ray
# call gets the same RAY_AUTH_MODE, token authentication on (cluster-up writes the token to
# RAY_TOKEN_FILE, submit sends it); ports and object store in infra/local-cluster.sh.
export RAY_PORT           ?= 6380
export RAY_DASHBOARD_PORT ?= 8265
export RAY_AUTH_MODE      ?= token
RAY_TOKEN_FILE ?= /tmp/gp-ray-$(RAY_PORT)/auth_token
RAY_DASHBOARD := $(RAY_DASHBOARD_PORT)
RAY           := $(CURDIR)/$(VENV)/bin/ray

# MLflow UI over the same store the pipeline writes (MLFLOW_TRACKING_URI or the local SQLite).
MLFLOW_DB    ?= sqlite:///$(CURDIR)/mlflow.db
MLFLOW_PORT  ?= 5000
SERVE_PORT   ?= 5001

.PHONY: install run screen search train final show ui serve ui-check test demo bench bench-quick lint format \
        cluster-up cluster-down submit pin-images check-images clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,dev]"
	@touch $(STAMP)

run: install                 ## the whole pipeline on the default config (digits); RESUME=<run id> goes on with a stopped one
	$(PY) -m pipelines run $(if $(RESUME),--resume $(RESUME),--config $(CONFIG) $(SET))

screen search final train: install ## one stage of the pipeline (train: final)
	$(PY) -m pipelines $@ --config $(CONFIG) $(SET)

show: install                ## the latest finished pipeline, read back from MLflow
	$(PY) -m pipelines show --config $(CONFIG)

ui: install                  ## the MLflow UI on http://127.0.0.1:$(MLFLOW_PORT), in "Model training" mode
	$(VENV)/bin/mlflow ui --app-name growth --host 127.0.0.1 --port $(MLFLOW_PORT) \
	    --backend-store-uri $${MLFLOW_TRACKING_URI:-$(MLFLOW_DB)} --default-artifact-root ./mlartifacts

serve: install               ## the registered model on http://127.0.0.1:$(SERVE_PORT)/invocations
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-$(MLFLOW_DB)} $(PY) -m pipelines serve \
	    --config $(CONFIG) --port $(SERVE_PORT) $(if $(VERSION),--version $(VERSION),)

ui-check: install            ## the MLflow UI over a real run, checked in headless Chromium
	$(PY) -m pytest -q tests/pipelines/test_ui_browser.py

test: install
	$(PY) -m pytest -q

demo: install                ## layer insertion on the spirals, one table, in a minute
	$(PY) -m pipelines.demo

BENCHES := sbli_spirals overhead screen_validation screen_throughput tiny_growth decorrelation \
           pipeline_overhead reliability

bench: install               ## every benchmark, full size (hours on 2 cores)
	@for b in $(BENCHES); do echo "== $$b"; $(PY) bench/$$b.py || exit 1; done

bench-quick: install         ## the same scripts, under a minute each
	@for b in $(BENCHES); do echo "== $$b"; $(PY) bench/$$b.py --quick --out /tmp/gp-bench-$$b.json || exit 1; done

cluster-up: install          ## a head and a worker node on 127.0.0.1 (PIDs recorded)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH RAY=$(RAY) infra/local-cluster.sh up

submit: install              ## the pipeline as a Ray job on $$RAY_ADDRESS
	RAY_AUTH_TOKEN_PATH=$${RAY_AUTH_TOKEN_PATH:-$(RAY_TOKEN_FILE)} $(RAY) job submit --address $${RAY_ADDRESS:-http://127.0.0.1:$(RAY_DASHBOARD)} --working-dir . \
	    --runtime-env-json '{"excludes": [".venv", "runs", "mlartifacts", "mlflow.db*", ".git", "bench/results"], "env_vars": {"MLFLOW_TRACKING_URI": "'$${MLFLOW_TRACKING_URI:-$(MLFLOW_DB)}'"}}' \
	    -- python -m pipelines run --config $(CONFIG) $(SET)

cluster-down:                ## stop exactly the processes cluster-up started
	RAY=$(RAY) infra/local-cluster.sh down

pin-images:                  ## pin every image in infra/ to its tag's digest (needs the registries)
	$(PYTHON) infra/pin_images.py

check-images:                ## list infra/ images not pinned by digest; fails if there are any
	$(PYTHON) infra/pin_images.py --check

lint: install
	$(VENV)/bin/ruff check growth_core pipelines tests bench
	$(VENV)/bin/ruff format --check growth_core pipelines tests bench

format: install
	$(VENV)/bin/ruff format growth_core pipelines tests bench
	$(VENV)/bin/ruff check --fix growth_core pipelines tests bench

clean:
	rm -rf $(VENV) .pytest_cache
