#!/usr/bin/env bash
# A managed RabbitMQ cluster keeps every confirmed message through a rolling change under traffic:
# on a cluster where `demo-install.sh <cluster> rabbitmq` made demo-rabbitmq (3 nodes) and its
# Queue invoices (a quorum queue with a member on each), a publisher sends numbered messages, each
# confirmed before the next, through the client Service as the tenant of the binding Secret, from
# before a passthrough config change until the brokers have rolled (the operator renders a new
# config; the StatefulSet replaces one pod at a time once the one before is Ready, and each node
# waits in its preStop until its quorum queues keep a quorum without it). A publish that fails as
# its broker stops is sent again on a new connection. Then every node must be back in one cluster
# and every confirmed message read back: lost 0 (repeats counted). The most pods seen not Ready at
# once is printed.
#
#   e2e/harness/rabbitmq-roll.sh <cluster>     (e2e-nodes.sh runs it in cloud B)
#
# The client is rabbitmq-client.sh's.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
ACCESS_POINT=demo-rabbitmq
QUEUE=invoices

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster>" >&2
	exit 2
}
cluster=$1
log() { printf 'rabbitmq-roll %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "FAILED: $*"
	broker_diagnostics "$cluster" "$ACCESS_POINT"
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=rabbitmq-client.sh
source "$HARNESS/rabbitmq-client.sh"
rabbitmq_client "$cluster" "$ACCESS_POINT" "$QUEUE" || die "no client for $ACCESS_POINT"
files=$AMQP_FILES
broker_queue=$AMQP_QUEUE

t0=$EPOCHREALTIME
stop=$files/stop-publishing
rm -f "$stop"
amqp publish "$stop" >"$files/published" &
publisher=$!
# Traffic before the roll: its first message confirmed.
publishing() {
	[[ -s $files/published ]] || { kill -0 "$publisher" 2>/dev/null || die "the publisher exited: $(cat "$files/published")"; false; }
}
poll "the publisher's first confirmed message" publishing
read -r revision_before _ <<<"$(statefulset_revisions "$cluster" "$ACCESS_POINT")"

# A change every broker must take: a passthrough setting, a new config, a rolling update.
t_roll=$EPOCHREALTIME
kc "$cluster" -n "$TENANT" patch messagingaccesspoint "$ACCESS_POINT" --type merge \
	-p '{"spec":{"managed":{"config":{"vm_memory_high_watermark.relative":"0.5"}}}}' >/dev/null
watch_roll "$cluster" "$ACCESS_POINT" "$revision_before" "$DEADLINE_SECONDS"
t_rolled=$EPOCHREALTIME
log "rolled to $ROLLED_TO in $(elapsed "$t_roll" "$t_rolled")s; at most $MOST_UNREADY of 3 pods not Ready at once"
((MOST_UNREADY <= 1)) || die "$MOST_UNREADY pods were not Ready at once during the roll"

status=$(kc "$cluster" -n "$TENANT" exec "$ACCESS_POINT-0" -c broker -- rabbitmq-diagnostics -q cluster_status --formatter json) ||
	die "cluster_status after the roll: $status"
running=$(jq '.running_nodes | length' <<<"$status") || running=0
((running == 3)) || die "$running of 3 nodes running in one cluster after the roll: $status"
touch "$stop"
wait "$publisher" || die "the publisher failed: $(cat "$files/published")"
published=$(tail -n 1 "$files/published")
[[ $published =~ ^published\ ([0-9]+), ]] || die "the publisher said: $published"
sent=${BASH_REMATCH[1]}
log "while the brokers rolled: $published"
read_back=$(amqp read "$sent") || die "reading $broker_queue back failed: $read_back"
log "$read_back; $running nodes in one cluster after the roll"
# A message whose confirm its stopping broker never sent is published again: twice is allowed.
[[ $read_back == *": lost 0, "* ]] || die "want every confirmed message after the roll: $read_back"
log "timings: roll $(elapsed "$t_roll" "$t_rolled")s, with publishing from $(elapsed "$t0" "$t_roll")s before it;" \
	"checked and read $(elapsed "$t_rolled" "$EPOCHREALTIME")s"
