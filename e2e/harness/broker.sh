#!/usr/bin/env bash
# Real message brokers as local processes on 127.0.0.1, for tests.
#
#   e2e/harness/broker.sh up <kafka|nats|rabbitmq|mqtt|rocketmq> <name> <port>
#   e2e/harness/broker.sh down <name>
#   e2e/harness/broker.sh restart <name>     (keeps config, data and ports)
#   e2e/harness/broker.sh smoke <name>
#   e2e/harness/broker.sh prepare <kafka|nats|rabbitmq|mqtt|rocketmq>   (installs or builds only)
#
# NATS_EXTRA_CONFIG (optional) is appended to a NATS broker's config at `up`; KAFKA_EXTRA_CONFIG
# (optional) to a Kafka broker's server.properties.
# KAFKA_SASL_SSL_PORT, KAFKA_TLS_DIR, KAFKA_SASL_USER, KAFKA_SASL_PASSWORD (optional, together) at
# `up kafka`: a second listener SASL_SSL://localhost:<port> with the server certificate
# $KAFKA_TLS_DIR/server.pem (key and certificate) and the CA $KAFKA_TLS_DIR/ca.crt, taking that
# user with PLAIN and the SCRAM mechanisms in KAFKA_SCRAM_MECHANISMS (default: SCRAM-SHA-256
# SCRAM-SHA-512; SCRAM credentials exist for those only), as managed Kafka services do. The plaintext
# listener on <port> stays for readiness checks and the tests' own clients.
# RABBITMQ_SSL_PORT, RABBITMQ_TLS_DIR (optional, together) at `up rabbitmq`: an amqps listener on
# that port with $RABBITMQ_TLS_DIR/server.crt, server.key and ca.crt; no client certificates asked.
# ROCKETMQ_TLS_DIR (optional) at `up rocketmq`: the client ports (name server, broker, proxy) take
# TLS only (the broker's HA port for replicas stays plaintext), with $ROCKETMQ_TLS_DIR/server.crt and server.key (a certificate for localhost) and
# ca.crt; the servers' own clients speak TLS to each other without checking certificates.
# BROKER_OWNER_PID (optional) at `up`: the broker goes down by itself once that process has
# exited, however it ended (brokers that the tests of one test binary share).
#
# Everything a broker owns (config, data, logs, pids, ports.env) lives in e2e/.state/brokers/<name>/.
# Each broker runs in its own process group (setsid), so `down` can stop exactly what `up` started.
# Extra ports (Kafka controller, NATS monitor, RabbitMQ distribution/management/epmd) are picked free
# from a range below the kernel's ephemeral ports and never reuse a port another broker recorded.
# shellcheck disable=SC1091,SC2153 # state files are written at run time; PORT, KIND... come from them
set -Eeuo pipefail
# set -e alone exits silently; name the command that failed (only in the main shell).
trap 'rc=$?; [[ $BASHPID == "$$" ]] && printf "broker: failed (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=$ROOT/e2e/.state/brokers
BIN=$ROOT/.bin
TOOLS=$ROOT/e2e/harness/tools.sh
OMS_CACHE=${OMS_CACHE:-$HOME/.cache/oms}
export OMS_CACHE

# Range for picked ports: below the kernel's ephemeral range (32768+), so a port we pick is never
# in use as some client connection's source port. RabbitMQ's CLI keeps its own 35672-35682.
PICK_MIN=30000
PICK_MAX=32767

# A test broker lives for a minute or two: the client compiler alone and the serial collector
# bring it up on half the CPU seconds of G1 with the full JIT, and serve a test's load faster
# too (measured: 2.6 s against 4.6 s to ready, 4.2 s against 7.6 s after 100,000 records).
# `make bench` sets the production options, as the peers it compares with run.
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto}

# Startup deadlines in seconds; cold JVM/Erlang starts on 2 cores are the slow ones.
KAFKA_START_SECS=${KAFKA_START_SECS:-120}
RABBIT_START_SECS=${RABBIT_START_SECS:-120}
ROCKETMQ_START_SECS=${ROCKETMQ_START_SECS:-120}
NATS_START_SECS=${NATS_START_SECS:-30}
MQTT_START_SECS=${MQTT_START_SECS:-30}
STOP_SECS=${STOP_SECS:-60}

RABBIT_BIN=/usr/lib/rabbitmq/bin # Debian's /usr/sbin wrappers would su to the rabbitmq user and drop our env

