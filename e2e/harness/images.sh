#!/usr/bin/env bash
# Container images of our programs and of the brokers and cluster DNS a real node (node.sh) runs,
# without a registry: each is packed with buildah into an OCI archive under $OMS_CACHE/images,
# named by a hash of everything that goes into it, so an unchanged image is never packed twice.
#
#   e2e/harness/images.sh build <image>...   builds what is missing; prints each archive's path
#   e2e/harness/images.sh ref <image>        prints the image's name, as pods and chart values use it
#
# Images:
#   oms-operator, oms-bridge  built with `buildah build` from their Containerfiles
#                             (operator/, bridge/; the operator's carries oms-probe, static, the
#                             brokers' readiness probe), exactly as users build them, but with the
#                             release binaries compiled here (cargo, in $CARGO_TARGET_DIR, default
#                             $OMS_CACHE/target) in place of the Rust build stage and runtime-base
#                             in place of distroless: this machine reaches no image registry.
#                             Tagged with the chart's appVersion, the tag the chart's values
#                             default to.
#   runtime-base              what gcr.io/distroless/cc-debian12:nonroot holds for our binaries:
#                             Debian bookworm's libc6, libgcc-s1, libssl3, CA certificates and
#                             netbase at pinned versions (tools.sh runtime-debs), user 65532, no
#                             shell.
#   nats                      the official image's layout: /nats-server (tools.sh nats-server),
#                             /nats-server.conf, / on PATH (the operator runs `nats-server`).
#   coredns                   e2e/tools/coredns (tools.sh coredns) as /coredns; user 65532.
#   local-path-provisioner    the nodes' PersistentVolume provisioner (node.sh storage):
#                             /local-path-provisioner (tools.sh local-path-provisioner) and
#                             /volume-dir (e2e/tools/local-path-provisioner/volume-dir.c, static),
#                             the helper its pods run on a node to make and remove directories.
#   kafka                     the layout of the official apache/kafka image as the operator's
#                             rendering uses it: the jars of tools.sh kafka in /opt/kafka/libs,
#                             /opt/kafka/bin/kafka-{storage,server-start,topics,console-producer,
#                             console-consumer,get-offsets,metadata-quorum,broker-api-versions,
#                             run-class}.sh over
#                             them in sh (the tools log warnings only, to stderr; the JVM's
#                             client compiler and serial collector by default), a Java 17
#                             runtime that jlink cuts from the machine's JDK (/opt/java/openjdk),
#                             Debian's dash as /bin/sh and cat (the rendered start.sh uses both),
#                             /var/lib/kafka/data; user appuser (1000).
#   rabbitmq                  the layout of the official rabbitmq image as the operator's
#                             rendering uses it, from Debian 13's packages (rabbitmq-debs.list,
#                             tools.sh rabbitmq-debs): the server in /opt/rabbitmq, its sbin on
#                             PATH, docker-entrypoint.sh (ours: long node names where the host
#                             name is qualified, then the command), HOME /var/lib/rabbitmq (where
#                             Erlang reads the cookie); user rabbitmq (999). Tagged with the
#                             packaged version: the operator renders by the tag's version.
#   mosquitto                 the layout of the official eclipse-mosquitto image, from Debian
#                             13's packages (mosquitto-debs.list): the broker and its clients,
#                             /mosquitto/{config,data,log}; user mosquitto (1883). Tagged with
#                             the packaged version.
#   rocketmq                  the layout of the official apache/rocketmq image as the operator's
#                             rendering uses it: the jars of tools.sh rocketmq (name server,
#                             broker, proxy) in /home/rocketmq/rocketmq-<version>/lib
#                             (ROCKETMQ_HOME), the kafka image's jlink'd Java runtime, and the
#                             machine's bash, getent, mkdir and sleep (the rendered start.sh
#                             uses them); user rocketmq (3000), its home /home/rocketmq.
# node.sh imports the archives (`node.sh load <cluster> <archive>...`); pods then use the images
# with imagePullPolicy Never or IfNotPresent.
set -euo pipefail
# A failure inside $(...) (a cargo build under `build`, say) stops the script too.
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
OMS_CACHE=${OMS_CACHE:-$HOME/.cache/oms}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OMS_CACHE/target}
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$ROOT/e2e/harness/versions.env"
# The kafka image's Kafka: the pinned version, or KAFKA_IMAGE_VERSION=<older> for a cluster to
# upgrade from (its jars from tools.sh as .bin/kafka-libs-<version>).
KAFKA_IMAGE_VERSION=${KAFKA_IMAGE_VERSION:-$KAFKA_VERSION}
KAFKA_LIBS=$BIN/kafka-libs-$KAFKA_IMAGE_VERSION
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/oms-operator/Chart.yaml")
NONROOT=65532
PATH_IN_IMAGE=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'images: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	echo "usage: $0 build <oms-operator|oms-bridge|runtime-base|nats|coredns|local-path-provisioner|kafka|rabbitmq|mosquitto|rocketmq>... | ref <image>" >&2
	exit 2
}

