#!/usr/bin/env bash
# A managed Kafka keeps every message through a rolling change under traffic, one broker at a
# time: on a cluster where `demo-install.sh <cluster> kafka` made demo-kafka, a Queue rolled (3
# partitions, 3 copies, min.insync.replicas 2) takes numbered messages from a producer with acks=all
# and idempotence, fed by this script at a steady pace, from before the change until the brokers
# have rolled. The change is the upgrade to KAFKA_VERSION when the brokers run another version
# (KAFKA_BROKER_VERSION at install), else a passthrough config setting. The operator holds the StatefulSet's rolling update and lets the
# next broker go only when the one before runs the new template, is Ready, and every partition is
# in sync again (operator/src/access_point/roll.rs); the script checks, every second, that at most
# one broker is not Ready, and reads the operator's RollingBroker Events, one per broker let go.
# Then every message must be read back: lost 0, duplicates 0. After an upgrade the operator raises
# the cluster's metadata.version to the new release's (kafka-features.sh must show it, and the
# status and an Event say it), and refuses the old version from then on.
#
#   e2e/harness/kafka-roll.sh <cluster>     (e2e-nodes.sh runs it in cloud A)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HARNESS/versions.env"
ACCESS_POINT=demo-kafka
QUEUE=rolled
CLIENT=kafka-roll-client
# About 500 messages a second: 50 every 0.1 s.
BATCH=50

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster>" >&2
	exit 2
}
cluster=$1
log() { printf 'kafka-roll %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "FAILED: $*"
	broker_diagnostics "$cluster" "$ACCESS_POINT"
	exit 1
}
files=$ROOT/e2e/.state/$cluster/kafka-roll
rm -rf "$files" && mkdir -p "$files"

kc "$cluster" -n "$TENANT" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: Queue
metadata: {name: $QUEUE}
spec:
  accessPointRef: {name: $ACCESS_POINT}
  partitions: 3
  replication: 3