log() { printf 'broker: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# ---------------------------------------------------------------------------------------------------
# Small helpers

valid_name() { [[ $1 =~ ^[a-z0-9][a-z0-9_-]{0,39}$ ]]; }
valid_port() { [[ $1 =~ ^[0-9]+$ ]] && ((1024 <= $1 && $1 <= 65535)); }

# listening <port>: true if anything listens on that TCP port (any address).
listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# handshake <kafka|nats|rabbitmq|mqtt> <port>: the operator's own protocol-level check
# (oms_operator::probe, run by e2e's broker-probe) that the server really answers clients, not
# just that a socket is bound.
handshake() { "$BROKER_PROBE" "$1" 127.0.0.1 "$2" >/dev/null 2>&1; }

# need_probe: BROKER_PROBE as the tests pass it, else built here once (make broker-up).
need_probe() {
	[[ -n ${BROKER_PROBE:-} ]] ||
		BROKER_PROBE=$(cd "$ROOT" && cargo build --quiet --locked -p oms-e2e --bin broker-probe --message-format=json |
			jq -r 'select(.executable != null) | .executable')
	[[ -x $BROKER_PROBE ]] || die "no broker-probe binary ($BROKER_PROBE)"
}

http_ok() { curl -sf -o /dev/null --max-time 2 "$@"; }

# start_time <pid>: the kernel's start time of a process (field 22 of /proc/<pid>/stat; the
# command name before it may contain spaces, hence cutting after the last ')').
start_time() {
	local stat f
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	read -r -a f <<<"$stat"
	echo "${f[19]}"
}

# ours <pgid> <start time>: the group is the one we started, not a later one that reuses its id.
# While any member of a group lives, Linux does not hand out its id as a new pid; so only a live
# leader with another start time means the id was reused.
ours() {
	local now
	now=$(start_time "$1") || return 0
	[[ $now == "$2" ]]
}

# group_alive <pgid> <start time>: true while any non-zombie process is left in that group. The
# leader counts by its pid too: just after spawn forks it, until its setsid() runs, it is still in
# the spawning shell's group (a check then once took a starting epmd for dead).
group_alive() {
	ours "$1" "$2" || return 1
	ps -e -o pid=,pgid=,stat= | awk -v g="$1" '($1 == g || $2 == g) && $3 !~ /^Z/ { found = 1 } END { exit !found }'
}

# all_started_alive: every group this broker started still has a live process.
all_started_alive() {
	local role pg start n=0
	[[ -f $dir/pids ]] || return 1
	while read -r role pg start; do
		group_alive "$pg" "$start" || return 1
		n=$((n + 1))
	done <"$dir/pids"
	((n > 0))
}

# spawn <role> <log file> <command...>: runs the command in a new session, so its pid is also the
# process group id that `down` signals; its start time guards against pid reuse. Lock fds are
# closed so a broker never holds our locks.
spawn() {
	local role=$1 out=$2
	shift 2
	setsid "$@" </dev/null >>"$out" 2>&1 8>&- 9>&- &
	echo "$role $! $(start_time $! || echo gone)" >>"$dir/pids"
}

# wait_until <secs> <what> <check command...>: polls the check until it passes. Gives up early
# when a process we started has died, showing the end of its logs.
wait_until() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@"; do
		if ! all_started_alive; then
			show_logs
			die "$name: a $kind process exited while waiting for $what"
		fi
		if ((SECONDS >= deadline)); then
			show_logs
			die "$name: $what not ready after ${secs}s"
		fi
		sleep 0.2
	done
}

show_logs() {
	local f
	for f in "$dir"/logs/*; do
		[[ -f $f ]] || continue
		log "--- tail of $f"
		tail -n 25 "$f" >&2 || true
	done
}

# pick_port <var name>: a free port in the pick range that no broker's ports.env already holds.
# Callers hold the global allocation lock, so two concurrent `up`s cannot pick the same port.
pick_port() {
	local taken=" ${PICKED[*]:-} $port " f key p tries=0
	for f in "$STATE"/*/ports.env; do
		[[ -f $f ]] || continue
		while IFS='=' read -r key p; do
			[[ $key == *PORT ]] && taken+="$p "
		done <"$f"
	done
	while ((tries++ < 500)); do
		p=$((PICK_MIN + (RANDOM * 32768 + RANDOM) % (PICK_MAX - PICK_MIN + 1)))
		[[ $taken == *" $p "* ]] && continue
		listening "$p" && continue
		PICKED+=("$p")
		printf -v "$1" '%s' "$p"
		return 0
	done
	die "no free port in $PICK_MIN-$PICK_MAX"
}

# apt_ensure <file that proves it is installed> <packages...>: installs Debian packages without
# letting their maintainer scripts start system services (we run our own instances). One install
# at a time on the machine (tests start brokers in parallel, and on a new machine several want the
# same package at once: dpkg would refuse all but one); tools.sh takes the same lock.
apt_ensure() {
	local want=$1
	shift
	[[ -e $want ]] && return 0
	[[ $(id -u) == 0 ]] || die "need root to apt-get install $*"
	mkdir -p "$OMS_CACHE"
	(
		flock -w 900 7 || die "timed out waiting for another apt-get install ($OMS_CACHE/apt.lock)"
		# Another process may have installed it while this one waited.
		[[ -e $want ]] && exit 0
		apt_install "$@"
	) 7>"$OMS_CACHE/apt.lock" || exit 1
	disable_system_services
}

# apt_install <packages...>: the install itself, under apt_ensure's lock.
apt_install() {
	log "installing Debian packages: $*"
	local guard=""
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		# policy-rc.d exit 101 = "do not start services"; removed again below.
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		guard=/usr/sbin/policy-rc.d
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
			{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
	} >"$STATE/.apt.log" 2>&1 7>&- 8>&- 9>&- || rc=$?
	[[ -z $guard ]] || rm -f "$guard"
	((rc == 0)) || {
		tail -n 20 "$STATE/.apt.log" >&2
		die "apt-get install $* failed"
	}
}

# The packages register system services (rabbitmq-server, epmd, mosquitto). Tests never use them:
# keep them from starting at boot and stop any that did start.
disable_system_services() {
	local svc
	for svc in rabbitmq-server mosquitto; do
		if [[ -e /etc/init.d/$svc ]]; then update-rc.d "$svc" disable >/dev/null 2>&1 || true; fi
	done
	if [[ -d /run/systemd/system ]]; then
		systemctl disable --now rabbitmq-server.service mosquitto.service epmd.socket epmd.service \
			>/dev/null 2>&1 8>&- 9>&- || true
	fi
	# Without systemd, a service only runs if an init script started it: stop it the same way.
	if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then service rabbitmq-server stop 8>&- 9>&- || true; fi
	if pgrep -u mosquitto -x mosquitto >/dev/null 2>&1; then service mosquitto stop 8>&- 9>&- || true; fi
	return 0
}