ref() {
	case $1 in
	oms-operator | oms-bridge) echo "localhost/oms-e2e/$1:$APP_VERSION" ;;
	runtime-base) echo "localhost/oms-e2e/runtime-base:bookworm" ;;
	nats) echo "localhost/oms-e2e/nats:${NATS_VERSION#v}" ;;
	coredns) echo "localhost/oms-e2e/coredns:${COREDNS_VERSION#v}" ;;
	local-path-provisioner) echo "localhost/oms-e2e/local-path-provisioner:${LOCAL_PATH_PROVISIONER_VERSION#v}" ;;
	kafka) echo "localhost/oms-e2e/kafka:$KAFKA_IMAGE_VERSION" ;;
	rabbitmq) echo "localhost/oms-e2e/rabbitmq:$(listed_version rabbitmq rabbitmq-server)" ;;
	mosquitto) echo "localhost/oms-e2e/mosquitto:$(listed_version mosquitto mosquitto)" ;;
	rocketmq) echo "localhost/oms-e2e/rocketmq:$ROCKETMQ_VERSION" ;;
	*) usage ;;
	esac
}

# Both release binaries in one cargo run (a no-op when they are fresh). At the lowest CPU
# priority: other builds and tests share the machine, and the target directory.
cargo_release() {
	[[ -z ${CARGO_BUILT:-} ]] || return 0
	log "cargo build --release of oms-operator and oms-bridge (seconds when fresh, cold many minutes)"
	(cd "$ROOT" && CARGO_TARGET_DIR=$CARGO_TARGET_DIR nice -n 19 cargo build --release --locked --quiet \
		-p oms-operator -p oms-bridge)
	# The brokers' readiness probe, linked statically as operator/Containerfile builds it: it is
	# copied into broker images of any base. For the host's own target, named, so that the flag
	# stays off build scripts and the other binaries.
	log "cargo build --release of oms-probe, static"
	(cd "$ROOT" && CARGO_TARGET_DIR=$CARGO_TARGET_DIR RUSTFLAGS='-C target-feature=+crt-static' nice -n 19 \
		cargo build --release --locked --quiet --target "$(host_target)" -p oms-probe)
	# Static (a static-pie on x86_64): no program interpreter to ask the image for.
	! readelf -lW "$(probe_binary)" | grep -q 'program interpreter' ||
		die "$(probe_binary) is not static: $(readelf -lW "$(probe_binary)" | grep 'program interpreter')"
	CARGO_BUILT=yes
}

host_target() { rustc -vV | sed -n 's/^host: //p'; }
probe_binary() { echo "$CARGO_TARGET_DIR/$(host_target)/release/oms-probe"; }

# shared_libraries <binary>: the files the dynamic loader maps for it (the loader included), as
# ldd resolves them on this machine, which is where the binary was linked.
shared_libraries() {
	local out
	out=$(ldd "$1") || die "ldd $1 failed: $out"
	awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" | sort -u
}

