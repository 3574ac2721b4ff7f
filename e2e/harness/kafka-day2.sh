#!/usr/bin/env bash
# A managed Kafka keeps every message through its day-2 changes under traffic: on a cluster where
# `demo-install.sh <cluster> kafka` made demo-kafka, a Queue rolled (3 partitions, 3 copies,
# min.insync.replicas 2) takes numbered messages from a producer with acks=all and idempotence, fed
# by this script at a steady pace, and a Bridge copies them into a Queue rolled-copy on the same
# brokers, from before the first change until after the last:
# 1. A roll: the upgrade to KAFKA_VERSION when the brokers run another version (KAFKA_BROKER_VERSION
#    at install), else a passthrough config setting. The operator holds the StatefulSet's rolling
#    update and lets the next broker go only when the one before runs the new template, is Ready,
#    and every partition is in sync again (operator/src/access_point/roll.rs); the script checks,
#    every second, that at most one broker is not Ready, and reads the operator's RollingBroker
#    Events, one per broker let go. After an upgrade the operator raises the cluster's
#    metadata.version to the new release's (kafka-features.sh must show it, and the status and an
#    Event say it), and refuses the old version from then on.
# 2. One broker fewer and back (4 brokers or more), or 3 -> 4 -> 5 -> 3: going down, the operator moves
#    the leaving broker's replicas to the others and takes its controller vote before its pod
#    stops, then has the controller forget it (kafka_placement.rs); going up, the new brokers take
#    their share and the operator adds them as voters (kafka_quorum.rs). After each step
#    kafka-topics.sh --describe, as the operator's user, must show no replica on a broker at or
#    past the size, no partition under-replicated, and no broker holding more than one replica
#    more than another; kafka-metadata-quorum.sh, the voters the size keeps.
# Between them the controller quorum must be dynamic (kraft.version 1) and sealed by the operator,
# its voters the first controllers under the directory ids the operator formatted them with.
# Then every message must be read back from rolled (lost 0, duplicates 0) and from rolled-copy
# (lost 0; the Bridge delivers at least once, so repeats are counted apart).
#
#   e2e/harness/kafka-day2.sh <cluster>     (e2e-nodes.sh runs it in cloud A)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=clouds.sh
source "$(dirname "${BASH_SOURCE[0]}")/clouds.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$HARNESS/versions.env"
ACCESS_POINT=demo-kafka
QUEUE=rolled
COPY=rolled-copy
CLIENT=kafka-day2-client
# About 250 messages a second: 25 every 0.1 s (the Bridge doubles the brokers' load, beside the other tiers).
BATCH=25