tool() { "$TOOLS" "$@" 8>&- 9>&-; }

load_state() {
	[[ -f $dir/broker.env ]] || die "no broker named $name (no $dir/broker.env)"
	# shellcheck disable=SC1091
	source "$dir/broker.env"
	# shellcheck disable=SC1091
	source "$dir/ports.env"
	kind=$KIND # from broker.env; PORT and friends come from ports.env
}

# ---------------------------------------------------------------------------------------------------
# Kafka (KRaft, one node that is both broker and controller)

kafka_libs() { echo "$BIN/kafka-libs/libs"; }

# Short-lived tools start faster with the client compiler and a small serial-GC heap.
kafka_tool_java() {
	java -Xshare:auto -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m \
		-Dlog4j2.configurationFile="$dir/config/log4j2-tools.properties" \
		-cp "$(kafka_libs)/*" "$@"
}

java_major() { java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'; }

kafka_prepare() {
	command -v java >/dev/null || die "java not found (Kafka needs Java 17+)"
	(($(java_major) >= 17)) || die "Kafka $name needs Java 17+, found $(java_major)"
	tool kafka
}

kafka_up() {
	local cport
	pick_port cport
	printf 'PORT=%s\nCONTROLLER_PORT=%s\n' "$port" "$cport" >"$dir/ports.env"
	release_alloc_lock

	local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
	local advertised="PLAINTEXT://127.0.0.1:$port" protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
	local sasl_ssl="" scram=()
	if [[ -n ${KAFKA_SASL_SSL_PORT:-} ]]; then
		valid_port "$KAFKA_SASL_SSL_PORT" || die "bad KAFKA_SASL_SSL_PORT '$KAFKA_SASL_SSL_PORT'"
		[[ -r $KAFKA_TLS_DIR/server.pem && -r $KAFKA_TLS_DIR/ca.crt ]] || die "no server.pem and ca.crt in KAFKA_TLS_DIR"
		listeners+=",SASL_SSL://localhost:$KAFKA_SASL_SSL_PORT"
		advertised+=",SASL_SSL://localhost:$KAFKA_SASL_SSL_PORT"
		protocols+=",SASL_SSL:SASL_SSL"
		sasl_ssl="sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_DIR/server.pem
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location=$KAFKA_TLS_DIR/ca.crt
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER=\"$KAFKA_SASL_PASSWORD\";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
		local mechanism
		for mechanism in ${KAFKA_SCRAM_MECHANISMS:-SCRAM-SHA-256 SCRAM-SHA-512}; do
			scram+=(--add-scram "$mechanism=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]")
		done
	fi

	mkdir -p "$dir/config" "$dir/data" "$dir/logs"
	cat >"$dir/config/server.properties" <<EOF
# Single-node KRaft: this process is the whole cluster, so every replication factor is 1.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
$sasl_ssl
log.dirs=$dir/data
num.partitions=1
# One partition for each internal topic: a coordinator is ready at once, not after 50 partitions.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=true
# Tests join consumer groups often; the default 3s delay only slows them down.
group.initial.rebalance.delay.ms=0
# Benches delete each run's topics to free the disk; the default keeps their files a minute more.
file.delete.delay.ms=1000
EOF
	# Extra settings from the caller, e.g. retention that bounds a benchmark's disk use.
	[[ -z ${KAFKA_EXTRA_CONFIG:-} ]] || printf '%s\n' "$KAFKA_EXTRA_CONFIG" >>"$dir/config/server.properties"
	cat >"$dir/config/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF
	cat >"$dir/config/log4j2-tools.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
# The producer warns once about the topic it is about to auto-create; that is expected here.
logger.net.name = org.apache.kafka.clients.NetworkClient
logger.net.level = ERROR
EOF
	# A cluster id is 16 random bytes in URL-safe base64 without padding (what random-uuid prints);
	# making it here saves a JVM start. Kafka rejects ids starting with '-'.
	local cluster_id
	until [[ ${cluster_id:-} && $cluster_id != -* ]]; do
		cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
	done
	kafka_tool_java kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/config/server.properties" "${scram[@]}" \
		>"$dir/logs/format.log" 2>&1 || {
		cat "$dir/logs/format.log" >&2
		die "kafka $name: storage format failed"
	}
	kafka_start
}

# kafka_start: runs the broker on the config and data already in $dir (at up and at restart).
kafka_start() {
	# shellcheck disable=SC2086 # the options are words
	spawn kafka "$dir/logs/stdout.log" java -Xms256m -Xmx"${KAFKA_HEAP:-768m}" $KAFKA_JVM_OPTS \
		-Djava.awt.headless=true -Dkafka.logs.dir="$dir/logs" \
		-Dlog4j2.configurationFile="$dir/config/log4j2.properties" \
		-cp "$(kafka_libs)/*" kafka.Kafka "$dir/config/server.properties"
	kafka_wait
}

# ApiVersions: the broker only processes requests once it has caught up with the metadata log and
# been unfenced, so an answer means ready.
kafka_ready() { handshake kafka "$PORT"; }
kafka_wait() {
	source "$dir/ports.env"
	wait_until "$KAFKA_START_SECS" "the Kafka API on port $PORT" kafka_ready
}

