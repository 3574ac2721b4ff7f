# The one entry point. `make test` is what CI runs (.ci/run); `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

include e2e/harness/versions.env

CARGO ?= cargo
BIN := $(CURDIR)/.bin
TOOLS := e2e/harness/tools.sh
CLUSTER ?= cloud-a
RELEASE_NAMESPACE ?= oms-system

# Tools the targets below need; built from the registries and cached by version (see tools.sh).
CONTROL_PLANE_TOOLS := etcd kube-apiserver kube-controller-manager kubectl
# Brokers, clients and the fault proxy the tests run; installed before any test starts, since
# tests in parallel lanes expect them in .bin/.
TEST_TOOLS := nats-server nats kafka pika toxiproxy rocketmq

# Alert rules: one plain Prometheus rule file, embedded by the chart's PrometheusRule.
PROMETHEUS_RULES := charts/oms-operator/files/prometheus-rules.yaml

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every crate and binary
	$(CARGO) build --workspace --all-targets --locked

.PHONY: tools
tools: ## Build or link the pinned tools into .bin/ (helm, kubectl, kube-apiserver, etcd, brokers, ...)
	$(TOOLS) helm promtool prometheus prometheus-operator cert-manager $(CONTROL_PLANE_TOOLS) $(TEST_TOOLS)

.PHONY: images
images: ## Build the oms-operator and oms-bridge images from their Containerfiles with buildah (OCI archives)
	$(TOOLS) node-runtime
	e2e/harness/images.sh build oms-operator oms-bridge | xargs -r du -h

.PHONY: release
release: ## Push both images and the chart (OCI) to a registry: make release REGISTRY=registry.example.com/oms
	@[[ -n "$(REGISTRY)" ]] || { echo "make release: set REGISTRY=<host[:port][/path]>" >&2; exit 2; }
	e2e/harness/release.sh $(REGISTRY)

