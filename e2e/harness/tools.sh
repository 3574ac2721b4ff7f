#!/usr/bin/env bash
# Builds the pinned tools the tests need from the registries this machine reaches, caches them
# outside the checkout keyed by version, and links them into .bin/.
#
#   e2e/harness/tools.sh <tool>...     tools: kube-apiserver kube-controller-manager kubectl
#                                      kubelet kube-scheduler kube-proxy (node.sh)
#                                      etcd helm nats-server kafka
#                                      coredns (cluster DNS, node.sh dns)
#                                      local-path-provisioner (PersistentVolumes, node.sh storage)
#                                      kube-router (NetworkPolicy enforcer, node.sh)
#                                      nats (natscli) pika (AMQP client venv)
#                                      kafka-mirror (MirrorMaker 2) plot (matplotlib venv)
#                                      promtool (Debian package), prometheus (Go modules,
#                                      with Kubernetes discovery), prometheus-operator (Go
#                                      modules; its CRDs linked as .bin/prometheus-operator-crds)
#                                      cert-manager (Go modules; CRDs as .bin/cert-manager-crds)
#                                      node-runtime (containerd, runc, CNI plugins, ipset, buildah:
#                                      Debian packages, for node.sh)
#                                      runtime-debs (Debian packages of the images' base)
#                                      rabbitmq-debs, mosquitto-debs (Debian 13 packages of
#                                      those node images)
#                                      registry (CNCF distribution, for registry.sh)
#                                      lint tools: shellcheck (Debian package) and cargo-deny
#
# Cache: $OMS_CACHE (default ~/.cache/oms). A second run finds every tool there and only relinks.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OMS_CACHE=${OMS_CACHE:-$HOME/.cache/oms}
BIN=$ROOT/.bin

# shellcheck source-path=SCRIPTDIR source=versions.env
source "$ROOT/e2e/harness/versions.env"   # etcd: keep e2e/tools/etcd/go.mod in step
# Test clients only (broker.sh smoke).

mkdir -p "$BIN" "$OMS_CACHE/tools"

log() { printf 'tools: %s\n' "$*" >&2; }

# link <cached file> <name in .bin>
link() { ln -sfn "$1" "$BIN/$2"; }

# go_build <out> <module dir> <go build args...>: builds into a temporary name and moves it into
# place, so that an interrupted build never leaves a half-written binary in the cache. At the
# lowest CPU priority: a cold Kubernetes build takes both cores for many minutes, and tests may
# be running beside it.
go_build() {
	local out=$1 dir=$2
	shift 2
	mkdir -p "$(dirname "$out")"
	(cd "$dir" && CGO_ENABLED=0 nice -n 19 go build -trimpath -o "$out.partial" "$@")
	mv "$out.partial" "$out"
}

kube_ldflags() {
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	local flags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	echo "$flags"
}

tool_kube() {
	local name=$1 out=$OMS_CACHE/tools/kubernetes-$KUBE_VERSION/$1
	if [[ ! -x $out ]]; then
		log "building $name $KUBE_VERSION from Go modules (cold: minutes)"
		go_build "$out" "$ROOT/e2e/tools/kube" -ldflags "$(kube_ldflags)" "k8s.io/kubernetes/cmd/$name"
	fi
	link "$out" "$name"
}

tool_etcd() {
	local out=$OMS_CACHE/tools/etcd-$ETCD_VERSION/etcd
	if [[ ! -x $out ]]; then
		log "building etcd $ETCD_VERSION from Go modules"
		go_build "$out" "$ROOT/e2e/tools/etcd" -ldflags "-s -w" .
	fi
	link "$out" etcd
}

# CoreDNS with only the plugins cluster DNS needs: a main of our own (e2e/tools/coredns) over
# CoreDNS's server, pinned there; keyed by its go.mod and main.go, so a change rebuilds it.
tool_coredns() {
	local key out
	key=$(cat "$ROOT/e2e/tools/coredns/go.mod" "$ROOT/e2e/tools/coredns/main.go" | sha256sum | cut -c1-12)
	out=$OMS_CACHE/tools/coredns-$COREDNS_VERSION-$key/coredns
	if [[ ! -x $out ]]; then
		log "building CoreDNS $COREDNS_VERSION from Go modules"
		go_build "$out" "$ROOT/e2e/tools/coredns" -ldflags "-s -w" .
	fi
	link "$out" coredns
}