# rootfs_<image> <dir>: fills the image's root file system.
rootfs_runtime_base() {
	local dir=$1 deb
	for deb in "$BIN"/runtime-debs/*.deb; do
		dpkg-deb -x "$deb" "$dir"
	done
	# What update-ca-certificates would make of the package's certificates (its maintainer script
	# does not run here): one bundle, where OpenSSL and rustls-native-certs look on Debian.
	mkdir -p "$dir/etc/ssl/certs"
	cat "$dir"/usr/share/ca-certificates/mozilla/*.crt >"$dir/etc/ssl/certs/ca-certificates.crt"
	rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/lintian" "$dir/usr/share/locale"
	mkdir -p "$dir/tmp" "$dir/home/nonroot"
	chmod 1777 "$dir/tmp"
	printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" "nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin" \
		>"$dir/etc/passwd"
	printf '%s\n' "root:x:0:" "nonroot:x:$NONROOT:" >"$dir/etc/group"
	printf '%s\n' "hosts: files dns" >"$dir/etc/nsswitch.conf"
}

rootfs_nats() {
	install -D -m 0755 "$(readlink -f "$BIN/nats-server")" "$1/nats-server"
	# What the image runs without arguments; the operator passes its own --config.
	cat >"$1/nats-server.conf" <<'EOF'
# Default configuration of the oms-e2e nats image: clients, monitoring and cluster routes on the
# usual ports. Pods run by the operator use the configuration it renders instead.
port: 4222
http_port: 8222
cluster {
  name: default
  port: 6222
}
EOF
}

rootfs_coredns() {
	install -D -m 0755 "$(readlink -f "$BIN/coredns")" "$1/coredns"
}

rootfs_local_path_provisioner() {
	install -D -m 0755 "$(readlink -f "$BIN/local-path-provisioner")" "$1/local-path-provisioner"
	gcc -static -O2 -s -Wall -Wextra -Werror -o "$1/volume-dir" "$ROOT/e2e/tools/local-path-provisioner/volume-dir.c"
}

# The Java runtime of the kafka image: the machine's JDK 17, cut by jlink to the modules Kafka's
# broker and tools load (management and JMX, naming, SASL/Kerberos, TLS, java.beans and sql for
# Jackson and log4j, jdk.unsupported for Unsafe), which is a fraction of the JDK's size.
KAFKA_USER=1000
JAVA_MODULES=java.base,java.compiler,java.desktop,java.instrument,java.logging,java.management,java.management.rmi,java.naming,java.net.http,java.rmi,java.scripting,java.security.jgss,java.security.sasl,java.sql,java.transaction.xa,java.xml,jdk.crypto.cryptoki,jdk.crypto.ec,jdk.jfr,jdk.management,jdk.naming.dns,jdk.net,jdk.security.auth,jdk.security.jgss,jdk.unsupported,jdk.zipfs
JDK_HOME=
jdk_home() {
	if [[ -z $JDK_HOME ]]; then
		local java
		java=$(command -v java) || die "kafka: a JDK 17 (java, jlink) is needed on PATH"
		JDK_HOME=$(dirname "$(dirname "$(readlink -f "$java")")")
		[[ -x $JDK_HOME/bin/jlink && -d $JDK_HOME/jmods ]] || die "kafka: $JDK_HOME has no jlink or jmods"
	fi
	echo "$JDK_HOME"
}

# The JDK's native code that a broker loads: all of it but graphics and sound (java.desktop is in
# the runtime for java.beans only; its libawt and friends would pull in X11), accessibility and
# the debugger agents.
java_native_code() {
	local jdk lib
	jdk=$(jdk_home)
	echo "$jdk/bin/java"
	echo "$jdk/lib/server/libjvm.so"
	for lib in "$jdk"/lib/*.so; do
		[[ ${lib##*/} =~ ^lib(awt|fontmanager|jawt|splashscreen|lcms|javajpeg|mlib_image|jsound|atk-wrapper|j2pcsc|saproc|jdwp|dt_socket)[._] ]] ||
			echo "$lib"
	done
}

# java_libraries <binary>...: the machine's libraries a Java image needs: what the binaries and
# the JDK's native code link, outside the JDK itself.
java_libraries() {
	local jdk file
	jdk=$(jdk_home)
	for file in "$@" $(java_native_code); do
		shared_libraries "$file"
	done | grep -v "^$jdk/" | sort -u
}

