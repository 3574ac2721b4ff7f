#!/usr/bin/env bash
# `make demo`: the whole product at human scale, narrated. Two clusters on real nodes, demo-a and
# demo-b, stand for two clouds; the operator is installed in each with helm; a Kafka in cloud A
# is bridged into a NATS JetStream in cloud B through B's gateway (mTLS, each cloud its own CA);
# keyed messages are produced in A and read in B. The clusters stay up; `make demo-down` removes
# them. On a fresh machine the first run builds the tools and images (tens of minutes); a second
# run finds them cached.
#
#   e2e/harness/demo.sh                 MESSAGES=<n> (default 1000) messages, KEYS=<n> keys (10)
#   e2e/harness/demo.sh down            what `make demo-down` runs
# -E: the ERR trap below also fires inside functions, so a failure deep in a step is reported.
set -Eeuo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HARNESS/versions.env"
A=demo-a B=demo-b
BRIDGE=payments-to-b
MESSAGES=${MESSAGES:-1000}
KEYS=${KEYS:-10}
LOG=$ROOT/e2e/.state/demo.log

if [[ ${1:-} == down ]]; then
	for cluster in "$A" "$B"; do "$HARNESS/cluster.sh" down "$cluster"; done
	"$HARNESS/registry.sh" down
	rm -f "$LOG" "$ROOT/e2e/.state/demo-arrived.tsv"
	exit 0
