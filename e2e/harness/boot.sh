#!/usr/bin/env bash
# Boots one broker pod exactly as the operator renders it, without a container runtime, and
# round-trips a message through it with a real client.
#
#   e2e/harness/boot.sh <kafka|nats|rabbitmq|mqtt|rocketmq> <pod dir> <client port>
#
# <pod dir> holds what the test extracted from the rendered StatefulSet and ConfigMap:
#   command   the container command, one argument per line
#   env       NAME=value per line, references already expanded as the kubelet would
#   mounts    "<container path> <directory relative to the pod dir>" per line (config, data, tmp,
#             secret)
#   hostname  the pod's host name; pod_host  its DNS name through the headless Service
#   run_as    (optional) the uid (and gid) the broker runs as, the pod's runAsUser
#   client_user  (optional) "name:password" the round trip's client logs in with
#   client_vhost (optional) the RabbitMQ virtual host it uses (default /)
#   client_ca    (optional) the CA the binding carries: the listener speaks TLS, the round trip
#                checks the broker's certificate against it (by the pod's DNS name), and then a
#                plaintext client with the same login must be refused ("plaintext refused")
#   attempts.sh  (optional) a client script run instead of the round trip, in the pod's network,
#                with the pod's DNS name and port as arguments; its output and status are the result
#   ready_probe  (optional) the readiness probe's exec command, one argument per line: run as the
#                kubelet would until it passes once the port is open; after the round trip the
#                broker is stopped (SIGSTOP), the probe must fail though the port still takes
#                connections, and pass again once the broker resumes
#
# Private mount, network and UTS namespaces give the broker the image's paths (bind mounts), its
# pod host name and DNS name (an /etc/hosts entry for 127.0.0.1) and the ports it listens on,
# without touching the machine's own network. Where the rendered command calls the vendor image's tools (Kafka's
# /opt/kafka/bin), small wrappers over the same jars stand in for the image layout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
# shellcheck source-path=SCRIPTDIR source=kafka-client.sh
source "$ROOT/e2e/harness/kafka-client.sh"
START_DEADLINE_SECONDS=${START_DEADLINE_SECONDS:-120}

[[ $# -ge 3 ]] || {
	echo "usage: $0 <kafka|nats|rabbitmq|mqtt|rocketmq> <pod dir> <client port>" >&2
	exit 2
}

if [[ ${1} != --inside ]]; then
	kind=$1 pod=$(cd "$2" && pwd) port=$3
	case $kind in
	kafka) "$ROOT/e2e/harness/tools.sh" kafka >&2 ;;
	nats) "$ROOT/e2e/harness/tools.sh" nats-server nats >&2 ;;
	rabbitmq) "$ROOT/e2e/harness/broker.sh" prepare rabbitmq >&2 && "$ROOT/e2e/harness/tools.sh" pika >&2 ;;
	rocketmq) "$ROOT/e2e/harness/tools.sh" rocketmq >&2 ;;
	mqtt) command -v mosquitto_sub >/dev/null || {
		echo "boot: mosquitto and mosquitto-clients are needed (make broker-up BROKER=mqtt installs them)" >&2
		exit 1
	} ;;
	*)
		echo "boot: unknown kind $kind" >&2
		exit 2
		;;
	esac
	: >"$pod/created"
	# The probe's mount point is the same for every kind: made here once and left, as removing it
	# would detach it under a pod of another kind that is still running.
	while read -r target relative; do
		[[ $relative != probe ]] || mkdir -p "$target"
	done <"$pod/mounts"
	# One pod of a kind at a time: two share the image paths they are mounted on, and removing a
	# directory one of them made detaches the other's mount there (Linux unmounts a removed mount
	# point in every namespace), which a RabbitMQ still reading its config does not survive.
	exec {lock}>"/run/oms-boot-$kind.lock"
	flock "$lock"
	status=0
	# A pid namespace too: whatever the pod started dies with it. With a /proc of its own, as in a
	# pod: RabbitMQ reads /proc/<its pid>/ for its memory use, and its pid (small, in the
	# namespace) may not exist in the machine's /proc.
	unshare --mount --net --uts --pid --fork --kill-child --mount-proc -- "$0" --inside "$kind" "$pod" "$port" ||
		status=$?
	# Mount points made on the machine's file system for the image paths are removed again.
	tac "$pod/created" | while read -r dir; do rmdir "$dir" 2>/dev/null || true; done
	exit $status
