# shellcheck shell=bash
# Two clouds on real nodes: the steps that demo.sh (`make demo`) and e2e-nodes.sh (`make e2e`)
# share. Sourced, not run. The caller defines die (say why, exit 1).
#
#   clouds_up <a> <b>                 clusters (cluster.sh), a node and cluster DNS each (node.sh),
#                                     the nodes joined by a WAN of their own (node.sh link)
#   clouds_install <a> <driver a> <b> <driver b>
#                                     each cloud's CA (the Secret oms-ca before its operator first
#                                     starts), trust domain <cluster>.oms and the other's CA and
#                                     trust domain as peers (chart values pki.*); then
#                                     demo-install.sh in both clouds at once: the chart, a managed
#                                     access point demo-<driver> and its Queue (kafka: payments,
#                                     nats: orders) in the tenant namespace $TENANT. The registry,
#                                     our images and chart (release.sh) and the provisioner's
#                                     image are made once, first. Its output goes to stdout.
#                                     CLOUDS_VALUES=<file> adds chart values of your own to both.
#   clouds_gateway <a> <b>            cloud B's demo-nats gets its gateway on NodePort
#                                     $GATEWAY_NODE_PORT, advertised as a name that cloud A's DNS
#                                     resolves to node B's WAN address (that name is in the
#                                     gateway's certificate); sets GATEWAY_ENDPOINT and
#                                     GATEWAY_QUEUE (the broker-side name of B's Queue orders)
#   clouds_bridge <a> <b> <source queue> <bridge>
#                                     in cloud A: the name (a headless Service without a selector
#                                     and an EndpointSlice of node B's WAN address), B's gateway as
#                                     an access point, a Queue orders-b on it and the Bridge from
#                                     <source queue> to orders-b; waits until the Bridge is Ready
#   clouds_produce_keyed <a> <topic> <messages> <keys>
#                                     a pod `producer` of the kafka image writes lines
#                                     `k<id mod keys><TAB><id>` for ids 0..messages-1 to cloud A's
#                                     Kafka topic (the key parsed, acks=all, idempotent)
#   nats_login <b>, nats_b <nats arguments>..., nats_b_within <seconds> <nats arguments>...
#                                     the nats CLI in node B's network namespace, as the tenant
#                                     (its binding Secret), on demo-nats-0's address
#   clouds_stream <b>                 the tenant's stream in cloud B (the first one)
#   clouds_count <stream>             messages in that stream, or -1 while it does not answer
#   clouds_dump_keyed <stream> <subject> <from sequence> <count>
#                                     those messages as lines `<oms-key header><TAB><data>`
#   kc <cluster> <kubectl arguments>..., poll <what> <command>..., elapsed <from> <to>
#   broker_diagnostics <cluster> <access point>
#                                     on stderr: the tenant's pods and StatefulSets, the access
#                                     point's conditions and its brokers' last log lines

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
HARNESS=$ROOT/e2e/harness
# shellcheck source-path=SCRIPTDIR source=kafka-client.sh
source "$HARNESS/kafka-client.sh"
# shellcheck disable=SC2034 # the sourcing scripts use it
RELEASE=oms
RELEASE_NAMESPACE=oms-system
TENANT=oms-demo
GATEWAY_NODE_PORT=30743
DEADLINE_SECONDS=${DEADLINE_SECONDS:-420}

# A request gets 30 s: beside the API tier, the two cores have kept an API server from sending
# a body (kubectl apply's OpenAPI document) within 10.
kc() {
	local cluster=$1
	shift
	"$BIN/kubectl" --kubeconfig "$ROOT/e2e/.state/$cluster/kubeconfig" --request-timeout=30s "$@"
}
elapsed() { awk -v from="$1" -v to="$2" 'BEGIN { printf "%.1f", to - from }'; }
# net <cluster> <key>: the node's network facts (node.sh writes node/net.env).
net() { sed -n "s/^$2=//p" "$ROOT/e2e/.state/$1/node/net.env"; }

broker_diagnostics() {
	local cluster=$1 access_point=$2
	kc "$cluster" -n "$TENANT" get pods,statefulsets -o wide >&2 || true
	kc "$cluster" -n "$TENANT" get messagingaccesspoint "$access_point" -o jsonpath='{.status.conditions}{"\n"}' >&2 || true
	kc "$cluster" -n "$TENANT" logs -l "app.kubernetes.io/instance=$access_point" --prefix --tail=20 >&2 || true
}