[[ $# -eq 1 ]] || {
	echo "usage: $0 <cluster>" >&2
	exit 2
}
cluster=$1
log() { printf 'kafka-day2 %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "FAILED: $*"
	broker_diagnostics "$cluster" "$ACCESS_POINT"
	exit 1
}
files=$ROOT/e2e/.state/$cluster/kafka-day2
rm -rf "$files" && mkdir -p "$files"

for queue in "$QUEUE" "$COPY"; do
	kc "$cluster" -n "$TENANT" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: Queue
metadata: {name: $queue}
spec:
  accessPointRef: {name: $ACCESS_POINT}
  partitions: 3
  replication: 3
EOF
done
kc "$cluster" -n "$TENANT" apply -f - >/dev/null <<EOF
apiVersion: openmessaging.cloud/v1alpha1
kind: Bridge
metadata: {name: $COPY}
spec:
  source: {queueRef: {name: $QUEUE}}
  target: {queueRef: {name: $COPY}}
EOF
ready() {
	[[ $(kc "$cluster" -n "$TENANT" get "$1" "$2" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
poll "Queue $QUEUE Ready" ready queue "$QUEUE"
poll "Queue $COPY Ready" ready queue "$COPY"
poll "Bridge $COPY Ready" ready bridge "$COPY"
topic=$(kc "$cluster" -n "$TENANT" get queue "$QUEUE" -o jsonpath='{.status.brokerName}')
copy_topic=$(kc "$cluster" -n "$TENANT" get queue "$COPY" -o jsonpath='{.status.brokerName}')

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
      env:
        - {name: BOOTSTRAP, value: "$ACCESS_POINT-client.$TENANT.svc:9092"}
        - {name: TOPIC, value: "$topic"}
        - {name: COPY_TOPIC, value: "$copy_topic"}
        # The operator's user, to see every topic's partitions (the tenant's sees its own).
        - {name: ADMIN_USER, valueFrom: {secretKeyRef: {name: $ACCESS_POINT-credentials, key: username}}}
        - {name: ADMIN_PASSWORD, valueFrom: {secretKeyRef: {name: $ACCESS_POINT-credentials, key: password}}}
EOF
kc "$cluster" -n "$TENANT" wait --for=condition=Ready "pod/$CLIENT" --timeout="${DEADLINE_SECONDS}s" >/dev/null ||
	die "client pod $CLIENT not Ready"
in_client() { kc "$cluster" -n "$TENANT" exec -i "$CLIENT" -- /bin/sh -c "$KAFKA_CLIENT_PROPERTIES
$1"; }
# Every partition of every topic as the operator's user sees them: `<topic> <partition> <replicas>
# <in-sync replicas>` lines, the lists comma-separated.
placement() {
	# shellcheck disable=SC2016 # expanded in the pod
	in_client 'kafka_client_properties "$ADMIN_USER" "$ADMIN_PASSWORD" $ca >/tmp/admin.properties
kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --command-config /tmp/admin.properties --describe' | awk '
		/Partition:/ { for (i = 1; i < NF; i++) { if ($i == "Topic:") t = $(i + 1); if ($i == "Partition:") p = $(i + 1)
			if ($i == "Replicas:") r = $(i + 1); if ($i == "Isr:") s = $(i + 1) } print t, p, r, s }'
}
# From placement lines on stdin: replicas per broker id (`id:count` pairs); the partitions with
# fewer replicas in sync than they have.
spread() {
	awk '{ n = split($3, r, ","); for (i = 1; i <= n; i++) c[r[i]]++ } END { for (b in c) print b ":" c[b] }' |
		sort -n | paste -sd ' '
}
under_replicated() { awk 'split($3, r, ",") != split($4, s, ",")' | wc -l; }

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
producing() { kill -0 "$producer" 2>/dev/null || die "the producer exited: $(cat "$files/producer.log")"; }
watch_roll "$cluster" "$ACCESS_POINT" "$revision_before" $((4 * DEADLINE_SECONDS)) producing
replicas=$ROLL_REPLICAS
t_rolled=$EPOCHREALTIME
# One RollingBroker Event series per broker let go (a rerun's steps count in the same series).
steps=$(kc "$cluster" -n "$TENANT" get events --field-selector "involvedObject.name=$ACCESS_POINT,reason=RollingBroker" \
	-o json | jq -r '.items | sort_by(.eventTime // .lastTimestamp) | .[].message')
images=$(kc "$cluster" -n "$TENANT" get pods -l "app.kubernetes.io/instance=$ACCESS_POINT" \
	-o jsonpath='{range .items[*]}{.spec.containers[?(@.name=="broker")].image}{"\n"}{end}' | sort | uniq -c | paste -sd ' ')
log "$change rolled $replicas brokers to $ROLLED_TO in $(elapsed "$t_roll" "$t_rolled")s (images now: $images);" \
	"at most $MOST_UNREADY not Ready at once; the operator's steps:"
printf '%s\n' "$steps" | sed 's/^/  /' >&2
((MOST_UNREADY <= 1)) || die "$MOST_UNREADY brokers were not Ready at once during the roll"
[[ $change != the\ upgrade* || $images == *" $replicas localhost/oms-e2e/kafka:$KAFKA_VERSION" ]] ||
	die "want every broker on kafka:$KAFKA_VERSION after the upgrade, saw: $images"
let_go=$(grep -c 'every partition keeps its in-sync replicas' <<<"$steps" || true)
((let_go == replicas)) || die "want $replicas RollingBroker steps, one per broker, saw $let_go"

# metadata.version: raised to the new release's after an upgrade, as is after another change.
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
	poll "$ACCESS_POINT Ready again on $KAFKA_VERSION" ready messagingaccesspoint "$ACCESS_POINT"
	log "Kafka $running_version refused once metadata.version is $finalized; the StatefulSet kept $ROLLED_TO"
else
	[[ $finalized == "$metadata_version_before" ]] || die "metadata.version moved to $finalized without an upgrade"
fi
t_metadata=$EPOCHREALTIME

# The controller quorum is dynamic (kraft.version 1): the operator sealed it once its first voters
# had started (Event ControllerQuorumFormed, their list emptied in the config ConfigMap), and
# through the upgrade its voters stayed the first controllers, each under the directory id the
# operator formatted it with and at its pod's name.
sealed() {
	kc "$cluster" -n "$TENANT" get configmap "$ACCESS_POINT-config" -o json |
		jq -e '.data | has("initial-controllers") and .["initial-controllers"] == ""' >/dev/null
}
poll "the controller quorum sealed in the ConfigMap" sealed
formed=$(kc "$cluster" -n "$TENANT" get events \
	--field-selector "involvedObject.name=$ACCESS_POINT,reason=ControllerQuorumFormed" -o jsonpath='{.items[*].message}')
[[ -n $formed ]] || die "no ControllerQuorumFormed Event"
# describe_quorum: the quorum as the brokers tell it (kafka-metadata-quorum.sh and kafka-features.sh,
# as the operator's user): $voters, "<id> <directory id> <endpoints>" lines; $observers, their ids;
# $kraft_version.
describe_quorum() {
	local described
	# shellcheck disable=SC2016 # expanded in the pod
	described=$(in_client 'kafka_client_properties "$ADMIN_USER" "$ADMIN_PASSWORD" $ca >/tmp/admin.properties
kafka-metadata-quorum.sh --bootstrap-server "$BOOTSTRAP" --command-config /tmp/admin.properties describe --status
kafka-features.sh --bootstrap-server "$BOOTSTRAP" --command-config /tmp/admin.properties describe')
	voters=$(sed -n 's/^CurrentVoters:[[:space:]]*//p' <<<"$described" |
		jq -r 'sort_by(.id) | .[] | "\(.id) \(.directoryId) \(.endpoints // [] | join(","))"')
	observers=$(sed -n 's/^CurrentObservers:[[:space:]]*//p' <<<"$described" | jq -r '[.[].id] | sort | join(",")')
	kraft_version=$(awk '$2 == "kraft.version" { for (i = 1; i < NF; i++) if ($i == "FinalizedVersionLevel:") print $(i + 1) }' \
		<<<"$described")
}
# voters_are <brokers>: the voters are the controllers that many brokers keep (the largest odd
# number up to 5), ids from 0, each known at its pod's controller address.
voters_are() {
	local controllers=$(($1 < 3 ? 1 : $1 < 5 ? 3 : 5)) id endpoint
	describe_quorum
	[[ $(cut -d' ' -f1 <<<"$voters" | paste -sd ,) == "$(seq -s , 0 $((controllers - 1)))" ]] ||
		die "want voters 0 to $((controllers - 1)) at $1 brokers, saw: $voters"
	while read -r id _ endpoint; do
		[[ $endpoint == *"$ACCESS_POINT-$id.$ACCESS_POINT.$TENANT.svc:9093"* ]] ||
			die "voter $id is known at $endpoint, not its pod's name"
	done <<<"$voters"
}
voters_are "$replicas"
log "controller quorum: kraft.version $kraft_version; voters (id, directory, endpoint): $(paste -sd ';' <<<"$voters");" \
	"observers '$observers'; the operator said: $formed"
[[ $kraft_version == 1 ]] || die "want kraft.version 1 (a dynamic quorum), saw '$kraft_version'"
while read -r id directory _; do
	[[ $formed == *"$id ($directory)"* ]] || die "voter $id runs directory $directory, not the one the operator formatted: $formed"
done <<<"$voters"
t_quorum=$EPOCHREALTIME

# The StatefulSet runs $1 pods, all Ready, and the access point's Progressing condition is Stable:
# no broker is being retired and no partition is being moved.
settled_at() {
	producing
	read -r _ _ ready _ size <<<"$(statefulset_revisions "$cluster" "$ACCESS_POINT")"
	[[ $size == "$1" && $ready == "$1" && $(kc "$cluster" -n "$TENANT" get messagingaccesspoint "$ACCESS_POINT" \
		-o jsonpath='{.status.conditions[?(@.type=="Progressing")].reason}') == Stable ]]
}
# The operator's Events of reason $1 seen since $2, one message a line.
events_since() {
	kc "$cluster" -n "$TENANT" get events --field-selector "involvedObject.name=$ACCESS_POINT,reason=$1" -o json |
		jq -r --arg since "$2" '.items[]
			| select(((.series.lastObservedTime // .lastTimestamp // .eventTime) | .[0:19]) >= ($since | .[0:19]))
			| .message'
}
scale_to() {
	kc "$cluster" -n "$TENANT" patch messagingaccesspoint "$ACCESS_POINT" --type merge \
		-p "{\"spec\":{\"managed\":{\"replicas\":$1}}}" >/dev/null
}

# Settled at $1 brokers, with the replicas where they should be (placement in $files/placement-$1):
# none on a broker at or past $1, none under-replicated, spread within one of each other.
placed_at() {
	settled_at "$1" || return 1
	placement >"$files/placement-$1"
	stray=$(awk -v size="$1" '{ n = split($3, r, ","); for (i = 1; i <= n; i++) if (r[i] >= size) print $1 "-" $2 }' \
		"$files/placement-$1" | wc -l)
	under=$(under_replicated <"$files/placement-$1")
	spread=$(spread <"$files/placement-$1")
	read -r fewest most < <(tr ' ' '\n' <<<"$spread" | cut -d: -f2 | sort -n | sed -n '1p;$p' | paste -sd ' ')
	((stray == 0 && under == 0 && most - fewest <= 1)) && [[ $(wc -w <<<"$spread") == "$1" ]]
}

# $1 -> $2 brokers, settled with the replicas placed. Down: the leaving broker's replicas move to
# the others before its pod stops, and the controller forgets it. Up: the new broker takes its share.
resize() {
	local from=$1 to=$2 since began scaling_down id
	since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	began=$EPOCHREALTIME
	scale_to "$to"
	DEADLINE_SECONDS=$((2 * DEADLINE_SECONDS)) poll "$from -> $to brokers, replicas placed" placed_at "$to"
	log "$from -> $to brokers in $(elapsed "$began" "$EPOCHREALTIME")s: $(wc -l <"$files/placement-$to") partitions," \
		"replicas per broker $spread, none on a broker at or past $to, none under-replicated; the operator's steps:"
	if ((to < from)); then
		scaling_down=$(events_since ScalingDown "$since")
		printf '%s\n' "$scaling_down" | sed 's/^/  /' >&2
		[[ $scaling_down == *"move off $ACCESS_POINT-$to"* ]] ||
			die "no ScalingDown Event of replicas moved off $ACCESS_POINT-$to"
		forgotten() {
			local said pattern
			said=$(events_since UnregisterBrokers "$since")
			for id in $(seq "$to" $((from - 1))); do
				pattern="[[ ]${id}[],]" # each id in a list: [3] or [3, 4]
				[[ $said =~ $pattern ]] || return 1
			done
		}
		poll "the controller forgets brokers $to to $((from - 1))" forgotten
	else
		events_since ReassignPartitions "$since" | sed 's/^/  /' >&2
	fi
	for reason in AddVoter RemoveVoter; do events_since "$reason" "$since" | sed "s/^/  $reason: /" >&2; done
	# The voters follow the size: added once their brokers follow the metadata log, removed before
	# their pods stop.
	voters_are "$to"
	log "$to brokers: voters $(cut -d' ' -f1 <<<"$voters" | paste -sd ,), observers '$observers'"
}

# Three brokers go to four (a fourth observes the quorum), then five (it and the fifth become
# voters), then back to three (both stop voting as they leave, one at a time); four and more one
# fewer and back. One or two are left out: the internal topics' copies keep them.
if ((replicas >= 4)); then
	sizes=("$replicas" $((replicas - 1)) "$replicas")
elif ((replicas == 3)); then
	sizes=(3 4 5 3)
else
	sizes=("$replicas")
	log "$replicas broker(s): the scaling steps are left out"
fi
t_scale=$EPOCHREALTIME
scaled=''
for ((i = 1; i < ${#sizes[@]}; i++)); do
	began_step=$EPOCHREALTIME
	resize "${sizes[i - 1]}" "${sizes[i]}"
	scaled+="${sizes[i - 1]} -> ${sizes[i]} $(elapsed "$began_step" "$EPOCHREALTIME")s, "
done
t_up=$EPOCHREALTIME

touch "$stop"
wait "$producer" || die "the producer failed: $(cat "$files/producer.log")"
sent=$(cat "$files/sent")

# Everything a topic holds (its end offsets), read from the beginning: the consumer stops once it
# has that many, or after a minute without a message (its first fetch waits for a group coordinator).
# Right after a scaling a partition may have no leader for a moment, and its line no offset: asked
# again (up to 15 times, a JVM start each) until every partition has one, or it would count as
# empty. Shell builtins only: the image has dash and cat.
read_topic() {
	# shellcheck disable=SC2016 # expanded in the pod
	in_client 'total=0
for attempt in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  offsets=$(kafka-get-offsets.sh --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" --topic "$'"$1"'")
  complete=${offsets:+yes}
  for line in $offsets; do
    case ${line##*:} in ""|*[!0-9]*) complete= ;; esac
  done
  [ -n "$complete" ] && break
  echo "partition offsets incomplete (attempt $attempt): $offsets" >&2
done
for end in $offsets; do
  total=$((total + ${end##*:}))
done
kafka-console-consumer.sh --bootstrap-server "$BOOTSTRAP" --consumer.config "$CONFIG" --topic "$'"$1"'" \
	--from-beginning --max-messages "$total" --timeout-ms 60000' 2>"$files/consumer.log" || true
}
# Of this run's lines in file $1: read, distinct, lost.
count() {
	read_count=$(grep -c "^$run " "$1" || true)
	distinct=$(awk -v run="$run" -v n="$sent" '$1 == run && $2 >= 0 && $2 < n { print $2 }' "$1" | sort -un | wc -l)
	lost=$((sent - distinct)) duplicates=$((read_count - distinct))
}
read_topic TOPIC >"$files/read"
count "$files/read"
log "through the roll and both scalings: sent $sent (acks=all, idempotent); read $read_count: lost $lost, duplicates $duplicates"
((lost == 0 && duplicates == 0)) || die "want every message once (consumer: $(tail -n 3 "$files/consumer.log"))"
# The Bridge has copied every message once rolled-copy holds them all.
copied() {
	read_topic COPY_TOPIC >"$files/copy"
	count "$files/copy"
	((lost == 0))
}
poll "Bridge $COPY copied all $sent" copied
log "Bridge $COPY copied them: read $read_count: lost $lost, repeated $duplicates"
kc "$cluster" -n "$TENANT" delete pod "$CLIENT" --wait=false >/dev/null
kc "$cluster" -n "$TENANT" delete bridge "$COPY" --wait=false >/dev/null
log "timings: roll $(elapsed "$t_roll" "$t_rolled")s; metadata.version $(elapsed "$t_rolled" "$t_metadata")s;" \
	"controller quorum $(elapsed "$t_metadata" "$t_quorum")s;" \
	"scaling ${scaled:-none, }in all $(elapsed "$t_scale" "$t_up")s;" \
	"read and checked $(elapsed "$t_up" "$EPOCHREALTIME")s"
