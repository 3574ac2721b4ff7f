#!/usr/bin/env bash
# The whole real-node scenario, end to end, with faults: Kafka in cloud A bridged into NATS in
# cloud B through B's gateway, keyed messages checked one by one on arrival, a Prometheus
# scraping the bridge worker, an operator upgrade under the running Bridge, and clean removal.
#
#   e2e/harness/e2e-nodes.sh [<cluster a> <cluster b>]   default e2e-a e2e-b; `make e2e-nodes`,
#                                                        part of `make e2e` and so `make test`
#   MESSAGES=<n> (default 100000) keyed messages, keys k0..k<KEYS-1> (KEYS, default 100), the
#   key of id i being k<i mod KEYS>. E2E_NODES_KEEP=1 leaves both clusters up at the end.
#
# The two clouds are built as `make demo` builds them (clouds.sh: each its CA, the other's CA and
# trust domain as peers, node B's gateway on a NodePort that cloud A's DNS resolves to node B's
# WAN address):
#   A: KAFKA_REPLICAS=3 KAFKA_BROKER_VERSION=$KAFKA_UPGRADE_FROM (versions.env) demo-install.sh <a>
#      kafka: 3 brokers at that older version (each a controller too), Queue payments (3
#      partitions, 3 copies); the gateway of B as an access point, a Queue orders-b on it, a
#      Bridge payments-to-b.
#   B: NATS_REPLICAS=3 demo-install.sh <b> nats: 3 brokers, Queue orders (3 copies), the gateway;
#      after the faults, nats-shrink.sh <b>: NATS from 3 servers to 1, its stream's messages
#      kept; demo-install.sh <b> rabbitmq: RabbitMQ 4, 3 nodes in one cluster, Queue
#      invoices a quorum queue with a member on each; rabbitmq-roll.sh <b>: every confirmed
#      message kept while a publisher sends through a rolling config change, one pod at a time;
#      rabbitmq-shrink.sh <b>: 3 nodes to 1 (refused first while a classic queue lives on a
#      leaving node), its messages kept, then back to 3 in one cluster.
#      In A, demo-install.sh <a> mqtt: Mosquitto, a retained message kept across the broker pod's
#      deletion; demo-install.sh <a> rocketmq: RocketMQ 5, its topic made and read back; the brokers' NetworkPolicy as the node enforces it (kube-router): a pod of the
#      tenant's namespace reaches every Kafka broker's client port and is refused at the controller
#      port, a pod of another namespace is refused at the client port; and a Kafka broker stopped
#      with SIGSTOP: its pod leaves Ready (the readiness probe, oms-probe, fails though the port
#      still takes connections) and comes back, no restart; then kafka-day2.sh <a>: the upgrade to
#      KAFKA_VERSION rolls the 3 brokers one at a time, each once every partition is in sync, and
#      raises metadata.version; then 3 brokers to 4, 5 and back to 3, replicas spread onto the new
#      ones and moved off them as they leave, the controller voters 3, 3, 5, then 3; all under
#      traffic and a Bridge.
# A producer pod of the kafka image writes `k<key><TAB><id>` lines with kafka-console-producer
# (parse.key=true, acks=all). While the Bridge forwards them, as the count in B's stream passes
# 20%, 40% and 60% of MESSAGES, the bridge worker pod, a Kafka broker pod and a NATS broker pod
# are deleted. Every broker keeps its data on a PersistentVolume (node.sh storage): the Kafka
# broker must come back on the same volume with its data (its directory.id and partitions). Then every message of B's stream is read with .bin/nats from node B's network
# namespace (the tenant's binding Secret) and checked: each id once at least (lost must be 0),
# per key in increasing id order; repeats are counted apart (at-least-once delivery may repeat
# what a deleted worker sent but had not acknowledged). Both charts are installed with their
# ServiceMonitor, PodMonitor and PrometheusRule; in each cloud the real Prometheus Operator turns
# them into a Prometheus configuration that a Prometheus on the host runs (monitoring.sh): it must
# scrape the operator, A's bridge worker and B's gateway, and load every rule group. The sum over
# the worker pods' lifetimes of oms_bridge_messages_sent_total, as A's Prometheus scraped it,
# must reach MESSAGES, less what the deleted worker sent after its last scrape (allowed up to two
# scrape intervals at its highest rate, and reported). Then `helm upgrade` of cloud
# A's operator with another log.level must leave the worker pod alone and the Bridge Ready; the
# Bridge's deletion must take its Deployment, ConfigMap, certificate Secret and NetworkPolicy
# with it; `helm uninstall` in both clouds. The pods of both clusters are printed before the
# upgrade (operators, brokers, worker and gateway checked Running), the timings at the end; the
# clusters and the test registry go down (cluster.sh down, registry.sh down), on failure too,
# unless E2E_NODES_KEEP=1. Both operators are installed from the test registry: the chart with
# `helm install oci://...`, the images pulled by the nodes (demo-install.sh).
# A failure names the step and line it stopped at.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
# shellcheck source-path=SCRIPTDIR source=monitoring.sh
source "$(dirname "${BASH_SOURCE[0]}")/monitoring.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
BRIDGE=payments-to-b
MESSAGES=${MESSAGES:-100000}
KEYS=${KEYS:-100}

