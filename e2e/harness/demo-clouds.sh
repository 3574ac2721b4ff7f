#!/usr/bin/env bash
# Two clouds on real nodes: a Bridge in cloud A forwards a NATS queue into cloud B's queue through
# cloud B's gateway, which runs as a pod behind a NodePort. The nodes reach each other only over
# the WAN of `node.sh link`; a tenant is the same namespace (oms-demo) in both clouds.
#
#   e2e/harness/demo-clouds.sh [<cluster a> <cluster b>]   default clouds-a clouds-b; starts the
#                                                          clusters (cluster.sh) and nodes if needed
#   MESSAGES=<n> (default 100) messages produced in cloud A.
#
# Each cloud gets a CA of its own (openssl, the Secret oms-ca in oms-system before the operator
# starts), trust domain <cluster>.oms, and the other's CA and trust domain as peers (chart values
# pki.*); then demo-install.sh (chart, a managed NATS access point demo-nats and the Queue orders).
# In cloud B demo-nats gets a gateway on NodePort $GATEWAY_NODE_PORT, advertised as a name that
# cloud A's cluster DNS resolves to node B's WAN address (a headless Service without a selector
# and an EndpointSlice of that address); the name goes into the gateway's certificate. In cloud A:
# that gateway as an access point, a Queue on it, a Bridge orders -> orders-b. Messages are
# produced and counted with .bin/nats from the nodes' network namespaces. Prints the pods of both
# clusters and the timings. Take the clusters down with `cluster.sh down <cluster>`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
HARNESS=$ROOT/e2e/harness
RELEASE_NAMESPACE=oms-system
TENANT=oms-demo
GATEWAY_NODE_PORT=30743
MESSAGES=${MESSAGES:-100}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-180}