# rancher's local-path-provisioner (node.sh storage), its own main package from Go modules
# (e2e/tools/local-path-provisioner's go.mod names it as a tool).
tool_local_path_provisioner() {
	local key out
	key=$(sha256sum "$ROOT/e2e/tools/local-path-provisioner/go.mod" | cut -c1-12)
	out=$OMS_CACHE/tools/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION-$key/local-path-provisioner
	if [[ ! -x $out ]]; then
		log "building local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION from Go modules"
		go_build "$out" "$ROOT/e2e/tools/local-path-provisioner" -ldflags \
			"-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION" github.com/rancher/local-path-provisioner
	fi
	link "$out" local-path-provisioner
}

tool_helm() {
	local out=$OMS_CACHE/tools/helm-$HELM_VERSION/helm
	if [[ ! -x $out ]]; then
		log "building helm $HELM_VERSION from Go modules"
		local gobin
		gobin=$(mktemp -d)
		CGO_ENABLED=0 GOBIN=$gobin go install -trimpath \
			-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
			"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
		mkdir -p "$(dirname "$out")"
		mv "$gobin/helm" "$out"
		rmdir "$gobin"
	fi
	link "$out" helm
}

tool_nats() {
	local out=$OMS_CACHE/tools/nats-server-$NATS_VERSION/nats-server
	if [[ ! -x $out ]]; then
		log "building nats-server $NATS_VERSION from Go modules"
		local gobin
		gobin=$(mktemp -d)
		CGO_ENABLED=0 GOBIN=$gobin go install -trimpath -ldflags "-s -w" \
			"github.com/nats-io/nats-server/v2@$NATS_VERSION"
		mkdir -p "$(dirname "$out")"
		mv "$gobin/nats-server" "$out"
		rmdir "$gobin"
	fi
	link "$out" nats-server
}

# natscli: the NATS client used by broker.sh smoke (publish/subscribe, JetStream admin).
tool_natscli() {
	local out=$OMS_CACHE/tools/natscli-$NATSCLI_VERSION/nats
	if [[ ! -x $out ]]; then
		log "building natscli $NATSCLI_VERSION from Go modules"
		local gobin
		gobin=$(mktemp -d)
		CGO_ENABLED=0 GOBIN=$gobin go install -trimpath -ldflags "-s -w" \
			"github.com/nats-io/natscli/nats@$NATSCLI_VERSION"
		mkdir -p "$(dirname "$out")"
		mv "$gobin/nats" "$out"
		rmdir "$gobin"
	fi
	link "$out" nats
}

# pika: an AMQP 0-9-1 client in its own venv, linked as .bin/amqp-venv (run .bin/amqp-venv/bin/python).
# Keyed by the Python version too: a venv only works with the interpreter that made it.
tool_pika() {
	local py dir
	py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	dir=$OMS_CACHE/tools/pika-$PIKA_VERSION-py$py
	if [[ ! -f $dir/complete ]]; then
		log "installing pika $PIKA_VERSION from PyPI"
		rm -rf "$dir"
		python3 -m venv "$dir"
		"$dir/bin/pip" install -q --disable-pip-version-check "pika==$PIKA_VERSION"
		touch "$dir/complete"
	fi
	link "$dir" amqp-venv
}

# toxiproxy: a real TCP fault proxy (cuts, latency, resets) for the bridge's fault tests.
tool_toxiproxy() {
	local dir=$OMS_CACHE/tools/toxiproxy-$TOXIPROXY_VERSION
	if [[ ! -x $dir/toxiproxy-server || ! -x $dir/toxiproxy-cli ]]; then
		log "building toxiproxy $TOXIPROXY_VERSION from Go modules"
		local gobin
		gobin=$(mktemp -d)
		CGO_ENABLED=0 GOBIN=$gobin go install -trimpath -ldflags "-s -w" \
			"github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
			"github.com/Shopify/toxiproxy/v2/cmd/cli@$TOXIPROXY_VERSION"
		mkdir -p "$dir"
		mv "$gobin/server" "$dir/toxiproxy-server"
		mv "$gobin/cli" "$dir/toxiproxy-cli"
		rmdir "$gobin"
	fi
	link "$dir/toxiproxy-server" toxiproxy-server
	link "$dir/toxiproxy-cli" toxiproxy-cli
}

