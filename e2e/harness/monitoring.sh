# shellcheck shell=bash
# The chart's monitoring objects as a Prometheus Operator user has them, on the test clouds:
# the real Prometheus Operator (tools.sh prometheus-operator) turns the chart's ServiceMonitor,
# PodMonitor and PrometheusRule into a Prometheus configuration, and a real Prometheus runs it.
# Sourced after clouds.sh (kc, poll, die, ROOT, BIN, HARNESS), not run.
#
#   monitoring_crds <cluster>         the Prometheus Operator's CRDs (before the chart, whose
#                                     monitoring objects need them)
#   monitoring_values                 chart values: ServiceMonitor, PodMonitor (1 s scrapes, so
#                                     that a deleted worker's count is known to its last second)
#                                     and PrometheusRule enabled
#   monitoring_up <cluster>           the Prometheus Operator against the cluster's API server and
#                                     a Prometheus object in namespace monitoring selecting every
#                                     monitor and rule in every namespace, with no replicas: the
#                                     server runs on the host (the host reaches pod addresses).
#                                     Waits for the monitors and the rule Accepted and for their
#                                     jobs in the generated configuration, then starts Prometheus
#                                     with that configuration and those rule files. Changed only
#                                     as the operator's config-reloader sidecar changes it in the
#                                     pod ($(SHARD), $(POD_NAME)), in how the server reaches the
#                                     API server from outside (kubeconfig_file) and where the rule
#                                     files are
#   monitoring_promql <cluster> <query>   the query's JSON answer from that cluster's Prometheus
#   monitoring_scraped <cluster> <namespace> <selector>
#                                     every pod the selector matches is a target that is up
#   monitoring_rules_ok <cluster>     every group of the chart's rule file is loaded and each of
#                                     its rules evaluated without error
#   monitoring_down                   stops the operators and servers

MONITORING_NAMESPACE=monitoring
MONITORING_PROMETHEUS=oms
MONITORING_PIDS=()
declare -A MONITORING_PORTS=()

monitoring_crds() {
	"$HARNESS/tools.sh" prometheus-operator prometheus >/dev/null
	# Server-side: the Prometheus CRD is larger than client-side apply's annotation allows.
	kc "$1" apply --server-side -f "$BIN/prometheus-operator-crds/" >/dev/null
	# A CRD just made may show `conditions: null`, which kubectl wait takes for an error rather than
	# waiting: ask again until every CRD is Established.
	poll "$1: CRDs established" crds_established "$1"
}

crds_established() {
	[[ $(kc "$1" get crd -o json | jq '[.items[] | select(any(.status.conditions[]?;
		.type == "Established" and .status == "True") | not)] | length') == 0 ]]
}

monitoring_values() {
	cat <<EOF
metrics:
  serviceMonitor: {enabled: true, interval: 1s}
  podMonitor: {enabled: true, interval: 1s}
  prometheusRule: {enabled: true}
EOF
}

monitoring_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# monitoring_jobs <cluster>: the scrape jobs the operator names after the chart's monitors.
monitoring_jobs() {
	kc "$1" get servicemonitors,podmonitors -A -o json | jq -r '.items[] |
		"\(.kind | sub("^S"; "s") | sub("^P"; "p"))/\(.metadata.namespace)/\(.metadata.name)/0"'
}

# monitoring_accepted <cluster>: each monitor and rule object says the Prometheus took it.
monitoring_accepted() {
	local pending
	pending=$(kc "$1" get servicemonitors,podmonitors,prometheusrules -A -o json | jq -r '.items[] |
		select([.status.bindings[]?.conditions[]? | select(.type == "Accepted" and .status == "True")] | length == 0) |
		"\(.kind)/\(.metadata.name)"')
	[[ -z $pending ]]
}

# monitoring_generated <cluster> <dir>: the operator's configuration holds every monitor's job and
# its rule ConfigMap exists; both are written to <dir> as the operator wrote them.
monitoring_generated() {
	local cluster=$1 dir=$2 job
	kc "$cluster" -n "$MONITORING_NAMESPACE" get secret "prometheus-$MONITORING_PROMETHEUS" \
		-o jsonpath='{.data.prometheus\.yaml\.gz}' 2>/dev/null | base64 -d 2>/dev/null | gunzip >"$dir/generated.yaml" 2>/dev/null ||
		return 1
	for job in $(monitoring_jobs "$cluster"); do
		grep -qF "job_name: $job" "$dir/generated.yaml" || return 1
	done
	kc "$cluster" -n "$MONITORING_NAMESPACE" get configmap "prometheus-$MONITORING_PROMETHEUS-rulefiles-0" -o json \
		>"$dir/rulefiles.json" 2>/dev/null
}

monitoring_up() {
	local cluster=$1 dir pki server port version
	dir=$ROOT/e2e/.state/$cluster/monitoring
	pki=$ROOT/e2e/.state/$cluster/pki
	rm -rf "$dir"
	mkdir -p "$dir/rules"
	server=$(sed -n 's/^ *server: *//p' "$ROOT/e2e/.state/$cluster/kubeconfig")
	"$BIN/prometheus-operator" --apiserver "$server" --ca-file "$pki/ca.crt" \
		--cert-file "$pki/admin.crt" --key-file "$pki/admin.key" \
		--web.listen-address "127.0.0.1:$(monitoring_free_port)" \
		--feature-gates StatusForConfigurationResources=true >"$dir/prometheus-operator.log" 2>&1 &
	MONITORING_PIDS+=($!)
	version=$(sed -n 's/^PROMETHEUS_VERSION=//p' "$HARNESS/versions.env")
	kc "$cluster" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $MONITORING_NAMESPACE}
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: $MONITORING_PROMETHEUS, namespace: $MONITORING_NAMESPACE}
spec:
  version: $version
  replicas: 0
  serviceDiscoveryRole: EndpointSlice
  evaluationInterval: 5s
  serviceMonitorSelector: {}
  serviceMonitorNamespaceSelector: {}
  podMonitorSelector: {}
  podMonitorNamespaceSelector: {}
  ruleSelector: {}
  ruleNamespaceSelector: {}