# A managed access point in the tenant's namespace, for the shrink scripts:
#   ap_progressing <cluster> <access point>  its Progressing condition: "<reason> <message>"
#   ap_pods <cluster> <access point>         the pods its StatefulSet asks for
#   ap_replicas <cluster> <access point> <n> sets its spec.managed.replicas
ap_progressing() {
	kc "$1" -n "$TENANT" get messagingaccesspoint "$2" \
		-o jsonpath='{range .status.conditions[?(@.type=="Progressing")]}{.reason}{" "}{.message}{end}'
}
ap_pods() { kc "$1" -n "$TENANT" get statefulset "$2" -o jsonpath='{.spec.replicas}'; }
ap_replicas() {
	kc "$1" -n "$TENANT" patch messagingaccesspoint "$2" --type merge -p "{\"spec\":{\"managed\":{\"replicas\":$3}}}" >/dev/null
}

# poll <what> <command>...: until the command succeeds, for DEADLINE_SECONDS.
poll() {
	local what=$1 deadline=$((SECONDS + DEADLINE_SECONDS))
	shift
	until "$@"; do
		((SECONDS < deadline)) || die "$what: not reached within ${DEADLINE_SECONDS}s"
		sleep 1
	done
}

# statefulset_revisions <cluster> <name>: the StatefulSet's current and update revisions, ready and
# updated pods, and replicas, on one line.
statefulset_revisions() {
	kc "$1" -n "$TENANT" get statefulset "$2" -o json | jq -r '[.status.currentRevision, .status.updateRevision,
		.status.readyReplicas // 0, .status.updatedReplicas // 0, .spec.replicas] | join(" ")'
}

