#!/usr/bin/env bash
# A real Kubernetes node for a control plane from cluster.sh: containerd (CRI, runc, a CNI bridge),
# a kubelet, kube-proxy (iptables) and a NetworkPolicy enforcer in a network and a mount namespace
# of their own, plus the cluster's kube-scheduler on the host. One node per cluster, named <cluster>-node. Needs root.
#
#   e2e/harness/node.sh up <cluster>      start (idempotent) and wait until the node is Ready
#   e2e/harness/node.sh down <cluster>    stop what it started, remove the node, its network and state
#   e2e/harness/node.sh status <cluster>  print whether the node is Ready
#   e2e/harness/node.sh smoke <cluster>   `up`, then a pod from a locally built image, a Service to it
#                                         and the API from inside the pod; prints the timings
#   e2e/harness/node.sh dns <cluster>     `up`, then cluster DNS: CoreDNS as a pod, answering at the
#                                         kubelet's clusterDNS address (Service kube-system/kube-dns)
#   e2e/harness/node.sh storage <cluster> `up`, then dynamic PersistentVolumes: rancher's
#                                         local-path-provisioner as a pod, StorageClass local-path
#                                         (the default), volumes in the node's state directory
#   e2e/harness/node.sh load <cluster> <archive>...
#                                         imports OCI archives (e2e/harness/images.sh build) into
#                                         the node's containerd, under the names they carry
#   e2e/harness/node.sh link <cluster> <peer>
#                                         joins this node and the peer cluster's node (both up) by
#                                         a private "WAN" of their own, see Network; idempotent
#   e2e/harness/node.sh unlink <cluster> <peer>
#                                         removes that link again (`down` of either node does too)
#
# Network: the node's network namespace (oms-<checkout hash>-<cluster>) is joined to the host by a
# veth pair in 10.213.<n>.0/24 (host end .1, node .2); its pods get 10.214.<n>.0/24 on a bridge
# inside the namespace. <n> is picked per cluster at `up` and recorded in node/net.env. The
# namespace has no default route and the host does not forward, so nothing leaves the machine.
# `link` adds a veth pair straight between two node namespaces, never through the host: node <n>
# is $WAN_NET_PREFIX.<n>.<m> on its end and reaches node <m> at $WAN_NET_PREFIX.<m>.<n> (point-to-point
# addresses, so a node may have several links), and on each end the node's pods are masqueraded to
# that address: the peer's kube-proxy answers a NodePort to the address a connection came from,
# and the peer has no route to our pods. Nothing else crosses, and the host still forwards nothing.
# The API server listens on 127.0.0.1 only: a socat forwarder on the host end of the veth
# (10.213.<n>.1:6443) carries the node's connections to it, and the kubelet checks the server
# certificate for the name "kubernetes", which cluster.sh has always put in it. So a node joins a
# cluster that was started before node.sh existed, without restarting it; on such a cluster only
# `kubectl logs`/`exec` do not work (they need cluster.sh's kubelet client certificate).
# The API server's Service (kubernetes, 10.96.0.1:443) gets an EndpointSlice to the forwarder
# (cluster.sh runs the API server without an endpoint reconciler), so pods reach the API the usual
# way through kube-proxy; 10.96.0.1 is in the server certificate.
#
# NetworkPolicies are enforced: kube-router's policy controller alone (e2e/tools/kube-router, from
# Go modules) keeps iptables rules and ipsets in the node's network namespace, refusing (REJECT)
# what the policies selecting a pod do not admit. Connections from the node itself (kubelet
# probes) are always admitted, as kube-router does everywhere.
#
# Images: a static pause program (the pods' sandbox), a static "sleeper" workload and "knock", a
# TCP connection check (e2e/tools/node-images/*.c) are packed with buildah into OCI archives, cached
# in $OMS_CACHE/images, and imported into the node's containerd as $PAUSE_IMAGE, $SLEEPER_IMAGE and
# $KNOCK_IMAGE (below); pods use them with imagePullPolicy: Never. Images named localhost:$REGISTRY_PORT/... are
# pulled from the machine's test registry (registry.sh), as from any registry: containerd's
# hosts.toml for that name sends it, in plain HTTP, to a socat forwarder on the host end of the
# veth ($HOST_IP:$REGISTRY_PORT), which carries the connection to the registry on 127.0.0.1.
#
# State: e2e/.state/<cluster>/node/ (net.env, config/, pki/, containerd/, kubelet/, pod-logs/,
# logs/*.log, pids/). Every process of the node runs in the cgroup oms-<checkout hash>-<cluster>,
# which is how `down` finds them all (shims and pods included), even without the state directory.
# Cluster DNS (`dns`): CoreDNS built from Go modules (e2e/tools/coredns, image from images.sh) runs
# as the Deployment kube-system/coredns behind the Service kube-dns at $CLUSTER_DNS, the kubelet's
# clusterDNS; it answers for cluster.local only (nothing leaves the machine). `down` removes it.
# Storage (`storage`): local-path-provisioner (e2e/tools/local-path-provisioner, image from
# images.sh) runs as the Deployment local-path-storage/local-path-provisioner and serves the default
# StorageClass local-path (WaitForFirstConsumer, reclaim Delete): for each claim scheduled to the
# node it runs a helper pod that makes the volume's directory under $STATE/volumes and creates a
# hostPath PersistentVolume bound to this node; a released volume's directory is removed the same
# way. Upstream's helper is a busybox shell script; ours is volume-dir, in the provisioner's image.
# OMS_NODE_DEBUG=1 at `up` makes containerd log at debug level, the kubelet and kube-proxy at -v=4.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
OMS_CACHE=${OMS_CACHE:-$HOME/.cache/oms}
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$ROOT/e2e/harness/versions.env"
READY_DEADLINE_SECONDS=${READY_DEADLINE_SECONDS:-120}
PAUSE_IMAGE=localhost/oms-e2e/pause:1
SLEEPER_IMAGE=localhost/oms-e2e/sleeper:1
KNOCK_IMAGE=localhost/oms-e2e/knock:1
NODE_NET_PREFIX=10.213 # 10.213.<n>.0/24: the host end of the veth is .1, the node .2
POD_NET_PREFIX=10.214  # 10.214.<n>.0/24: the node's pods
WAN_NET_PREFIX=10.215  # `link`: node <n> is 10.215.<n>.<m> towards node <m>, which is 10.215.<m>.<n>
API_FORWARD_PORT=6443
SERVICE_CIDR=10.96.0.0/16 # cluster.sh's service range
CLUSTER_DNS=10.96.0.10    # the kubelet's clusterDNS; CoreDNS answers there after `dns`
# The host-wide sysctls the kubelet insists on (protectKernelDefaults): with it off, the kubelet
# would rewrite them for the whole machine (kernel.panic, vm.overcommit_memory, ...). Instead
# the node's private mount namespace gets files with these values bound over /proc/sys.
KUBELET_SYSCTLS=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
	kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)