fi

shift
kind=$1 pod=$2 port=$3
ip link set lo up
hostname "$(cat "$pod/hostname")"
mount --make-rprivate /

# bind <host path> <container path>: records every directory it had to create.
bind() {
	local target=$2 missing=$2
	while [[ ! -e $missing ]]; do
		echo "$missing" >>"$pod/created.tmp"
		missing=$(dirname "$missing")
	done
	if [[ -f $pod/created.tmp ]]; then
		tac "$pod/created.tmp" >>"$pod/created"
		rm "$pod/created.tmp"
	fi
	if [[ -d $1 ]]; then mkdir -p "$target"; else
		mkdir -p "$(dirname "$target")"
		touch "$target"
	fi
	mount --bind "$1" "$target"
}

# The pod gets its own /tmp, which would hide a pod directory under /tmp: work from a second
# view of it in /run, and mount the pod's volumes (paths relative to the pod directory) from there.
# Named by kind (one pod of a kind at a time, see the lock), not by pid: in its pid namespace
# every pod is pid 1.
stage=/run/oms-boot-$kind-pod
bind "$pod" "$stage"
pod=$stage
# The tools, reached the same way: their real files, bound into the stage before /tmp is covered.
mkdir -p "$pod/tools"
for tool in nats-server nats; do
	if [[ -e $BIN/$tool ]]; then
		touch "$pod/tools/$tool"
		mount --bind "$(readlink -f "$BIN/$tool")" "$pod/tools/$tool"
	fi
done
if [[ $kind == rabbitmq ]]; then
	mkdir -p "$pod/tools/amqp-venv"
	mount --bind "$(readlink -f "$BIN/amqp-venv")" "$pod/tools/amqp-venv"
fi
if [[ $kind == kafka ]]; then
	mkdir -p "$pod/tools/kafka-libs"
	mount --bind "$(readlink -f "$BIN/kafka-libs")/libs" "$pod/tools/kafka-libs"
fi
if [[ $kind == rocketmq ]]; then
	# The image's RocketMQ home (its lib/ holds the same jars), and the tests' client.
	mkdir -p "$pod/tools/rocketmq/lib" "$pod/tools/rocketmq-client"
	mount --bind "$(readlink -f "$BIN/rocketmq-libs")/libs" "$pod/tools/rocketmq/lib"
	mount --bind "$(readlink -f "$BIN/rocketmq-client")" "$pod/tools/rocketmq-client"
fi
while read -r target relative; do
	[[ -n $target ]] && bind "$pod/$relative" "$target"
done <"$pod/mounts"

printf '127.0.0.1 localhost\n127.0.0.1 %s %s\n' "$(cat "$pod/pod_host")" "$(cat "$pod/hostname")" >"$pod/hosts"
mount --bind "$pod/hosts" /etc/hosts

if [[ $kind == kafka ]]; then
	# The apache/kafka image's tools, as thin wrappers over the same jars; with the light JVM
	# options of the test brokers (broker.sh), as a booted pod lives for seconds.
	mkdir -p "$pod/kafka-bin"
	libs=$pod/tools/kafka-libs
	cat >"$pod/kafka-bin/kafka-storage.sh" <<EOF
#!/bin/sh
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -cp '$libs/*' kafka.tools.StorageTool "\$@"
EOF
	cat >"$pod/kafka-bin/kafka-server-start.sh" <<EOF
#!/bin/sh
exec java -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -cp '$libs/*' kafka.Kafka "\$@"
EOF
	chmod +x "$pod/kafka-bin/"*.sh
	bind "$pod/kafka-bin" /opt/kafka/bin
fi