# watch_roll <cluster> <access point> <revision before> <seconds> [<check>...]: every second, until
# every pod of the access point's StatefulSet runs a revision other than <revision before> and is
# Ready, counting the pods not Ready at once and running <check> (which dies to stop the watch).
# Sets ROLLED_TO (the revision), ROLL_REPLICAS and MOST_UNREADY (the most pods seen not Ready at
# once); fails after <seconds>.
watch_roll() {
	local cluster=$1 access_point=$2 before=$3 seconds=$4 current update ready updated replicas unready
	shift 4
	local deadline=$((SECONDS + seconds))
	MOST_UNREADY=0
	while :; do
		(($# == 0)) || "$@"
		read -r current update ready updated replicas <<<"$(statefulset_revisions "$cluster" "$access_point")"
		unready=$(kc "$cluster" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$access_point" -o json |
			jq '[.items[] | select(any(.status.conditions[]?; .type == "Ready" and .status == "True") | not)] | length')
		((unready <= MOST_UNREADY)) || MOST_UNREADY=$unready
		[[ $update == "$before" || $current != "$update" || $ready != "$replicas" || $updated != "$replicas" ]] || break
		((SECONDS < deadline)) ||
			die "the roll did not finish within ${seconds}s: revision $current -> $update, $ready ready, $updated updated"
		sleep 1
	done
	# shellcheck disable=SC2034 # for the scripts that source this
	ROLLED_TO=$update ROLL_REPLICAS=$replicas
}

clouds_up() {
	local cluster
	# What cluster.sh and node.sh do not build themselves: the control plane, helm, the nats CLI.
	"$HARNESS/tools.sh" etcd kube-apiserver kube-controller-manager kubectl helm nats
	for cluster in "$1" "$2"; do
		"$HARNESS/cluster.sh" up "$cluster"
		"$HARNESS/node.sh" dns "$cluster"
	done
	"$HARNESS/node.sh" link "$1" "$2"
}

clouds_install() {
	local a=$1 driver_a=$2 b=$3 driver_b=$4 cluster peer driver pki values registry pid pids=() failed=0
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
	for pair in "$a $b $driver_a" "$b $a $driver_b"; do
		read -r cluster peer driver <<<"$pair"
		values=$ROOT/e2e/.state/$cluster/clouds-values.yaml
		{
			printf 'pki:\n  trustDomain: %s.oms\n  peerTrustDomains: [%s.oms]\n  peerTrustBundle: |\n' "$cluster" "$peer"
			sed 's/^/    /' "$ROOT/e2e/.state/$peer/clouds-ca/tls.crt"
			[[ -z ${CLOUDS_VALUES:-} ]] || cat "$CLOUDS_VALUES"
		} >"$values"
	done
	# What both installs would otherwise make side by side (the same files), made once first.
	registry=$("$HARNESS/registry.sh" up)
	"$HARNESS/release.sh" "$registry"
	"$HARNESS/images.sh" build local-path-provisioner >/dev/null
	for pair in "$a $driver_a" "$b $driver_b"; do
		read -r cluster driver <<<"$pair"
		DEMO_RELEASED=$registry DEMO_VALUES=$ROOT/e2e/.state/$cluster/clouds-values.yaml \
			"$HARNESS/demo-install.sh" "$cluster" "$driver" &
		pids+=("$!")
	done
	for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
	((failed == 0)) || die "an install failed (its lines above say why)"
}

# Node B's address on the WAN to node A (node.sh link: node <n> is 10.215.<n>.<m> towards <m>).
wan_address() { echo "10.215.$(net "$2" HOST_IF | tr -dc 0-9).$(net "$1" HOST_IF | tr -dc 0-9)"; }

GATEWAY_ENDPOINT='' GATEWAY_QUEUE=''
clouds_gateway() {
	local a=$1 b=$2 host=$2-gateway.$TENANT.svc.cluster.local
	kc "$b" -n "$TENANT" patch messagingaccesspoint demo-nats --type merge -p "{\"spec\": {\"gateway\": {\"enabled\": true,
		\"service\": {\"type\": \"NodePort\", \"nodePort\": $GATEWAY_NODE_PORT}, \"advertisedHost\": \"$host\"}}}" >/dev/null
	kc "$b" -n "$TENANT" wait messagingaccesspoint/demo-nats --for=jsonpath='{.status.gatewayEndpoint}' \
		--timeout="${DEADLINE_SECONDS}s" >/dev/null || die "no gateway endpoint in $b's demo-nats status"
	GATEWAY_ENDPOINT=$(kc "$b" -n "$TENANT" get messagingaccesspoint demo-nats -o jsonpath='{.status.gatewayEndpoint}')
	GATEWAY_QUEUE=$(kc "$b" -n "$TENANT" get queue orders -o jsonpath='{.status.brokerName}')
	kc "$b" -n "$TENANT" rollout status deployment -l app.kubernetes.io/component=gateway \
		--timeout="${DEADLINE_SECONDS}s" >/dev/null || {
		kc "$b" -n "$TENANT" get deployments,pods -o wide >&2
		die "$b's gateway Deployment did not become available"
	}
}

clouds_bridge() {
	local a=$1 b=$2 source=$3 bridge=$4
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
endpoints: [{addresses: ["$(wan_address "$a" "$b")"], conditions: {ready: true}}]
---
apiVersion: openmessaging.cloud/v1alpha1
kind: MessagingAccessPoint
metadata: {name: $b}
spec:
  driver: gateway
  endpoint: '$GATEWAY_ENDPOINT'
  remote: {namespace: $TENANT, name: demo-nats}
---
apiVersion: openmessaging.cloud/v1alpha1
kind: Queue
metadata: {name: orders-b}
spec:
  accessPointRef: {name: $b}
  name: '$GATEWAY_QUEUE'
---
apiVersion: openmessaging.cloud/v1alpha1
kind: Bridge
metadata: {name: $bridge}
spec:
  source: {queueRef: {name: $source}}
  target: {queueRef: {name: orders-b}}
EOF
	kc "$a" -n "$TENANT" wait "bridge/$bridge" --for=condition=Ready --timeout="${DEADLINE_SECONDS}s" >/dev/null || {
		kc "$a" -n "$TENANT" get messagingaccesspoints,queues,bridges,pods -o wide >&2
		kc "$a" -n "$TENANT" get bridge "$bridge" -o yaml >&2
		die "Bridge $bridge not Ready"
	}
}

clouds_produce_keyed() {
	local a=$1 topic=$2 messages=$3 keys=$4
	kc "$a" -n "$TENANT" delete pod producer --ignore-not-found >/dev/null
	# shellcheck disable=SC2016 # the producer's script expands its variables in the pod
	kc "$a" -n "$TENANT" run producer --image="$("$HARNESS/images.sh" ref kafka)" --image-pull-policy=Never \
		--restart=Never --env="MESSAGES=$messages" --env="KEYS=$keys" --env="TOPIC=$topic" \
		--env="BOOTSTRAP=demo-kafka-client.$TENANT.svc:9092" \
		--override-type=strategic --overrides="$(kafka_login producer demo-kafka-binding)" --command -- /bin/sh -c '
set -e
'"$KAFKA_CLIENT_PROPERTIES"'
generate() {
  i=0
  while [ "$i" -lt "$MESSAGES" ]; do
    printf "k%d\t%d\n" $((i % KEYS)) "$i"
    i=$((i + 1))
  done
}
produce() {
  kafka-console-producer.sh --bootstrap-server "$BOOTSTRAP" --producer.config "$CONFIG" --topic "$TOPIC" \
    --property parse.key=true --property "key.separator=$(printf "\t")" \
    --producer-property acks=all --producer-property enable.idempotence=true \
    --producer-property linger.ms=20 --producer-property batch.size=131072
}
# The image has a writable data directory; without one, the lines go straight in.
file=/var/lib/kafka/data/messages.tsv
if (: >"$file") 2>/dev/null; then
  generate >"$file"
  echo "generated $(wc -l <"$file" 2>/dev/null || echo "$MESSAGES") lines in $file"
  produce <"$file"
else
  generate | produce
fi
echo "produced $MESSAGES"' >/dev/null
}

# in_node <network namespace> <hosts file> <command>...: the command in a node's network namespace,
# with a hosts file of its own: clients there check a broker's certificate by a DNS name that
# only cluster DNS knows, which the file maps to the address.
in_node() {
	local netns=$1 hosts=$2
	shift 2
	# shellcheck disable=SC2016 # expanded by the inner shell
	ip netns exec "$netns" unshare --mount sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$hosts" "$@"
}

# The tenant's credentials and a broker's address in cloud B, read once: nats_b runs often. The
# brokers speak TLS (the binding's TLS and CA_CERT): the CLI checks their certificate by the pod's
# DNS name, which a hosts file of its own maps to the pod's address.
nats_user='' nats_password='' nats_host='' nats_netns='' nats_files=''
nats_login() {
	local secret address
	secret=$(kc "$1" -n "$TENANT" get secret demo-nats-binding -o json)
	nats_user=$(jq -r '.data.USERNAME // empty | @base64d' <<<"$secret")
	nats_password=$(jq -r '.data.PASSWORD // empty | @base64d' <<<"$secret")
	# demo-nats-0 is never the broker e2e-nodes.sh deletes.
	address=$(kc "$1" -n "$TENANT" get pod demo-nats-0 -o jsonpath='{.status.podIP}')
	nats_host=demo-nats-0.demo-nats.$TENANT.svc
	nats_netns=$(net "$1" NETNS)
	nats_files=$ROOT/e2e/.state/$1/nats-client
	mkdir -p "$nats_files"
	printf '127.0.0.1 localhost\n%s %s\n' "$address" "$nats_host" >"$nats_files/hosts"
	rm -f "$nats_files/ca.crt"
	[[ $(jq -r '.data.TLS // empty | @base64d' <<<"$secret") != true ]] ||
		jq -r '.data.CA_CERT | @base64d' <<<"$secret" >"$nats_files/ca.crt"
}
# nats_b, optionally under a deadline: `nats_b_within <seconds> <nats arguments>...`.
nats_b_within() {
	local seconds=$1 ca=
	shift
	[[ ! -f $nats_files/ca.crt ]] || ca=$nats_files/ca.crt
	in_node "$nats_netns" "$nats_files/hosts" timeout "$seconds" "$BIN/nats" --server "nats://$nats_host:4222" \
		${ca:+--tlsca "$ca"} ${nats_user:+--user "$nats_user"} ${nats_password:+--password "$nats_password"} "$@"
}
nats_b() { nats_b_within infinity "$@"; }
clouds_stream() { nats_b stream ls --names | head -n 1; }
clouds_count() { nats_b stream info "$1" --json 2>/dev/null | jq '.state.messages' 2>/dev/null || echo -1; }
# A read whose consumer was made while the stream's leader moved (a NATS pod was just deleted)
# can wait forever for messages that are there: each attempt has a deadline, and a stalled one is
# made again (seen once in make e2e-nodes: 100,000 messages stored, the reader idle for minutes).
clouds_dump_keyed() {
	local attempt raw
	raw=$(mktemp)
	for attempt in 1 2 3; do
		if nats_b_within 120 sub "$2" --stream "$1" --start-sequence "$3" --count "$4" --dump=- >"$raw" 2>/dev/null; then
			tr '\0' '\n' <"$raw" | jq -r '[(.Header["oms-key"][0] // "-"), (.Data | @base64d)] | @tsv'
			rm -f "$raw"
			return 0
		fi
		echo "clouds: reading $4 messages of stream $1 did not finish (attempt $attempt of 3)" >&2
	done
	rm -f "$raw"
	return 1
}