[[ $# -eq 0 || $# -eq 2 ]] || {
	echo "usage: $0 [<cluster a> <cluster b>]" >&2
	exit 2
}
a=${1:-clouds-a} b=${2:-clouds-b}

log() { printf 'demo-clouds: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}
kc() {
	local cluster=$1
	shift
	"$BIN/kubectl" --kubeconfig "$ROOT/e2e/.state/$cluster/kubeconfig" --request-timeout=10s "$@"
}
elapsed() { awk -v from="$1" -v to="$2" 'BEGIN { printf "%.1f", to - from }'; }
net() { sed -n "s/^$2=//p" "$ROOT/e2e/.state/$1/node/net.env"; }

# nats_in <cluster> <nats arguments>...: the nats CLI in that node's network namespace, logged in
# as the tenant (binding Secret) on the broker pod's address.
nats_in() {
	local cluster=$1 secret server user password
	shift
	secret=$(kc "$cluster" -n "$TENANT" get secret demo-nats-binding -o json)
	user=$(jq -r '.data.USERNAME // empty | @base64d' <<<"$secret")
	password=$(jq -r '.data.PASSWORD // empty | @base64d' <<<"$secret")
	server=$(kc "$cluster" -n "$TENANT" get pod demo-nats-0 -o jsonpath='{.status.podIP}')
	ip netns exec "$(net "$cluster" NETNS)" "$BIN/nats" --server "nats://$server:4222" \
		${user:+--user "$user"} ${password:+--password "$password"} "$@"
}

# poll <what> <command>...: until the command succeeds, for DEADLINE_SECONDS.
poll() {
	local what=$1 deadline=$((SECONDS + DEADLINE_SECONDS))
	shift
	until "$@"; do
		((SECONDS < deadline)) || die "$what: not reached within ${DEADLINE_SECONDS}s"
		sleep 2
	done
}

t0=$EPOCHREALTIME
"$HARNESS/tools.sh" helm kubectl nats
for cluster in "$a" "$b"; do
	"$HARNESS/cluster.sh" up "$cluster"
	"$HARNESS/node.sh" dns "$cluster"
done
"$HARNESS/node.sh" link "$a" "$b"
t_nodes=$EPOCHREALTIME

# Each cloud's CA, made once per cluster state, stored before the operator's first start.
for cluster in "$a" "$b"; do
	pki=$ROOT/e2e/.state/$cluster/clouds-ca
	if [[ ! -f $pki/tls.key ]]; then
		mkdir -p "$pki"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
			-subj "/CN=OMS CA $cluster.oms" -addext basicConstraints=critical,CA:TRUE \
			-addext keyUsage=critical,keyCertSign,cRLSign -keyout "$pki/tls.key" -out "$pki/tls.crt" 2>/dev/null
	fi
	kc "$cluster" create namespace "$RELEASE_NAMESPACE" --dry-run=client -o yaml | kc "$cluster" apply -f - >/dev/null
	kc "$cluster" -n "$RELEASE_NAMESPACE" create secret tls oms-ca --cert "$pki/tls.crt" --key "$pki/tls.key" \
		--dry-run=client -o yaml | kc "$cluster" apply -f - >/dev/null
done
for pair in "$a $b" "$b $a"; do
	read -r cluster peer <<<"$pair"
	values=$ROOT/e2e/.state/$cluster/clouds-values.yaml
	{
		printf 'pki:\n  trustDomain: %s.oms\n  peerTrustDomains: [%s.oms]\n  peerTrustBundle: |\n' "$cluster" "$peer"
		sed 's/^/    /' "$ROOT/e2e/.state/$peer/clouds-ca/tls.crt"
	} >"$values"
	DEMO_VALUES=$values "$HARNESS/demo-install.sh" "$cluster" nats
done
t_installed=$EPOCHREALTIME

# Cloud B: the gateway, named so that cloud A resolves the name to node B's WAN address.
gateway_host=$b-gateway.$TENANT.svc.cluster.local
wan_b=10.215.$(net "$b" HOST_IF | tr -dc 0-9).$(net "$a" HOST_IF | tr -dc 0-9)
kc "$b" -n "$TENANT" patch messagingaccesspoint demo-nats --type merge -p "{\"spec\": {\"gateway\": {\"enabled\": true,
	\"service\": {\"type\": \"NodePort\", \"nodePort\": $GATEWAY_NODE_PORT}, \"advertisedHost\": \"$gateway_host\"}}}" >/dev/null
kc "$b" -n "$TENANT" wait messagingaccesspoint/demo-nats --for=jsonpath='{.status.gatewayEndpoint}' \
	--timeout="${DEADLINE_SECONDS}s" >/dev/null
endpoint=$(kc "$b" -n "$TENANT" get messagingaccesspoint demo-nats -o jsonpath='{.status.gatewayEndpoint}')
broker_queue=$(kc "$b" -n "$TENANT" get queue orders -o jsonpath='{.status.brokerName}')
kc "$b" -n "$TENANT" rollout status deployment -l app.kubernetes.io/component=gateway --timeout="${DEADLINE_SECONDS}s" >/dev/null 2>&1 ||
	kc "$b" -n "$TENANT" get deployments,pods -o wide >&2
log "cloud B gateway at $endpoint ($gateway_host = $wan_b), queue orders is '$broker_queue' on the broker"
t_gateway=$EPOCHREALTIME

# Cloud A: the name, the remote access point, a Queue on it and the Bridge.
kc "$a" -n "$TENANT" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: $b-gateway}
spec:
  clusterIP: None
  ports: [{name: gateway, port: $GATEWAY_NODE_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $b-gateway
  labels: {kubernetes.io/service-name: $b-gateway}
addressType: IPv4
ports: [{name: gateway, port: $GATEWAY_NODE_PORT}]
endpoints: [{addresses: ["$wan_b"], conditions: {ready: true}}]
---
apiVersion: openmessaging.cloud/v1alpha1
kind: MessagingAccessPoint
metadata: {name: $b}
spec:
  driver: gateway
  endpoint: '$endpoint'
  remote: {namespace: $TENANT, name: demo-nats}
---
apiVersion: openmessaging.cloud/v1alpha1
kind: Queue
metadata: {name: orders-b}
spec:
  accessPointRef: {name: $b}
  name: '$broker_queue'
---
apiVersion: openmessaging.cloud/v1alpha1
kind: Bridge
metadata: {name: orders-to-b}
spec:
  source: {queueRef: {name: orders}}
  target: {queueRef: {name: orders-b}}
EOF
t_bridge_applied=$EPOCHREALTIME
kc "$a" -n "$TENANT" wait bridge/orders-to-b --for=condition=Ready --timeout="${DEADLINE_SECONDS}s" >/dev/null || {
	kc "$a" -n "$TENANT" get messagingaccesspoints,queues,bridges,pods -o wide >&2
	kc "$a" -n "$TENANT" get bridge orders-to-b -o yaml >&2
	die "Bridge orders-to-b not Ready"
}
t_bridge=$EPOCHREALTIME

# The stream of a queue: the one whose subjects include the queue's broker-side name.
count_in() { nats_in "$1" stream info "$(nats_in "$1" stream ls --names | head -n 1)" --json | jq '.state.messages'; }
source_queue=$(kc "$a" -n "$TENANT" get queue orders -o jsonpath='{.status.brokerName}')
before_b=$(count_in "$b")
# A rerun finds earlier messages and a forwardedTotal that counted them.
before_forwarded=$(kc "$a" -n "$TENANT" get bridge orders-to-b -o jsonpath='{.status.forwardedTotal}')
nats_in "$a" pub "$source_queue" --jetstream --count "$MESSAGES" "message {{Count}} from $a" >/dev/null
t_produced=$EPOCHREALTIME
arrived() { (($(count_in "$b") >= before_b + MESSAGES)); }
poll "$MESSAGES messages in $b's stream" arrived
t_arrived=$EPOCHREALTIME
forwarded() {
	local status
	status=$(kc "$a" -n "$TENANT" get bridge orders-to-b -o json)
	jq -e --argjson n $((${before_forwarded:-0} + MESSAGES)) '.status.lagMessages == 0 and .status.forwardedTotal >= $n and
		any(.status.conditions[]; .type == "Ready" and .status == "True")' <<<"$status" >/dev/null
}
poll "Bridge status lag 0, forwardedTotal up by $MESSAGES, Ready" forwarded
t_status=$EPOCHREALTIME

for cluster in "$a" "$b"; do
	log "$cluster:"
	kc "$cluster" get pods -A -o wide
done
kc "$a" -n "$TENANT" get bridges -o wide
kc "$a" -n "$TENANT" get bridge orders-to-b -o jsonpath='{.status}{"\n"}'
log "$b's stream now holds $(count_in "$b") messages (had $before_b)"
log "timings: clusters, nodes, DNS and link $(elapsed "$t0" "$t_nodes")s," \
	"CAs and both installs $(elapsed "$t_nodes" "$t_installed")s, gateway $(elapsed "$t_installed" "$t_gateway")s," \
	"bridge applied to Ready $(elapsed "$t_bridge_applied" "$t_bridge")s, $MESSAGES produced in" \
	"$(elapsed "$t_bridge" "$t_produced")s, arrived in $b after $(elapsed "$t_produced" "$t_arrived")s," \
	"bridge status caught up after $(elapsed "$t_produced" "$t_status")s, total $(elapsed "$t0" "$t_status")s"
