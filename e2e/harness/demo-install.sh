#!/usr/bin/env bash
# The operator as users install it, on a real node: the release build of oms-operator in a pod,
# installed by `helm install` of charts/oms-operator, then a managed access point whose broker
# pods the operator renders, and a Queue the operator provisions on it through cluster DNS.
#
#   e2e/harness/demo-install.sh <cluster>         on a cluster from cluster.sh (`cluster.sh up
#                                                 <cluster>`); starts its node, cluster DNS and
#                                                 storage if needed (node.sh dns, storage): every
#                                                 broker keeps its data on a PersistentVolume of
#                                                 $STORAGE_SIZE (default 1Gi). NATS: 1 replica, a Queue;
#                                                 NATS_REPLICAS=<n> gives the access point n
#                                                 brokers and the Queue min(n, 3) copies.
#   e2e/harness/demo-install.sh <cluster> kafka   Kafka instead: 3 brokers (KRaft, the images.sh
#                                                 kafka image), a Queue of 3 partitions with
#                                                 min(n, 3) copies, then a message produced and consumed by
#                                                 a client pod that bootstraps from the client
#                                                 Service and is sent on to the brokers' advertised
#                                                 pod DNS names. KAFKA_REPLICAS=<n> gives it n
#                                                 brokers (at most 5 of them controllers too);
#                                                 KAFKA_BROKER_VERSION=<older> runs them at that
#                                                 version (its image loaded beside the pinned one,
#                                                 which the clients and an upgrade use).
#                                                 KAFKA_ROUND_TRIP=0 leaves the client pod out (five
#                                                 JVM starts) for a caller whose own traffic takes
#                                                 the same path (e2e-nodes.sh).
#   e2e/harness/demo-install.sh <cluster> rabbitmq
#                                                 RabbitMQ 4 (the images.sh rabbitmq image): 3
#                                                 nodes (RABBITMQ_REPLICAS) that must form one
#                                                 cluster, a Queue invoices whose quorum queue
#                                                 must have a member on each of min(n, 3) nodes
#                                                 (RabbitMQ's default; its Queues take no
#                                                 replication), both shown by the brokers' own CLI.
#   e2e/harness/demo-install.sh <cluster> mqtt    Mosquitto (the images.sh mosquitto image), a Queue
#                                                 telemetry; a retained message published from a
#                                                 pod of the image must still be there after the
#                                                 broker pod is deleted and comes back on its
#                                                 volume.
#   e2e/harness/demo-install.sh <cluster> rocketmq
#                                                 RocketMQ 5 (the images.sh rocketmq image): one
#                                                 pod with its name server and broker (the proxy
#                                                 in the broker), Ready by oms-probe, the
#                                                 namespace's user and grants applied, and a Queue
#                                                 settlements whose topic the Queue controller
#                                                 makes as that user and reads back (4 queues).
#
# Our images and chart come from the machine's test registry as a user's come from theirs:
# registry.sh starts it, release.sh (`make release`) pushes both images, built from their
# Containerfiles, and the chart to it, and `helm install oci://localhost:<port>/charts/oms-operator`
# installs the chart from it with the image repositories pointed at it; the node's containerd pulls
# the images (the operator's pull is printed). Broker images come from images.sh (cached archives,
# loaded with `node.sh load`); pods use them with IfNotPresent (the operator sets no policy, and
# the tag is not `latest`).
# Prints `kubectl get pods -A` and the timings at the end; on a failure, what the operator logged.
# DEMO_VALUES=<file> adds a values file of your own after those (demo-clouds.sh: each cloud's PKI).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=kafka-client.sh
source "$ROOT/e2e/harness/kafka-client.sh"
BIN=$ROOT/.bin
RELEASE=oms
RELEASE_NAMESPACE=oms-system
DEMO_NAMESPACE=oms-demo