kafka_smoke() {
	tool kafka
	local topic msg got
	topic=smoke-$(date +%s%N)
	msg="hello from $name at $(date -u +%FT%TZ)"
	printf '%s\n' "$msg" | kafka_tool_java org.apache.kafka.tools.ConsoleProducer \
		--bootstrap-server "127.0.0.1:$PORT" --topic "$topic" --producer-property acks=all
	got=$(kafka_tool_java org.apache.kafka.tools.consumer.ConsoleConsumer \
		--bootstrap-server "127.0.0.1:$PORT" --topic "$topic" --from-beginning \
		--max-messages 1 --timeout-ms 30000 2>"$dir/logs/smoke-consumer.log") || true
	smoke_check "$msg" "$got"
}

# ---------------------------------------------------------------------------------------------------
# NATS with JetStream

nats_prepare() { tool nats-server; }

nats_up() {
	local mport
	pick_port mport
	printf 'PORT=%s\nMONITOR_PORT=%s\n' "$port" "$mport" >"$dir/ports.env"
	release_alloc_lock

	mkdir -p "$dir/config" "$dir/data" "$dir/logs"
	cat >"$dir/config/nats.conf" <<EOF
server_name: oms-$name
listen: 127.0.0.1:$port
http: 127.0.0.1:$mport
pid_file: "$dir/nats.pid"
log_file: "$dir/logs/nats.log"
EOF
	# Extra settings from the caller, e.g. a JetStream domain and leafnodes (the bridge benchmark).
	[[ -z ${NATS_EXTRA_CONFIG:-} ]] || printf '%s\n' "$NATS_EXTRA_CONFIG" >>"$dir/config/nats.conf"
	nats_start
}

nats_start() {
	spawn nats "$dir/logs/stdout.log" "$BIN/nats-server" -c "$dir/config/nats.conf" -js -sd "$dir/data"
	nats_wait
}

# The client port greets with INFO; /healthz answers 200 only once JetStream is up as well.
nats_ready() {
	handshake nats "$PORT" && http_ok "http://127.0.0.1:$MONITOR_PORT/healthz"
}
nats_wait() {
	source "$dir/ports.env"
	wait_until "$NATS_START_SECS" "NATS on port $PORT" nats_ready
}

nats_cli() { XDG_CONFIG_HOME=$dir/client "$BIN/nats" --server "nats://127.0.0.1:$PORT" --timeout 10s "$@"; }

# Publish into a file-backed stream (acknowledged by the server), then read it back through a
# JetStream consumer: this covers the client port and JetStream storage.
nats_smoke() {
	tool nats
	local subject msg got
	subject=smoke.$(date +%s%N)
	msg="hello from $name at $(date -u +%FT%TZ)"
	nats_cli stream info OMS_SMOKE >/dev/null 2>&1 ||
		nats_cli stream add OMS_SMOKE --subjects 'smoke.>' --storage file --defaults >/dev/null
	nats_cli pub --jetstream "$subject" "$msg" >&2
	got=$(nats_cli sub "$subject" --stream OMS_SMOKE --all --count 1 --raw --wait 10s) || true
	smoke_check "$msg" "$got"
}

# ---------------------------------------------------------------------------------------------------
# RabbitMQ: our own node, epmd and cookie per broker, nothing shared with a system instance

epmd_ready() { epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; }

rabbit_nodename() { echo "oms-$name@localhost"; }

# Everything the server and CLI need to find this node and only this node. Written once at `up`
# and sourced by every later command for the broker.
rabbit_write_env() {
	cat >"$dir/rabbitmq.env" <<EOF
export HOME="$dir/home"
export RABBITMQ_NODENAME="$(rabbit_nodename)"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$DIST_PORT
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/logs"
export RABBITMQ_CONFIG_FILE="$dir/config/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/config/advanced.config"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/config/enabled_plugins"
export RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
# A path that does not exist: keeps /etc/rabbitmq/rabbitmq-env.conf from applying to our node.
export RABBITMQ_CONF_ENV_FILE="$dir/config/no-rabbitmq-env.conf"
# Our own epmd on its own port, so the system's port 4369 is never touched or shared.
export ERL_EPMD_PORT=$EPMD_PORT
export ERL_EPMD_ADDRESS=127.0.0.1
# Distribution only on loopback, for the node and for the CLI's short-lived node.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
}

rabbitmq_prepare() { apt_ensure "$RABBIT_BIN/rabbitmq-server" rabbitmq-server; }

rabbitmq_up() {
	local dist mgmt epmd
	pick_port dist
	pick_port mgmt
	pick_port epmd
	printf 'PORT=%s\nDIST_PORT=%s\nMANAGEMENT_PORT=%s\nEPMD_PORT=%s\n' "$port" "$dist" "$mgmt" "$epmd" >"$dir/ports.env"
	release_alloc_lock
	source "$dir/ports.env"

	mkdir -p "$dir/config" "$dir/home" "$dir/mnesia" "$dir/logs"
	head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$dir/home/.erlang.cookie"
	chmod 400 "$dir/home/.erlang.cookie"
	cat >"$dir/config/rabbitmq.conf" <<EOF
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt
log.file.level = info
log.console = false
EOF
	if [[ -n ${RABBITMQ_SSL_PORT:-} ]]; then
		valid_port "$RABBITMQ_SSL_PORT" || die "bad RABBITMQ_SSL_PORT '$RABBITMQ_SSL_PORT'"
		cat >>"$dir/config/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:$RABBITMQ_SSL_PORT
ssl_options.cacertfile = $RABBITMQ_TLS_DIR/ca.crt
ssl_options.certfile = $RABBITMQ_TLS_DIR/server.crt
ssl_options.keyfile = $RABBITMQ_TLS_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
	fi
	# Writing the plugins file directly is what `rabbitmq-plugins enable --offline` does, minus a
	# second Erlang VM start.
	echo '[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management].' >"$dir/config/enabled_plugins"
	rabbit_write_env
	rabbitmq_start
}