.PHONY: lint
lint: tools ## rustfmt, clippy -D warnings, helm lint, shellcheck, cargo deny, one version
	$(TOOLS) shellcheck cargo-deny
	e2e/harness/check-versions.sh
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(BIN)/helm lint --strict --kube-version $(KUBE_VERSION) charts/oms-operator
	$(BIN)/shellcheck -x e2e/harness/*.sh .ci/run
	$(BIN)/cargo-deny --locked check --hide-inclusion-graph licenses bans sources

.PHONY: generate
generate: tools ## Regenerate the CRDs, the chart's CRDs and deploy/ from the Rust types and the chart
	e2e/harness/generate.sh $(CURDIR)

.PHONY: check-generated
check-generated: tools ## Fail when a committed generated file differs from what generation produces
	e2e/harness/generate.sh --check $(CURDIR)

.PHONY: rules
rules: ## Prometheus rules checked and unit-tested with promtool; dashboard checked
	$(TOOLS) helm promtool
	$(BIN)/promtool check rules $(PROMETHEUS_RULES)
	$(BIN)/promtool test rules e2e/prometheus/rules-test.yaml
	@echo "rules: checking that the chart's PrometheusRule is $(PROMETHEUS_RULES) unchanged"
	$(BIN)/helm template oms-operator charts/oms-operator --kube-version $(KUBE_VERSION) \
		--set metrics.prometheusRule.enabled=true --show-only templates/prometheusrule.yaml \
		| sed -e '1,/^spec:$$/d' -e 's/^  //' | diff -u $(PROMETHEUS_RULES) -
	python3 e2e/prometheus/check_dashboard.py --promtool $(BIN)/promtool deploy/dashboards/oms.json

.PHONY: unit
unit: ## Unit tests and tests that need no cluster
	$(CARGO) test --workspace --locked --exclude oms-e2e

.PHONY: e2e
e2e: tools build ## Both end-to-end tiers side by side: real API servers and brokers, and real nodes
	MAKE="$(MAKE)" CARGO="$(CARGO)" e2e/harness/e2e.sh

.PHONY: e2e-api
e2e-api: tools build ## Integration tier against real API servers and brokers (starts clusters as needed)
	CARGO="$(CARGO)" e2e/harness/e2e-api.sh

# The phases of `make test`, in order; each is timed (tools and the build first, so that the
# later phases' times are their own). The images' release build runs alone before both e2e tiers:
# beside the API tier, at the lowest priority, it took 424 s where alone it takes about 110.
TEST_PHASES := tools build lint check-generated rules unit images e2e

.PHONY: test
test: ## Everything CI runs, phase by phase, with a table of times at the end
	MAKE="$(MAKE)" e2e/harness/phases.sh $(TEST_PHASES)
	@echo "make test: all passed"

.PHONY: bench
bench: tools ## Benchmarks and scale runs; results under docs/bench/
	$(CARGO) build --release --locked -p oms-operator
	$(CARGO) bench --locked -p oms-e2e --bench queue_scale
	$(MAKE) bench-capacity
	$(MAKE) bench-sustained
	$(MAKE) bench-latency

# Brokers in benchmarks run as in production (e2e/harness/broker.sh picks lighter options for tests).
bench bench-capacity bench-sustained bench-latency: export KAFKA_JVM_OPTS = -XX:+UseG1GC -XX:MaxGCPauseMillis=20

.PHONY: bench-capacity
bench-capacity: ## Capacity: each replicator drains a backlog alone, repeats interleaved (part of bench)
	$(TOOLS) kafka kafka-mirror nats-server plot toxiproxy
	$(CARGO) build --release --locked -p oms-bridge
	OMS_BENCH_MODE=capacity $(CARGO) bench --locked -p oms-e2e --bench bridge_throughput

.PHONY: bench-sustained
bench-sustained: ## Highest rate each replicator sustains with the producer beside it (after capacity)
	$(TOOLS) kafka kafka-mirror nats-server plot toxiproxy
	$(CARGO) build --release --locked -p oms-bridge
	OMS_BENCH_MODE=sustained $(CARGO) bench --locked -p oms-e2e --bench bridge_throughput

.PHONY: bench-latency
bench-latency: ## Added latency at a fixed rate beside MirrorMaker 2, Shovel, sourcing (after capacity)
	$(TOOLS) kafka kafka-mirror nats-server plot toxiproxy
	$(CARGO) build --release --locked -p oms-bridge
	$(CARGO) bench --locked -p oms-e2e --bench bridge_throughput

.PHONY: cluster-up
cluster-up: ## Start a local control plane: make cluster-up CLUSTER=cloud-a
	$(TOOLS) $(CONTROL_PLANE_TOOLS)
	e2e/harness/cluster.sh up $(CLUSTER)

.PHONY: cluster-down
cluster-down: ## Stop a local control plane and remove its state: make cluster-down CLUSTER=cloud-a
	e2e/harness/cluster.sh down $(CLUSTER)

.PHONY: node-up
node-up: ## Start a real node (containerd, kubelet, kube-scheduler) for a cluster: make node-up CLUSTER=cloud-a
	e2e/harness/node.sh up $(CLUSTER)

.PHONY: node-down
node-down: ## Stop the cluster's node and remove it: make node-down CLUSTER=cloud-a
	e2e/harness/node.sh down $(CLUSTER)

.PHONY: node-smoke
node-smoke: ## Start the node and run a pod on it; prints the timings: make node-smoke CLUSTER=cloud-a
	e2e/harness/node.sh smoke $(CLUSTER)

.PHONY: node-dns
node-dns: ## Start the node and cluster DNS (CoreDNS at 10.96.0.10): make node-dns CLUSTER=cloud-a
	e2e/harness/node.sh dns $(CLUSTER)

.PHONY: demo-install
demo-install: ## helm install the operator as a pod on the node, then a managed NATS (or DRIVER=kafka, rabbitmq, mqtt) and a Queue: make demo-install CLUSTER=node-demo
	e2e/harness/demo-install.sh $(CLUSTER) $(DRIVER)

.PHONY: e2e-nodes
e2e-nodes: ## Real nodes end to end: Kafka in one cloud bridged to NATS in another, 100,000 keyed messages through pod deletions, Prometheus, helm upgrade/uninstall; clusters e2e-a e2e-b
	e2e/harness/e2e-nodes.sh e2e-a e2e-b

.PHONY: demo
demo: ## Two clouds on real nodes, the operator installed with helm in each, Kafka bridged to NATS, narrated; stays up
	e2e/harness/demo.sh

.PHONY: demo-down
demo-down: ## Take down the clusters of make demo
	e2e/harness/demo.sh down

.PHONY: broker-up
broker-up: ## Start a broker: make broker-up BROKER=kafka NAME=k1 PORT=19092
	e2e/harness/broker.sh up $(BROKER) $(NAME) $(PORT)

.PHONY: broker-down
broker-down: ## Stop a broker: make broker-down NAME=k1
	e2e/harness/broker.sh down $(NAME)

.PHONY: clean-state
clean-state: ## Stop every local cluster and broker of this checkout
	for dir in e2e/.state/*/; do \
		name=$$(basename "$$dir"); \
		if [[ $$name == brokers ]]; then \
			for b in e2e/.state/brokers/*/; do [[ -d $$b ]] && e2e/harness/broker.sh down "$$(basename "$$b")"; done; \
		else e2e/harness/cluster.sh down "$$name"; fi; \
	done 2>/dev/null || true