[[ $# -eq 1 || ($# -eq 2 && $2 =~ ^(nats|kafka|rabbitmq|mqtt|rocketmq)$) ]] || {
	echo "usage: $0 <cluster name> [nats|kafka|rabbitmq|mqtt|rocketmq]" >&2
	exit 2
}
cluster=$1
driver=${2:-nats}
ACCESS_POINT=demo-$driver
case $driver in
# Each driver's Queue has its own name: both demos can run on one cluster.
nats)
	REPLICAS=${NATS_REPLICAS:-1} QUEUE=orders PARTITIONS=1 DEADLINE_SECONDS=${DEADLINE_SECONDS:-180}
	REPLICATION=$((REPLICAS < 3 ? REPLICAS : 3))
	;;
# Several JVMs start together on a small machine: give them longer.
kafka)
	REPLICAS=${KAFKA_REPLICAS:-3} QUEUE=payments PARTITIONS=3 DEADLINE_SECONDS=${DEADLINE_SECONDS:-420}
	REPLICATION=$((REPLICAS < 3 ? REPLICAS : 3))
	;;
rabbitmq)
	REPLICAS=${RABBITMQ_REPLICAS:-3} QUEUE=invoices PARTITIONS=1 DEADLINE_SECONDS=${DEADLINE_SECONDS:-420}
	REPLICATION=$((REPLICAS < 3 ? REPLICAS : 3))
	;;
# Mosquitto does not cluster: one broker.
mqtt)
	REPLICAS=1 QUEUE=telemetry PARTITIONS=1 DEADLINE_SECONDS=${DEADLINE_SECONDS:-180}
	;;
# One broker per access point (its proxy serves only it); two JVMs start.
rocketmq)
	REPLICAS=1 QUEUE=settlements PARTITIONS=4 DEADLINE_SECONDS=${DEADLINE_SECONDS:-300}
	;;
esac
CLUSTER_STATE=$ROOT/e2e/.state/$cluster