if [[ $kind == rabbitmq ]]; then
	# The image's /var/log/rabbitmq belongs to its rabbitmq user (the upgrade log goes there).
	mkdir -p "$pod/varlog" && chmod 0777 "$pod/varlog"
	bind "$pod/varlog" /var/log/rabbitmq
	# The rabbitmq image's entrypoint and server on PATH: Debian's server scripts, run as this
	# user (its /usr/sbin wrappers would switch to the rabbitmq user and drop the pod's env).
	printf '#!/bin/sh\nexec "$@"\n' >"$pod/tools/docker-entrypoint.sh"
	printf '#!/bin/sh\nexec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"\n' >"$pod/tools/rabbitmq-server"
	chmod +x "$pod/tools/docker-entrypoint.sh" "$pod/tools/rabbitmq-server"
fi

mapfile -t command <"$pod/command"
mapfile -t environment <"$pod/env"
# What the apache/rocketmq image sets: where its RocketMQ is.
[[ $kind != rocketmq ]] || environment+=("ROCKETMQ_HOME=$pod/tools/rocketmq")
# HOME is the image user's: the rabbitmq image's is its data directory (the Erlang cookie).
home=/tmp
[[ $kind != rabbitmq ]] || home=/var/lib/rabbitmq
# As the pod's user (runAsUser/runAsGroup of the rendered pod), never as root.
as_user=()
if [[ -f $pod/run_as ]]; then
	uid=$(cat "$pod/run_as")
	as_user=(setpriv --reuid="$uid" --regid="$uid" --clear-groups)
fi

