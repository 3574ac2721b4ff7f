#!/usr/bin/env bash
# A managed NATS cluster shrinks from 3 servers to 1 and keeps every message: on a cluster where
# `NATS_REPLICAS=3 demo-install.sh <cluster> nats` made demo-nats and its Queue orders (a stream
# of 3 copies; e2e-nodes.sh has bridged its messages into it by now):
#   1. spec.managed.replicas 1 is refused while the stream keeps 3 copies: Progressing False,
#      reason ResizeRefused, naming the stream; the StatefulSet keeps its 3 pods.
#   2. The Queue's spec.replication 1: the operator lowers the stream to one copy.
#   3. The operator retires demo-nats-2, then demo-nats-1, one step per look: the meta leader
#      moves off the leaving server, its replicas are evacuated, it leaves the meta group, its pod
#      stops (Events ScalingDown, printed); the last server runs JetStream on its own.
#   4. The stream holds what it held (messages, first and last sequence; 1,000 of its own published
#      first) and takes a new message.
# The StatefulSet's size is watched all along: it must go 3, 2, 1, one pod at a time.
#
#   e2e/harness/nats-shrink.sh <cluster>     (e2e-nodes.sh runs it in cloud B)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
ACCESS_POINT=demo-nats
QUEUE=orders

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster>" >&2
	exit 2
}
cluster=$1
log() { printf 'nats-shrink %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "FAILED: $*"
	broker_diagnostics "$cluster" "$ACCESS_POINT"
	exit 1
}

nats_login "$cluster"
stream=$(clouds_stream) || die "the tenant's streams cannot be listed"
[[ -n $stream ]] || die "no stream for the tenant"
# held: what the stream holds, as one comparable line.
held() { nats_b_within 20 stream info "$stream" --json | jq -c '{messages: .state.messages, first: .state.first_seq, last: .state.last_seq}'; }
copies() { nats_b_within 20 stream info "$stream" --json | jq '.config.num_replicas'; }
subject=$(nats_b_within 20 stream info "$stream" --json | jq -r '.config.subjects[0]') || die "stream $stream does not answer"
# Messages of its own, so that there is something to keep whatever ran before.
nats_b_within 120 pub --jetstream --count 1000 "$subject" "before the shrink {{.Count}}" >/dev/null 2>&1 ||
	die "stream $stream takes no messages"
before=$(held) || die "stream $stream does not answer"
log "stream $stream holds $before in $(copies) copies"
t0=$EPOCHREALTIME

progressing() { ap_progressing "$cluster" "$ACCESS_POINT"; }
pods() { ap_pods "$cluster" "$ACCESS_POINT"; }
replicas() { ap_replicas "$cluster" "$ACCESS_POINT" "$1"; }

# 1. Refused while the stream keeps more copies than one server holds.
replicas 1
refused() { [[ $(progressing) == "ResizeRefused "*"$stream (3 copies)"* ]]; }
poll "the shrink refused, naming stream $stream" refused
log "refused: $(progressing)"
(($(pods) == 3)) || die "the StatefulSet runs $(pods) pods after a refused shrink"

# 2. One copy: the Queue's spec, which the operator applies to the stream.
kc "$cluster" -n "$TENANT" patch queue "$QUEUE" --type merge -p '{"spec":{"replication":1}}' >/dev/null
one_copy() { [[ $(copies 2>/dev/null) == 1 ]]; }
poll "stream $stream at one copy" one_copy
t_one_copy=$EPOCHREALTIME

# 3. Down to one server, watching the StatefulSet's size on the way.
sizes=3
shrunk() {
	local now
	now=$(pods) && [[ -n $now ]] || return 1
	[[ $now == "${sizes##* }" ]] || sizes="$sizes $now"
	# The last server rolls onto a config of its own after the StatefulSet shrinks: Stable once done.
	local state='{.status.readyReplicas} {.status.conditions[?(@.type=="Ready")].status}'
	state+=' {.status.conditions[?(@.type=="Progressing")].reason}'
	[[ $now == 1 && $(kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" -o jsonpath="$state") == "1 True Stable" ]]
}
poll "demo-nats down to 1 server, Ready" shrunk
t_shrunk=$EPOCHREALTIME
[[ $sizes == "3 2 1" ]] || die "the StatefulSet went $sizes, not 3 2 1"
log "StatefulSet sizes: $sizes; steps:"
kc "$cluster" -n "$TENANT" get events --field-selector "involvedObject.name=$ACCESS_POINT,reason=ScalingDown" \
	--sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.action}: {.message}{"\n"}{end}' |
	sed 's/^/  /' >&2

# 4. The same messages, and a new one taken (demo-nats-0's address is read again each time: its
# pod came back with a new one).
kept() {
	nats_login "$cluster"
	[[ $(held 2>/dev/null) == "$before" ]]
}
poll "stream $stream holding $before again" kept
nats_b_within 20 pub --jetstream "$subject" "after the shrink" >/dev/null 2>&1 || die "stream $stream takes no new message"
after=$(held) || die "stream $stream does not answer"
(($(jq .messages <<<"$after") == $(jq .messages <<<"$before") + 1)) || die "stream $stream holds $after after one more"
log "stream $stream holds $before as before, and took one more; one copy in $(elapsed "$t0" "$t_one_copy")s," \
	"3 -> 1 servers in $(elapsed "$t_one_copy" "$t_shrunk")s"