rabbitmq_start() {
	(
		source "$dir/rabbitmq.env"
		spawn epmd "$dir/logs/epmd.log" epmd -port "$EPMD_PORT" -address 127.0.0.1
	)
	wait_until 10 "epmd on port $EPMD_PORT" epmd_ready
	(
		source "$dir/rabbitmq.env"
		cd "$dir"
		spawn rabbitmq "$dir/logs/stdout.log" "$RABBIT_BIN/rabbitmq-server"
	)
	rabbitmq_wait
}

# AMQP: the protocol header must be answered by a Connection.Start frame (type 1, channel 0).
# Management: the HTTP API answers once the plugin is up.
rabbitmq_ready() {
	handshake rabbitmq "$PORT" &&
		http_ok -u guest:guest "http://127.0.0.1:$MANAGEMENT_PORT/api/overview"
}
rabbitmq_wait() {
	source "$dir/ports.env"
	wait_until "$RABBIT_START_SECS" "RabbitMQ AMQP on port $PORT and management on $MANAGEMENT_PORT" rabbitmq_ready
}

# A publisher-confirmed message on a fresh queue, fetched back on a second connection with pika.
rabbitmq_smoke() {
	tool pika
	local queue msg got
	queue=smoke-$(date +%s%N)
	msg="hello from $name at $(date -u +%FT%TZ)"
	got=$("$BIN/amqp-venv/bin/python" - "$PORT" "$queue" "$msg" <<'PY'
import sys, time
import pika

port, queue, msg = int(sys.argv[1]), sys.argv[2], sys.argv[3]
params = pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"))

with pika.BlockingConnection(params) as conn:
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=queue, durable=True)
    ch.basic_publish("", queue, msg.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)

with pika.BlockingConnection(params) as conn:
    ch = conn.channel()
    deadline = time.monotonic() + 10
    while True:
        method, _, body = ch.basic_get(queue)
        if method:
            ch.basic_ack(method.delivery_tag)
            break
        if time.monotonic() > deadline:
            sys.exit("no message in " + queue)
        conn.sleep(0.1)
    ch.queue_delete(queue)
print(body.decode())
PY
	) || true
	smoke_check "$msg" "$got"
}

# ---------------------------------------------------------------------------------------------------
# MQTT (Mosquitto)

mqtt_prepare() { apt_ensure /usr/sbin/mosquitto mosquitto; }

mqtt_up() {
	printf 'PORT=%s\n' "$port" >"$dir/ports.env"
	release_alloc_lock

	mkdir -p "$dir/config" "$dir/data" "$dir/logs"
	cat >"$dir/config/mosquitto.conf" <<EOF
# Stay root: the default 'mosquitto' user could not write our state dir.
user root
persistence true
persistence_location $dir/data/
log_dest file $dir/logs/mosquitto.log
log_timestamp_format %Y-%m-%dT%H:%M:%S
listener $port 127.0.0.1
# Tenancy (users, ACLs) comes later.
allow_anonymous true
EOF
	mqtt_start
}

mqtt_start() {
	spawn mosquitto "$dir/logs/stdout.log" mosquitto -c "$dir/config/mosquitto.conf"
	mqtt_wait
}

# A CONNECT answered by a CONNACK that accepts it.
mqtt_ready() { handshake mqtt "$PORT"; }
mqtt_wait() {
	source "$dir/ports.env"
	wait_until "$MQTT_START_SECS" "MQTT on port $PORT" mqtt_ready
}

# A retained QoS 1 message is there for a subscriber that connects after the publish, so the two
# clients need no timing between them. The retained message is cleared afterwards.
mqtt_smoke() {
	apt_ensure /usr/bin/mosquitto_sub mosquitto-clients
	local topic msg got
	topic=oms/smoke/$(date +%s%N)
	msg="hello from $name at $(date -u +%FT%TZ)"
	mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -r -t "$topic" -m "$msg"
	got=$(mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t "$topic" -C 1 -W 10) || true
	mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -r -n -t "$topic" || true
	smoke_check "$msg" "$got"
}

# ---------------------------------------------------------------------------------------------------
# RocketMQ 5: a name server, and a broker with the proxy in its process (the proxy's "local"
# mode: one JVM fewer than a separate proxy, the same gRPC endpoint). PORT is the proxy's gRPC
# port, what clients use; NAMESRV_PORT the name server's, where the operator finds the broker.

rocketmq_prepare() {
	command -v java >/dev/null || die "java not found (RocketMQ needs Java 17+)"
	tool rocketmq
}

# rocketmq_java <home> <heap> [jvm flags]: the java command line of a RocketMQ process, in
# JAVA_CMD. Small heaps; both compilers for the servers, whose idle threads poll: with the client
# compiler alone an idle broker took a quarter of a core (its timer store compares a 38 MiB wheel
# byte by byte at each flush), with both an eighth (12.5 s against 24 s of CPU a minute, warm).
# Its logs go under <home>/logs (user.home). Direct memory as large as a broker asks for: each pop reads its messages
# into 4 MiB direct buffers, and at 128 MiB pops failed (OutOfMemoryError) under a bridge's
# load and a popped batch of 32 was never delivered again (RocketMQ 5.3.3).
rocketmq_java() {
	# The proxy writes its self-signed certificate files to java.io.tmpdir at every start.
	mkdir -p "$1/tmp"
	JAVA_CMD=(env ROCKETMQ_HOME="$dir" java -Xms"$2" -Xmx"$2" -XX:MaxDirectMemorySize=512m -XX:+UseSerialGC
		"${@:3}" -Xshare:auto -Duser.home="$1" -Djava.io.tmpdir="$1/tmp" -cp "$BIN/rocketmq-libs/libs/*")
}