fi
[[ $# -eq 0 ]] || {
	echo "usage: $0 [down]" >&2
	exit 2
}

bold=$'\e[1m' dim=$'\e[2m' plain=$'\e[0m'
[[ -t 1 ]] || bold='' dim='' plain=''
t0=$SECONDS
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
detail() { printf '    %s\n' "$@"; }
try() { printf '    %s$ %s%s\n' "$dim" "$*" "$plain"; }
# The terminal's stderr, also from inside `quietly`.
exec 3>&2
die() {
	printf '\n%sdemo: %s%s\n' "$bold" "$*" "$plain" >&3
	printf 'The last lines of %s:\n' "$LOG" >&3
	tail -n 25 "$LOG" >&3 || true
	exit 1
}
trap 'die "stopped at line $LINENO: $BASH_COMMAND"' ERR
# quietly <command>...: its output goes to the log; the narration stays readable.
quietly() { "$@" >>"$LOG" 2>&1; }
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

say "Two clouds on this machine: $A and $B"
detail "Each is a real Kubernetes $KUBE_VERSION control plane (etcd, kube-apiserver, controller" \
	"manager) and a real node (containerd, runc, kubelet, kube-proxy, CoreDNS) in a network" \
	"namespace of its own. The nodes meet only over a private WAN link, as two clouds would." \
	"The first run builds the tools from Go modules and the images locally: minutes, once." \
	"Everything is logged to $LOG."
quietly clouds_up "$A" "$B"
detail "Up after $((SECONDS - t0))s."

say "helm install of the operator in both clouds, then a broker cluster in each"
detail "Each cloud gets its own CA and trust domain ($A.oms, $B.oms) and trusts the other's (chart" \
	"values pki.peerTrustDomains and pki.peerTrustBundle). Then, in namespace $TENANT:" \
	"  $A: a MessagingAccessPoint demo-kafka (driver kafka, 3 brokers the operator runs) and a" \
	"      Queue payments (3 partitions, 3 copies)" \
	"  $B: a MessagingAccessPoint demo-nats (driver nats, JetStream) and a Queue orders"
t=$SECONDS
quietly clouds_install "$A" kafka "$B" nats
detail "Both Ready after $((SECONDS - t))s."
kc "$A" -n "$TENANT" get messagingaccesspoints,queues | sed 's/^/    /'

say "$B opens its gateway to other clouds"
detail "spec.gateway on demo-nats: the operator runs the gateway (mTLS, identities map to tenants)" \
	"behind NodePort $GATEWAY_NODE_PORT and puts the advertised name in its certificate."
quietly clouds_gateway "$A" "$B"
detail "Gateway endpoint: $GATEWAY_ENDPOINT (queue orders is '$GATEWAY_QUEUE' on the NATS side)"

say "$A bridges payments into $B's orders"
detail "Applied in $A: $B's gateway as a MessagingAccessPoint (driver gateway), a Queue orders-b on it," \
	"and this Bridge:"
printf '%s' "$dim"
cat <<EOF | sed 's/^/      /'
apiVersion: openmessaging.cloud/v1alpha1
kind: Bridge
metadata: {name: $BRIDGE, namespace: $TENANT}
spec:
  source: {queueRef: {name: payments}}
  target: {queueRef: {name: orders-b}}
EOF
printf '%s' "$plain"
t=$SECONDS
quietly clouds_bridge "$A" "$B" payments "$BRIDGE"
detail "Ready after $((SECONDS - t))s: the operator issued the worker a certificate from $A's CA and runs it as a pod."

say "Producing $MESSAGES keyed messages into Kafka in $A"
nats_login "$B"
stream=$(clouds_stream)
subject=$(nats_b stream info "$stream" --json | jq -r '.config.subjects[0]')
before=$(clouds_count "$stream")
first_sequence=$(($(nats_b stream info "$stream" --json | jq '.state.last_seq') + 1))
t=$SECONDS
clouds_produce_keyed "$A" payments "$MESSAGES" "$KEYS"
arrived() {
	local now
	now=$(clouds_count "$stream")
	((now >= before + MESSAGES))
}
poll "$MESSAGES messages in $B's stream $stream" arrived
detail "All $MESSAGES arrived in $B's JetStream stream $stream after $((SECONDS - t))s (producer pod start included)."
caught_up() {
	kc "$A" -n "$TENANT" get bridge "$BRIDGE" -o json | jq -e '.status.lagMessages == 0 and .status.forwardedTotal > 0' >/dev/null
}
poll "the Bridge's status to catch up" caught_up
kc "$A" -n "$TENANT" get bridges | sed 's/^/    /'

say "Reading them back in $B: every id once, in order per key (Kafka keys travel as the oms-key header)"
arrived_file=$ROOT/e2e/.state/demo-arrived.tsv
clouds_dump_keyed "$stream" "$subject" "$first_sequence" "$(($(clouds_count "$stream") - before))" >"$arrived_file"
awk -F '\t' -v n="$MESSAGES" '
	$1 !~ /^k[0-9]+$/ { next }
	{
		id = $2 + 0
		if (!(id in seen)) distinct++
		seen[id] = 1
		if (($1 in last) && id < last[$1]) disorder++
		last[$1] = id
		if (shown[$1]++ < 8) ids[$1] = ids[$1] " " id
	}
	END {
		for (key in ids) if (key ~ /^k[0-2]$/) printf "    %s:%s ...\n", key, ids[key]
		printf "    %d of %d ids arrived, %d out of order per key\n", distinct, n, disorder
	}' "$arrived_file" | sort

say "Pods of both clouds"
for cluster in "$A" "$B"; do
	detail "$cluster:"
	kc "$cluster" get pods -A | sed 's/^/    /'
done

say "Done in $((SECONDS - t0))s. The clouds stay up; look around:"
try "export KUBECONFIG=$ROOT/e2e/.state/$A/kubeconfig   # cloud A ($B: e2e/.state/$B/kubeconfig)"
try "$BIN/kubectl get messagingaccesspoints,queues,bridges -A"
try "$BIN/kubectl -n $TENANT describe bridge $BRIDGE       # conditions, lag, forwarded, events"
try "$BIN/kubectl -n $TENANT logs deploy/$BRIDGE-oms-bridge"
worker=$(kc "$A" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$BRIDGE,app.kubernetes.io/component=bridge-worker" \
	-o jsonpath='{.items[0].metadata.name}')
try "$BIN/kubectl get --raw /api/v1/namespaces/$TENANT/pods/$worker:9090/proxy/metrics | grep ^oms_bridge"
try "MESSAGES=100 make demo                             # produce more; the same Bridge forwards them"
detail "Take both clouds down with:  make demo-down"