[[ $# -eq 0 || $# -eq 2 ]] || {
	echo "usage: $0 [<cluster a> <cluster b>]" >&2
	exit 2
}
a=${1:-e2e-a} b=${2:-e2e-b}
STATE=$ROOT/e2e/.state/e2e-nodes-$a-$b

step=start
log() { printf 'e2e-nodes [%s]: %s\n' "$step" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}
finish() {
	local status=$?
	trap - EXIT ERR
	local job
	for job in "${nats_shrink:-}" "${rabbitmq_shrink:-}" "${kafka_steps:-}"; do [[ -z $job ]] || kill "$job" 2>/dev/null || true; done
	monitoring_down
	if ((status != 0)); then
		log "stopped with exit status $status; pods of both clusters:"
		for cluster in "$a" "$b"; do
			if [[ -f $ROOT/e2e/.state/$cluster/kubeconfig ]]; then kc "$cluster" get pods -A -o wide >&2 || true; fi
		done
	fi
	if [[ ${E2E_NODES_KEEP:-} == 1 ]]; then
		log "E2E_NODES_KEEP=1: clusters $a and $b stay up (cluster.sh down <cluster>)"
	else
		for cluster in "$a" "$b"; do
			"$HARNESS/cluster.sh" down "$cluster" >&2 || log "cluster.sh down $cluster failed"
		done
		"$HARNESS/registry.sh" down || log "registry.sh down failed"
	fi
	exit "$status"
}
trap finish EXIT
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR

worker_pods() {
	kc "$a" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$BRIDGE,app.kubernetes.io/component=bridge-worker" \
		-o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}'
}
pod_ready() {
	local cluster=$1 pod=$2
	[[ $(kc "$cluster" -n "$TENANT" get pod "$pod" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
pod_not_ready() { ! pod_ready "$@"; }
pod_uid() { kc "$1" -n "$TENANT" get pod "$2" -o jsonpath='{.metadata.uid}' 2>/dev/null || true; }
# replaced_and_ready <cluster> <pod> <uid before>: the StatefulSet made the pod anew, and it is Ready.
replaced_and_ready() {
	local uid
	uid=$(pod_uid "$1" "$2")
	[[ -n $uid && $uid != "$3" ]] && pod_ready "$1" "$2"
}
# kafka_volume <pod>: "<PersistentVolume> <its uid> <its directory on this machine>" of the pod's
# data claim (node.sh storage makes hostPath volumes in the node's state directory).
kafka_volume() {
	local pv
	pv=$(kc "$a" -n "$TENANT" get pvc "data-$1" -o jsonpath='{.spec.volumeName}' 2>/dev/null) || pv=''
	[[ -n $pv ]] || die "no bound claim data-$1: the broker has no PersistentVolume"
	kc "$a" get pv "$pv" -o jsonpath='{.metadata.name} {.metadata.uid} {.spec.hostPath.path}'
}
# kafka_data <directory>: what the broker keeps there, one line each: its directory.id (a UUID
# `kafka-storage format` draws once, when the directory is empty) and, per partition, the bytes
# of its log segments.
kafka_data() {
	local dir name
	sed -n 's/^directory.id=/directory.id /p' "$1/meta.properties"
	for dir in "$1"/*/; do
		name=$(basename "$dir")
		# <topic>-<partition> only: not a deleted one's (-delete) or a move's (-future) directory.
		[[ $name =~ -[0-9]+$ ]] || continue
		echo "$name $(cat "$dir"/*.log | wc -c)"
	done
}
# kafka_data_kept <before> <after>: the same directory.id (a fresh directory would have been
# formatted anew), and every partition there before is there still. Sizes are printed, not
# compared: a follower that starts again may cut its log back to the leader's before it fetches.
kafka_data_kept() {
	awk 'NR == FNR { before[$1] = $2; next }
		$1 == "directory.id" { same_id = ($2 == before[$1]) }
		$1 in before && $1 != "directory.id" { kept++ }
		END { exit !(same_id && kept == length(before) - 1) }' <(echo "$1") <(echo "$2")
}
# kafka_data_summary <kafka_data output>: one line of it.
kafka_data_summary() {
	awk '$1 == "directory.id" { id = $2; next } { n++; bytes += $2 }
		END { printf "directory.id %s, %d partitions, %d bytes of log segments", id, n, bytes }' <<<"$1"
}
bridge_ready() {
	[[ $(kc "$a" -n "$TENANT" get bridge "$BRIDGE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

t0=$EPOCHREALTIME
step=clusters
"$HARNESS/tools.sh" prometheus prometheus-operator
clouds_up "$a" "$b"
t_nodes=$EPOCHREALTIME

step=install
monitoring_crds "$a"
monitoring_crds "$b"
mkdir -p "$STATE"
monitoring_values >"$STATE/monitoring-values.yaml"
# Cloud A's Kafka starts at an older version; kafka-day2.sh upgrades it under traffic and takes
# it from 3 brokers to 4, 5 and back to 3. Its demo round trip is left out: the keyed producer below goes
# the same way (client Service, then every broker's advertised name), 100,000 times.
CLOUDS_VALUES=$STATE/monitoring-values.yaml NATS_REPLICAS=3 KAFKA_REPLICAS=3 KAFKA_ROUND_TRIP=0 \
	KAFKA_BROKER_VERSION=$KAFKA_UPGRADE_FROM clouds_install "$a" kafka "$b" nats >/dev/null
t_installed=$EPOCHREALTIME

step=gateway
clouds_gateway "$a" "$b"
log "cloud B gateway at $GATEWAY_ENDPOINT, queue orders is '$GATEWAY_QUEUE' on the brokers"
t_gateway=$EPOCHREALTIME

step=bridge
t_bridge_applied=$EPOCHREALTIME
clouds_bridge "$a" "$b" payments "$BRIDGE"
t_bridge=$EPOCHREALTIME

step=prometheus
# The host reaches pod addresses directly; each cloud's Prometheus finds the pods through its
# cloud's API server, by the jobs the Prometheus Operator made of the chart's monitors.
monitoring_up "$a"
monitoring_up "$b"
promql() { monitoring_promql "$a" "$1"; }
poll "$a: Prometheus scraping the operator" monitoring_scraped "$a" "$RELEASE_NAMESPACE" "app.kubernetes.io/instance=$RELEASE"
poll "$a: Prometheus scraping the bridge worker" monitoring_scraped "$a" "$TENANT" app.kubernetes.io/component=bridge-worker
poll "$b: Prometheus scraping the operator" monitoring_scraped "$b" "$RELEASE_NAMESPACE" "app.kubernetes.io/instance=$RELEASE"
poll "$b: Prometheus scraping the gateway" monitoring_scraped "$b" "$TENANT" app.kubernetes.io/component=gateway
poll "$a: every rule group of the chart loaded and evaluated" monitoring_rules_ok "$a"
poll "$b: every rule group of the chart loaded and evaluated" monitoring_rules_ok "$b"
for cluster in "$a" "$b"; do
	log "$cluster: the Prometheus Operator's configuration scrapes $(monitoring_promql "$cluster" 'up == 1' |
		jq -c '[.data.result[].metric | "\(.job) \(.pod)"]'); rule groups loaded: $(rule_file_groups \
		"$ROOT/charts/oms-operator/files/prometheus-rules.yaml" | paste -sd ' ')"
done
t_prometheus=$EPOCHREALTIME

step=produce
nats_login "$b"
stream=$(clouds_stream)
[[ -n $stream ]] || die "no stream in cloud B for the tenant"
subject=$(nats_b stream info "$stream" --json | jq -r '.config.subjects[0]')
before=$(clouds_count "$stream")
((before >= 0)) || die "cloud B's stream $stream does not answer"
first_sequence=$(($(nats_b stream info "$stream" --json | jq '.state.last_seq') + 1))
first_worker=$(worker_pods)
log "cloud B stream $stream (subject $subject) holds $before; bridge worker pod(s): $first_worker"
clouds_produce_keyed "$a" payments "$MESSAGES" "$KEYS"
t_produce_start=$EPOCHREALTIME

# Faults by progress in cloud B: the worker, then a Kafka broker, then a NATS broker.
step=faults
fault_at=($((MESSAGES * 2 / 10)) $((MESSAGES * 4 / 10)) $((MESSAGES * 6 / 10)))
fault_what=("bridge worker pod" "Kafka broker pod demo-kafka-1 (cloud A)" "NATS broker pod demo-nats-2 (cloud B)")
fault_done=(0 0 0)
fault_time=("" "" "")
fault_recovered=("" "" "")
t_produced='' t_arrived='' deleted_worker='' kafka_uid='' nats_uid=''
kafka_pv='' kafka_pv_uid='' kafka_dir='' kafka_before=''
deadline=$((SECONDS + DEADLINE_SECONDS * 2))
while :; do
	now=$(clouds_count "$stream")
	arrived=$((now < 0 ? -1 : now - before))
	phase=$(kc "$a" -n "$TENANT" get pod producer -o jsonpath='{.status.phase}' 2>/dev/null || true)
	[[ $phase == Failed ]] && {
		kc "$a" -n "$TENANT" logs producer >&2 || true
		die "the producer pod failed"
	}
	[[ -n $t_produced || $phase != Succeeded ]] || {
		t_produced=$EPOCHREALTIME
		log "producer done after $(elapsed "$t_produce_start" "$t_produced")s ($arrived in cloud B)"
	}
	for i in 0 1 2; do
		((fault_done[i] == 0 && arrived >= fault_at[i])) || continue
		case $i in
		0)
			deleted_worker=$(worker_pods)
			deleted_worker=${deleted_worker%% *}
			kc "$a" -n "$TENANT" delete pod "$deleted_worker" --wait=false >/dev/null
			;;
		1)
			kafka_uid=$(pod_uid "$a" demo-kafka-1)
			volume=$(kafka_volume demo-kafka-1)
			read -r kafka_pv kafka_pv_uid kafka_dir <<<"$volume"
			kafka_before=$(kafka_data "$kafka_dir")
			kc "$a" -n "$TENANT" delete pod demo-kafka-1 --wait=false >/dev/null
			;;
		2)
			nats_uid=$(pod_uid "$b" demo-nats-2)
			kc "$b" -n "$TENANT" delete pod demo-nats-2 --wait=false >/dev/null
			;;
		esac
		fault_done[i]=1 fault_time[i]=$EPOCHREALTIME
		log "deleted the ${fault_what[i]}$( ((i > 0)) || echo " $deleted_worker") at $arrived arrived"
		break # one fault per round
	done
	# Recovery: a new Ready worker pod; the broker pod Ready again.
	if ((fault_done[0] == 1)) && [[ -z ${fault_recovered[0]} ]]; then
		for pod in $(worker_pods); do
			[[ $pod != "$deleted_worker" ]] && pod_ready "$a" "$pod" && fault_recovered[0]=$EPOCHREALTIME
		done
	fi
	if ((fault_done[1] == 1)) && [[ -z ${fault_recovered[1]} ]] && replaced_and_ready "$a" demo-kafka-1 "$kafka_uid"; then
		fault_recovered[1]=$EPOCHREALTIME
		# The new pod runs on the same volume, and what the old one wrote is there.
		[[ $(kafka_volume demo-kafka-1) == "$kafka_pv $kafka_pv_uid $kafka_dir" ]] ||
			die "demo-kafka-1 came back on another volume: $(kafka_volume demo-kafka-1), was $kafka_pv $kafka_pv_uid"
		kafka_after=$(kafka_data "$kafka_dir")
		kafka_data_kept "$kafka_before" "$kafka_after" ||
			die "demo-kafka-1's data did not survive the pod: before [$kafka_before] after [$kafka_after]"
		log "demo-kafka-1 back on PersistentVolume $kafka_pv with its data: before the deletion" \
			"$(kafka_data_summary "$kafka_before"); Ready again $(kafka_data_summary "$kafka_after")"
	fi
	if ((fault_done[2] == 1)) && [[ -z ${fault_recovered[2]} ]] && replaced_and_ready "$b" demo-nats-2 "$nats_uid"; then
		fault_recovered[2]=$EPOCHREALTIME
	fi
	if [[ -z $t_arrived ]] && ((arrived >= MESSAGES)); then
		t_arrived=$EPOCHREALTIME
		log "$arrived arrived in cloud B after $(elapsed "$t_produce_start" "$t_arrived")s"
	fi
	[[ -n $t_arrived && -n $t_produced && -n ${fault_recovered[0]} && -n ${fault_recovered[1]} && -n ${fault_recovered[2]} ]] && break
	((SECONDS < deadline)) || die "after $((DEADLINE_SECONDS * 2))s: $arrived of $MESSAGES in cloud B, producer $phase," \
		"faults done ${fault_done[*]}, recovered '${fault_recovered[*]}'"
	sleep 1
done
kc "$a" -n "$TENANT" logs producer 2>/dev/null | tail -n 3 >&2 || true

step=check
# Everything from the first sequence of this run, as JSON lines (headers, base64 data).
total=$(($(clouds_count "$stream") - before))
t_read_start=$EPOCHREALTIME
clouds_dump_keyed "$stream" "$subject" "$first_sequence" "$total" >"$STATE/arrived.tsv"
t_read=$EPOCHREALTIME
# The rule the Rust tests judge by (oms_e2e::Verdict): lines that are not `k<n><TAB><id>` (e.g.
# demo-install.sh's round trip) are counted apart.
verdict=$(cd "$ROOT" && cargo run --quiet --locked -p oms-e2e --bin stream-verdict -- "$MESSAGES" "$KEYS" \
	<"$STATE/arrived.tsv") || die "no verdict on $STATE/arrived.tsv"
read -r received unique lost duplicates out_of_order foreign <<<"$verdict"
log "read $total messages in $(elapsed "$t_read_start" "$t_read")s: $received keyed, $unique distinct ids," \
	"lost $lost, duplicates $duplicates, out of per-key order $out_of_order, other messages $foreign"
((lost == 0)) || die "$lost of $MESSAGES ids never arrived ($STATE/arrived.tsv)"
((out_of_order == 0)) || die "$out_of_order messages out of per-key id order ($STATE/arrived.tsv)"

step=metrics
# Each worker pod's counter starts at 0: the bridged count is the sum of every pod's highest
# scraped value. What a deleted pod sent after its last scrape, while it drained, is counted
# nowhere; that shortfall is reported, and allowed up to two scrape intervals at that pod's
# highest observed send rate.
sent_query="sum(max_over_time(oms_bridge_messages_sent_total{bridge=\"$BRIDGE\"}[1h]))"
sent_sum() { promql "$sent_query" | jq -r '(.data.result[0].value[1] // "0") | tonumber | floor'; }
sent=0
for _ in $(seq 20); do
	sent=$(sent_sum)
	((sent < MESSAGES)) || break
	sleep 1
done
sent_by_pod=$(promql "sum by (pod) (max_over_time(oms_bridge_messages_sent_total{bridge=\"$BRIDGE\"}[1h]))" |
	jq -c '[.data.result[] | {(.metric.pod): (.value[1] | tonumber)}] | add')
unscraped=$((sent < MESSAGES ? MESSAGES - sent : 0))
slack=$(promql "2 * max_over_time(rate(oms_bridge_messages_sent_total{bridge=\"$BRIDGE\",pod=\"$deleted_worker\"}[3s])[1h:1s])" |
	jq -r '(.data.result[0].value[1] // "0") | tonumber | floor')
log "Prometheus: sent over the worker pods' lifetimes $sent (by pod: $sent_by_pod); short of $MESSAGES by" \
	"$unscraped, allowed $slack (deleted worker $deleted_worker, 2 scrape intervals at its highest rate)"
((unscraped <= slack)) || die "Prometheus counts $sent sent, $unscraped fewer than $MESSAGES, more than $slack" \
	"that the deleted worker could have sent after its last scrape"
t_metrics=$EPOCHREALTIME

step=pods
for cluster in "$a" "$b"; do
	log "$cluster:"
	kc "$cluster" get pods -A -o wide
done
# Running now: each operator, the brokers, cloud A's bridge worker, cloud B's gateway.
running() {
	local cluster=$1 namespace=$2 selector=$3 want=$4 count
	count=$(kc "$cluster" -n "$namespace" get pods -l "$selector" --field-selector=status.phase=Running -o name | wc -l)
	((count >= want)) || die "$cluster/$namespace: $count pods Running with $selector, want $want"
}
running "$a" "$RELEASE_NAMESPACE" "app.kubernetes.io/instance=$RELEASE" 1
running "$b" "$RELEASE_NAMESPACE" "app.kubernetes.io/instance=$RELEASE" 1
running "$a" "$TENANT" app.kubernetes.io/component=broker 3
running "$b" "$TENANT" app.kubernetes.io/component=broker 3
running "$a" "$TENANT" app.kubernetes.io/component=bridge-worker 1
running "$b" "$TENANT" app.kubernetes.io/component=gateway 1

# The brokers' NetworkPolicy, as the nodes enforce it (kube-router, node.sh): a broker's client
# port admits pods of the tenant's namespace and refuses those of any other; the port its peers
# use (Kafka's controller port, NATS's cluster port, RabbitMQ's distribution port) admits only
# the brokers themselves and the operator, so a tenant's pod is refused there; a metrics port is
# open to scrapers anywhere. Each knock pod (node-images/knock.c) tries every broker's address;
# the tenant's tries for up to 30 s, as the enforcer admits a new pod only once it has seen it.
# Kafka's are checked here; NATS's, RabbitMQ's and Mosquitto's beside the steps below.
step=network-policy
t_policy=$EPOCHREALTIME
OUTSIDER=oms-e2e-outsider
KNOCK_IMAGE=localhost/oms-e2e/knock:1 # node.sh imports it on every node
# knock <cluster> <namespace> <pod> <knock arguments>...: runs a knock pod to completion, prints
# its lines.
knock() {
	local cluster=$1 namespace=$2 pod=$3
	shift 3
	local args
	args=$(printf '"%s",' "$@")
	kc "$cluster" -n "$namespace" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65534, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: knock
      image: $KNOCK_IMAGE
      imagePullPolicy: Never
      args: [${args%,}]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
EOF
	kc "$cluster" -n "$namespace" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$pod" --timeout=120s >/dev/null ||
		die "knock pod $namespace/$pod did not finish: $(kc "$cluster" -n "$namespace" get pod "$pod" -o wide 2>&1)"
	kc "$cluster" -n "$namespace" logs "$pod"
	kc "$cluster" -n "$namespace" delete pod "$pod" --wait=false >/dev/null
}
# count <outcome> <lines>: how many lines end in the outcome.
count() { grep -c " $1\$" <<<"$2" || true; }
# policy_check <cluster> <access point> <brokers> <client port> [<peer port> [<metrics port>]]: the
# knocks above against every broker of the access point; one line of counts, or why not.
policy_check() {
	local cluster=$1 ap=$2 brokers=$3 client=$4 peer=${5:-} metrics=${6:-} ips lines counts
	mapfile -t ips < <(kc "$cluster" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$ap,app.kubernetes.io/component=broker" \
		-o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}')
	((${#ips[@]} == brokers)) || die "$ap: want $brokers brokers' addresses, found ${#ips[@]}: ${ips[*]}"
	kc "$cluster" create namespace "$OUTSIDER" --dry-run=client -o yaml | kc "$cluster" apply -f - >/dev/null
	# want <outcome> <what> <namespace> <port> [-w 30]: every broker's <port> from a pod there.
	want() {
		local outcome=$1 what=$2 namespace=$3 port=$4
		shift 4
		lines=$(knock "$cluster" "$namespace" "knock-$ap-$port" "$@" "${ips[@]/%/:$port}")
		counts+="$what port $port: $outcome $(count "$outcome" "$lines") of $brokers; "
		[[ $(count "$outcome" "$lines") == "$brokers" ]] || die "$ap: want $what port $port $outcome:"$'\n'"$lines"
	}
	counts="$ap: "
	want connected "tenant $TENANT -> client" "$TENANT" "$client" -w 30
	[[ -z $peer ]] || want refused "tenant -> peer" "$TENANT" "$peer"
	want refused "$OUTSIDER -> client" "$OUTSIDER" "$client"
	[[ -z $metrics ]] || want connected "$OUTSIDER -> metrics" "$OUTSIDER" "$metrics" -w 30
	log "${counts%; }"
}
policy_check "$a" demo-kafka 3 9092 9093
t_policy_done=$EPOCHREALTIME

# A Kafka broker whose process is stopped (SIGSTOP from this machine, where the node's containers
# run: the kernel still completes TCP handshakes on its port) must leave Ready within the probe's
# period and failures (oms-probe, exec), and come back Ready once it resumes, without a restart.
# It mostly waits on the kubelet, so it runs beside the steps below; its own log line has its times.
kafka_stopped_not_ready() {
	local pod=demo-kafka-2 id candidates pids=() pid restarts ip port_state reason began stopped resumed
	id=$(kc "$a" -n "$TENANT" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="broker")].containerID}')
	id=${id#*://}
	[[ -n $id ]] || die "$pod: no broker container id"
	# The broker's JVM among the container's processes (a probe running at that moment is not it).
	mapfile -t candidates < <(grep -l "$id" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3)
	for pid in "${candidates[@]}"; do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) != java ]] || pids+=("$pid")
	done
	((${#pids[@]} == 1)) || die "$pod: want one java process in container $id, found ${#pids[@]}"
	restarts=$(kc "$a" -n "$TENANT" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="broker")].restartCount}')
	ip=$(kc "$a" -n "$TENANT" get pod "$pod" -o jsonpath='{.status.podIP}')
	pod_ready "$a" "$pod" || die "$pod not Ready before its broker is stopped"
	began=$EPOCHREALTIME
	# Whatever stops this job, the broker runs again.
	# shellcheck disable=SC2064 # the pid now: the local is gone when the job exits
	trap "kill -CONT ${pids[0]} 2>/dev/null || true" EXIT
	kill -STOP "${pids[0]}"
	poll "$pod not Ready while its broker is stopped" pod_not_ready "$a" "$pod"
	stopped=$EPOCHREALTIME
	# From the node's own network namespace, which the brokers' NetworkPolicy always admits.
	if ip netns exec "$(net "$a" NETNS)" bash -c "exec 3<>/dev/tcp/$ip/9092" 2>/dev/null; then
		port_state=open
	else
		port_state=closed
	fi
	reason=$(kc "$a" -n "$TENANT" get events --field-selector "involvedObject.name=$pod,reason=Unhealthy" \
		-o jsonpath='{.items[-1:].message}' 2>/dev/null || true)
	kill -CONT "${pids[0]}"
	poll "$pod Ready again once its broker resumes" pod_ready "$a" "$pod"
	resumed=$EPOCHREALTIME
	[[ $(kc "$a" -n "$TENANT" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="broker")].restartCount}') == "$restarts" ]] ||
		die "$pod's broker restarted while stopped (the liveness probe must leave it alone)"
	log "$pod's broker stopped (SIGSTOP, pid ${pids[0]}): not Ready after $(elapsed "$began" "$stopped")s, port 9092" \
		"$port_state meanwhile, the kubelet said: ${reason:-no event}; resumed: Ready again after" \
		"$(elapsed "$stopped" "$resumed")s, restarts unchanged ($restarts)"
}
# Then the upgrade rolls the brokers one at a time, each once every partition is in sync, and
# they go to one fewer and back, under traffic (kafka-day2.sh).
step=kafka-stopped
{ kafka_stopped_not_ready && "$HARNESS/kafka-day2.sh" "$a"; } &
kafka_steps=$!

# Cloud B's NATS shrinks from 3 servers to 1, refused first while its stream keeps 3 copies,
# and keeps every message (nats-shrink.sh). It mostly waits for pods to roll, so it runs beside
# the RabbitMQ and Mosquitto steps.
t_nats_shrink=$EPOCHREALTIME
{ policy_check "$b" demo-nats 3 4222 6222 && "$HARNESS/nats-shrink.sh" "$b"; } &
nats_shrink=$!

# RabbitMQ 4 in cloud B beside its NATS, run by the operator there: the nodes must form one
# cluster and the Queue's quorum queue must have a member on each (demo-install.sh rabbitmq);
# then every message confirmed while its brokers roll must be there (rabbitmq-roll.sh).
step=rabbitmq
t_rabbitmq=$EPOCHREALTIME
DEMO_RELEASED=$("$HARNESS/registry.sh" address) DEMO_VALUES=$ROOT/e2e/.state/$b/clouds-values.yaml \
	"$HARNESS/demo-install.sh" "$b" rabbitmq >/dev/null
policy_check "$b" demo-rabbitmq 3 5671 25672 15692
t_rabbitmq_up=$EPOCHREALTIME
"$HARNESS/rabbitmq-roll.sh" "$b"
t_rabbitmq_rolled=$EPOCHREALTIME
# Then 3 nodes to 1 and back (rabbitmq-shrink.sh): it mostly waits on the operator's steps, so it
# runs beside the Mosquitto step.
"$HARNESS/rabbitmq-shrink.sh" "$b" &
rabbitmq_shrink=$!

# Mosquitto in cloud A beside its Kafka: a retained message kept across the broker pod's
# deletion, on its volume (demo-install.sh mqtt).
step=mosquitto
DEMO_RELEASED=$("$HARNESS/registry.sh" address) DEMO_VALUES=$ROOT/e2e/.state/$a/clouds-values.yaml \
	"$HARNESS/demo-install.sh" "$a" mqtt >/dev/null
policy_check "$a" demo-mqtt 1 8883
t_mosquitto_done=$EPOCHREALTIME

# RocketMQ in cloud A: one pod of the rocketmq image with its name server and broker, Ready by
# oms-probe, a Queue's topic made and read back (demo-install.sh rocketmq); the tenant reaches
# the proxy, not the proxy's remoting port, and another namespace neither.
step=rocketmq
DEMO_RELEASED=$("$HARNESS/registry.sh" address) DEMO_VALUES=$ROOT/e2e/.state/$a/clouds-values.yaml \
	"$HARNESS/demo-install.sh" "$a" rocketmq >/dev/null
policy_check "$a" demo-rocketmq 1 8081 8080
t_rocketmq_done=$EPOCHREALTIME

step=rabbitmq-shrink
wait "$rabbitmq_shrink" || die "rabbitmq-shrink.sh $b failed (its lines above say why)"
rabbitmq_shrink=''
t_rabbitmq_done=$EPOCHREALTIME

step=nats-shrink
wait "$nats_shrink" || die "nats-shrink.sh $b failed (its lines above say why)"
nats_shrink=''

step=kafka-stopped
wait "$kafka_steps" || die "a stopped Kafka broker was not taken out of Ready and back, or the brokers' day-2 changes failed (the lines above say why)"
kafka_steps=''
t_nats_shrunk=$EPOCHREALTIME

step=upgrade
t_upgrade=$EPOCHREALTIME
worker_before=$(worker_pods)
restarts_before=$(kc "$a" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$BRIDGE,app.kubernetes.io/component=bridge-worker" -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{" "}{end}')
generation_before=$(kc "$a" -n "$TENANT" get deployment "$BRIDGE-oms-bridge" -o jsonpath='{.metadata.generation}')
operator_pod() {
	kc "$a" -n "$RELEASE_NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE" -o json |
		jq -r '[.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name] | join(" ")'
}
operator_before=$(operator_pod)
"$BIN/helm" --kubeconfig "$ROOT/e2e/.state/$a/kubeconfig" upgrade "$RELEASE" \
	"oci://$("$HARNESS/registry.sh" address)/charts/oms-operator" --plain-http \
	--version "$(kc "$a" -n "$RELEASE_NAMESPACE" get deployment -l "app.kubernetes.io/instance=$RELEASE" \
		-o jsonpath='{.items[0].metadata.labels.app\.kubernetes\.io/version}')" \
	-n "$RELEASE_NAMESPACE" --reuse-values --set log.level=debug >/dev/null
kc "$a" -n "$RELEASE_NAMESPACE" rollout status deployment -l "app.kubernetes.io/instance=$RELEASE" --timeout="${DEADLINE_SECONDS}s" >/dev/null
operator_after=$(operator_pod)
[[ $operator_after != "$operator_before" ]] || log "the operator pod did not change with the upgrade ($operator_after)"
t_upgraded=$EPOCHREALTIME
# The new operator reconciles the Bridge at start; its own metrics (through the API server's pod
# proxy) say when it has, and only then is the worker compared.
bridge_reconciled() {
	kc "$a" get --raw "/api/v1/namespaces/$RELEASE_NAMESPACE/pods/$1:8080/proxy/metrics" 2>/dev/null |
		grep -q '^oms_operator_reconcile_total{kind="Bridge",result="success"} [1-9]'
}
poll "the new operator reconciles the Bridge" bridge_reconciled "$operator_after"
bridge_ready || die "Bridge $BRIDGE not Ready after the upgrade"
worker_after=$(worker_pods)
restarts_after=$(kc "$a" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$BRIDGE,app.kubernetes.io/component=bridge-worker" -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{" "}{end}')
generation_after=$(kc "$a" -n "$TENANT" get deployment "$BRIDGE-oms-bridge" -o jsonpath='{.metadata.generation}')
[[ $worker_after == "$worker_before" && $restarts_after == "$restarts_before" && $generation_after == "$generation_before" ]] ||
	die "the upgrade disturbed the worker: pods '$worker_before' -> '$worker_after', restarts '$restarts_before' ->" \
		"'$restarts_after', Deployment generation $generation_before -> $generation_after"
log "helm upgrade (log.level=debug): operator $operator_before -> $operator_after; worker $worker_after" \
	"unchanged (restarts $restarts_after, generation $generation_after), Bridge Ready"

step=delete-bridge
children=("deployment/$BRIDGE-oms-bridge" "configmap/$BRIDGE-oms-bridge" "secret/$BRIDGE-oms-tls" "networkpolicy/$BRIDGE-oms-bridge")
for child in "${children[@]}"; do
	kc "$a" -n "$TENANT" get "$child" -o name >/dev/null || die "$child missing before the Bridge's deletion"
done
t_bridge_delete=$EPOCHREALTIME
kc "$a" -n "$TENANT" delete bridge "$BRIDGE" --timeout="${DEADLINE_SECONDS}s" >/dev/null
children_gone() {
	local child
	for child in "${children[@]}"; do
		[[ -z $(kc "$a" -n "$TENANT" get "$child" -o name --ignore-not-found) ]] || return 1
	done
}
poll "the Bridge's ${children[*]} removed" children_gone
t_bridge_deleted=$EPOCHREALTIME
log "Bridge deleted; ${children[*]} gone $(elapsed "$t_bridge_delete" "$t_bridge_deleted")s after the delete"

step=uninstall
for cluster in "$a" "$b"; do
	"$BIN/helm" --kubeconfig "$ROOT/e2e/.state/$cluster/kubeconfig" uninstall "$RELEASE" -n "$RELEASE_NAMESPACE" \
		--wait --timeout "${DEADLINE_SECONDS}s" >/dev/null
	[[ -z $(kc "$cluster" -n "$RELEASE_NAMESPACE" get deployments -l "app.kubernetes.io/instance=$RELEASE" -o name) ]] ||
		die "operator Deployment left in $cluster after helm uninstall"
done
t_done=$EPOCHREALTIME

step=timings
fault_times=
for i in 0 1 2; do
	fault_times+="${fault_what[i]} deleted at +$(elapsed "$t_produce_start" "${fault_time[i]}")s, back Ready after"
	fault_times+=" $(elapsed "${fault_time[i]}" "${fault_recovered[i]}")s; "
done
log "result: $MESSAGES produced, lost $lost, duplicates $duplicates, out of order $out_of_order, other $foreign;" \
	"sent per Prometheus $sent (unscraped $unscraped, allowed $slack)"
log "timings: clusters, nodes, DNS, link $(elapsed "$t0" "$t_nodes")s; CAs and both installs" \
	"$(elapsed "$t_nodes" "$t_installed")s; gateway $(elapsed "$t_installed" "$t_gateway")s; bridge applied to" \
	"Ready $(elapsed "$t_bridge_applied" "$t_bridge")s; Prometheus scraping $(elapsed "$t_bridge" "$t_prometheus")s;" \
	"produced in $(elapsed "$t_produce_start" "$t_produced")s (pod start included); all arrived after" \
	"$(elapsed "$t_produce_start" "$t_arrived")s; read and checked in $(elapsed "$t_read_start" "$t_read")s;" \
	"metrics $(elapsed "$t_read" "$t_metrics")s; NetworkPolicy checks $(elapsed "$t_policy" "$t_policy_done")s; NATS 3 -> 1 servers done $(elapsed "$t_nats_shrink" "$t_nats_shrunk")s after it began, beside:" \
	"RabbitMQ 3 nodes and a quorum queue $(elapsed "$t_rabbitmq" "$t_rabbitmq_up")s, its roll" \
	"$(elapsed "$t_rabbitmq_up" "$t_rabbitmq_rolled")s; Mosquitto and its pod deleted $(elapsed "$t_rabbitmq_rolled" "$t_mosquitto_done")s, RocketMQ $(elapsed "$t_mosquitto_done" "$t_rocketmq_done")s," \
	"beside RabbitMQ 3 -> 1 -> 3 nodes done $(elapsed "$t_rabbitmq_rolled" "$t_rabbitmq_done")s after it began;" \
	"helm upgrade to the new operator Ready $(elapsed "$t_upgrade" "$t_upgraded")s;" \
	"Bridge deleted to its children gone $(elapsed "$t_bridge_delete" "$t_bridge_deleted")s; both uninstalls" \
	"$(elapsed "$t_bridge_deleted" "$t_done")s;" \
	"total before teardown $(elapsed "$t0" "$t_done")s"
log "faults: $fault_times"