rocketmq_up() {
	local namesrv broker ha remoting
	pick_port namesrv
	pick_port remoting
	pick_port ha
	# The broker also listens on its port minus 2 (its "fast" channel): that one free and ours too.
	local fast
	while pick_port broker; fast=$((broker - 2)); ((fast < PICK_MIN)) || listening "$fast" ||
		[[ " ${PICKED[*]} " == *" $fast "* ]] || grep -qs "=$fast\$" "$STATE"/*/ports.env; do :; done
	PICKED+=("$fast")
	printf 'PORT=%s\nNAMESRV_PORT=%s\nBROKER_PORT=%s\nBROKER_FAST_PORT=%s\nHA_PORT=%s\nREMOTING_PORT=%s\n' \
		"$port" "$namesrv" "$broker" "$fast" "$ha" "$remoting" >"$dir/ports.env"
	# Kept with the ports, so that a restart serves TLS again.
	if [[ -n ${ROCKETMQ_TLS_DIR:-} ]]; then
		[[ -r $ROCKETMQ_TLS_DIR/server.crt && -r $ROCKETMQ_TLS_DIR/server.key && -r $ROCKETMQ_TLS_DIR/ca.crt ]] ||
			die "no server.crt, server.key and ca.crt in ROCKETMQ_TLS_DIR"
		printf 'TLS_DIR=%q\n' "$ROCKETMQ_TLS_DIR" >>"$dir/ports.env"
	fi
	release_alloc_lock

	mkdir -p "$dir/config" "$dir/store" "$dir/logs" "$dir/home"
	cat >"$dir/config/namesrv.conf" <<EOF
listenPort=$namesrv
bindAddress=127.0.0.1
kvConfigPath=$dir/store/namesrv-kv.json
EOF
	cat >"$dir/config/broker.conf" <<EOF
brokerClusterName=oms-$name
brokerName=oms-$name-a
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
namesrvAddr=127.0.0.1:$namesrv
brokerIP1=127.0.0.1
bindAddress=127.0.0.1
listenPort=$broker
haListenPort=$ha
storePathRootDir=$dir/store
storePathCommitLog=$dir/store/commitlog
# Topics come from the operator only, as on a production cluster.
autoCreateTopicEnable=false
# Small store files: the defaults (1 GiB commit log files) are for production disks.
mappedFileSizeCommitLog=67108864
mappedFileSizeConsumeQueue=600000
mappedFileSizeTimerLog=8388608
maxHashSlotNum=50000
maxIndexNum=200000
# The timer store (delayed messages) flushes every 10 s instead of 1 s: a third of the idle CPU.
timerFlushIntervalMs=10000
# A consumer without heartbeats for 30 s is gone (2 min by default), and what it held is handed
# to the others: a test that kills a worker waits for that.
channelExpiredTimeout=30000
EOF
	local tls=
	[[ -z ${ROCKETMQ_TLS_DIR:-} ]] ||
		tls=", \"tlsTestModeEnable\": false, \"tlsCertPath\": \"$ROCKETMQ_TLS_DIR/server.crt\", \"tlsKeyPath\": \"$ROCKETMQ_TLS_DIR/server.key\""
	cat >"$dir/config/proxy.json" <<EOF
{"rocketMQClusterName": "oms-$name", "namesrvAddr": "127.0.0.1:$namesrv", "grpcServerPort": $port, "remotingListenPort": $remoting$tls}
EOF
	rocketmq_start
}

# The JVM flags of TLS_DIR's TLS (ports.env), in ROCKETMQ_TLS: listeners that refuse plaintext,
# and clients (a broker registering with its name servers) that speak TLS.
rocketmq_tls_flags() {
	ROCKETMQ_TLS=()
	[[ -n ${TLS_DIR:-} ]] || return 0
	ROCKETMQ_TLS=(-Dtls.server.mode=enforcing -Dtls.test.mode.enable=false -Dtls.enable=true
		-Dtls.server.certPath="$TLS_DIR/server.crt" -Dtls.server.keyPath="$TLS_DIR/server.key")
}

rocketmq_start() {
	TLS_DIR=
	source "$dir/ports.env"
	rocketmq_tls_flags
	rocketmq_java "$dir/home/namesrv" 96m "${ROCKETMQ_TLS[@]}"
	spawn namesrv "$dir/logs/namesrv.log" "${JAVA_CMD[@]}" \
		org.apache.rocketmq.namesrv.NamesrvStartup -c "$dir/config/namesrv.conf"
	rocketmq_java "$dir/home/broker" 384m "${ROCKETMQ_TLS[@]}"
	spawn broker "$dir/logs/broker.log" "${JAVA_CMD[@]}" \
		org.apache.rocketmq.proxy.ProxyStartup -pm local -pc "$dir/config/proxy.json" -bc "$dir/config/broker.conf"
	rocketmq_wait
}

# The name server lists the broker as master, and the proxy answers HTTP/2 (gRPC); over TLS
# where the broker takes TLS only.
rocketmq_ready() {
	if [[ -n ${TLS_DIR:-} ]]; then
		(export BROKER_PROBE_CA=$TLS_DIR/ca.crt BROKER_PROBE_SERVER_NAME=localhost && rocketmq_handshakes)
	else
		rocketmq_handshakes
	fi
}
rocketmq_handshakes() { handshake rocketmq-namesrv "$NAMESRV_PORT" && handshake rocketmq "$PORT"; }
rocketmq_wait() {
	TLS_DIR=
	source "$dir/ports.env"
	wait_until "$ROCKETMQ_START_SECS" "RocketMQ on port $PORT" rocketmq_ready
}

# A topic made with the admin tool, one message sent and read back by the broker's own tools.
rocketmq_smoke() {
	# A tool that runs for a second: the client compiler only; in TLS where the broker takes no other.
	local tls=()
	[[ -z ${TLS_DIR:-} ]] || tls=(-Dtls.enable=true)
	rocketmq_java "$dir/home/admin" 128m -XX:TieredStopAtLevel=1 "${tls[@]}"
	local admin=("${JAVA_CMD[@]}" org.apache.rocketmq.tools.command.MQAdminStartup)
	"${admin[@]}" updateTopic -n "127.0.0.1:$NAMESRV_PORT" -c "oms-$name" -t OMS_SMOKE -r 1 -w 1 >&2
	"${admin[@]}" topicRoute -n "127.0.0.1:$NAMESRV_PORT" -t OMS_SMOKE >&2
	echo "$name (rocketmq) smoke ok: topic OMS_SMOKE routed"
}

# ---------------------------------------------------------------------------------------------------
# Commands

smoke_check() {
	local want=$1 got=$2
	if [[ $got == "$want" ]]; then
		echo "$name ($kind) smoke ok: got \"$got\""
	else
		die "$name ($kind) smoke FAILED: sent \"$want\", got \"$got\""
	fi
}

# The allocation lock serialises port picking across concurrent `up`s; released once ports.env
# is written, so slow broker starts do not block each other.
take_alloc_lock() {
	exec 8>"$STATE/.locks/ports.lock"
	flock -w 120 8 || die "timed out waiting for the port allocation lock"
}
release_alloc_lock() { exec 8>&-; }

running() {
	[[ -f $dir/broker.env && -f $dir/ports.env ]] && all_started_alive
}

cmd_up() {
	kind=$1 name=$2 port=$3
	case $kind in kafka | nats | rabbitmq | mqtt | rocketmq) ;; *) die "unknown kind '$kind' (kafka|nats|rabbitmq|mqtt|rocketmq)" ;; esac
	valid_name "$name" || die "bad name '$name' (lowercase letters, digits, - and _)"
	valid_port "$port" || die "bad port '$port'"
	((port < PICK_MIN || port > PICK_MAX)) || die "port $port is in the range kept for picked ports ($PICK_MIN-$PICK_MAX)"
	dir=$STATE/$name

	if running; then
		local want_kind=$kind want_port=$port
		load_state
		[[ $KIND == "$want_kind" && $PORT == "$want_port" ]] ||
			die "$name is already running as $KIND on port $PORT"
		"${kind}_wait" # an earlier up may have been interrupted before the broker was ready
		log "$name ($kind) already up on 127.0.0.1:$PORT"
		return 0
	fi
	# Leftovers of a broker that died or a failed up: clear them before starting afresh.
	[[ ! -d $dir ]] || stop_broker
	grep -qs "^PORT=$port\$" "$STATE"/*/ports.env && die "port $port is already recorded by another broker"
	listening "$port" && die "port $port is already in use"

	local t0=$SECONDS
	need_probe
	"${kind}_prepare" # installs and builds, before taking the shared port lock
	take_alloc_lock
	mkdir -p "$dir"
	printf 'KIND=%s\nNAME=%s\n' "$kind" "$name" >"$dir/broker.env"
	: >"$dir/pids"
	trap up_cleanup EXIT
	trap 'exit 130' INT TERM # so that the EXIT trap runs on ^C too
	PICKED=()
	"${kind}_up"
	trap - EXIT INT TERM
	[[ -z ${BROKER_OWNER_PID:-} ]] || down_when_gone "$BROKER_OWNER_PID"
	log "$name ($kind) up on 127.0.0.1:$port in $((SECONDS - t0))s; ports: $(tr '\n' ' ' <"$dir/ports.env")"
}