# CoreDNS's configuration (`dns`). Cluster names come straight from the API server's watch,
# without a cache in front, so that a StatefulSet's peers find each other's new pods at once.
# Every other name is NXDOMAIN (no upstream: nothing leaves the machine), which resolvers take
# as final, unlike the SERVFAIL of a name no plugin serves.
COREFILE='cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
    }
    loadbalance
}
.:53 {
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}'

usage() {
	echo "usage: $0 up|down|status|smoke|dns|storage <cluster name>" >&2
	echo "       $0 load <cluster name> <OCI archive>..." >&2
	echo "       $0 link|unlink <cluster name> <peer cluster name>" >&2
	exit 2
}

[[ $# -eq 2 || ($# -gt 2 && $1 == load) || ($# -eq 3 && $1 =~ ^(un)?link$) ]] || usage
action=$1 cluster=$2
shift 2
[[ $cluster =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || {
	echo "node: cluster name must be a DNS label (e.g. cloud-a), got '$cluster'" >&2
	exit 2
}
CLUSTER_STATE=$ROOT/e2e/.state/$cluster
STATE=$CLUSTER_STATE/node
# Per checkout (like cluster.sh's etcd data), so that two clones never share a namespace or cgroup.
ID=oms-$(printf %s "$ROOT" | md5sum | cut -c1-8)-$cluster
NODE_NAME=$cluster-node
API_ENDPOINT_SLICE=kubernetes-$NODE_NAME
# Labels the cluster DNS objects (`dns`); `down` deletes them by it.
DNS_LABEL=app.kubernetes.io/part-of=oms-e2e-cluster-dns
# Labels the storage objects (`storage`), the same way.
STORAGE_LABEL=app.kubernetes.io/part-of=oms-e2e-storage
STORAGE_NAMESPACE=local-path-storage
SOCKET=$STATE/containerd/containerd.sock

log() { printf 'node %s: %s\n' "$cluster" "$*" >&2; }
die() {
	log "$*"
	exit 1
}

kubectl() { "$BIN/kubectl" --kubeconfig "$CLUSTER_STATE/kubeconfig" --request-timeout=30s "$@"; }
ctr() { "$BIN/ctr" --address "$SOCKET" --namespace k8s.io "$@"; }

cluster_ready() { [[ -f $CLUSTER_STATE/kubeconfig ]] && kubectl get --raw /readyz >/dev/null 2>&1; }

# A process that died is a zombie until PID 1 reaps it, and kill -0 still finds a zombie.
pid_alive() { [[ -f $STATE/pids/$1 && $(ps -o stat= -p "$(cat "$STATE/pids/$1")") == [^Z]* ]]; }

node_ready() {
	[[ $(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
containerd_ready() { ctr version >/dev/null 2>&1; }
in_node_network() { nsenter --net="/run/netns/$ID" "$@"; }
kube_proxy_healthy() { in_node_network curl -fs --max-time 5 http://127.0.0.1:10256/healthz >/dev/null 2>&1; }
# kube-router's top chain, made when its controller starts, after its first list of the policies.
policies_enforced() { in_node_network iptables -w -S KUBE-ROUTER-FORWARD >/dev/null 2>&1; }
scheduler_healthy() { curl -fsk --max-time 5 "https://127.0.0.1:$SCHEDULER_PORT/healthz" >/dev/null 2>&1; }

# wait_until <check> <component>...: polls <check> until it passes; fails early, with the log,
# when one of the components has exited, and after READY_DEADLINE_SECONDS.
wait_until() {
	local check=$1
	shift
	local deadline=$((SECONDS + READY_DEADLINE_SECONDS))
	until "$check"; do
		for component in "$@"; do
			pid_alive "$component" || {
				log "$component exited; last lines of $STATE/logs/$component.log:"
				tail -n 20 "$STATE/logs/$component.log" >&2
				exit 1
			}
		done
		((SECONDS < deadline)) || die "$check not passing after ${READY_DEADLINE_SECONDS}s; logs in $STATE/logs/"
		sleep 0.5
	done
}

# The cgroup hierarchies the node's cgroup lives in: every v1 one, and the v2 one of a hybrid host.
cgroup_hierarchies() {
	local hierarchy
	for hierarchy in /sys/fs/cgroup/*/; do
		if [[ -f ${hierarchy}cgroup.procs ]]; then
			echo "${hierarchy%/}"
		fi
	done
}

# make_cgroup <path>: creates the cgroup in every hierarchy.
make_cgroup() {
	local hierarchy dir file
	for hierarchy in $(cgroup_hierarchies); do
		dir=$hierarchy/$1
		mkdir -p "$dir"
		# A new v1 cpuset starts with no CPUs and no memory nodes, and nothing can join it so.
		for file in cpuset.cpus cpuset.mems; do
			if [[ -f $dir/$file && -z $(cat "$dir/$file") ]]; then
				cat "$(dirname "$dir")/$file" >"$dir/$file"
			fi
		done
	done
}

# Starts a component in its own session and in the node's cgroup $ID/daemons: `down` stops it by
# its session, and finds it (and whatever it started: containerd's shims, the pods) by the cgroup.
start() {
	local component=$1
	shift
	local procs=() hierarchy
	for hierarchy in $(cgroup_hierarchies); do
		procs+=("$hierarchy/$ID/daemons/cgroup.procs")
	done
	# $1: how many cgroup.procs files follow; then the command.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'for procs in "${@:2:$1}"; do echo $$ >"$procs"; done; exec "${@:$(($1 + 2))}"' \
		"$component" "${#procs[@]}" "${procs[@]}" "$@" >"$STATE/logs/$component.log" 2>&1 </dev/null &
	echo $! >"$STATE/pids/$component"
}

# stop <component>...: SIGTERM to each one's session, all at once, then SIGKILL to what is left
# after a grace period of 5 s.
stop() {
	local component pids=() pid
	for component in "$@"; do
		[[ -f $STATE/pids/$component ]] || continue
		pid=$(cat "$STATE/pids/$component")
		rm -f "$STATE/pids/$component"
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || continue
		pids+=("$pid")
	done
	local alive
	for _ in $(seq 1 50); do
		alive=""
		for pid in "${pids[@]}"; do
			! kill -0 "$pid" 2>/dev/null || alive=yes
		done
		[[ -n $alive ]] || return 0
		sleep 0.1
	done
	for pid in "${pids[@]}"; do
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	done
}

# Kills every process left in the node's cgroup (containerd's shims, the pods' processes; the
# daemons when `stop` did not reach them). Frozen first, so that nothing forks meanwhile.
kill_node_processes() {
	local freezer=/sys/fs/cgroup/freezer/$ID pids
	[[ -d $freezer ]] || return 0
	for _ in $(seq 1 100); do
		pids=$(find "$freezer" -name cgroup.procs -exec cat {} +)
		[[ -n $pids ]] || return 0
		echo FROZEN >"$freezer/freezer.state"
		# shellcheck disable=SC2086 # one pid a word
		kill -KILL $pids 2>/dev/null || true
		echo THAWED >"$freezer/freezer.state"
		sleep 0.1
	done
	die "processes still in cgroup $ID after SIGKILL: $pids"
}

remove_cgroups() {
	local hierarchy left
	for _ in $(seq 1 50); do
		left=""
		for hierarchy in $(cgroup_hierarchies); do
			[[ -d $hierarchy/$ID ]] || continue
			# Deepest first; a cgroup whose last process just died can be busy for a moment.
			find "$hierarchy/$ID" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[[ ! -d $hierarchy/$ID ]] || left+=" $hierarchy/$ID"
		done
		[[ -n $left ]] || return 0
		sleep 0.1
	done
	log "could not remove cgroups:$left"
}

# Picks <n> for the node and pod networks and creates them: the network namespace $ID, a veth pair
# (host end omsn<n>), addresses, and the host's route to the pods. <n> starts from a hash of $ID,
# so that a cluster usually gets the same addresses again, and skips any 10.213.<n>.0/24 or
# 10.214.<n>.0/24 the host already uses. A machine-wide lock covers the choice until the address
# is on the interface, where other checkouts' node.sh see it.
make_network() {
	local lock used start n="" i
	exec {lock}>/run/lock/oms-node-network.lock
	flock "$lock"
	used=$(ip -4 -o addr show; ip -4 route show)
	start=$(($(printf %s "$ID" | cksum | cut -d' ' -f1) % 250))
	for i in $(seq 0 249); do
		n=$(((start + i) % 250 + 1))
		grep -qE "(^|[^0-9])(${NODE_NET_PREFIX//./\\.}|${POD_NET_PREFIX//./\\.})\.$n\.[0-9]" <<<"$used" || break
		n=""
	done
	[[ -n $n ]] || die "no free network in $NODE_NET_PREFIX.1-250.0/24"
	HOST_IF=omsn$n HOST_IP=$NODE_NET_PREFIX.$n.1 NODE_IP=$NODE_NET_PREFIX.$n.2 POD_CIDR=$POD_NET_PREFIX.$n.0/24
	# Written before anything exists, so that `down` can always undo what follows.
	cat >"$STATE/net.env" <<EOF
NETNS=$ID
HOST_IF=$HOST_IF
HOST_IP=$HOST_IP
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
EOF
	ip netns add "$ID"
	ip link add "$HOST_IF" type veth peer name eth0 netns "$ID"
	ip addr add "$HOST_IP/24" dev "$HOST_IF"
	ip link set "$HOST_IF" up
	ip -n "$ID" addr add "$NODE_IP/24" dev eth0
	ip -n "$ID" link set eth0 up
	ip -n "$ID" link set lo up
	# The host reaches pods directly (tests talk to brokers in pods); the pods answer through the node.
	ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF"
	# The node's own connections to Service IPs need a route before kube-proxy's DNAT applies (the
	# namespace has no default route). What no Service rule rewrote is refused right there, so
	# that it never reaches the host (which might forward it: this script does not rely on it not).
	ip -n "$ID" route add "$SERVICE_CIDR" via "$HOST_IP"
	in_node_network iptables -w -A OUTPUT -o eth0 -d "$SERVICE_CIDR" -j REJECT
	in_node_network iptables -w -A FORWARD -o eth0 -d "$SERVICE_CIDR" -j REJECT
	flock -u "$lock"
	exec {lock}>&-
}

# node_cert <file stem> <subject>: a client certificate signed by the cluster's CA. A random serial
# instead of -CAcreateserial: cluster.sh's pki/ stays untouched.
node_cert() {
	local pki=$STATE/pki ext
	ext=$(mktemp)
	printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth" >"$ext"
	openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
	openssl x509 -req -in "$pki/$1.csr" -CA "$CLUSTER_STATE/pki/ca.crt" -CAkey "$CLUSTER_STATE/pki/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
	rm -f "$ext" "$pki/$1.csr"
}

# write_kubeconfig <file> <server> <cert stem> [TLS server name]
write_kubeconfig() {
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: $cluster
    cluster:
      server: $2
      certificate-authority: $CLUSTER_STATE/pki/ca.crt${4:+
      tls-server-name: $4}
users:
  - name: $3
    user:
      client-certificate: $STATE/pki/$3.crt
      client-key: $STATE/pki/$3.key
contexts:
  - name: $cluster
    context: {cluster: $cluster, user: $3}
current-context: $cluster
EOF
}

# image_archive <name>: prints the cached OCI archive of e2e/tools/node-images/<name>.c, building
# it first when missing: a static binary as the image's only file and entrypoint. Keyed by the
# source and the compiler, so that a change rebuilds it.
image_archive() {
	local name=$1 src=$ROOT/e2e/tools/node-images/$1.c key archive
	key=$( (cat "$src"; gcc --version; "$BIN/buildah" --version) | sha256sum | cut -c1-12)
	archive=$OMS_CACHE/images/$name-$key.tar
	if [[ ! -f $archive ]]; then
		local image work container
		image=$(image_ref "$name")
		work=$(mktemp -d)
		log "building image $image from e2e/tools/node-images/$name.c"
		gcc -static -O2 -s -Wall -Wextra -Werror -o "$work/$name" "$src"
		# buildah's own storage under the cache (vfs: no overlay mounts to clean up).
		local buildah=("$BIN/buildah" --root "$OMS_CACHE/images/buildah/root"
			--runroot "$OMS_CACHE/images/buildah/run" --storage-driver vfs)
		container=$("${buildah[@]}" from --quiet scratch)
		"${buildah[@]}" copy --quiet "$container" "$work/$name" "/$name" >/dev/null
		# The pause container runs as nobody, like upstream's; the sleeper as root, like busybox.
		local user=()
		[[ $name != pause ]] || user=(--user 65535:65535)
		"${buildah[@]}" config --entrypoint "[\"/$name\"]" --cmd '' "${user[@]}" "$container"
		"${buildah[@]}" commit --quiet --rm --timestamp 0 "$container" "$image" >/dev/null
		mkdir -p "$OMS_CACHE/images"
		"${buildah[@]}" push --quiet "$image" "oci-archive:$archive.partial:$image"
		"${buildah[@]}" rmi "$image" >/dev/null
		mv "$archive.partial" "$archive"
		rm -rf "$work"
	fi
	echo "$archive"
}

image_ref() {
	case $1 in
	pause) echo "$PAUSE_IMAGE" ;;
	sleeper) echo "$SLEEPER_IMAGE" ;;
	knock) echo "$KNOCK_IMAGE" ;;
	esac
}

# No `grep -q`: it would stop reading early, and with pipefail ctr's SIGPIPE fails the check.
has_image() { ctr images ls -q | grep -xF "$1" >/dev/null; }

# import_image <name>: into the node's containerd, unless it already has it.
import_image() {
	local image archive
	image=$(image_ref "$1")
	archive=$(image_archive "$1")
	if ! has_image "$image"; then
		ctr images import "$archive" >/dev/null
		has_image "$image" || die "importing $archive did not give the image $image"
	fi
}

write_configs() {
	local config=$STATE/config
	mkdir -p "$config/cni" "$STATE/containerd" "$STATE/kubelet" "$STATE/pod-logs" "$STATE/sysctl"
	cat >"$config/containerd.toml" <<EOF
# containerd of node $NODE_NAME (node.sh): everything under the node's state directory.
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$SOCKET"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Pod network namespaces are mounted under the state directory, not in the host's /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Without CAP_SYS_RESOURCE (sandboxed VMs drop it) no process may lower its oom_score_adj, so
  # runc fails on the -998 the kubelet asks for pod sandboxes; this clamps to containerd's own.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/containerd/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$config/cni"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$config/certs.d"
EOF
	mkdir -p "$config/certs.d/localhost:$REGISTRY_PORT"
	cat >"$config/certs.d/localhost:$REGISTRY_PORT/hosts.toml" <<EOF
# The machine's test registry (registry.sh), reached through the forwarder on the host end.
server = "http://$HOST_IP:$REGISTRY_PORT"

[host."http://$HOST_IP:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
EOF
	# containerd adds the loopback interface itself; the chain is the pods' bridge and hostPorts.
	cat >"$config/cni/10-oms.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$ID",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "oms0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
	# No upstream resolver: pods' DNS is clusterDNS (CoreDNS after `dns`); this file is for the
	# others (dnsPolicy Default, CoreDNS itself).
	printf '%s\n' "# node $NODE_NAME: no upstream resolver (nothing leaves the machine)" >"$config/resolv.conf"
	cat >"$config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CLUSTER_STATE/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCKET
cgroupDriver: cgroupfs
cgroupRoot: /$ID
failSwapOn: false
protectKernelDefaults: true
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: $config/resolv.conf
podLogsDir: $STATE/pod-logs
volumePluginDir: $STATE/kubelet/volume-plugins
# The disk is shared with everything else on the machine: the node neither garbage-collects its
# images (they cannot be pulled again) nor evicts pods unless the disk is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
	# conntrack and oomScoreAdj zeroed: kube-proxy would otherwise set host-wide conntrack sysctls
	# and an oom_score_adj the machine does not allow (see restrict_oom_score_adj above).
	cat >"$config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $config/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
	local entry
	for entry in "${KUBELET_SYSCTLS[@]}"; do
		mkdir -p "$(dirname "$STATE/sysctl/${entry%%=*}")"
		echo "${entry#*=}" >"$STATE/sysctl/${entry%%=*}"
	done
}

# Run by containerd's wrapper inside the node's fresh, private mount namespace: binds each
# $1/sysctl/<name> file over /proc/sys/<name> (see KUBELET_SYSCTLS), then execs the rest.
# shellcheck disable=SC2016 # expanded by the inner shell
BIND_SYSCTLS='state=$1
shift
while [[ $1 == *=* ]]; do
	mount --bind "$state/sysctl/${1%%=*}" "/proc/sys/${1%%=*}"
	shift
done
exec "$@"'

up() {
	[[ $(id -u) == 0 ]] || die "needs root (network namespaces, cgroups, mounts)"
	[[ $(stat -fc %T /sys/fs/cgroup) == tmpfs && -d /sys/fs/cgroup/freezer ]] ||
		die "needs the cgroup v1 hierarchies (with freezer) under /sys/fs/cgroup"
	cluster_ready || die "cluster $cluster is not up: run 'e2e/harness/cluster.sh up $cluster' first"
	# shellcheck source=/dev/null
	source "$CLUSTER_STATE/ports.env"
	if [[ -f $STATE/net.env && -f $STATE/ports.env ]]; then
		# shellcheck source=/dev/null
		source "$STATE/ports.env"
		if [[ $FORWARDED_PORT == "$APISERVER_PORT" ]] && pid_alive apiserver-forward && pid_alive registry-forward &&
			pid_alive containerd && pid_alive kubelet && pid_alive kube-proxy && pid_alive kube-scheduler &&
			pid_alive kube-router &&
			node_ready; then
			log "already up: node $NODE_NAME Ready"
			return
		fi
	fi
	# Anything half-started before is stopped first, so that `up` always ends in a known state.
	down quiet
	"$ROOT/e2e/harness/tools.sh" kubelet kube-proxy kube-scheduler kubectl node-runtime kube-router
	local began=$EPOCHREALTIME
	mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/pki" "$STATE/config"
	SCHEDULER_PORT=$(free_port)
	cat >"$STATE/ports.env" <<EOF
FORWARDED_PORT=$APISERVER_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
EOF
	make_cgroup "$ID"
	make_cgroup "$ID/daemons"
	make_network
	node_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
	node_cert kube-scheduler "/CN=system:kube-scheduler"
	node_cert kube-proxy "/CN=system:kube-proxy"
	node_cert kube-router "/CN=oms-e2e:kube-router"
	write_kubeconfig "$STATE/config/kubelet.kubeconfig" "https://$HOST_IP:$API_FORWARD_PORT" kubelet kubernetes
	write_kubeconfig "$STATE/config/kube-proxy.kubeconfig" "https://$HOST_IP:$API_FORWARD_PORT" kube-proxy kubernetes
	write_kubeconfig "$STATE/config/kube-router.kubeconfig" "https://$HOST_IP:$API_FORWARD_PORT" kube-router kubernetes
	write_kubeconfig "$STATE/config/kube-scheduler.kubeconfig" "https://127.0.0.1:$APISERVER_PORT" kube-scheduler
	write_configs
	# The kubelet's permissions: the bootstrap role system:node through RBAC, which every cluster
	# has, so that no authorizer flag of the API server has to change.
	kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: oms-e2e-node-$NODE_NAME
  labels: {app.kubernetes.io/managed-by: oms-e2e-node-sh}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$NODE_NAME"}
---
# The enforcer reads pods, namespaces and policies, and its own node for the node's address.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: oms-e2e-kube-router
  labels: {app.kubernetes.io/managed-by: oms-e2e-node-sh}
rules:
  - {apiGroups: [""], resources: [pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [""], resources: [nodes], verbs: [get]}
  - {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: oms-e2e-kube-router
  labels: {app.kubernetes.io/managed-by: oms-e2e-node-sh}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: oms-e2e-kube-router}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "oms-e2e:kube-router"}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $API_ENDPOINT_SLICE
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: oms-e2e-node-sh
addressType: IPv4
endpoints:
  - addresses: [$HOST_IP]
    conditions: {ready: true}
ports:
  - {name: https, port: $API_FORWARD_PORT, protocol: TCP}
EOF

	start apiserver-forward "$BIN/socat" "TCP-LISTEN:$API_FORWARD_PORT,bind=$HOST_IP,reuseaddr,fork" \
		"TCP:127.0.0.1:$APISERVER_PORT"
	start registry-forward "$BIN/socat" "TCP-LISTEN:$REGISTRY_PORT,bind=$HOST_IP,reuseaddr,fork" \
		"TCP:127.0.0.1:$REGISTRY_PORT"
	start kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$STATE/config/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/config/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/config/kube-scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
	local containerd_log_level=warn verbosity=0
	if [[ ${OMS_NODE_DEBUG:-0} == 1 ]]; then
		containerd_log_level=debug verbosity=4
	fi
	start containerd nsenter --net="/run/netns/$ID" unshare --mount --propagation private \
		bash -c "$BIND_SYSCTLS" bind-sysctls "$STATE" "${KUBELET_SYSCTLS[@]}" \
		"$BIN/containerd" --config "$STATE/config/containerd.toml" --log-level "$containerd_log_level"
	wait_until containerd_ready containerd
	import_image pause
	import_image sleeper
	import_image knock
	# The kubelet joins containerd's mount namespace: it mounts the pods' volumes there, where
	# containerd and runc see them. kube-proxy too, so that every node process sees the same files.
	local in_node=(nsenter --net="/run/netns/$ID" --mount="/proc/$(cat "$STATE/pids/containerd")/ns/mnt")
	start kube-proxy "${in_node[@]}" "$BIN/kube-proxy" --config "$STATE/config/kube-proxy.yaml" \
		--v "$verbosity"
	start kubelet "${in_node[@]}" "$BIN/kubelet" --config "$STATE/config/kubelet.yaml" \
		--kubeconfig "$STATE/config/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
		--cert-dir "$STATE/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
		--v "$verbosity"
	wait_until node_ready apiserver-forward containerd kubelet
	# After the node is registered: the enforcer reads its address from the Node.
	start kube-router "${in_node[@]}" "$BIN/kube-router" --kubeconfig "$STATE/config/kube-router.kubeconfig" \
		--node "$NODE_NAME" --service-cluster-ip-range "$SERVICE_CIDR"
	wait_until kube_proxy_healthy kube-proxy
	wait_until policies_enforced kube-router
	wait_until scheduler_healthy kube-scheduler
	log "up in $(elapsed "$began" "$EPOCHREALTIME")s: node $NODE_NAME Ready at $NODE_IP, pods in $POD_CIDR"
}

# A free TCP port on 127.0.0.1 in 20000-29999, the range cluster.sh picks from (below the kernel's
# ephemeral range; broker.sh keeps 30000-32767).
free_port() {
	python3 -c '
import random, socket
while True:
    port = random.randint(20000, 29999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass
    finally:
        s.close()'
}

down() {
	local quiet=${1:-} netns_existed=""
	[[ -d $STATE || -d /sys/fs/cgroup/freezer/$ID || -e /run/netns/$ID ]] || {
		[[ $quiet == quiet ]] || log "not up"
		return 0
	}
	[[ $(id -u) == 0 ]] || die "needs root to take the node down"
	# The daemons get a SIGTERM first; then whatever is left in the cgroup (shims, pods) is killed.
	stop kubelet kube-proxy kube-router kube-scheduler containerd apiserver-forward registry-forward
	kill_node_processes
	# A shim killed so leaves its socket in /run/containerd/s (containerd 1.6 puts them there
	# whatever its state directory); each task's bundle records its shim's address.
	local address socket
	for address in "$STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
		[[ -f $address ]] || continue
		socket=$(cat "$address")
		socket=${socket#unix://}
		[[ $socket != /run/containerd/s/* ]] || rm -f "$socket"
	done
	if cluster_ready; then
		kubectl delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null
		kubectl delete clusterrolebinding "oms-e2e-node-$NODE_NAME" --ignore-not-found >/dev/null
		kubectl -n default delete endpointslice "$API_ENDPOINT_SLICE" --ignore-not-found >/dev/null
		# Cluster DNS (`dns`): its pod could not start again on a node without its image.
		kubectl -n kube-system delete deployment,service,configmap,serviceaccount \
			-l "$DNS_LABEL" --ignore-not-found --wait=false >/dev/null
		kubectl delete clusterrole,clusterrolebinding -l "$DNS_LABEL" --ignore-not-found >/dev/null
		# Storage (`storage`), the same way. Its volumes' directories go with the state directory
		# below, so their PersistentVolumes and claims go too: pods must not start on volumes the
		# kubelet would make anew, empty and root's.
		kubectl delete namespace,storageclass,clusterrole,clusterrolebinding -l "$STORAGE_LABEL" \
			--ignore-not-found --wait=false >/dev/null
		delete_local_volumes
	fi
	if [[ -e /run/netns/$ID ]]; then
		netns_existed=yes
		ip netns delete "$ID"
	fi
	if [[ -f $STATE/net.env ]]; then
		# shellcheck source=/dev/null
		source "$STATE/net.env"
		# The pair goes with the namespace; the host end is removed here in case it outlived it.
		! ip link show "$HOST_IF" >/dev/null 2>&1 || ip link delete "$HOST_IF"
	fi
	remove_cgroups
	# The node's mounts (overlay roots, volumes, pod network namespaces) lived in its own mount
	# namespace, gone with its last process; anything under the state directory here is a bug.
	if grep -qF " $STATE/" /proc/self/mountinfo; then
		die "mounts left under $STATE (see /proc/self/mountinfo); not removing it"
	fi
	rm -rf "$STATE"
	[[ $quiet == quiet ]] || log "down${netns_existed:+ (network namespace $ID removed)}"
}

# Seconds between two $EPOCHREALTIME readings, to a tenth.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# first_line <ip> <port>: the first line a TCP server there sends, connecting from the node's
# network namespace (where kube-proxy's rules apply).
first_line() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	in_node_network timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n 1 <&3' "$1" "$2" 2>/dev/null
}

# pod_pid <pod>: a process of the pod (namespace default), found through the pod's cgroup.
pod_pid() {
	local uid
	uid=$(kubectl -n default get pod "$1" -o jsonpath='{.metadata.uid}')
	find "/sys/fs/cgroup/pids/$ID/kubepods" -path "*/pod$uid/*" -name cgroup.procs -exec cat {} + | sed -n 1p
}

# The proof that the node works: a pod from the locally built sleeper image (imagePullPolicy
# Never) reaches Running and prints what it was given; a Service in front of it answers on its
# ClusterIP through kube-proxy; and from inside the pod's network namespace the API server
# answers on its Service IP (10.96.0.1) with a certificate valid for that address.
smoke() {
	local t0 t_up t_created t_running t_service t_gone pod=node-smoke
	t0=$EPOCHREALTIME
	up
	t_up=$EPOCHREALTIME
	kubectl -n default delete pod,service "$pod" --ignore-not-found --wait=true >/dev/null
	t_created=$EPOCHREALTIME
	kubectl -n default apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  labels: {app: $pod}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: sleeper
      image: $SLEEPER_IMAGE
      imagePullPolicy: Never
      args: ["smoke", "pod", "on", "$NODE_NAME"]
      env:
        - {name: SLEEPER_INTERVAL, value: "0"}
        - {name: SLEEPER_PORT, value: "8080"}
      ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: $pod
spec:
  selector: {app: $pod}
  ports: [{port: 80, targetPort: 8080}]
EOF
	kubectl -n default wait --for=jsonpath='{.status.phase}'=Running "pod/$pod" --timeout="${READY_DEADLINE_SECONDS}s" >/dev/null ||
		{
			kubectl -n default describe pod "$pod" >&2
			die "pod $pod not Running"
		}
	t_running=$EPOCHREALTIME
	kubectl get nodes -o wide
	kubectl -n default get pod "$pod" -o wide
	# Through the API server and the kubelet, which needs cluster.sh's kubelet client certificate
	# (clusters started before node support lack it); the kubelet's log file says the same.
	local line uid
	if ! line=$(kubectl -n default logs "$pod" 2>&1) || [[ $line != sleeper:* ]]; then
		log "kubectl logs: ${line:-no output} (reading the kubelet's log file instead)"
		uid=$(kubectl -n default get pod "$pod" -o jsonpath='{.metadata.uid}')
		line=$(head -n 1 "$STATE/pod-logs/default_${pod}_$uid/sleeper/0.log")
	fi
	line=${line%%$'\n'*}
	log "pod output: $line"
	[[ $line == *"smoke pod on $NODE_NAME"* ]] || die "the pod did not print what it was given"

	local cluster_ip deadline=$((SECONDS + READY_DEADLINE_SECONDS))
	cluster_ip=$(kubectl -n default get service "$pod" -o jsonpath='{.spec.clusterIP}')
	# kube-proxy writes the Service's rules once the pod is ready: polled, not slept for.
	until line=$(first_line "$cluster_ip" 80) && [[ $line == *"smoke pod on $NODE_NAME"* ]]; do
		((SECONDS < deadline)) || die "Service $pod ($cluster_ip:80) did not answer"
		sleep 0.2
	done
	t_service=$EPOCHREALTIME
	log "Service $pod at $cluster_ip:80 answers: $line"
	local pid
	pid=$(pod_pid "$pod")
	[[ -n $pid ]] || die "no process of pod $pod in cgroup $ID/kubepods"
	line=$(nsenter --net="/proc/$pid/ns/net" curl -fsS --max-time 5 --cacert "$CLUSTER_STATE/pki/ca.crt" \
		https://10.96.0.1/version) || die "the API server does not answer the pod on its Service IP 10.96.0.1"
	log "from the pod's network, the API server on its Service IP: $(grep -o '"gitVersion": *"[^"]*"' <<<"$line")"

	kubectl -n default delete pod,service "$pod" --wait=true >/dev/null
	t_gone=$EPOCHREALTIME
	log "timings: node up $(elapsed "$t0" "$t_up")s, pod created to Running $(elapsed "$t_created" "$t_running")s," \
		"Running to Service answering $(elapsed "$t_running" "$t_service")s, pod deleted in $(elapsed "$t_service" "$t_gone")s"
}

# load_archives <archive>...: imports OCI archives into the node's containerd, where the images
# get the names the archives carry (images.sh sets org.opencontainers.image.ref.name).
load_archives() {
	local archive out
	for archive in "$@"; do
		[[ -f $archive ]] || die "no such archive: $archive"
		out=$(ctr images import "$archive" 2>&1) || die "ctr images import $archive failed: $out"
		log "loaded $(grep -o '^unpacking [^ ]*' <<<"$out" | cut -d' ' -f2 | paste -sd' ') from $archive"
	done
}

# resolve <name>: the first IPv4 address glibc's resolver gets for <name> in the node's network
# namespace from cluster DNS (a private mount namespace gets its own /etc/resolv.conf).
resolve() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	in_node_network unshare --mount bash -c 'mount --bind "$0" /etc/resolv.conf && exec getent ahostsv4 "$1"' \
		"$STATE/config/cluster-resolv.conf" "$1" 2>/dev/null | awk 'NR == 1 { print $1 }'
}

cluster_dns_answers() { [[ $(resolve kubernetes.default.svc.cluster.local) == 10.96.0.1 ]]; }

# Cluster DNS as clusters usually have it: CoreDNS in kube-system behind the Service kube-dns at
# the kubelet's clusterDNS address, reading Services and EndpointSlices through the API with its
# ServiceAccount (on the Service IP 10.96.0.1). It answers for cluster.local and the reverse
# zones, pod names under headless Services (StatefulSet pods) included, and forwards nothing.
dns() {
	up
	local began=$EPOCHREALTIME archive image
	archive=$("$ROOT/e2e/harness/images.sh" build coredns)
	image=$("$ROOT/e2e/harness/images.sh" ref coredns)
	load_archives "$archive"
	printf '%s\n' "nameserver $CLUSTER_DNS" "options timeout:1 attempts:1" >"$STATE/config/cluster-resolv.conf"
	local label="{${DNS_LABEL%%=*}: ${DNS_LABEL#*=}}" corefile="    ${COREFILE//$'\n'/$'\n'    }" corefile_hash
	corefile_hash=$(sha256sum <<<"$COREFILE" | cut -c1-16)
	kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system, labels: $label}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "oms-e2e:coredns", labels: $label}
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "oms-e2e:coredns", labels: $label}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "oms-e2e:coredns"}
subjects:
  - {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system, labels: $label}
data:
  Corefile: |
$corefile
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: $label}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
      annotations:
        # A changed Corefile or image (same tag, new content) restarts CoreDNS.
        oms-e2e/corefile-sha256: $corefile_hash
        oms-e2e/image-archive: $(basename "$archive")
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      # CoreDNS itself must not ask cluster DNS.
      dnsPolicy: Default
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
        # Port 53 without any capability: a safe sysctl of the pod's own network namespace.
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "53"}]
      containers:
        - name: coredns
          image: $image
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          livenessProbe:
            httpGet: {path: /health, port: 8080}
            periodSeconds: 10
            failureThreshold: 5
          readinessProbe:
            httpGet: {path: /ready, port: 8181}
            periodSeconds: 2
          resources:
            requests: {cpu: 50m, memory: 32Mi}
            limits: {memory: 128Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
        - name: config
          configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: $label}
spec:
  clusterIP: $CLUSTER_DNS
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
EOF
	if ! kubectl -n kube-system rollout status deployment/coredns --timeout="${READY_DEADLINE_SECONDS}s" >/dev/null; then
		kubectl -n kube-system describe pods -l k8s-app=kube-dns >&2 || true
		kubectl -n kube-system logs -l k8s-app=kube-dns --tail=20 >&2 || true
		die "CoreDNS not Ready"
	fi
	# Ready once its kubernetes plugin has synced; kube-proxy then routes the Service to it.
	wait_until cluster_dns_answers
	log "cluster DNS up in $(elapsed "$began" "$EPOCHREALTIME")s: $CLUSTER_DNS answers" \
		"kubernetes.default.svc.cluster.local = $(resolve kubernetes.default.svc.cluster.local)"
}

# delete_local_volumes: the claims of StorageClass local-path and their PersistentVolumes, without
# waiting (a claim in use goes once its pod has).
delete_local_volumes() {
	local claims ns name volumes
	claims=$(kubectl get pvc -A -o jsonpath='{range .items[?(@.spec.storageClassName=="local-path")]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')
	while read -r ns name; do
		[[ -z $name ]] || kubectl -n "$ns" delete pvc "$name" --ignore-not-found --wait=false >/dev/null
	done <<<"$claims"
	volumes=$(kubectl get pv -o jsonpath='{range .items[?(@.spec.storageClassName=="local-path")]}{.metadata.name}{" "}{end}')
	# shellcheck disable=SC2086 # one name a word
	[[ -z $volumes ]] || kubectl delete pv $volumes --ignore-not-found --wait=false >/dev/null
}

# Dynamic PersistentVolumes as a cluster's storage provisioner gives them: local-path-provisioner
# (leader election is off upstream: one replica) watches claims of the StorageClass local-path
# that the scheduler placed on this node and makes a directory for each with a helper pod it
# starts there (nodeName set, the provisioner's image, running volume-dir).
storage() {
	up
	local began=$EPOCHREALTIME archive image
	archive=$("$ROOT/e2e/harness/images.sh" build local-path-provisioner)
	image=$("$ROOT/e2e/harness/images.sh" ref local-path-provisioner)
	load_archives "$archive"
	mkdir -p "$STATE/volumes"
	local label="{${STORAGE_LABEL%%=*}: ${STORAGE_LABEL#*=}}" config_hash
	config_hash=$( (echo "$STATE/volumes"; echo "$image") | sha256sum | cut -c1-16)
	# A `down` a moment ago may still be deleting the namespace; nothing can be created in it then.
	if [[ -n $(kubectl get namespace "$STORAGE_NAMESPACE" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null) ]]; then
		kubectl wait --for=delete "namespace/$STORAGE_NAMESPACE" --timeout="${READY_DEADLINE_SECONDS}s" >/dev/null ||
			die "namespace $STORAGE_NAMESPACE still terminating after ${READY_DEADLINE_SECONDS}s"
	fi
	kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $STORAGE_NAMESPACE, labels: $label}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner, namespace: $STORAGE_NAMESPACE, labels: $label}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner, namespace: $STORAGE_NAMESPACE, labels: $label}
rules:
  # The helper pods, in its own namespace only.
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner, namespace: $STORAGE_NAMESPACE, labels: $label}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner}
subjects:
  - {kind: ServiceAccount, name: local-path-provisioner, namespace: $STORAGE_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "oms-e2e:local-path-provisioner", labels: $label}
rules:
  - apiGroups: [""]
    resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [persistentvolumes]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "oms-e2e:local-path-provisioner", labels: $label}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "oms-e2e:local-path-provisioner"}
subjects:
  - {kind: ServiceAccount, name: local-path-provisioner, namespace: $STORAGE_NAMESPACE}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: $STORAGE_NAMESPACE, labels: $label}
data:
  # Every node (one here) keeps its volumes in its state directory; volume-dir in place of the
  # shell scripts upstream's busybox runs.
  config.json: |
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$STATE/volumes"]}],
     "setupCommand": "/volume-dir", "teardownCommand": "/volume-dir"}
  helperPod.yaml: |
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      priorityClassName: system-node-critical
      automountServiceAccountToken: false
      containers:
        - name: helper-pod
          image: $image
          imagePullPolicy: Never
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: local-path-provisioner, namespace: $STORAGE_NAMESPACE, labels: $label}
spec:
  replicas: 1
  selector:
    matchLabels: {app: local-path-provisioner}
  template:
    metadata:
      labels: {app: local-path-provisioner}
      annotations:
        # A new image (same tag, new content) or configuration restarts it: it reads its
        # ConfigMap once, at start.
        oms-e2e/image-archive: $(basename "$archive")
        oms-e2e/config-sha256: $config_hash
    spec:
      serviceAccountName: local-path-provisioner
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: local-path-provisioner
          image: $image
          imagePullPolicy: Never
          # The helper pods' image is helperPod.yaml's (upstream's --helper-image is not used).
          args: [start, --namespace, $STORAGE_NAMESPACE, --service-account-name, local-path-provisioner]
          resources:
            requests: {cpu: 10m, memory: 32Mi}
            limits: {memory: 128Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  labels: $label
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
	if ! kubectl -n "$STORAGE_NAMESPACE" rollout status deployment/local-path-provisioner \
		--timeout="${READY_DEADLINE_SECONDS}s" >/dev/null; then
		kubectl -n "$STORAGE_NAMESPACE" describe pods -l app=local-path-provisioner >&2 || true
		kubectl -n "$STORAGE_NAMESPACE" logs -l app=local-path-provisioner --tail=20 >&2 || true
		die "local-path-provisioner not running"
	fi
	log "storage up in $(elapsed "$began" "$EPOCHREALTIME")s: StorageClass local-path (default)," \
		"volumes in $STATE/volumes"
}

# node_network <cluster>: "<network namespace> <n> <pod CIDR>" of that cluster's node, from its net.env.
node_network() {
	local env=$ROOT/e2e/.state/$1/node/net.env
	[[ -f $env && -e /run/netns/$(sed -n 's/^NETNS=//p' "$env") ]] || die "node of cluster $1 is not up: run '$0 up $1' first"
	# shellcheck source=/dev/null
	(source "$env" && echo "$NETNS ${HOST_IF#omsn} $POD_CIDR")
}

# link <peer cluster>: the WAN between this node and the peer's (see Network at the top).
link() {
	local ns n pods peer_ns m peer_pods
	read -r ns n pods < <(node_network "$cluster")
	read -r peer_ns m peer_pods < <(node_network "$1")
	[[ $ns != "$peer_ns" ]] || die "a node cannot be linked to itself"
	if ! ip -n "$ns" link show "wan$m" >/dev/null 2>&1; then
		ip -n "$ns" link add "wan$m" type veth peer name "wan$n" netns "$peer_ns"
		ip -n "$ns" addr add "$WAN_NET_PREFIX.$n.$m/32" peer "$WAN_NET_PREFIX.$m.$n/32" dev "wan$m"
		ip -n "$peer_ns" addr add "$WAN_NET_PREFIX.$m.$n/32" peer "$WAN_NET_PREFIX.$n.$m/32" dev "wan$n"
		ip -n "$ns" link set "wan$m" up
		ip -n "$peer_ns" link set "wan$n" up
	fi
	local side ns_ if_ pods_
	for side in "$ns wan$m $pods" "$peer_ns wan$n $peer_pods"; do
		read -r ns_ if_ pods_ <<<"$side"
		nsenter --net="/run/netns/$ns_" iptables -w -t nat -C POSTROUTING -s "$pods_" -o "$if_" -j MASQUERADE 2>/dev/null ||
			nsenter --net="/run/netns/$ns_" iptables -w -t nat -A POSTROUTING -s "$pods_" -o "$if_" -j MASQUERADE
	done
	log "linked to $1: this node is $WAN_NET_PREFIX.$n.$m (wan$m), the peer $WAN_NET_PREFIX.$m.$n (wan$n)"
}

unlink_peer() {
	local ns n pods peer_ns m peer_pods
	read -r ns n pods < <(node_network "$cluster")
	read -r peer_ns m peer_pods < <(node_network "$1")
	! ip -n "$ns" link show "wan$m" >/dev/null 2>&1 || ip -n "$ns" link delete "wan$m"
	nsenter --net="/run/netns/$ns" iptables -w -t nat -D POSTROUTING -s "$pods" -o "wan$m" -j MASQUERADE 2>/dev/null || true
	nsenter --net="/run/netns/$peer_ns" iptables -w -t nat -D POSTROUTING -s "$peer_pods" -o "wan$n" -j MASQUERADE 2>/dev/null || true
	log "unlinked from $1"
}

case $action in
up) up ;;
link) link "$@" ;;
unlink) unlink_peer "$@" ;;
down) down ;;
status)
	if cluster_ready && node_ready; then
		log "node $NODE_NAME Ready"
	else
		log "node $NODE_NAME not Ready (or cluster down)"
		exit 1
	fi
	;;
smoke) smoke ;;
dns) dns ;;
storage) storage ;;
load)
	containerd_ready || die "node $NODE_NAME is not up: run '$0 up $cluster' first"
	load_archives "$@"
	;;
*) usage ;;
esac
