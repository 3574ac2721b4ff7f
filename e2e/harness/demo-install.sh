#!/usr/bin/env bash
# The operator as users install it, on a real node: the release build of oms-operator in a pod,
# installed by `helm install` of charts/oms-operator, then a managed NATS access point whose
# broker pod the operator renders, and a Queue the operator provisions on it through cluster DNS.
#
#   e2e/harness/demo-install.sh <cluster>   on a cluster from cluster.sh (`cluster.sh up <cluster>`);
#                                           starts its node and cluster DNS if needed (node.sh dns)
#
# Images come from images.sh (cached archives, loaded with `node.sh load`) and are tagged as the
# chart's values name them; pods use them with imagePullPolicy Never (the operator and bridge) or
# IfNotPresent (the broker: the operator does not set a policy, and the tag is not `latest`).
# Prints `kubectl get pods -A` and the timings at the end; on a failure, what the operator logged.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
DEADLINE_SECONDS=${DEADLINE_SECONDS:-180}
RELEASE=oms
RELEASE_NAMESPACE=oms-system
DEMO_NAMESPACE=oms-demo
ACCESS_POINT=demo-nats
QUEUE=orders

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster name>" >&2
	exit 2
}
cluster=$1
CLUSTER_STATE=$ROOT/e2e/.state/$cluster

log() { printf 'demo-install %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "$*"
	exit 1
}
kubectl() { "$BIN/kubectl" --kubeconfig "$CLUSTER_STATE/kubeconfig" --request-timeout=10s "$@"; }
helm() { "$BIN/helm" --kubeconfig "$CLUSTER_STATE/kubeconfig" "$@"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# What the operator and its objects said, for a failed wait.
diagnose() {
	kubectl get pods -A -o wide >&2 || true
	kubectl -n "$DEMO_NAMESPACE" get messagingaccesspoints,queues,statefulsets -o wide >&2 || true
	kubectl -n "$DEMO_NAMESPACE" describe pods >&2 || true
	kubectl -n "$RELEASE_NAMESPACE" logs -l "app.kubernetes.io/instance=$RELEASE" --tail=40 >&2 || true
	kubectl get events -A --sort-by=.lastTimestamp >&2 | tail -n 30 || true
}

# wait_for <what> <kubectl wait arguments>...
wait_for() {
	local what=$1
	shift
	kubectl wait "$@" --timeout="${DEADLINE_SECONDS}s" >/dev/null || {
		diagnose
		die "$what: not reached within ${DEADLINE_SECONDS}s"
	}
}

[[ -f $CLUSTER_STATE/kubeconfig ]] || die "cluster $cluster is not up: run 'e2e/harness/cluster.sh up $cluster' first"
"$ROOT/e2e/harness/tools.sh" helm kubectl

t0=$EPOCHREALTIME
"$ROOT/e2e/harness/node.sh" dns "$cluster"
t_node=$EPOCHREALTIME

mapfile -t archives < <("$ROOT/e2e/harness/images.sh" build oms-operator oms-bridge nats)
t_images=$EPOCHREALTIME
"$ROOT/e2e/harness/node.sh" load "$cluster" "${archives[@]}"
t_loaded=$EPOCHREALTIME

operator_image=$("$ROOT/e2e/harness/images.sh" ref oms-operator)
values=$CLUSTER_STATE/demo-values.yaml
cat >"$values" <<EOF
# Written by e2e/harness/demo-install.sh: the chart's values for images without a registry.
image:
  repository: ${operator_image%:*}
  tag: "${operator_image##*:}"
  pullPolicy: Never
bridge:
  image: $("$ROOT/e2e/harness/images.sh" ref oms-bridge)
brokerImages:
  nats: $("$ROOT/e2e/harness/images.sh" ref nats)
EOF
if helm status "$RELEASE" -n "$RELEASE_NAMESPACE" >/dev/null 2>&1; then
	log "release $RELEASE exists: helm upgrade"
	helm upgrade "$RELEASE" "$ROOT/charts/oms-operator" -n "$RELEASE_NAMESPACE" -f "$values" >/dev/null
else
	helm install "$RELEASE" "$ROOT/charts/oms-operator" -n "$RELEASE_NAMESPACE" --create-namespace -f "$values" >/dev/null
fi
t_helm=$EPOCHREALTIME
deployment=$(kubectl -n "$RELEASE_NAMESPACE" get deployments -l "app.kubernetes.io/instance=$RELEASE" -o name)
kubectl -n "$RELEASE_NAMESPACE" rollout status "$deployment" --timeout="${DEADLINE_SECONDS}s" >/dev/null || {
	diagnose
	die "$deployment not available"
}
t_operator=$EPOCHREALTIME
log "operator Ready: $(kubectl -n "$RELEASE_NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE" -o name)"

kubectl create namespace "$DEMO_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$DEMO_NAMESPACE" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: MessagingAccessPoint
metadata:
  name: $ACCESS_POINT
spec:
  driver: nats
  managed: {replicas: 1}
EOF
t_applied=$EPOCHREALTIME
wait_for "MessagingAccessPoint $ACCESS_POINT Ready" -n "$DEMO_NAMESPACE" --for=condition=Ready \
	"messagingaccesspoint/$ACCESS_POINT"
wait_for "MessagingAccessPoint $ACCESS_POINT readyReplicas 1" -n "$DEMO_NAMESPACE" \
	--for=jsonpath='{.status.readyReplicas}'=1 "messagingaccesspoint/$ACCESS_POINT"
t_access_point=$EPOCHREALTIME
log "access point Ready: $(kubectl -n "$DEMO_NAMESPACE" get messagingaccesspoint "$ACCESS_POINT" -o jsonpath='{.status.accessPoint}')"

kubectl -n "$DEMO_NAMESPACE" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: Queue
metadata:
  name: $QUEUE
spec:
  accessPointRef: {name: $ACCESS_POINT}
  replication: 1
EOF
t_queue_applied=$EPOCHREALTIME
wait_for "Queue $QUEUE Ready" -n "$DEMO_NAMESPACE" --for=condition=Ready "queue/$QUEUE"
t_queue=$EPOCHREALTIME
log "queue Ready: $(kubectl -n "$DEMO_NAMESPACE" get queue "$QUEUE" \
	-o jsonpath='{.status.conditions[?(@.type=="Ready")].message}')"

kubectl get pods -A -o wide
kubectl -n "$DEMO_NAMESPACE" get messagingaccesspoints,queues
log "timings: node and cluster DNS $(elapsed "$t0" "$t_node")s, images $(elapsed "$t_node" "$t_images")s," \
	"loaded in $(elapsed "$t_images" "$t_loaded")s, helm install $(elapsed "$t_loaded" "$t_helm")s," \
	"helm install to operator Ready $(elapsed "$t_loaded" "$t_operator")s," \
	"access point applied to Ready $(elapsed "$t_applied" "$t_access_point")s," \
	"queue applied to Ready $(elapsed "$t_queue_applied" "$t_queue")s, total $(elapsed "$t0" "$t_queue")s"