# down_when_gone <pid>: a detached watcher that takes this broker down once process <pid> is gone.
down_when_gone() {
	[[ $1 =~ ^[0-9]+$ ]] || die "bad BROKER_OWNER_PID '$1'"
	# shellcheck disable=SC2016 # expanded by the watcher's shell
	setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" down "$3"' \
		watch "$1" "$ROOT/e2e/harness/broker.sh" "$name" </dev/null >/dev/null 2>&1 8>&- 9>&- &
}

# members <pgid>: the process group and every descendant of it. Erlang's helpers (erl_child_setup,
# inet_gethost) put themselves in groups of their own but stay children of the VM.
members() {
	ps -e -o pid=,ppid=,pgid= | awk -v g="$1" '
		{ parent[$1] = $2; if ($3 == g) want[$1] = 1 }
		END {
			do {
				changed = 0
				for (p in parent) if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1 }
			} while (changed)
			for (p in want) print p
		}'
}

# alive_among <pid>...: the ones still running (zombies only wait to be reaped, they count as gone).
alive_among() {
	(($#)) || return 0
	ps -o pid=,stat= -p "$(IFS=,; echo "$*")" | awk '$2 !~ /^Z/ { print $1 }'
}

# wait_gone <secs> <pid>...: true once none of them runs.
wait_gone() {
	local deadline=$((SECONDS + $1))
	shift
	while [[ -n $(alive_among "$@") ]]; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# stop_group <pgid> <start time> <secs> [signal]: signal the group (TERM unless given) and wait
# for it and its descendants; KILL whatever is left after the deadline. The descendants are
# listed before signalling, while the tree is intact.
stop_group() {
	local pg=$1 start=$2 secs=$3 signal=${4:-TERM} left
	local -a pids
	ours "$pg" "$start" || return 0
	mapfile -t pids < <(members "$pg")
	((${#pids[@]})) || return 0
	kill "-$signal" -- "-$pg" 2>/dev/null || true
	wait_gone "$secs" "${pids[@]}" && return 0
	left=$(alive_among "${pids[@]}" | tr '\n' ' ')
	log "$name: still running after ${secs}s, killing: $left"
	# shellcheck disable=SC2086 # a list of pids
	kill -KILL $left 2>/dev/null || true
	wait_gone 10 "${pids[@]}" || die "$name: processes survived KILL: $(alive_among "${pids[@]}" | tr '\n' ' ')"
}

# Processes that mention this broker's state dir on their command line but left our process groups
# (e.g. something that daemonised). Only ever matches this broker's own directory.
strays() {
	local p cmd
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[[ $p == "$$" ]] && continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
		[[ $cmd == *"$dir/"* ]] && echo "$p"
	done
	return 0
}

# stop_processes [keep]: everything this broker started. Leaves the directory alone. With `keep`
# (a restart) gracefully: RabbitMQ first through its own CLI, which flushes its queues to disk,
# then TERM. Without, the data goes anyway: KILL at once, which spares the seconds a broker
# takes to shut down cleanly (Kafka's controlled shutdown, the CLI's own Erlang VM).
stop_processes() {
	local kind=${kind:-} signal=KILL
	[[ ${1:-} == keep ]] && signal=TERM
	[[ -f $dir/broker.env ]] && kind=$(sed -n 's/^KIND=//p' "$dir/broker.env")
	if [[ ${1:-} == keep && $kind == rabbitmq && -f $dir/rabbitmq.env ]] && grep -qs '^rabbitmq ' "$dir/pids"; then
		local pg start
		read -r pg start < <(awk '$1 == "rabbitmq" { print $2, $3 }' "$dir/pids")
		if group_alive "$pg" "$start"; then
			(source "$dir/rabbitmq.env" && cd "$dir" &&
				exec timeout 60 "$RABBIT_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" stop) \
				>>"$dir/logs/stop.log" 2>&1 8>&- 9>&- || log "$name: rabbitmqctl stop failed, signalling instead"
		fi
	fi
	# Stop in reverse start order (the broker before its epmd).
	local role pg start
	if [[ -f $dir/pids ]]; then
		while read -r role pg start; do
			stop_group "$pg" "$start" "$STOP_SECS" "$signal"
		done < <(tac "$dir/pids")
	fi
	local p
	for p in $(strays); do
		log "$name: killing stray process $p"
		kill -KILL "$p" 2>/dev/null || true
	done
}

stop_broker() {
	stop_processes
	rm -rf "$dir"
}

# A failed or interrupted up stops what it had started; the directory stays for its logs until
# the next up or down of that name.
up_cleanup() {
	local rc=$?
	((rc != 0)) || return 0
	[[ -s $dir/pids ]] || return 0
	log "$name: up failed, stopping what it started (logs stay in $dir/logs)"
	stop_processes || true
}

cmd_down() {
	name=$1
	valid_name "$name" || die "bad name '$name'"
	dir=$STATE/$name
	if [[ ! -d $dir ]]; then
		log "$name: not running"
		return 0
	fi
	local t0=$SECONDS
	stop_broker
	log "$name down in $((SECONDS - t0))s"
}

# restart: stops the broker's processes gracefully and starts them again on the same ports with the
# same config and data, as after a crash-free reboot; what was confirmed before is still there.
cmd_restart() {
	name=$1
	valid_name "$name" || die "bad name '$name'"
	dir=$STATE/$name
	load_state
	need_probe
	local t0=$SECONDS
	stop_processes keep
	: >"$dir/pids"
	"${kind}_start"
	log "$name ($kind) restarted on 127.0.0.1:$PORT in $((SECONDS - t0))s"
}

cmd_smoke() {
	name=$1
	valid_name "$name" || die "bad name '$name'"
	dir=$STATE/$name
	load_state
	running || die "$name ($kind) is not running"
	"${kind}_smoke"
}

cmd_prepare() {
	case $1 in kafka | nats | rabbitmq | mqtt | rocketmq) "${1}_prepare" ;; *) usage ;; esac
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
prepare) [[ $# -eq 1 ]] || usage && lock_name=prepare-$1 ;;
up) [[ $# -eq 3 ]] || usage && lock_name=$2 ;;
down | restart | smoke) [[ $# -eq 1 ]] || usage && lock_name=$1 ;;
*) usage ;;
esac
valid_name "$lock_name" || die "bad name '$lock_name' (lowercase letters, digits, - and _)"
mkdir -p "$STATE/.locks"
# One command at a time per broker; the lock file lives outside the state dir that down removes.
exec 9>"$STATE/.locks/$lock_name.lock"
flock -w 600 9 || die "timed out waiting for another command on $lock_name"
"cmd_$cmd" "$@"