EOF
	poll "$cluster: the chart's monitors and rule Accepted by the Prometheus Operator (log: $dir/prometheus-operator.log)" \
		monitoring_accepted "$cluster"
	poll "$cluster: the monitors' jobs in the generated configuration" monitoring_generated "$cluster" "$dir"
	python3 - "$dir" "$ROOT/e2e/.state/$cluster/kubeconfig" <<'EOF'
import json, pathlib, sys
import yaml
dir, kubeconfig = pathlib.Path(sys.argv[1]), sys.argv[2]
# The config-reloader beside Prometheus in the operator's pod expands these from its environment
# (shard 0 of 1, replica prometheus-<name>-0); any other would be left unexpanded here.
text = (dir / "generated.yaml").read_text()
text = text.replace("$(SHARD)", "0").replace("$(POD_NAME)", "prometheus-oms-0")
if "$(" in text:
    sys.exit(f"{dir}/generated.yaml: a variable the config-reloader expands is not known here")
config = yaml.safe_load(text)
for job in config.get("scrape_configs", []):
    for sd in job.get("kubernetes_sd_configs", []):
        sd["kubeconfig_file"] = kubeconfig
config["rule_files"] = [str(dir / "rules" / "*.yaml")]
(dir / "prometheus.yml").write_text(yaml.safe_dump(config))
for name, text in json.loads((dir / "rulefiles.json").read_text())["data"].items():
    (dir / "rules" / name).write_text(text)
EOF
	port=$(monitoring_free_port)
	"$BIN/prometheus" --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/data" \
		--web.listen-address "127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
	MONITORING_PIDS+=($!)
	MONITORING_PORTS[$cluster]=$port
	poll "$cluster: Prometheus ready (log: $dir/prometheus.log)" curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready"
}

monitoring_promql() {
	curl -fsS "http://127.0.0.1:${MONITORING_PORTS[$1]}/api/v1/query" --data-urlencode "query=$2"
}

monitoring_scraped() {
	local cluster=$1 namespace=$2 selector=$3 pods up pod
	pods=$(kc "$cluster" -n "$namespace" get pods -l "$selector" -o jsonpath='{.items[*].metadata.name}')
	[[ -n $pods ]] || return 1
	up=$(monitoring_promql "$cluster" "up{namespace=\"$namespace\"} == 1" | jq -r '.data.result[].metric.pod')
	for pod in $pods; do
		grep -qxF "$pod" <<<"$up" || return 1
	done
}

monitoring_rules_ok() {
	local cluster=$1 want loaded
	want=$(rule_file_groups "$ROOT/charts/oms-operator/files/prometheus-rules.yaml")
	loaded=$(curl -fsS "http://127.0.0.1:${MONITORING_PORTS[$cluster]}/api/v1/rules" |
		jq -r '[.data.groups[] | select(all(.rules[]; .health == "ok")) | .name] | sort | .[]')
	[[ $loaded == "$want" ]]
}

# rule_file_groups <rule file>: its group names, sorted.
rule_file_groups() { python3 -c 'import sys, yaml; print("\n".join(sorted(g["name"] for g in yaml.safe_load(open(sys.argv[1]))["groups"])))' "$1"; }

monitoring_down() {
	local pid
	for pid in "${MONITORING_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	MONITORING_PIDS=()
}