# in_pod <command>...: runs it as the container's processes run, with its user and environment.
# Always in a subshell (& or $(...)), which it becomes: the broker's pid is $! itself.
in_pod() {
	exec "${as_user[@]}" env -i PATH="$pod/tools:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		HOME=$home HOSTNAME="$(cat "$pod/hostname")" "${environment[@]}" "$@"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
in_pod "${command[@]}" >"$pod/broker.log" 2>&1 &
broker=$!
ready_probe=()
[[ ! -f $pod/ready_probe ]] || mapfile -t ready_probe <"$pod/ready_probe"
# probe_until_ready <seconds>: the readiness probe, every half second until it passes; its last
# words in $said.
probe_until_ready() {
	local end=$((SECONDS + $1))
	until said=$(in_pod "${ready_probe[@]}" 2>&1); do
		kill -0 "$broker" 2>/dev/null || return 1
		((SECONDS < end)) || return 1
		sleep 0.5
	done
}

deadline=$((SECONDS + START_DEADLINE_SECONDS))
until port_open; do
	if ! kill -0 "$broker" 2>/dev/null; then
		echo "boot: the broker exited; its log:" >&2
		tail -n 40 "$pod/broker.log" >&2
		exit 1
	fi
	((SECONDS < deadline)) || {
		echo "boot: port $port not open after ${START_DEADLINE_SECONDS}s; log:" >&2
		tail -n 40 "$pod/broker.log" >&2
		exit 1
	}
	sleep 0.2
done
if ((${#ready_probe[@]})); then
	opened=$EPOCHREALTIME
	probe_until_ready "$START_DEADLINE_SECONDS" || {
		echo "boot: the readiness probe never passed: $said; broker log:" >&2
		tail -n 40 "$pod/broker.log" >&2
		exit 1
	}
	echo "boot: $kind ready probe passed $(awk -v a="$opened" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s after the port opened"
fi

message="round trip through the rendered $kind pod at $(date -u +%FT%TZ)"
pod_host=$(cat "$pod/pod_host")
# The client's user, "name:password", where the broker wants one (client_user in the pod dir).
user=
password=
if [[ -f $pod/client_user ]]; then
	IFS=: read -r user password <"$pod/client_user" || true # no newline at the end
fi
ca=
[[ ! -f $pod/client_ca ]] || ca=$pod/client_ca

# A test's own client script instead of the round trip: it runs here (the pod's network), with
# the tools on PATH, and its output and exit status are the result.
if [[ -f $pod/attempts.sh ]]; then
	status=0
	PATH="$pod/tools:$PATH" XDG_CONFIG_HOME=$pod/client bash "$pod/attempts.sh" "$pod_host" "$port" || status=$?
	kill -KILL "$broker" 2>/dev/null || true # its data goes with the pod directory
	wait "$broker" 2>/dev/null || true
	((status == 0)) || { echo "boot: broker log:" >&2; tail -n 40 "$pod/broker.log" >&2; }
	exit $status
fi
case $kind in
kafka)
	java_tool() { java -Xmx256m -XX:TieredStopAtLevel=1 -cp "$pod/tools/kafka-libs/*" "$@" 2>>"$pod/client.log"; }
	# Every listener authenticates: SCRAM as client_user.
	kafka_client_properties "$user" "$password" "$ca" >"$pod/client.properties"
	# Bootstrap by the pod's DNS name: proves the advertised listener clients are sent to.
	printf '%s\n' "$message" | java_tool org.apache.kafka.tools.ConsoleProducer --producer.config "$pod/client.properties" \
		--bootstrap-server "$pod_host:$port" --topic boot --producer-property acks=all
	got=$(java_tool org.apache.kafka.tools.consumer.ConsoleConsumer --consumer.config "$pod/client.properties" \
		--bootstrap-server "$pod_host:$port" --topic boot --from-beginning --max-messages 1 --timeout-ms 60000) || true
	# The console producer logs a failed send and still exits 0: its own error line is the verdict.
	plaintext_refused() {
		local said
		kafka_client_properties "$user" "$password" >"$pod/plain.properties"
		said=$(printf 'plain\n' | java -Xmx256m -XX:TieredStopAtLevel=1 -cp "$pod/tools/kafka-libs/*" \
			org.apache.kafka.tools.ConsoleProducer --producer.config "$pod/plain.properties" \
			--bootstrap-server "$pod_host:$port" --topic boot --producer-property acks=all \
			--producer-property max.block.ms=8000 2>&1) || true
		printf '%s\n' "$said"
		[[ $said == *"Error when sending message"* ]]
	}
	;;
nats)
	nats() {
		XDG_CONFIG_HOME=$pod/client "$pod/tools/nats" --server "nats://$pod_host:$port" --timeout 10s \
			${user:+--user "$user" --password "$password"} ${ca:+--tlsca "$ca"} "$@"
	}
	nats stream add BOOT --subjects 'boot.>' --storage file --defaults >/dev/null
	nats pub --jetstream boot.one "$message" >/dev/null
	got=$(nats sub boot.one --stream BOOT --all --count 1 --raw --wait 10s) || true
	plaintext_refused() {
		! XDG_CONFIG_HOME=$pod/client "$pod/tools/nats" --server "nats://$pod_host:$port" --timeout 5s \
			${user:+--user "$user" --password "$password"} pub boot.one plain
	}
	;;
rabbitmq)
	# The tenant's user (the operator's definitions) in its virtual host, by the pod's DNS name; a
	# quorum queue as the Queue controller declares them, publisher-confirmed, fetched back.
	vhost=/
	[[ ! -f $pod/client_vhost ]] || vhost=$(cat "$pod/client_vhost")
	amqp_python() { "$pod/tools/amqp-venv/bin/python" - "$pod_host" "$port" "$user:$password" "$message" "$vhost" "$@"; }
	got=$(amqp_python "$ca" <<'PY'
import ssl, sys, pika
host, port, user, message, vhost = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(":", 1), sys.argv[4], sys.argv[5]
# amqps where the pod dir has a CA: the broker's certificate checked against it, by the pod's name.
tls = pika.SSLOptions(ssl.create_default_context(cafile=sys.argv[6]), host) if sys.argv[6] else None
params = pika.ConnectionParameters(host, port, virtual_host=vhost, credentials=pika.PlainCredentials(*user),
                                   connection_attempts=10, retry_delay=1, ssl_options=tls)
with pika.BlockingConnection(params) as connection:
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("boot", durable=True, arguments={"x-queue-type": "quorum"})
    channel.basic_publish("", "boot", message.encode(), mandatory=True)
    for _ in range(50):
        _, _, body = channel.basic_get("boot", auto_ack=True)
        if body:
            print(body.decode())
            break
        connection.sleep(0.2)
PY
	) || true
	plaintext_refused() {
		! amqp_python <<'PY'
import sys, pika
host, port, user, vhost = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(":", 1), sys.argv[5]
params = pika.ConnectionParameters(host, port, virtual_host=vhost, credentials=pika.PlainCredentials(*user),
                                   connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5)
pika.BlockingConnection(params).close()
PY
	}
	;;
rocketmq)
	# RocketMQ's own Java client, finding the broker through the name server (the port given) as
	# RocketMQ 4 clients do, every request signed as client_user; with TLS, the certificates
	# checked against the CA.
	mkdir -p "$pod/client"
	client=(env ROCKETMQ_USER="$user" ROCKETMQ_PASSWORD="$password" java -Xmx128m -XX:TieredStopAtLevel=1
		-XX:+UseSerialGC -Duser.home="$pod/client" -cp "$pod/tools/rocketmq-client:$pod/tools/rocketmq/lib/*")
	tls=()
	[[ -z $ca ]] || tls=(-Dtls.enable=true -Dtls.client.authServer=true -Dtls.client.trustCertPath="$ca")
	got=$("${client[@]}" "${tls[@]}" RocketmqClient roundtrip "$pod_host:$port" oms-boot "$message" 2>>"$pod/client.log") || true
	plaintext_refused() {
		! "${client[@]}" -Doms.timeout.ms=5000 RocketmqClient roundtrip "$pod_host:$port" plain plain
	}
	;;