# java_modules: the jmods jlink reads for a Java image's runtime.
java_modules() {
	local jdk module
	jdk=$(jdk_home)
	for module in ${JAVA_MODULES//,/ }; do echo "$jdk/jmods/$module.jmod"; done
}

# java_runtime <rootfs> <image> <library>...: the Java runtime jlink cuts from the machine's JDK, in
# /opt/java/openjdk, and the libraries (java_libraries) at their paths.
java_runtime() {
	local dir=$1 jdk file
	jdk=$(jdk_home)
	log "jlink of the Java runtime for $2"
	mkdir -p "$dir/opt/java"
	nice -n 19 "$jdk/bin/jlink" --module-path "$jdk/jmods" --add-modules "$JAVA_MODULES" \
		--strip-debug --no-header-files --no-man-pages --compress=2 --output "$dir/opt/java/openjdk"
	for file in "${@:3}"; do
		install -D -m 0755 "$(readlink -f "$file")" "$dir$file"
	done
}

# The machine's libraries the kafka image needs: what the shell, cat and the JDK link.
kafka_libraries() { java_libraries /bin/dash /usr/bin/cat; }

# The files the kafka image is made of: jars, the jmods jlink reads, the shell, cat and libraries.
kafka_inputs() {
	readlink -f "$KAFKA_LIBS"/libs/*.jar
	java_modules
	echo /bin/dash
	echo /usr/bin/cat
	kafka_libraries
}

# kafka_script <dir> <name> <body>: an executable sh script in the image's /opt/kafka/bin.
kafka_script() {
	printf '#!/bin/sh\n%s\n' "$3" >"$1/opt/kafka/bin/$2"
	chmod 0755 "$1/opt/kafka/bin/$2"
}

# shellcheck disable=SC2016 # the image's scripts expand their own variables when they run
rootfs_kafka() {
	local dir=$1 file
	mkdir -p "$dir/opt/kafka/libs" "$dir/opt/kafka/bin" "$dir/opt/kafka/config" "$dir/bin" "$dir/etc" "$dir/tmp"
	for file in "$KAFKA_LIBS"/libs/*.jar; do
		install -m 0644 "$(readlink -f "$file")" "$dir/opt/kafka/libs/"
	done
	# shellcheck disable=SC2046 # one path a word
	java_runtime "$dir" kafka $(kafka_libraries)
	# Debian's dash is /bin/sh as in Debian; cat is what start.sh needs beyond the shell's builtins.
	install -m 0755 /bin/dash "$dir/bin/dash"
	ln -s dash "$dir/bin/sh"
	install -m 0755 /usr/bin/cat "$dir/bin/cat"
	# The distribution's scripts, reduced to what they do for these classes: a classpath of
	# /opt/kafka/libs and the same environment variables with the same defaults, but for the JVM's:
	# the client compiler and the serial collector, as the process tier's brokers (broker.sh): up to
	# five brokers and their tools share two cores with the other tier, and the official image's G1
	# and optimizing compiler spend more CPU at every start.
	kafka_script "$dir" kafka-run-class.sh '# Runs a class of the Kafka distribution, as its script of the same name: the heap, JVM,
# log4j and extra options come from KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_LOG4J_OPTS
# and KAFKA_OPTS.
[ $# -ge 1 ] || { echo "USAGE: $0 classname [opts]" >&2; exit 1; }
base=/opt/kafka
: "${KAFKA_HEAP_OPTS:=-Xmx256M}"
: "${KAFKA_JVM_PERFORMANCE_OPTS:=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base/config/log4j2.properties}"
# shellcheck disable=SC2086 # options are lists of words
exec "$JAVA_HOME/bin/java" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_LOG4J_OPTS $KAFKA_OPTS \
	-cp "$base/libs/*" "$@"'
	kafka_script "$dir" kafka-server-start.sh '[ $# -ge 1 ] || { echo "USAGE: $0 server.properties [--override property=value]*" >&2; exit 1; }
: "${KAFKA_HEAP_OPTS:=-Xmx1G -Xms1G}"
export KAFKA_HEAP_OPTS
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"'
	kafka_script "$dir" kafka-storage.sh 'exec /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool "$@"'
	# The client tools log warnings only, to stderr, so that their stdout is their output.
	local tool class
	for tool in kafka-topics.sh=org.apache.kafka.tools.TopicCommand \
		kafka-console-producer.sh=org.apache.kafka.tools.ConsoleProducer \
		kafka-console-consumer.sh=org.apache.kafka.tools.consumer.ConsoleConsumer \
		kafka-get-offsets.sh=org.apache.kafka.tools.GetOffsetShell \
		kafka-metadata-quorum.sh=org.apache.kafka.tools.MetadataQuorumCommand \
		kafka-features.sh=org.apache.kafka.tools.FeatureCommand \
		kafka-broker-api-versions.sh=org.apache.kafka.tools.BrokerApiVersionsCommand; do
		class=${tool#*=}
		kafka_script "$dir" "${tool%%=*}" ': "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties}"
export KAFKA_LOG4J_OPTS
exec /opt/kafka/bin/kafka-run-class.sh '"$class"' "$@"'
	done
	cat >"$dir/opt/kafka/config/tools-log4j2.properties" <<'EOF'
# Kafka's command line tools log warnings and errors to stderr.
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
	# The broker logs to stdout, as the official image's.
	cat >"$dir/opt/kafka/config/log4j2.properties" <<'EOF'
# Kafka logs to stdout at INFO, as in the official image.
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
EOF
	printf '%s\n' "hosts: files dns" >"$dir/etc/nsswitch.conf"
	printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" "appuser:x:$KAFKA_USER:$KAFKA_USER:appuser:/home/appuser:/bin/sh" \
		>"$dir/etc/passwd"
	printf '%s\n' "root:x:0:" "appuser:x:$KAFKA_USER:" >"$dir/etc/group"
	chmod 1777 "$dir/tmp"
	# appuser's directories (owned_dirs).
	mkdir -p "$dir.owned/home/appuser" "$dir.owned/var/lib/kafka/data" "$dir.owned/etc/kafka"
}

# The rocketmq image: what the rendered start.sh runs besides Java, from this machine, and the
# official image's user and home.
ROCKETMQ_USER=3000
ROCKETMQ_TOOLS=(/usr/bin/bash /usr/bin/getent /usr/bin/mkdir /usr/bin/sleep)
ROCKETMQ_HOME_IN_IMAGE=/home/rocketmq/rocketmq-$ROCKETMQ_VERSION

# The native code RocketMQ's jars unpack when they run (RocksDB's, which holds the users and
# ACLs, and netty's), for this machine's architecture, extracted under <dir>.
rocketmq_jar_natives() {
	local arch
	case $(uname -m) in
	x86_64) arch='(linux64|linux[-_]x86[-_]64)' ;;
	aarch64) arch='(linux-aarch64|linux[-_]aarch[-_]64)' ;;
	*) die "rocketmq: no native code known for $(uname -m)" ;;
	esac
	python3 - "$1" "$arch" "$BIN"/rocketmq-libs/libs/*.jar <<'PY'
import re, sys, zipfile
out, arch, jars = sys.argv[1], re.compile(sys.argv[2]), sys.argv[3:]
for jar in jars:
    with zipfile.ZipFile(jar) as archive:
        for name in archive.namelist():
            if name.endswith(".so") and arch.search(name) and "musl" not in name:
                print(archive.extract(name, out))
PY
}

rocketmq_libraries() {
	local natives
	natives=$(mktemp -d)
	# shellcheck disable=SC2046 # one path a word
	java_libraries "${ROCKETMQ_TOOLS[@]}" $(rocketmq_jar_natives "$natives")
	rm -rf "$natives"
}

rocketmq_inputs() {
	readlink -f "$BIN"/rocketmq-libs/libs/*.jar
	java_modules
	printf '%s\n' "${ROCKETMQ_TOOLS[@]}"
	rocketmq_libraries
}

rootfs_rocketmq() {
	local dir=$1 file
	mkdir -p "$dir/usr/bin" "$dir/etc" "$dir/tmp"
	# shellcheck disable=SC2046 # one path a word
	java_runtime "$dir" rocketmq $(rocketmq_libraries)
	for file in "${ROCKETMQ_TOOLS[@]}"; do
		install -m 0755 "$file" "$dir$file"
	done
	# A merged /usr, as Ubuntu's: /bin/bash is the same file.
	ln -s usr/bin "$dir/bin"
	printf '%s\n' "hosts: files dns" >"$dir/etc/nsswitch.conf"
	printf '%s\n' "root:x:0:0:root:/root:/usr/sbin/nologin" \
		"rocketmq:x:$ROCKETMQ_USER:$ROCKETMQ_USER:rocketmq:/home/rocketmq:/bin/bash" >"$dir/etc/passwd"
	printf '%s\n' "root:x:0:" "rocketmq:x:$ROCKETMQ_USER:" >"$dir/etc/group"
	chmod 1777 "$dir/tmp"
	# The rocketmq user's home with the distribution's jars (owned_dirs).
	mkdir -p "$dir.owned$ROCKETMQ_HOME_IN_IMAGE/lib"
	for file in "$BIN"/rocketmq-libs/libs/*.jar; do
		install -m 0644 "$(readlink -f "$file")" "$dir.owned$ROCKETMQ_HOME_IN_IMAGE/lib/"
	done
}

RABBITMQ_USER=999
MOSQUITTO_USER=1883

# listed_version <image> <package>: the upstream version of a package in <image>-debs.list (4.0.5
# of rabbitmq-server=4.0.5-6+deb13u2), which tags the image: the operator renders by the tag.
listed_version() {
	sed -n "s/^$2=\\([0-9.]*\\)-.*/\\1/p" "$ROOT/e2e/harness/$1-debs.list"
}

# trixie_rootfs <dir> <image> <user> <uid> <home>: the image's Debian 13 packages (tools.sh
# <image>-debs) extracted into <dir>, without their documentation; the links of a merged-/usr root
# (Debian 13 keeps everything under /usr: the loader and /bin/sh are reached through them); root
# and the image's user.
trixie_rootfs() {
	local dir=$1 image=$2 user=$3 uid=$4 home=$5 deb top
	for deb in "$BIN/$image-debs"/*.deb; do
		dpkg-deb -x "$deb" "$dir"
	done
	for top in bin sbin lib lib64; do
		[[ ! -e $dir/$top || -L $dir/$top ]] || die "$image: a package ships /$top outside /usr"
		ln -sfn "usr/$top" "$dir/$top"
	done
	rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/lintian" "$dir/usr/share/locale" \
		"$dir/etc/init.d" "$dir/etc/default" "$dir/etc/logrotate.d" "$dir/usr/lib/systemd"
	mkdir -p "$dir/tmp" "$dir/root"
	chmod 1777 "$dir/tmp"
	printf '%s\n' "hosts: files dns" "passwd: files" "group: files" >"$dir/etc/nsswitch.conf"
	printf '%s\n' "root:x:0:0:root:/root:/bin/sh" "$user:x:$uid:$uid:$user:$home:/bin/sh" >"$dir/etc/passwd"
	printf '%s\n' "root:x:0:" "$user:x:$uid:" >"$dir/etc/group"
}

rootfs_rabbitmq() {
	local dir=$1 server
	trixie_rootfs "$dir" rabbitmq rabbitmq "$RABBITMQ_USER" /var/lib/rabbitmq
	# The server where the official image has it. Its defaults already name the system paths
	# (/etc/rabbitmq, /var/lib/rabbitmq, /var/log/rabbitmq) as the official image's do.
	server=$(echo "$dir"/usr/lib/rabbitmq/lib/rabbitmq_server-*)
	[[ -d $server ]] || die "rabbitmq: no rabbitmq_server-* directory in the packages"
	grep -qx 'SYS_PREFIX=' "$server/sbin/rabbitmq-defaults" || die "rabbitmq: rabbitmq-defaults sets a SYS_PREFIX"
	mkdir -p "$dir/opt"
	mv "$server" "$dir/opt/rabbitmq"
	ln -s /opt/rabbitmq "$server"
	ln -s /opt/rabbitmq/plugins "$dir/plugins"
	# Debian's wrappers switch to the rabbitmq user with su and send the log to a file: the pod
	# runs as that user already and logs to the console. The package's own data and log
	# directories are root's here: rabbitmq's come in below.
	rm -f "$dir"/usr/sbin/rabbitmq* "$dir/usr/lib/rabbitmq/bin/rabbitmq-script-wrapper" \
		"$dir/usr/lib/rabbitmq/bin/rabbitmq-server-wait" "$dir/usr/bin/rabbitmqadmin"
	rm -rf "$dir/var/lib/rabbitmq" "$dir/var/log/rabbitmq" "$dir/usr/lib/ocf"
	install -D -m 0755 /dev/stdin "$dir/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# Entrypoint of the oms-e2e rabbitmq image: long node names where the host name is a qualified
# one, as the official image decides, then the command.
set -e
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
	export RABBITMQ_USE_LONGNAME=true
fi
exec "$@"
EOF
	# rabbitmq's directories (owned_dirs), with the official image's defaults: the Prometheus
	# plugin on, guest from anywhere, the log on the console.
	mkdir -p "$dir.owned/var/lib/rabbitmq" "$dir.owned/var/log/rabbitmq" "$dir.owned/etc/rabbitmq/conf.d"
	echo "[rabbitmq_prometheus]." >"$dir.owned/etc/rabbitmq/enabled_plugins"
	printf '%s\n' "loopback_users.guest = false" "log.console = true" >"$dir.owned/etc/rabbitmq/conf.d/10-defaults.conf"
}

rootfs_mosquitto() {
	local dir=$1
	trixie_rootfs "$dir" mosquitto mosquitto "$MOSQUITTO_USER" /mosquitto
	# The package's own directories are root's, and its config includes a conf.d of Debian's.
	rm -rf "$dir/etc/mosquitto" "$dir/var/lib/mosquitto" "$dir/var/log/mosquitto"
	# mosquitto's directories (owned_dirs), as in the official image; without a listener of its
	# own, the default config serves local clients only, as the official image's does.
	mkdir -p "$dir.owned/mosquitto/config" "$dir.owned/mosquitto/data" "$dir.owned/mosquitto/log"
	printf '%s\n' "# Default configuration of the oms-e2e mosquitto image; the operator passes its own." \
		"persistence true" "persistence_location /mosquitto/data/" "log_dest stdout" \
		>"$dir.owned/mosquitto/config/mosquitto.conf"
}

# owned_dirs <image>: the user that owns the image's own directories, and the directories, which
# rootfs_<image> makes under <rootfs>.owned and pack_rootfs copies in as that user's (buildah
# copies everything else as root's).
owned_dirs() {
	case $1 in
	kafka) echo "$KAFKA_USER:$KAFKA_USER /home/appuser /var/lib/kafka /etc/kafka" ;;
	rabbitmq) echo "$RABBITMQ_USER:$RABBITMQ_USER /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq" ;;
	mosquitto) echo "$MOSQUITTO_USER:$MOSQUITTO_USER /mosquitto" ;;
	rocketmq) echo "$ROCKETMQ_USER:$ROCKETMQ_USER /home/rocketmq" ;;
	esac
}

# prepare <image>: builds the binaries the image is made of.
prepare() {
	case $1 in
	oms-operator | oms-bridge)
		cargo_release
		build runtime-base >/dev/null
		;;
	runtime-base) "$ROOT/e2e/harness/tools.sh" runtime-debs ;;
	nats) "$ROOT/e2e/harness/tools.sh" nats-server ;;
	coredns) "$ROOT/e2e/harness/tools.sh" coredns ;;
	local-path-provisioner) "$ROOT/e2e/harness/tools.sh" local-path-provisioner ;;
	kafka) KAFKA_LIBS_VERSION=$KAFKA_IMAGE_VERSION "$ROOT/e2e/harness/tools.sh" kafka >&2 ;;
	rabbitmq | mosquitto) "$ROOT/e2e/harness/tools.sh" "$1-debs" ;;
	rocketmq) "$ROOT/e2e/harness/tools.sh" rocketmq >&2 ;;
	esac
}

# input_files <image>: the files the image is made of.
input_files() {
	case $1 in
	oms-operator | oms-bridge)
		echo "$CARGO_TARGET_DIR/release/$1"
		[[ $1 != oms-operator ]] || probe_binary
		echo "$ROOT/${1#oms-}/Containerfile"
		build runtime-base
		;;
	runtime-base) readlink -f "$BIN"/runtime-debs/*.deb ;;
	nats | coredns) readlink -f "$BIN/$(binary_name "$1")" ;;
	local-path-provisioner)
		readlink -f "$BIN/local-path-provisioner"
		echo "$ROOT/e2e/tools/local-path-provisioner/volume-dir.c"
		;;
	kafka) kafka_inputs ;;
	rabbitmq | mosquitto) readlink -f "$BIN/$1-debs"/*.deb ;;
	rocketmq) rocketmq_inputs ;;
	esac
}

binary_name() {
	case $1 in
	nats) echo nats-server ;;
	*) echo "$1" ;;
	esac
}

# image_config <image>: sets CONFIG to the image's `buildah config` flags.
image_config() {
	case $1 in
	runtime-base)
		CONFIG=(--user "$NONROOT:$NONROOT" --env "PATH=$PATH_IN_IMAGE")
		;;
	nats)
		# As the official scratch image: root, entrypoint /nats-server, its default config, and /
		# on PATH so that `nats-server` runs as a command.
		CONFIG=(--entrypoint '["/nats-server"]' --cmd '["--config", "nats-server.conf"]'
			--env "PATH=$PATH_IN_IMAGE:/" --port 4222 --port 6222 --port 8222)
		;;
	coredns)
		CONFIG=(--entrypoint '["/coredns"]' --user "$NONROOT:$NONROOT" --env "PATH=$PATH_IN_IMAGE"
			--port 53/udp --port 53/tcp)
		;;
	local-path-provisioner)
		# Root, as upstream's images: the helper pods make directories in root's hostPath. The
		# provisioner's own pod runs as a user of its own (node.sh storage).
		CONFIG=(--entrypoint '["/local-path-provisioner"]' --env "PATH=$PATH_IN_IMAGE")
		;;
	kafka)
		# As the official image: appuser, the distribution in /opt/kafka, Java on PATH. The
		# operator always passes its own command; without one the image prints the usage.
		CONFIG=(--user "$KAFKA_USER:$KAFKA_USER" --workingdir /opt/kafka --env JAVA_HOME=/opt/java/openjdk
			--env "PATH=/opt/java/openjdk/bin:/opt/kafka/bin:$PATH_IN_IMAGE"
			--cmd '["/opt/kafka/bin/kafka-server-start.sh"]' --port 9092 --port 9093)
		;;
	rabbitmq)
		# As the official image, but as the rabbitmq user rather than root (whose entrypoint
		# switches to it): the operator runs the pod as that user.
		CONFIG=(--user "$RABBITMQ_USER:$RABBITMQ_USER" --entrypoint '["docker-entrypoint.sh"]'
			--cmd '["rabbitmq-server"]' --env "PATH=/opt/rabbitmq/sbin:$PATH_IN_IMAGE" --env HOME=/var/lib/rabbitmq
			--env RABBITMQ_HOME=/opt/rabbitmq --env RABBITMQ_DATA_DIR=/var/lib/rabbitmq
			--env "RABBITMQ_VERSION=$(listed_version rabbitmq rabbitmq-server)" --env LANG=C.UTF-8 --env LC_ALL=C.UTF-8
			--env RUNNING_UNDER_SYSTEMD=true --port 4369 --port 5671 --port 5672 --port 15692 --port 25672)
		;;
	rocketmq)
		# As the official image: the rocketmq user, ROCKETMQ_HOME, Java on PATH. The operator
		# always passes its own command; without one the image runs the name server.
		CONFIG=(--user "$ROCKETMQ_USER:$ROCKETMQ_USER" --workingdir "$ROCKETMQ_HOME_IN_IMAGE"
			--env "ROCKETMQ_HOME=$ROCKETMQ_HOME_IN_IMAGE" --env JAVA_HOME=/opt/java/openjdk
			--env "PATH=/opt/java/openjdk/bin:$PATH_IN_IMAGE"
			--cmd '["java", "-cp", "lib/*", "org.apache.rocketmq.namesrv.NamesrvStartup"]'
			--port 8081 --port 9876 --port 10911)
		;;
	mosquitto)
		# As the official image: the mosquitto user, the broker on its default config.
		CONFIG=(--user "$MOSQUITTO_USER:$MOSQUITTO_USER" --env "PATH=$PATH_IN_IMAGE"
			--cmd '["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]' --port 1883 --port 8883)
		;;
	esac
}

# buildah's own storage under the cache (vfs: no overlay mounts to clean up), as node.sh.
BUILDAH=("$BIN/buildah" --root "$OMS_CACHE/images/buildah/root" --runroot "$OMS_CACHE/images/buildah/run"
	--storage-driver vfs)

# pack_rootfs <image> <name> <work dir>: commits the image from rootfs_<name>'s file system and
# image_config's settings.
pack_rootfs() {
	local image=$1 name=$2 work=$3 container
	"rootfs_${name//-/_}" "$work/rootfs"
	container=$("${BUILDAH[@]}" from --quiet scratch)
	"${BUILDAH[@]}" copy --quiet "$container" "$work/rootfs" / >/dev/null
	local owner dirs owned
	read -r owner dirs <<<"$(owned_dirs "$name")" || true
	for owned in $dirs; do
		"${BUILDAH[@]}" copy --quiet --chown "$owner" "$container" "$work/rootfs.owned$owned" "$owned" >/dev/null
	done
	local CONFIG
	image_config "$name"
	"${BUILDAH[@]}" config "${CONFIG[@]}" --label "org.opencontainers.image.title=$name" "$container"
	"${BUILDAH[@]}" commit --quiet --rm --timestamp 0 "$container" "$image" >/dev/null
}

# pack_containerfile <image> <binary> <key>: builds the image from the binary's Containerfile, with
# the release binary in place of its build stage (an image holding /out/<binary>) and the
# runtime-base archive as its base. The build stage, unused then, is skipped.
pack_containerfile() {
	local image=$1 binary=$2 key=$3 container binaries base revision
	binaries=localhost/oms-build/$binary-binaries:$key
	container=$("${BUILDAH[@]}" from --quiet scratch)
	"${BUILDAH[@]}" copy --quiet --chmod 0755 "$container" "$CARGO_TARGET_DIR/release/$binary" "/out/$binary" >/dev/null
	if [[ $binary == oms-operator ]]; then
		"${BUILDAH[@]}" copy --quiet --chmod 0755 "$container" "$(probe_binary)" /out/oms-probe >/dev/null
	fi
	"${BUILDAH[@]}" commit --quiet --rm "$container" "$binaries" >/dev/null
	base=$(build runtime-base)
	revision=$(revision)
	"${BUILDAH[@]}" build --quiet --timestamp 0 --file "$ROOT/${binary#oms-}/Containerfile" \
		--build-arg "BINARIES=$binaries" --build-arg "RUNTIME_IMAGE=oci-archive:$base" \
		--build-arg "VERSION=$APP_VERSION" --build-arg "REVISION=$revision" --tag "$image" "$ROOT" >/dev/null
	# The build keeps a container of the binaries' stage, and the base it pulled from the archive.
	"${BUILDAH[@]}" rmi --force "$binaries" "$(ref runtime-base)" >/dev/null
	# The binary runs on the base as its user (its libraries are all there), or nothing is kept.
	container=$("${BUILDAH[@]}" from --quiet --pull-never "$image")
	"${BUILDAH[@]}" run --network none "$container" -- "/usr/local/bin/$binary" --version >&2 ||
		die "$image: /usr/local/bin/$binary --version failed in the image"
	if [[ $binary == oms-operator ]]; then
		"${BUILDAH[@]}" run --network none "$container" -- /usr/local/bin/oms-probe --version >&2 ||
			die "$image: /usr/local/bin/oms-probe --version failed in the image"
	fi
	"${BUILDAH[@]}" rm "$container" >/dev/null
}

# revision: the commit our images' revision label names, with -dirty for uncommitted changes.
revision() {
	local commit
	commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null) || commit=unknown
	[[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit+=-dirty
	echo "$commit"
}

# build <image>: prints the archive, packing it first unless the cache has one for these inputs.
build() {
	local name=$1 image files key archive
	image=$(ref "$name")
	prepare "$name"
	files=$(input_files "$name")
	# Keyed by this script (the recipes), the image's name, every input file, buildah, and for
	# our binaries the revision their label carries.
	# shellcheck disable=SC2086 # one path a word
	key=$( (cat "${BASH_SOURCE[0]}"; echo "$image"; sha256sum $files; "$BIN/buildah" --version
		[[ $name != oms-* ]] || revision) | sha256sum | cut -c1-12)
	archive=$OMS_CACHE/images/$name-$key.tar
	if [[ ! -f $archive ]]; then
		local work began=$EPOCHREALTIME
		log "packing $image"
		work=$(mktemp -d)
		case $name in
		oms-operator | oms-bridge) pack_containerfile "$image" "$name" "$key" ;;
		*) pack_rootfs "$image" "$name" "$work" ;;
		esac
		mkdir -p "$OMS_CACHE/images"
		"${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive.partial:$image"
		"${BUILDAH[@]}" rmi "$image" >/dev/null
		mv "$archive.partial" "$archive"
		rm -rf "$work"
		log "packed $image in $(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s: $archive ($(du -h "$archive" | cut -f1))"
	fi
	echo "$archive"
}

[[ $# -ge 2 ]] || usage
case $1 in
build)
	shift
	for name in "$@"; do
		ref "$name" >/dev/null
		build "$name"
	done
	;;
ref)
	[[ $# -eq 2 ]] || usage
	ref "$2"
	;;
*) usage ;;
esac