# maven_classpath <dir> <what> <pom template under e2e/tools> <placeholder> <version>: the jars of
# the template's dependencies (its placeholder set to the version) and theirs from Maven Central,
# resolved once into <dir>/libs.
maven_classpath() {
	local dir=$1 what=$2 template=$3 placeholder=$4 version=$5
	[[ ! -f $dir/complete ]] || return 0
	log "resolving $what $version from Maven Central"
	rm -rf "$dir"
	mkdir -p "$dir/libs"
	sed "s/@$placeholder@/$version/g" "$ROOT/e2e/tools/$template/pom.xml" >"$dir/pom.xml"
	mvn -q -B -f "$dir/pom.xml" dependency:copy-dependencies -DoutputDirectory="$dir/libs" -DincludeScope=runtime
	touch "$dir/complete"
}

# Kafka: the broker's jars and their dependencies from Maven Central, as a classpath directory.
tool_kafka() {
	# KAFKA_LIBS_VERSION=<older>: that version's jars (an image of it for a cluster to upgrade
	# from). Every version is linked as kafka-libs-<version>; the pinned one also as kafka-libs.
	local version=${KAFKA_LIBS_VERSION:-$KAFKA_VERSION}
	local dir=$OMS_CACHE/tools/kafka-$version
	maven_classpath "$dir" Kafka kafka KAFKA_VERSION "$version"
	ln -sfn "$dir" "$BIN/kafka-libs-$version"
	[[ $version != "$KAFKA_VERSION" ]] || ln -sfn "$dir" "$BIN/kafka-libs"
}

# RocketMQ: name server, broker, proxy and admin tool jars from Maven Central, one classpath
# directory, linked as .bin/rocketmq-libs; and the tests' client (e2e/tools/rocketmq) compiled
# against them, keyed by its source, linked as .bin/rocketmq-client: run from source, each of its
# runs compiled it again, a second of CPU (half of a run).
tool_rocketmq() {
	local dir=$OMS_CACHE/tools/rocketmq-$ROCKETMQ_VERSION key client
	maven_classpath "$dir" RocketMQ rocketmq ROCKETMQ_VERSION "$ROCKETMQ_VERSION"
	ln -sfn "$dir" "$BIN/rocketmq-libs"
	command -v javac >/dev/null || { log "javac not found (the tests' RocketMQ client is compiled with it)"; exit 1; }
	# Keyed by the compiler too: classes of a newer javac do not load in an older java.
	key=$( (javac -version 2>&1 && cat "$ROOT/e2e/tools/rocketmq/RocketmqClient.java") | sha256sum | cut -c1-12)
	client=$OMS_CACHE/tools/rocketmq-client-$ROCKETMQ_VERSION-$key
	if [[ ! -f $client/RocketmqClient.class ]]; then
		rm -rf "$client.tmp"
		javac -nowarn -cp "$dir/libs/*" -d "$client.tmp" "$ROOT/e2e/tools/rocketmq/RocketmqClient.java"
		mv -T "$client.tmp" "$client"
	fi
	ln -sfn "$client" "$BIN/rocketmq-client"
}

# MirrorMaker 2 (the peer of the bridge benchmark) on a classpath of its own, same Kafka version.
tool_kafka_mirror() {
	local dir=$OMS_CACHE/tools/kafka-mirror-$KAFKA_VERSION
	maven_classpath "$dir" "Kafka MirrorMaker 2" kafka-mirror KAFKA_VERSION "$KAFKA_VERSION"
	ln -sfn "$dir" "$BIN/kafka-mirror-libs"
}

