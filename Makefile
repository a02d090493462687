# Shortcuts to the scripts in scripts/ (which CI and the README call directly).
.PHONY: help install check test unit image bundle chart-lint sync-crds e2e-kind e2e-kind-local kind-cluster

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install:  ## Debian packages and the project's virtualenv
	./scripts/install

check:  ## ruff, mypy, import-linter, actionlint
	./scripts/check

test:  ## the whole suite on the local 3-node kind cluster, as .ci/run does
	./scripts/test

unit:  ## unit tests only
	.venv/bin/pytest tests/unit

image:  ## build azaion-loader:dev without a registry
	./scripts/build-image

bundle:  ## the air-gapped install bundle in dist/ (chart, amd64 and arm64 images, CRDs; docs/install-offline.md)
	./scripts/bundle

sync-crds:  ## copy crds/ into the chart
	./scripts/sync-crds

chart-lint:  ## helm lint --strict and the chart's tests
	./scripts/sync-crds --check
	$${HELM:-helm} lint --strict charts/azaion-loader
	.venv/bin/pytest tests/unit/chart

e2e-kind:  ## the e2e suite on a kind cluster (needs docker, kind, kubectl, helm)
	./scripts/e2e-kind

e2e-kind-local:  ## the e2e suite on the 3-node kind cluster of these machines (node image built here)
	./scripts/e2e-kind --local

kind-cluster:  ## a 3-node kind cluster on a node image built here, no registry (docs/cluster.md)
	./scripts/kind-node-image create
	./scripts/kind-node-image check
