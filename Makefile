# TMO developer entry points. `make demo` and `make test` set up everything they need
# (venv, Debian packages, the Go-built control plane) idempotently; heavy artefacts are cached
# outside the clone under $(TMO_CACHE).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export TMO_CACHE ?= $(HOME)/.cache/tmo
# The venv is rebuilt only when pyproject.toml changes: its hash names the stamp file.
VENV_STAMP = $(VENV)/.stamp-$(shell sha256sum pyproject.toml | cut -c1-16)
DEBIAN_PACKAGES := prometheus openssl openjdk-17-jre-headless shellcheck
PYTEST_ARGS ?=

.PHONY: help venv deps cluster-build cluster-up cluster-down test unit e2e lint crds demo clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## create or update the virtual environment in .venv

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing Python dependencies into $(VENV) (first run downloads torch: a few minutes)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,runtime]'
	@rm -f $(VENV)/.stamp-*; touch $@

deps: ## install the Debian packages tests need (prometheus/promtool, openssl, Java 17 for TorchServe) when missing
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo ">> apt-get install$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

cluster-build: ## build etcd, kube-apiserver, controller-manager, scheduler, kubectl and kwok, and fetch the third-party CRDs, into the cache
	@e2e/cluster/build.sh
	@e2e/cluster/crds.sh

cluster-up: cluster-build venv ## start the local control plane; writes .cluster/kubeconfig (idempotent)
	@e2e/cluster/up.sh

cluster-down: ## stop every process cluster-up started and remove its state
	@e2e/cluster/down.sh

unit: venv deps ## fast tests: no cluster
	$(PY) -m pytest tests $(PYTEST_ARGS)

e2e: venv deps cluster-build ## tests against the local control plane (started by the fixture)
	$(PY) -m pytest e2e $(PYTEST_ARGS)

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check operator runtimes tests e2e bench
	$(VENV)/bin/ruff format --check operator runtimes tests e2e bench
	$(VENV)/bin/mypy

test: venv deps cluster-build lint ## set everything up, lint, and run the whole suite (tests/ and e2e/)
	@# tests/ (no cluster) runs beside e2e/, whose tests run one after another (their operators
	@# watch every namespace and would act on each other's objects). Most of both is waiting on
	@# processes, so side by side saves most of tests/'s time. Its output follows e2e/'s.
	@# Each must pass: pytest exits 5 when it collected nothing, a failure here, never a pass.
	@mkdir -p .test-logs; \
	echo ">> tests/ runs in the background (log: .test-logs/tests.log); e2e/ here"; \
	$(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS) > .test-logs/tests.log 2>&1 & unit=$$!; \
	trap 'kill $$unit 2>/dev/null || true' INT TERM; \
	$(PY) -m pytest e2e $(PYTEST_ARGS) && e2e=0 || e2e=$$?; \
	wait $$unit && tests=0 || tests=$$?; \
	echo; echo ">> tests/ (ran beside e2e/):"; cat .test-logs/tests.log; \
	echo; echo ">> exit codes: tests/ $$tests, e2e/ $$e2e"; \
	test $$tests -eq 0 && test $$e2e -eq 0

crds: venv ## regenerate crds/ from the pydantic models in operator/tmo/api
	$(PY) -m tmo.cli crds --out-dir crds

clean: cluster-down ## remove the venv and local state (the cache in $(TMO_CACHE) stays)
	rm -rf $(VENV) .cluster .pytest_cache .mypy_cache .ruff_cache .test-logs

demo: venv deps cluster-build ## set everything up and run the main job end to end on this machine
	@examples/demo.sh
