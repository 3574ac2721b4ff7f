#!/usr/bin/env bash
# A managed RabbitMQ cluster shrinks from 3 nodes to 1, keeps every message, and grows back into
# one cluster: on a cluster where `demo-install.sh <cluster> rabbitmq` made demo-rabbitmq (3 nodes)
# and its Queue invoices (a quorum queue with a member on each):
#   1. A durable classic queue declared on demo-rabbitmq-2 refuses the shrink (Progressing False,
#      reason ResizeRefused, naming it); the StatefulSet keeps its 3 pods.
#   2. With it deleted, the operator retires demo-rabbitmq-2, then demo-rabbitmq-1, one step per
#      look: its quorum queue members removed; then drained, stopped, forgotten by the cluster,
#      its volume claim deleted and its pod stopped (Events ScalingDown, printed). The
#      StatefulSet's size is watched all along: it must go 3, 2, 1; no pod may roll.
#   3. One node in the cluster; the 1,000 messages sent before are all there; a new quorum queue
#      takes a message (a cluster that kept its forgotten nodes could not place one).
#   4. Back to 3 nodes: the new pods start blank and join demo-rabbitmq-0's cluster.
#
#   e2e/harness/rabbitmq-shrink.sh <cluster>     (e2e-nodes.sh runs it in cloud B after rabbitmq-roll.sh)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
ACCESS_POINT=demo-rabbitmq
QUEUE=invoices
MESSAGES=1000

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster>" >&2
	exit 2
}
cluster=$1
log() { printf 'rabbitmq-shrink %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "FAILED: $*"
	broker_diagnostics "$cluster" "$ACCESS_POINT"
	kc "$cluster" -n "$RELEASE_NAMESPACE" logs -l "app.kubernetes.io/instance=$RELEASE" --tail=30 >&2 || true
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=rabbitmq-client.sh
source "$HARNESS/rabbitmq-client.sh"
rabbitmq_client "$cluster" "$ACCESS_POINT" "$QUEUE" || die "no client for $ACCESS_POINT"

progressing() { ap_progressing "$cluster" "$ACCESS_POINT"; }
pods() { ap_pods "$cluster" "$ACCESS_POINT"; }
replicas() { ap_replicas "$cluster" "$ACCESS_POINT" "$1"; }
# cluster_nodes <field>: the nodes of cluster_status' field (disk_nodes, running_nodes), as pod 0 says.
cluster_nodes() {
	kc "$cluster" -n "$TENANT" exec "$ACCESS_POINT-0" -c broker -- rabbitmqctl cluster_status --formatter json |
		jq -r --arg f "$1" '.[$f] | sort | join(" ")'
}
claims() { kc "$cluster" -n "$TENANT" get pvc -o name | grep -c "data-$ACCESS_POINT-" || true; }
revision() { kc "$cluster" -n "$TENANT" get statefulset "$ACCESS_POINT" -o jsonpath='{.status.updateRevision}'; }

sent=$(amqp send "$MESSAGES") || die "sending to $AMQP_QUEUE: $sent"
revision_before=$(revision)
log "$sent to $AMQP_QUEUE; $(claims) volume claims; nodes: $(cluster_nodes running_nodes)"
t0=$EPOCHREALTIME

# 1. A classic queue lives on one node: its messages would go with it.
AMQP_POD=$ACCESS_POINT-2 amqp classic legacy >/dev/null || die "cannot declare classic queue legacy on $ACCESS_POINT-2"
replicas 1
refused() { [[ $(progressing) == "ResizeRefused "*"classic queue "*"/legacy lives only on rabbit@$ACCESS_POINT-2."* ]]; }
poll "the shrink refused, naming classic queue legacy" refused
log "refused: $(progressing)"
(($(pods) == 3)) || die "the StatefulSet runs $(pods) pods after a refused shrink"
amqp delete legacy >/dev/null || die "cannot delete classic queue legacy"
t_deleted=$EPOCHREALTIME

# 2. Down to one node, watching the StatefulSet's size on the way.
sizes=3
shrunk() {
	local now state='{.status.readyReplicas} {.status.conditions[?(@.type=="Ready")].status}'
	now=$(pods) && [[ -n $now ]] || return 1
	[[ $now == "${sizes##* }" ]] || sizes="$sizes $now"
	state+=' {.status.conditions[?(@.type=="Progressing")].reason}'
	[[ $now == 1 && $(kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" -o jsonpath="$state") == "1 True Stable" ]]
}
poll "demo-rabbitmq down to 1 node, Ready" shrunk
t_shrunk=$EPOCHREALTIME
[[ $sizes == "3 2 1" ]] || die "the StatefulSet went $sizes, not 3 2 1"
[[ $(revision) == "$revision_before" ]] || die "the pod template changed during the shrink: $revision_before -> $(revision)"
log "StatefulSet sizes: $sizes, no pod rolled; steps:"
kc "$cluster" -n "$TENANT" get events --field-selector "involvedObject.name=$ACCESS_POINT,reason=ScalingDown" \
	--sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.action}: {.message}{"\n"}{end}' |
	sed 's/^/  /' >&2 || true

# 3. One node, every message, and a new quorum queue placed.
members=$(cluster_nodes disk_nodes) || die "cluster_status on $ACCESS_POINT-0 failed"
[[ $members == "rabbit@$ACCESS_POINT-0.$ACCESS_POINT.$TENANT.svc" ]] || die "the cluster still counts $members"
gone() { (($(claims) == 1)); }
poll "the volume claims of the retired nodes deleted" gone
read_back=$(amqp read "$MESSAGES") || die "reading $AMQP_QUEUE back failed: $read_back"
[[ $read_back == *": lost 0, repeated 0" ]] || die "want every message after the shrink: $read_back"
placed=$(amqp quorum after-shrink) || die "a new quorum queue after the shrink: $placed"
log "one node ($members); $read_back; $placed; 3 -> 1 in $(elapsed "$t_deleted" "$t_shrunk")s"

# 4. Back to 3: blank nodes of the forgotten names join the one that stayed.
t_grow=$EPOCHREALTIME
replicas 3
grown() { [[ $(cluster_nodes running_nodes 2>/dev/null | wc -w) == 3 && $(progressing) == "Stable "* ]]; }
poll "demo-rabbitmq back to 3 nodes in one cluster" grown
log "grown back to 3 nodes in one cluster in $(elapsed "$t_grow" "$EPOCHREALTIME")s; whole run $(elapsed "$t0" "$EPOCHREALTIME")s"