mqtt)
	auth=()
	[[ -z $user ]] || auth=(-u "$user" -P "$password")
	tls=()
	[[ -z $ca ]] || tls=(--cafile "$ca")
	mosquitto_pub -h "$pod_host" -p "$port" "${auth[@]}" "${tls[@]}" -q 1 -r -t boot/one -m "$message"
	got=$(mosquitto_sub -h "$pod_host" -p "$port" "${auth[@]}" "${tls[@]}" -q 1 -t boot/one -C 1 -W 10) || true
	plaintext_refused() {
		! timeout 10 mosquitto_pub -h "$pod_host" -p "$port" "${auth[@]}" -q 1 -t boot/plain -m plain
	}
	;;
esac
# A stopped broker (a wedged JVM, a frozen VM) still completes TCP handshakes in the kernel: the
# probe must call it not ready, and ready again once it runs. Stopped with everything it started
# (RabbitMQ's server script runs the Erlang VM as its child).
tree() {
	local child
	echo "$1"
	for child in $(pgrep -P "$1"); do tree "$child"; done
}
if ((${#ready_probe[@]})) && [[ $got == *"$message"* ]]; then
	mapfile -t stopped < <(tree "$broker")
	kill -STOP "${stopped[@]}"
	if port_open; then port_state=open; else port_state=closed; fi
	if said=$(in_pod "${ready_probe[@]}" 2>&1); then
		kill -CONT "${stopped[@]}"
		echo "boot: the readiness probe passed against a stopped broker" >&2
		exit 1
	fi
	stopped_said=$said
	kill -CONT "${stopped[@]}"
	probe_until_ready 60 || {
		echo "boot: the readiness probe did not pass again after the broker resumed: $said" >&2
		exit 1
	}
	echo "boot: $kind stopped broker: port $port_state, ready probe failed ($stopped_said); resumed: passed"
fi
refused=
if [[ -n $ca && $got == *"$message"* ]]; then
	# The same login without TLS, against the TLS listener: the broker must not take it.
	if plaintext_refused >>"$pod/client.log" 2>&1; then refused=yes; else refused=no; fi
fi
kill -KILL "$broker" 2>/dev/null || true
wait "$broker" 2>/dev/null || true
if [[ $refused == no ]]; then
	echo "boot: $kind took a plaintext client on its TLS listener; client log:" >&2
	tail -n 20 "$pod/client.log" >&2
	exit 1
elif [[ $got == *"$message"* ]]; then
	echo "boot: $kind round trip ok${ca:+ over TLS}"
	[[ $refused != yes ]] || echo "boot: $kind plaintext client refused"
else
	echo "boot: $kind round trip failed: sent '$message', got '$got'; broker log:" >&2
	tail -n 40 "$pod/broker.log" >&2
	exit 1
fi