# matplotlib for the benchmark plot, in a venv keyed by the pinned requirements and the Python
# version (a venv only works with the interpreter that made it); linked as .bin/plot-venv.
tool_plot() {
	local req=$ROOT/e2e/bench/requirements.txt py key dir
	py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	key=$(sha256sum "$req" | cut -c1-12)
	dir=$OMS_CACHE/tools/plot-$key-py$py
	if [[ ! -f $dir/complete ]]; then
		log "installing matplotlib from PyPI (pinned in e2e/bench/requirements.txt)"
		rm -rf "$dir"
		python3 -m venv "$dir"
		"$dir/bin/pip" install -q --disable-pip-version-check --no-deps -r "$req"
		touch "$dir/complete"
	fi
	link "$dir" plot-venv
}

# deb_install <what> <boot service> <package=version>...: installs pinned Debian packages unless
# dpkg already has exactly those versions. Maintainer scripts may not start services, and the
# package's boot service is disabled: we run the programs ourselves, never as system services.
# The apt output goes to $OMS_CACHE/tools/apt-<what>.log.
deb_install() {
	local what=$1 service=$2
	shift 2
	local pin missing=()
	for pin in "$@"; do
		[[ $(dpkg-query -W -f='${Version}' "${pin%%=*}" 2>/dev/null || true) == "${pin#*=}" ]] || missing+=("$pin")
	done
	((${#missing[@]})) || return 0
	# One install at a time on the machine (broker.sh's apt_ensure takes the same lock): dpkg
	# refuses a second one at once.
	mkdir -p "$OMS_CACHE/tools"
	(
		flock -w 900 7 || {
			log "timed out waiting for another apt-get install ($OMS_CACHE/apt.lock)"
			exit 1
		}
		deb_install_locked "$what" "$service" "${missing[@]}"
	) 7>"$OMS_CACHE/apt.lock" || exit 1
}

# deb_install_locked <what> <boot service> <package=version>...: deb_install's work, under its lock.
deb_install_locked() {
	local what=$1 service=$2
	shift 2
	local missing=("$@")
	log "installing Debian packages ${missing[*]}"
	local sudo=()
	if [[ $(id -u) != 0 ]]; then
		if ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
			log "need root (or passwordless sudo) to apt-get install ${missing[*]}"
			exit 1
		fi
		sudo=(sudo -n)
	fi
	local guard="" rc=0 aptlog=$OMS_CACHE/tools/apt-$what.log
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		# policy-rc.d exit 101 = "do not start services"; removed again below.
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
		"${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
		guard=/usr/sbin/policy-rc.d
	fi
	local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q
		--no-install-recommends --allow-downgrades "${missing[@]}")
	{ "${install[@]}" || { "${sudo[@]}" apt-get update -q && "${install[@]}"; }; } >"$aptlog" 2>&1 7>&- || rc=$?
	[[ -z $guard ]] || "${sudo[@]}" rm -f "$guard"
	if ((rc != 0)); then
		tail -n 20 "$aptlog" >&2
		log "apt-get install ${missing[*]} failed (log: $aptlog)"
		exit 1
	fi
	if [[ -d /run/systemd/system ]]; then
		"${sudo[@]}" systemctl disable --now "$service.service" >/dev/null 2>&1 || true
	elif [[ -e /etc/init.d/$service ]]; then
		"${sudo[@]}" update-rc.d "$service" disable >/dev/null 2>&1 || true
	fi
}

# promtool (rule checks and rule unit tests) from Debian's package at the pinned version,
# installed on first use. apt puts it in /usr/bin, so there is nothing to cache: .bin/ links to
# the system file. (Debian's prometheus server is built without Kubernetes discovery.)
tool_promtool() {
	deb_install prometheus prometheus "prometheus=$PROMETHEUS_DEB_VERSION"
	link /usr/bin/promtool promtool
}

# The Prometheus server from Go modules (e2e/tools/prometheus pins it), with static, file and
# Kubernetes discovery only (Prometheus's remove_all_sd and enable_kubernetes_sd build tags: the
# cloud providers' SDKs would triple the build) and its UI assets left out (the API is all the
# tests use). Keyed by its go.mod, so a change there rebuilds it.
tool_prometheus() {
	local key out
	key=$(sha256sum <"$ROOT/e2e/tools/prometheus/go.mod" | cut -c1-12)
	out=$OMS_CACHE/tools/prometheus-$PROMETHEUS_VERSION-$key/prometheus
	if [[ ! -x $out ]]; then
		log "building Prometheus $PROMETHEUS_VERSION from Go modules (cold: minutes)"
		go_build "$out" "$ROOT/e2e/tools/prometheus" -tags remove_all_sd,enable_kubernetes_sd \
			-ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" \
			github.com/prometheus/prometheus/cmd/prometheus
	fi
	link "$out" prometheus
}

# The Prometheus Operator from Go modules (e2e/tools/prometheus-operator pins it), for e2e-nodes.sh
# (monitoring.sh): it turns the chart's ServiceMonitor, PodMonitor and PrometheusRule into a
# Prometheus configuration. Its CRDs come from the same module (example/prometheus-operator-crd),
# copied beside the binary. Keyed by its go.mod, so a change there rebuilds it.
tool_prometheus_operator() {
	local key dir module
	key=$(sha256sum <"$ROOT/e2e/tools/prometheus-operator/go.mod" | cut -c1-12)
	dir=$OMS_CACHE/tools/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION-$key
	if [[ ! -x $dir/prometheus-operator || ! -d $dir/crds ]]; then
		log "building the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION from Go modules (cold: minutes)"
		go_build "$dir/prometheus-operator" "$ROOT/e2e/tools/prometheus-operator" \
			-ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION#v}" \
			github.com/prometheus-operator/prometheus-operator/cmd/operator
		module=$(cd "$ROOT/e2e/tools/prometheus-operator" &&
			go list -m -f '{{.Dir}}' github.com/prometheus-operator/prometheus-operator)
		rm -rf "$dir/crds.partial"
		cp -r "$module/example/prometheus-operator-crd" "$dir/crds.partial"
		chmod -R u+w "$dir/crds.partial"
		mv "$dir/crds.partial" "$dir/crds"
	fi
	link "$dir/prometheus-operator" prometheus-operator
	link "$dir/crds" prometheus-operator-crds
}

# cert-manager's controller for the PKI tests (pki.issuer), from Go modules: the upstream binary's
# module is not served by the proxy, so e2e/tools/cert-manager wires the root module's Certificate,
# CertificateRequest (CA) and issuer controllers itself. Its CRDs come from the same module.
tool_cert_manager() {
	local dir key module
	key=$(cat "$ROOT/e2e/tools/cert-manager/go.mod" "$ROOT/e2e/tools/cert-manager/main.go" | sha256sum | cut -c1-12)
	dir=$OMS_CACHE/tools/cert-manager-$CERT_MANAGER_VERSION-$key
	if [[ ! -x $dir/cert-manager || ! -d $dir/crds ]]; then
		log "building the cert-manager controller $CERT_MANAGER_VERSION from Go modules (cold: minutes)"
		go_build "$dir/cert-manager" "$ROOT/e2e/tools/cert-manager" -ldflags "-s -w" .
		module=$(cd "$ROOT/e2e/tools/cert-manager" && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
		rm -rf "$dir/crds.partial"
		cp -r "$module/deploy/crds" "$dir/crds.partial"
		chmod -R u+w "$dir/crds.partial"
		rm -rf "$dir/crds"
		mv "$dir/crds.partial" "$dir/crds"
	fi
	link "$dir/cert-manager" cert-manager
	link "$dir/crds" cert-manager-crds
}

# The shell linter for `make lint`, from Debian's package at the pinned version (into /usr/bin).
tool_shellcheck() {
	deb_install shellcheck none "shellcheck=$SHELLCHECK_DEB_VERSION"
	link /usr/bin/shellcheck shellcheck
}

# cargo-deny for `make lint` (licences, bans, sources), built from crates.io with its own
# lock file into the cache, keyed by version.
tool_cargo_deny() {
	local dir=$OMS_CACHE/tools/cargo-deny-$CARGO_DENY_VERSION
	if [[ ! -x $dir/bin/cargo-deny ]]; then
		log "building cargo-deny $CARGO_DENY_VERSION from crates.io (cold: minutes)"
		CARGO_TARGET_DIR=$OMS_CACHE/tools/cargo-deny-build nice -n 19 \
			cargo install --locked --quiet --root "$dir.partial" --version "$CARGO_DENY_VERSION" cargo-deny
		rm -rf "$dir" "$OMS_CACHE/tools/cargo-deny-build"
		mv "$dir.partial" "$dir"
	fi
	link "$dir/bin/cargo-deny" cargo-deny
}

# What a real node runs (node.sh): containerd with runc, the CNI plugins (in /usr/lib/cni), and
# buildah to pack the node's images. Debian packages at pinned versions, linked into .bin/.
tool_node_runtime() {
	deb_install node-runtime containerd "containerd=$CONTAINERD_DEB_VERSION" \
		"runc=$RUNC_DEB_VERSION" "containernetworking-plugins=$CNI_PLUGINS_DEB_VERSION" \
		"iptables=$IPTABLES_DEB_VERSION" "ipset=$IPSET_DEB_VERSION" "buildah=$BUILDAH_DEB_VERSION" \
		"socat=$SOCAT_DEB_VERSION"
	local tool
	for tool in containerd ctr runc buildah socat; do
		link "/usr/bin/$tool" "$tool"
	done
}

# The test nodes' NetworkPolicy enforcer (node.sh): kube-router's policy controller alone
# (e2e/tools/kube-router), keyed by its go.mod and main.go. It runs ipset and iptables (node-runtime).
tool_kube_router() {
	local key out
	key=$(cat "$ROOT/e2e/tools/kube-router/go.mod" "$ROOT/e2e/tools/kube-router/main.go" | sha256sum | cut -c1-12)
	out=$OMS_CACHE/tools/kube-router-$KUBE_ROUTER_VERSION-$key/kube-router
	if [[ ! -x $out ]]; then
		log "building kube-router $KUBE_ROUTER_VERSION's network policy controller from Go modules"
		go_build "$out" "$ROOT/e2e/tools/kube-router" -ldflags "-s -w" .
	fi
	link "$out" kube-router
}

# The test registry (registry.sh): CNCF distribution from Go modules with the filesystem driver
# only (e2e/tools/registry), keyed by its go.mod and main.go.
tool_registry() {
	local key out
	key=$(cat "$ROOT/e2e/tools/registry/go.mod" "$ROOT/e2e/tools/registry/main.go" | sha256sum | cut -c1-12)
	out=$OMS_CACHE/tools/registry-$REGISTRY_VERSION-$key/registry
	if [[ ! -x $out ]]; then
		log "building the distribution registry $REGISTRY_VERSION from Go modules"
		go_build "$out" "$ROOT/e2e/tools/registry" -ldflags "-s -w" .
	fi
	link "$out" registry
}

# apt_download <dir> <name> <apt-get command>... -- <package=version>...: the pinned packages into
# <dir>, marked complete. apt's lists may be missing or older than the pins on a fresh machine: a
# failed download updates them and tries again. The log is apt-<name>.log in the tool cache.
apt_download() {
	local dir=$1 name=$2 apt=() aptlog
	shift 2
	while [[ $1 != -- ]]; do
		apt+=("$1")
		shift
	done
	shift
	aptlog=$OMS_CACHE/tools/apt-$name.log
	rm -rf "$dir" && mkdir -p "$dir"
	(cd "$dir" && { "${apt[@]}" download "$@" || { "${apt[@]}" update && "${apt[@]}" download "$@"; }; }) >"$aptlog" 2>&1 || {
		tail -n 20 "$aptlog" >&2
		log "apt-get download of $name ($*) failed (log: $aptlog)"
		exit 1
	}
	touch "$dir/complete"
}

# The Debian packages of the base our images run on (images.sh runtime-base), downloaded at
# pinned versions into the cache, never installed on the machine: glibc, libgcc, OpenSSL, the CA
# certificates and netbase, as in the distroless cc-debian12 image the Containerfiles default to.
tool_runtime_debs() {
	local pins=("libc6=$LIBC6_DEB_VERSION" "libgcc-s1=$LIBGCC_S1_DEB_VERSION" "libssl3=$LIBSSL3_DEB_VERSION"
		"ca-certificates=$CA_CERTIFICATES_DEB_VERSION" "netbase=$NETBASE_DEB_VERSION")
	local key dir
	key=$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)
	dir=$OMS_CACHE/tools/runtime-debs-$key
	if [[ ! -e $dir/complete ]]; then
		log "downloading Debian packages ${pins[*]}"
		apt_download "$dir" runtime-debs apt-get -q -- "${pins[@]}"
	fi
	link "$dir" runtime-debs
}

# trixie_debs <image>: the packages of a node image (<image>-debs.list) from Debian 13, whose
# RabbitMQ (4.x) and Mosquitto (2.0.21) are current where this machine's Debian 12 has 3.10 and
# 2.0.11: apt with a state of its own (sources, lists, cache) that names trixie only, checked
# against the machine's Debian archive keyring. Linked as .bin/<image>-debs.
tool_trixie_debs() {
	local image=$1 list pins key dir apt_dir
	list=$ROOT/e2e/harness/$image-debs.list
	mapfile -t pins < <(grep -v '^#' "$list")
	key=$(sha256sum "$list" | cut -c1-12)
	dir=$OMS_CACHE/tools/$image-debs-$key
	if [[ ! -e $dir/complete ]]; then
		# One apt run at a time on the shared trixie state (the tools' own locks are per tool).
		exec 7>"$OMS_CACHE/tools/.lock-apt-trixie"
		flock -w 1800 7 || {
			log "timed out waiting for another apt run on $OMS_CACHE/tools/apt-trixie"
			exit 1
		}
		log "downloading ${#pins[@]} Debian 13 packages of the $image image"
		apt_dir=$OMS_CACHE/tools/apt-trixie
		mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
			>"$apt_dir/sources.list"
		apt_download "$dir" "$image-debs" apt-get -q -o "Dir::Etc::SourceList=$apt_dir/sources.list" \
			-o Dir::Etc::SourceParts=/nonexistent -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" \
			-o Dir::State::status=/dev/null -o Debug::NoLocking=1 -- "${pins[@]}"
		exec 7>&-
	fi
	link "$dir" "$image-debs"
}

for tool in "$@"; do
	# One install of a tool at a time: on a cold cache two test lanes ask for the same broker at
	# once, and a second install would delete the first one's directory under it.
	exec 6>"$OMS_CACHE/tools/.lock-$tool"
	flock -w 1800 6 || {
		log "timed out waiting for another install of $tool ($OMS_CACHE/tools/.lock-$tool)"
		exit 1
	}
	case $tool in
	kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl) tool_kube "$tool" ;;
	etcd) tool_etcd ;;
	coredns) tool_coredns ;;
	local-path-provisioner) tool_local_path_provisioner ;;
	helm) tool_helm ;;
	nats-server) tool_nats ;;
	nats) tool_natscli ;;
	pika) tool_pika ;;
	kafka) tool_kafka ;;
	kafka-mirror) tool_kafka_mirror ;;
	rocketmq) tool_rocketmq ;;
	plot) tool_plot ;;
	toxiproxy) tool_toxiproxy ;;
	promtool) tool_promtool ;;
	prometheus) tool_prometheus ;;
	prometheus-operator) tool_prometheus_operator ;;
	cert-manager) tool_cert_manager ;;
	node-runtime) tool_node_runtime ;;
	runtime-debs) tool_runtime_debs ;;
	rabbitmq-debs | mosquitto-debs) tool_trixie_debs "${tool%-debs}" ;;
	registry) tool_registry ;;
	kube-router) tool_kube_router ;;
	shellcheck) tool_shellcheck ;;
	cargo-deny) tool_cargo_deny ;;
	*)
		echo "tools: unknown tool $tool" >&2
		exit 2
		;;
	esac
	exec 6>&-
done
