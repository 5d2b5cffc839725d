# wedsync-operator — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create the virtualenv with the operator and its dev tools

deps: ## install the Debian packages the tests and the node need (as root; else say how)
	tools/install-deps.sh

controlplane: ## build the control plane, the node's binaries, helm and CoreDNS (cached)
	tools/controlplane/build.sh

images: venv controlplane ## build every image the chart and the node run (cached by content)
	$(PY) -m wedsync_testbed.images

prometheus: ## build prometheus and promtool for the alert tests (cached)
	tools/prometheus/build.sh

s3server: ## build SeaweedFS, the S3 server the S3 repository tests run against (cached)
	tools/s3server/build.sh

crds: venv controlplane ## regenerate crds/, the chart's CRDs and RBAC, and manifests/install.yaml
	$(PY) -m wedsync_operator crds --write
	tools/render_manifests.sh

run: deps venv controlplane ## a local cluster with a real node, a database, the samples and the operator
	$(PY) -m wedsync_testbed.run

lint: venv ## ruff, and the import contract (.importlinter: layers import downwards only)
	$(VENV)/bin/ruff check operator tools/testbed tests bench
	$(VENV)/bin/lint-imports

typecheck: venv ## mypy --strict on the package, the testbed, the tests and the benchmarks
	$(VENV)/bin/mypy operator/wedsync_operator tools/testbed/wedsync_testbed tests bench

test-unit: venv ## unit tests (no cluster)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: deps venv controlplane prometheus s3server ## integration tests (real control plane, PostgreSQL, pgBackRest, Prometheus, S3)
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

test-e2e: deps venv controlplane images ## end-to-end tests on a real node (chart, backups, scaling)
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

test: deps lint typecheck controlplane prometheus s3server images ## install what is missing, ruff, mypy --strict, then every test tier
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

bench: venv controlplane s3server ## benchmarks (1,000 policies; failover RTO, two and four regions; pgBackRest; S3; tuning; re-protection; the ChangeFreeze webhook); figures go to bench/results/
	$(PY) bench/policies.py
	$(PY) bench/failover.py
	$(PY) bench/failover.py --regions 4 --runs 3
	$(PY) -m bench.pgbackrest
	$(PY) -m bench.s3
	$(PY) -m bench.tuning
	$(PY) -m bench.rebuild
	$(PY) -m bench.admission

bench-node: deps venv controlplane images ## the real node: start-up, Pod and Job latency, the chart, backups through the CronJobs (root; about 15 minutes)
	$(PY) -m bench.node

clean: ## remove the virtualenv and caches (not the control plane build cache)
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache

.PHONY: help deps venv controlplane images prometheus s3server crds run lint typecheck test-unit test-integration test-e2e test bench bench-node clean
