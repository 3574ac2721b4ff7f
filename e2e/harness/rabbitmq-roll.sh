#!/usr/bin/env bash
# A managed RabbitMQ cluster keeps its messages through a rolling change: on a cluster where
# `demo-install.sh <cluster> rabbitmq` made demo-rabbitmq (3 nodes) and its Queue invoices (a
# quorum queue with a member on each), MESSAGES (default 1000) numbered messages are published
# with confirms as the tenant of the binding Secret; then a passthrough config change rolls the
# brokers (the operator renders a new config, the StatefulSet replaces one pod at a time once the
# one before is Ready); then every node must be back in one cluster, every queue member online,
# and every message read back once: lost 0. The most pods seen not Ready at once is printed.
#
#   e2e/harness/rabbitmq-roll.sh <cluster>     (e2e-nodes.sh runs it in cloud B)
#
# The client is pika (tools.sh pika) in the node's network namespace, over amqps with the
# binding's CA; a hosts file of its own maps the pods' DNS names, which their certificate names.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
ACCESS_POINT=demo-rabbitmq
QUEUE=invoices
MESSAGES=${MESSAGES:-1000}

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster>" >&2
	exit 2
}
cluster=$1
log() { printf 'rabbitmq-roll %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "FAILED: $*"
	kc "$cluster" -n "$TENANT" get pods,statefulsets -o wide >&2 || true
	kc "$cluster" -n "$TENANT" logs -l "app.kubernetes.io/instance=$ACCESS_POINT" --prefix --tail=20 >&2 || true
	exit 1
}
"$HARNESS/tools.sh" pika

files=$ROOT/e2e/.state/$cluster/rabbitmq-client
mkdir -p "$files"
secret=$(kc "$cluster" -n "$TENANT" get secret "$ACCESS_POINT-binding" -o json)
field() { jq -r --arg k "$1" '.data[$k] // empty | @base64d' <<<"$secret"; }
field CA_CERT >"$files/ca.crt"
broker_queue=$(kc "$cluster" -n "$TENANT" get queue "$QUEUE" -o jsonpath='{.status.brokerName}')
[[ -n $broker_queue ]] || die "Queue $QUEUE has no status.brokerName"

# amqp <action>: runs the client in the node's network namespace against pod 0, whose address a
# hosts file written now maps (a rolled pod may have a new one).
amqp() {
	local address host=$ACCESS_POINT-0.$ACCESS_POINT.$TENANT.svc
	address=$(kc "$cluster" -n "$TENANT" get pod "$ACCESS_POINT-0" -o jsonpath='{.status.podIP}')
	printf '127.0.0.1 localhost\n%s %s\n' "$address" "$host" >"$files/hosts"
	# shellcheck disable=SC2016 # expanded by the inner shell
	ip netns exec "$(net "$cluster" NETNS)" unshare --mount sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' \
		"$files/hosts" "$BIN/amqp-venv/bin/python" - "$1" "$host" "$files/ca.crt" "$(field USERNAME)" \
		"$(field PASSWORD)" "$(field VHOST)" "$broker_queue" "$MESSAGES" <<'PY'
import ssl, sys, pika
action, host, ca, user, password, vhost, queue, count = sys.argv[1:]
count = int(count)
context = ssl.create_default_context(cafile=ca)
parameters = pika.ConnectionParameters(host, 5671, vhost, pika.PlainCredentials(user, password),
                                       ssl_options=pika.SSLOptions(context, host), connection_attempts=3, retry_delay=2)
with pika.BlockingConnection(parameters) as connection:
    channel = connection.channel()
    if action == "publish":
        channel.confirm_delivery()  # each basic_publish returns once the broker confirmed it
        for i in range(count):
            channel.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
        print(f"published {count}, each confirmed")
    else:
        seen = {}
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            seen[body.decode()] = seen.get(body.decode(), 0) + 1
        lost = sum(1 for i in range(count) if f"m{i}" not in seen)
        repeated = sum(n - 1 for n in seen.values())
        print(f"read {sum(seen.values())}: lost {lost}, repeated {repeated}")
PY
}

statefulset_revisions() {
	kc "$cluster" -n "$TENANT" get statefulset "$ACCESS_POINT" \
		-o jsonpath='{.status.currentRevision} {.status.updateRevision} {.status.readyReplicas} {.status.updatedReplicas}'
}

t0=$EPOCHREALTIME
published=$(amqp publish) || die "publishing $MESSAGES messages to $broker_queue failed: $published"
log "$published"
read -r revision_before _ <<<"$(statefulset_revisions)"

# A change every broker must take: a passthrough setting, a new config, a rolling update.
t_roll=$EPOCHREALTIME
kc "$cluster" -n "$TENANT" patch messagingaccesspoint "$ACCESS_POINT" --type merge \
	-p '{"spec":{"managed":{"config":{"vm_memory_high_watermark.relative":"0.5"}}}}' >/dev/null
most_unready=0
deadline=$((SECONDS + DEADLINE_SECONDS))
while :; do
	read -r current update ready updated <<<"$(statefulset_revisions)"
	unready=$(kc "$cluster" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$ACCESS_POINT" -o json |
		jq '[.items[] | select(any(.status.conditions[]?; .type == "Ready" and .status == "True") | not)] | length')
	((unready <= most_unready)) || most_unready=$unready
	[[ $update == "$revision_before" || $current != "$update" || $ready != 3 || $updated != 3 ]] || break
	((SECONDS < deadline)) || die "the roll did not finish within ${DEADLINE_SECONDS}s: revision $current -> $update, $ready ready, $updated updated"
	sleep 1
done
t_rolled=$EPOCHREALTIME
log "rolled to $update in $(elapsed "$t_roll" "$t_rolled")s; at most $most_unready of 3 pods not Ready at once"
((most_unready <= 1)) || die "$most_unready pods were not Ready at once during the roll"

status=$(kc "$cluster" -n "$TENANT" exec "$ACCESS_POINT-0" -c broker -- rabbitmq-diagnostics -q cluster_status --formatter json) ||
	die "cluster_status after the roll: $status"
running=$(jq '.running_nodes | length' <<<"$status") || running=0
((running == 3)) || die "$running of 3 nodes running in one cluster after the roll: $status"
read_back=$(amqp read) || die "reading $broker_queue back failed: $read_back"
log "$read_back; $running nodes in one cluster after the roll"
[[ $read_back == "read $MESSAGES: lost 0, repeated 0" ]] || die "want every message once after the roll: $read_back"
log "timings: published $(elapsed "$t0" "$t_roll")s, roll $(elapsed "$t_roll" "$t_rolled")s, checked and read" \
	"$(elapsed "$t_rolled" "$EPOCHREALTIME")s"