log() { printf 'demo-install %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "$*"
	exit 1
}
kubectl() { "$BIN/kubectl" --kubeconfig "$CLUSTER_STATE/kubeconfig" --request-timeout=30s "$@"; }
helm() { "$BIN/helm" --kubeconfig "$CLUSTER_STATE/kubeconfig" "$@"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# What the operator and its objects said, for a failed wait.
diagnose() {
	kubectl get pods -A -o wide >&2 || true
	kubectl -n "$DEMO_NAMESPACE" get messagingaccesspoints,queues,statefulsets,persistentvolumeclaims -o wide >&2 || true
	kubectl get persistentvolumes >&2 || true
	kubectl -n local-path-storage logs -l app=local-path-provisioner --tail=20 >&2 || true
	kubectl -n "$DEMO_NAMESPACE" describe pods >&2 || true
	kubectl -n "$RELEASE_NAMESPACE" logs -l "app.kubernetes.io/instance=$RELEASE" --tail=40 >&2 || true
	# The brokers' own last words, of the run that failed when a container restarted.
	kubectl -n "$DEMO_NAMESPACE" logs -l app.kubernetes.io/component=broker --prefix --tail=20 >&2 || true
	kubectl -n "$DEMO_NAMESPACE" logs -l app.kubernetes.io/component=broker --prefix --tail=20 --previous >&2 || true
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
"$ROOT/e2e/harness/node.sh" storage "$cluster"
t_node=$EPOCHREALTIME

# Our images and chart in the test registry, unless the caller put them there for several
# installs (DEMO_RELEASED=<registry>: clouds.sh, e2e-nodes.sh).
if [[ -n ${DEMO_RELEASED:-} ]]; then
	registry=$DEMO_RELEASED
else
	registry=$("$ROOT/e2e/harness/registry.sh" up)
	"$ROOT/e2e/harness/release.sh" "$registry"
fi
# Through a variable: a failed build must stop us, which `< <(...)` would not.
built=$("$ROOT/e2e/harness/images.sh" build "$([[ $driver == mqtt ]] && echo mosquitto || echo "$driver")")
broker_version=
if [[ $driver == kafka && -n ${KAFKA_BROKER_VERSION:-} ]]; then
	built+=$'\n'$(KAFKA_IMAGE_VERSION=$KAFKA_BROKER_VERSION "$ROOT/e2e/harness/images.sh" build kafka)
	broker_version=", version: $KAFKA_BROKER_VERSION"
fi
mapfile -t archives <<<"$built"
t_images=$EPOCHREALTIME
"$ROOT/e2e/harness/node.sh" load "$cluster" "${archives[@]}"
t_loaded=$EPOCHREALTIME

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/oms-operator/Chart.yaml")
values=$CLUSTER_STATE/demo-values.yaml
cat >"$values" <<EOF
# Written by e2e/harness/demo-install.sh: our images from the test registry, as from a user's own
# (README, "Install into your cluster"); broker images imported into the node.
image:
  repository: $registry/oms-operator
bridge:
  image:
    repository: $registry/oms-bridge
brokerImages:
  nats: $("$ROOT/e2e/harness/images.sh" ref nats)
  kafka: $("$ROOT/e2e/harness/images.sh" ref kafka)
  rabbitmq: $("$ROOT/e2e/harness/images.sh" ref rabbitmq)
  mqtt: $("$ROOT/e2e/harness/images.sh" ref mosquitto)
  rocketmq: $("$ROOT/e2e/harness/images.sh" ref rocketmq)
EOF
values_files=(-f "$values")
[[ -z ${DEMO_VALUES:-} ]] || values_files+=(-f "$DEMO_VALUES")
chart=("oci://$registry/charts/oms-operator" --version "$version" --plain-http)
if helm status "$RELEASE" -n "$RELEASE_NAMESPACE" >/dev/null 2>&1; then
	log "release $RELEASE exists: helm upgrade from ${chart[*]}"
	helm upgrade "$RELEASE" "${chart[@]}" -n "$RELEASE_NAMESPACE" "${values_files[@]}" >/dev/null
else
	log "helm install $RELEASE ${chart[*]}"
	helm install "$RELEASE" "${chart[@]}" -n "$RELEASE_NAMESPACE" --create-namespace "${values_files[@]}" >/dev/null
fi
t_helm=$EPOCHREALTIME
deployment=$(kubectl -n "$RELEASE_NAMESPACE" get deployments -l "app.kubernetes.io/instance=$RELEASE" -o name)
kubectl -n "$RELEASE_NAMESPACE" rollout status "$deployment" --timeout="${DEADLINE_SECONDS}s" >/dev/null || {
	diagnose
	die "$deployment not available"
}
t_operator=$EPOCHREALTIME
log "operator Ready: $(kubectl -n "$RELEASE_NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE" -o name)"
# The node had no copy of the operator's image: it came from the registry (kubelet's Pulled event).
pulled=$(kubectl -n "$RELEASE_NAMESPACE" get events --field-selector reason=Pulled -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' |
	grep -F "\"$registry/oms-operator:$version\"" | tail -n 1) || true
[[ -n $pulled ]] || {
	diagnose
	die "no Pulled event for $registry/oms-operator:$version in $RELEASE_NAMESPACE"
}
log "operator image: $pulled"

kubectl create namespace "$DEMO_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$DEMO_NAMESPACE" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: MessagingAccessPoint
metadata:
  name: $ACCESS_POINT
spec:
  driver: $driver
  managed: {replicas: $REPLICAS, storage: {size: ${STORAGE_SIZE:-1Gi}}$broker_version}
EOF
t_applied=$EPOCHREALTIME
wait_for "MessagingAccessPoint $ACCESS_POINT Ready" -n "$DEMO_NAMESPACE" --for=condition=Ready \
	"messagingaccesspoint/$ACCESS_POINT"
wait_for "MessagingAccessPoint $ACCESS_POINT readyReplicas $REPLICAS" -n "$DEMO_NAMESPACE" \
	--for=jsonpath='{.status.readyReplicas}'="$REPLICAS" "messagingaccesspoint/$ACCESS_POINT"
t_access_point=$EPOCHREALTIME
log "access point Ready: $(kubectl -n "$DEMO_NAMESPACE" get messagingaccesspoint "$ACCESS_POINT" -o jsonpath='{.status.accessPoint}')"

kubectl -n "$DEMO_NAMESPACE" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: Queue
metadata:
  name: $QUEUE
spec:
  accessPointRef: {name: $ACCESS_POINT}
  partitions: $PARTITIONS
$([[ $driver =~ ^(rabbitmq|mqtt|rocketmq)$ ]] || echo "  replication: $REPLICATION")
EOF
t_queue_applied=$EPOCHREALTIME
wait_for "Queue $QUEUE Ready" -n "$DEMO_NAMESPACE" --for=condition=Ready "queue/$QUEUE"
t_queue=$EPOCHREALTIME
t_queue_ready=$t_queue
log "queue Ready: $(kubectl -n "$DEMO_NAMESPACE" get queue "$QUEUE" \
	-o jsonpath='{.status.conditions[?(@.type=="Ready")].message}')"

# client_output <pod>: what a client pod printed, once it has ended either way (a failed one need
# not be waited out); shown on stderr too.
client_output() {
	local deadline=$((SECONDS + DEADLINE_SECONDS)) output
	until [[ $(kubectl -n "$DEMO_NAMESPACE" get "pod/$1" -o jsonpath='{.status.phase}' 2>/dev/null) =~ ^(Succeeded|Failed)$ ]]; do
		((SECONDS < deadline)) || break
		sleep 1
	done
	output=$(kubectl -n "$DEMO_NAMESPACE" logs "$1" 2>&1) || true
	printf '%s\n' "$output" >&2
	printf '%s\n' "$output"
}

# Kafka: one message through the Queue's topic from a pod of the broker image. The client only
# knows the client Service; every further connection goes to the address a broker advertises
# (<pod>.<access point>.<namespace>.svc), so the round trip proves those resolve and serve.
roundtrip=
if [[ $driver == kafka && ${KAFKA_ROUND_TRIP:-1} != 0 ]]; then
	client=kafka-roundtrip
	message="round trip through $ACCESS_POINT at $(date -u +%FT%TZ)"
	kubectl -n "$DEMO_NAMESPACE" delete pod "$client" --ignore-not-found >/dev/null
	# shellcheck disable=SC2016 # the client's script expands its variables in the pod
	kubectl -n "$DEMO_NAMESPACE" run "$client" --image="$("$ROOT/e2e/harness/images.sh" ref kafka)" \
		--image-pull-policy=Never --restart=Never --env="MESSAGE=$message" \
		--env="BOOTSTRAP=$ACCESS_POINT-client.$DEMO_NAMESPACE.svc:9092" --env="TOPIC=$QUEUE" \
		--env="BROKERS=$REPLICAS" \
		--override-type=strategic --overrides="$(kafka_login "$client" "$ACCESS_POINT-binding")" --command -- /bin/sh -c '
set -e
'"$KAFKA_CLIENT_PROPERTIES"'
# Every broker joined the cluster, those that are not controllers too (ordinals past the voters
# log in to them like the rest): the metadata lists only brokers the controllers admitted. The
# image has the shell and no grep or sleep: words are counted in sh, and each try is a JVM start.
set -f
tries=0
while :; do
  listed=0
  for word in $(kafka-broker-api-versions.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG"); do
    [ "$word" != "(id:" ] || listed=$((listed + 1))
  done
  [ "$listed" != "$BROKERS" ] || break
  tries=$((tries + 1))
  [ "$tries" -lt 20 ] || { echo "$listed of $BROKERS brokers in the metadata"; exit 1; }
done
echo "brokers in the metadata: $BROKERS"
kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --describe --topic "$TOPIC"
# A rerun finds earlier messages: read them all, and ours.
before=0
for end in $(kafka-get-offsets.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --topic "$TOPIC"); do
  before=$((before + ${end##*:}))
done
echo "$MESSAGE" | kafka-console-producer.sh --bootstrap-server "$BOOTSTRAP" --producer.config "$CONFIG" \
  --topic "$TOPIC" --producer-property acks=all
kafka-console-consumer.sh --bootstrap-server "$BOOTSTRAP" --consumer.config "$CONFIG" --topic "$TOPIC" \
  --from-beginning --max-messages $((before + 1)) --timeout-ms 60000' >/dev/null
	output=$(client_output "$client")
	[[ $output == *"$message"* && $output == *"brokers in the metadata: $REPLICAS"* ]] || {
		diagnose
		die "kafka round trip failed: sent '$message'; the client pod said the above"
	}
	t_roundtrip=$EPOCHREALTIME
	roundtrip=", round trip $(elapsed "$t_queue" "$t_roundtrip")s"
	log "kafka round trip ok: '$message'"
	t_queue=$t_roundtrip
fi

# RabbitMQ: every node in one cluster, and the Queue's quorum queue with a member on as many
# nodes as it asked copies, each online, as the nodes' own CLI reports them.
if [[ $driver == rabbitmq ]]; then
	broker() { kubectl -n "$DEMO_NAMESPACE" exec "$ACCESS_POINT-0" -c broker -- "$@"; }
	status=$(broker rabbitmq-diagnostics -q cluster_status --formatter json) || {
		diagnose
		die "rabbitmq-diagnostics cluster_status failed: $status"
	}
	running=$(jq '.running_nodes | length' <<<"$status") || running=0
	((running == REPLICAS)) || {
		diagnose
		die "$running of $REPLICAS RabbitMQ nodes running in one cluster: $status"
	}
	queues=$(broker rabbitmqctl -q list_queues --vhost "$DEMO_NAMESPACE" name type members online --formatter json) || {
		diagnose
		die "rabbitmqctl list_queues failed: $queues"
	}
	broker_queue=$(kubectl -n "$DEMO_NAMESPACE" get queue "$QUEUE" -o jsonpath='{.status.brokerName}')
	kind='' members='' online=''
	read -r kind members online < <(jq -r --arg q "$broker_queue" \
		'.[] | select(.name == $q) | "\(.type) \(.members | length) \(.online | length)"' <<<"$queues") || true
	[[ $kind == quorum && $members == "$REPLICATION" && $online == "$REPLICATION" ]] || {
		diagnose
		die "queue $broker_queue: want a quorum queue with $REPLICATION members online, list_queues says $queues"
	}
	log "rabbitmq: $running nodes in one cluster; quorum queue $broker_queue has $members members, $online online"
	t_queue=$EPOCHREALTIME
fi

# RocketMQ: the topic as the broker holds it, read back by the Queue controller over TLS as the
# namespace's own user (whose user and grants the access point controller made before it was
# Ready): 4 read and write queues.
if [[ $driver == rocketmq ]]; then
	partitions=$(kubectl -n "$DEMO_NAMESPACE" get queue "$QUEUE" -o jsonpath='{.status.partitions}')
	[[ $partitions == "$PARTITIONS" ]] || {
		diagnose
		die "queue $QUEUE: the broker holds $partitions queues, want $PARTITIONS"
	}
	log "rocketmq: topic $(kubectl -n "$DEMO_NAMESPACE" get queue "$QUEUE" -o jsonpath='{.status.brokerName}') holds $partitions queues"
fi

# MQTT: a retained message (QoS 1) on the Queue's topic, published from a pod of the image as the
# tenant of the binding Secret over TLS; the broker pod deleted; the message read back from the
# broker the StatefulSet brings back on the same volume.
if [[ $driver == mqtt ]]; then
	topic=$(kubectl -n "$DEMO_NAMESPACE" get queue "$QUEUE" -o jsonpath='{.status.brokerName}')
	message="kept by $ACCESS_POINT across a pod deletion, $(date -u +%FT%TZ)"
	# mqtt_client <pod> <mosquitto_pub|mosquitto_sub> <arguments>...: starts the tool in a pod of the
	# image (then `client_output <pod>`). A refused connection is tried again, for up to 30 s: where
	# NetworkPolicies are enforced, a new pod is admitted once the enforcer has seen it.
	mqtt_client() {
		local client=$1
		shift
		kubectl -n "$DEMO_NAMESPACE" delete pod "$client" --ignore-not-found >/dev/null
		# shellcheck disable=SC2016 # the client's script expands its variables in the pod
		kubectl -n "$DEMO_NAMESPACE" run "$client" --image="$("$ROOT/e2e/harness/images.sh" ref mosquitto)" \
			--image-pull-policy=Never --restart=Never --env="HOST=$ACCESS_POINT-0.$ACCESS_POINT.$DEMO_NAMESPACE.svc" \
			--override-type=strategic --overrides="$(kafka_login "$client" "$ACCESS_POINT-binding")" --command -- /bin/sh -c '
set -e
printf "%s\n" "$CA_CERT" >/tmp/ca.crt
tool=$1
shift
tries=0
until "$tool" -h "$HOST" -p 8883 --cafile /tmp/ca.crt -u "$USERNAME" -P "$PASSWORD" -q 1 "$@" 2>/tmp/error; do
  cat /tmp/error >&2
  tries=$((tries + 1))
  case "$(cat /tmp/error)" in *"Connection refused"*) ;; *) exit 1 ;; esac
  [ "$tries" -lt 30 ] || exit 1
  sleep 1
done
echo "$tool done"' sh "$@" >/dev/null
	}
	mqtt_client mqtt-publish mosquitto_pub -r -t "$topic" -m "$message"
	output=$(client_output mqtt-publish)
	[[ $output == *"mosquitto_pub done"* ]] || {
		diagnose
		die "publishing a retained message to $topic failed: $output"
	}
	broker_pod=$(kubectl -n "$DEMO_NAMESPACE" get pod "$ACCESS_POINT-0" -o jsonpath='{.metadata.uid}')
	t_deleted=$EPOCHREALTIME
	kubectl -n "$DEMO_NAMESPACE" delete pod "$ACCESS_POINT-0" --wait=true >/dev/null
	# A new pod of that name, Ready.
	back() {
		local now
		now=$(kubectl -n "$DEMO_NAMESPACE" get pod "$ACCESS_POINT-0" \
			-o jsonpath='{.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || return 1
		[[ ${now%% *} != "$broker_pod" && $now == *" True" ]]
	}
	back_deadline=$((SECONDS + DEADLINE_SECONDS))
	until back; do
		((SECONDS < back_deadline)) || {
			diagnose
			die "$ACCESS_POINT-0 not back Ready within ${DEADLINE_SECONDS}s of its deletion"
		}
		sleep 1
	done
	t_back=$EPOCHREALTIME
	mqtt_client mqtt-read mosquitto_sub -t "$topic" -C 1 -W 30
	output=$(client_output mqtt-read)
	[[ $output == *"$message"* ]] || {
		diagnose
		die "the retained message on $topic did not survive the pod's deletion: sent '$message', read: $output"
	}
	log "mqtt: the retained message on $topic survived the broker pod's deletion (back Ready after" \
		"$(elapsed "$t_deleted" "$t_back")s on the same volume)"
	t_queue=$EPOCHREALTIME
fi

kubectl get pods -A -o wide
kubectl -n "$DEMO_NAMESPACE" get messagingaccesspoints,queues
log "timings: node, cluster DNS and storage $(elapsed "$t0" "$t_node")s, images $(elapsed "$t_node" "$t_images")s," \
	"loaded in $(elapsed "$t_images" "$t_loaded")s, helm install $(elapsed "$t_loaded" "$t_helm")s," \
	"helm install to operator Ready $(elapsed "$t_loaded" "$t_operator")s," \
	"access point applied to Ready $(elapsed "$t_applied" "$t_access_point")s," \
	"queue applied to Ready $(elapsed "$t_queue_applied" "${t_queue_ready:-$t_queue}")s$roundtrip," \
	"total $(elapsed "$t0" "$t_queue")s"