EOF
queue_ready() {
	[[ $(kc "$cluster" -n "$TENANT" get queue "$QUEUE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
poll "Queue $QUEUE Ready" queue_ready
topic=$(kc "$cluster" -n "$TENANT" get queue "$QUEUE" -o jsonpath='{.status.brokerName}')

# A client pod that idles on its open stdin (cat); the producer and the consumer run in it.
kc "$cluster" -n "$TENANT" delete pod "$CLIENT" --ignore-not-found >/dev/null
kc "$cluster" -n "$TENANT" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $CLIENT}
spec:
  containers:
    - name: $CLIENT
      image: $("$HARNESS/images.sh" ref kafka)
      imagePullPolicy: Never
      command: [/bin/cat]
      stdin: true
      envFrom: [{secretRef: {name: $ACCESS_POINT-binding}}]
      env: [{name: BOOTSTRAP, value: "$ACCESS_POINT-client.$TENANT.svc:9092"}, {name: TOPIC, value: "$topic"}]
EOF
kc "$cluster" -n "$TENANT" wait --for=condition=Ready "pod/$CLIENT" --timeout="${DEADLINE_SECONDS}s" >/dev/null ||
	die "client pod $CLIENT not Ready"
in_client() { kc "$cluster" -n "$TENANT" exec -i "$CLIENT" -- /bin/sh -c "$KAFKA_CLIENT_PROPERTIES
$1"; }

# The producer reads numbered lines from this script until the stop file appears, then flushes.
# Each line starts with this run's id: the topic may hold an earlier run's.
stop=$files/stop
run=run$EPOCHSECONDS
generate() {
	local i=0
	while [[ ! -e $stop ]]; do
		seq -f "$run %.0f" "$i" $((i + BATCH - 1))
		i=$((i + BATCH))
		sleep 0.1
	done
	echo "$i" >"$files/sent"
}
# shellcheck disable=SC2016 # expanded in the pod
generate | in_client 'kafka-console-producer.sh --bootstrap-server "$BOOTSTRAP" --producer.config "$CONFIG" \
	--topic "$TOPIC" --producer-property acks=all --producer-property enable.idempotence=true \
	--producer-property delivery.timeout.ms=300000' >"$files/producer.log" 2>&1 &
producer=$!
# Whatever stops this script, the generator ends and the producer with it.
trap 'touch "$stop"; kill "$producer" 2>/dev/null || true' EXIT

# metadata.version as the brokers report it: the newest level they support and the cluster's
# finalized one (kafka-features.sh describe), on one line.
metadata_versions() {
	# shellcheck disable=SC2016 # expanded in the pod
	in_client 'kafka-features.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" describe' | awk '
		$2 == "metadata.version" { for (i = 1; i < NF; i++) if ($i ~ /^(SupportedMaxVersion|FinalizedVersionLevel):$/) f[$i] = $(i + 1) }
		END { print f["SupportedMaxVersion:"], f["FinalizedVersionLevel:"] }'
}
status_metadata_version() {
	kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" -o jsonpath='{.status.metadataVersion}'
}
# The status says the level the brokers report as finalized, and that is the newest they support.
metadata_version_current() {
	read -r supported finalized <<<"$(metadata_versions)"
	[[ -n $finalized && $finalized == "$supported" && $(status_metadata_version) == "$finalized" ]]
}
poll "the status and the brokers agree on metadata.version before the change" metadata_version_current
metadata_version_before=$finalized

read -r revision_before _ <<<"$(statefulset_revisions "$cluster" "$ACCESS_POINT")"
t_roll=$EPOCHREALTIME
running_version=$(kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" -o jsonpath='{.spec.managed.version}')
if [[ -n $running_version && $running_version != "$KAFKA_VERSION" ]]; then
	change="the upgrade from Kafka $running_version to $KAFKA_VERSION"
	patch="{\"spec\":{\"managed\":{\"version\":\"$KAFKA_VERSION\"}}}"
else
	# A value this access point has not had (a rerun must change it again).
	hours=$(kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" -o json |
		jq -r '(.spec.managed.config["log.retention.hours"] // "167" | tonumber) + 1')
	change="log.retention.hours=$hours"
	patch="{\"spec\":{\"managed\":{\"config\":{\"log.retention.hours\":\"$hours\"}}}}"
fi
kc "$cluster" -n "$TENANT" patch messagingaccesspoint "$ACCESS_POINT" --type merge -p "$patch" >/dev/null
producing() { kill -0 "$producer" 2>/dev/null || die "the producer exited during the roll: $(cat "$files/producer.log")"; }
watch_roll "$cluster" "$ACCESS_POINT" "$revision_before" $((4 * DEADLINE_SECONDS)) producing
replicas=$ROLL_REPLICAS
t_rolled=$EPOCHREALTIME
touch "$stop"
wait "$producer" || die "the producer failed: $(cat "$files/producer.log")"
sent=$(cat "$files/sent")
# One RollingBroker Event series per broker let go (a rerun's steps count in the same series).
steps=$(kc "$cluster" -n "$TENANT" get events --field-selector "involvedObject.name=$ACCESS_POINT,reason=RollingBroker" \
	-o json | jq -r '.items | sort_by(.eventTime // .lastTimestamp) | .[].message')
images=$(kc "$cluster" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$ACCESS_POINT" \
	-o jsonpath='{range .items[*]}{.spec.containers[?(@.name=="broker")].image}{"\n"}{end}' | sort | uniq -c | paste -sd ' ')
log "$change rolled $replicas brokers to $ROLLED_TO in $(elapsed "$t_roll" "$t_rolled")s (images now: $images);" \
	"at most $MOST_UNREADY not Ready at once; the operator's steps:"
printf '  %s\n' "$steps" >&2
((MOST_UNREADY <= 1)) || die "$MOST_UNREADY brokers were not Ready at once during the roll"
[[ $change != the\ upgrade* || $images == *" $replicas localhost/oms-e2e/kafka:$KAFKA_VERSION" ]] ||
	die "want every broker on kafka:$KAFKA_VERSION after the upgrade, saw: $images"
let_go=$(grep -c 'every partition keeps its in-sync replicas' <<<"$steps" || true)
((let_go == replicas)) || die "want $replicas RollingBroker steps, one per broker, saw $let_go"

# Everything the topic holds (its end offsets), read from the beginning: the consumer stops once it
# has that many, or after a minute without a message (its first fetch waits for a group coordinator).
# shellcheck disable=SC2016 # expanded in the pod
in_client 'total=0
for end in $(kafka-get-offsets.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --topic "$TOPIC"); do
  total=$((total + ${end##*:}))
done
kafka-console-consumer.sh --bootstrap-server "$BOOTSTRAP" --consumer.config "$CONFIG" --topic "$TOPIC" \
	--from-beginning --max-messages "$total" --timeout-ms 60000' >"$files/read" 2>"$files/consumer.log" || true
read_count=$(grep -c "^$run " "$files/read" || true)
distinct=$(awk -v run="$run" -v n="$sent" '$1 == run && $2 >= 0 && $2 < n { print $2 }' "$files/read" | sort -un | wc -l)
lost=$((sent - distinct)) duplicates=$((read_count - distinct))
log "while the brokers rolled: sent $sent (acks=all, idempotent); read $read_count: lost $lost, duplicates $duplicates"
((lost == 0 && duplicates == 0)) || die "want every message once after the roll (consumer: $(tail -n 3 "$files/consumer.log"))"

# metadata.version: raised to the new release's after an upgrade, as is after another change.
t_read=$EPOCHREALTIME
poll "metadata.version finalized at the brokers' newest after the roll" metadata_version_current
log "metadata.version before $metadata_version_before, now $finalized (kafka-features.sh and the status)"
if [[ $change == the\ upgrade* ]]; then
	[[ $finalized != "$metadata_version_before" ]] || die "metadata.version stayed at $finalized after $change"
	raised=$(kc "$cluster" -n "$TENANT" get events \
		--field-selector "involvedObject.name=$ACCESS_POINT,reason=MetadataVersionRaised" -o jsonpath='{.items[*].message}')
	[[ $raised == *"from $metadata_version_before to $finalized"* ]] ||
		die "want a MetadataVersionRaised Event from $metadata_version_before to $finalized, saw: ${raised:-none}"
	# Brokers of the old release would not start on the raised level: the old version is refused
	# and nothing rolls.
	kc "$cluster" -n "$TENANT" patch messagingaccesspoint "$ACCESS_POINT" --type merge \
		-p "{\"spec\":{\"managed\":{\"version\":\"$running_version\"}}}" >/dev/null
	refused() {
		kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" -o json | jq -e --arg mv "$finalized" \
			'.status.conditions[] | select(.type == "Ready" and .reason == "InvalidSpec" and
				(.message | contains("spec.managed.version") and contains("finalized at " + $mv)))' >/dev/null
	}
	poll "Kafka $running_version refused on metadata.version $finalized" refused
	read -r _ revision_refused _ <<<"$(statefulset_revisions "$cluster" "$ACCESS_POINT")"
	[[ $revision_refused == "$ROLLED_TO" ]] || die "the refused downgrade changed the StatefulSet to $revision_refused"
	kc "$cluster" -n "$TENANT" patch messagingaccesspoint "$ACCESS_POINT" --type merge \
		-p "{\"spec\":{\"managed\":{\"version\":\"$KAFKA_VERSION\"}}}" >/dev/null
	ready_again() {
		[[ $(kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" \
			-o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
	}
	poll "$ACCESS_POINT Ready again on $KAFKA_VERSION" ready_again
	log "Kafka $running_version refused once metadata.version is $finalized; the StatefulSet kept $ROLLED_TO"
else
	[[ $finalized == "$metadata_version_before" ]] || die "metadata.version moved to $finalized without an upgrade"
fi
kc "$cluster" -n "$TENANT" delete pod "$CLIENT" --wait=false >/dev/null
log "timings: roll $(elapsed "$t_roll" "$t_rolled")s; read and checked $(elapsed "$t_rolled" "$t_read")s;" \
	"metadata.version $(elapsed "$t_read" "$EPOCHREALTIME")s"
