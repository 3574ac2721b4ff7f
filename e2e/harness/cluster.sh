#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager,
# one set per cluster name, each with its own ports, data and PKI.
#
#   e2e/harness/cluster.sh up <name>      start (idempotent), wait for /readyz, write the kubeconfig
#   e2e/harness/cluster.sh down <name>    stop the processes it started and remove the state
#   e2e/harness/cluster.sh status <name>  print whether the cluster answers
#
# OMS_AUDIT=1 at `up` turns on the API server's audit log (Metadata level, one JSON line per
# request, in logs/audit.log): benchmarks count the requests of one user with it.
# State: e2e/.state/<name>/ (kubeconfig, pki/, logs/*.log, pids/, ports.env). etcd keeps its data
# on tmpfs (/dev/shm) with fsync off: these clusters are for tests and must be fast.
# A real node for the cluster comes from e2e/harness/node.sh (state in e2e/.state/<name>/node/);
# `down` takes it down first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
READY_DEADLINE_SECONDS=${READY_DEADLINE_SECONDS:-120}
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1

usage() {
	echo "usage: $0 up|down|status <cluster name>" >&2
	exit 2
}

[[ $# -eq 2 ]] || usage
action=$1 name=$2
[[ $name =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || {
	echo "cluster: name must be a DNS label (e.g. cloud-a), got '$name'" >&2
	exit 2
}
STATE=$ROOT/e2e/.state/$name
# Per checkout, so that two clones (a developer's and CI's) never share an etcd.
ETCD_DATA=/dev/shm/oms-e2e-$(printf %s "$ROOT" | md5sum | cut -c1-8)-$name-etcd

log() { printf 'cluster %s: %s\n' "$name" "$*" >&2; }

# A free TCP port on 127.0.0.1 in 20000-29999: below the kernel's ephemeral range, so that no
# outgoing connection can take it before the server binds (broker.sh keeps 30000-32767).
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

pid_alive() { [[ -f $STATE/pids/$1 ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

ready() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; }

# wait_until <check> <component>...: polls <check> until it passes; fails early, with the log,
# when one of the components has exited, and after READY_DEADLINE_SECONDS.
wait_until() {
	local check=$1
	shift
	local deadline=$((SECONDS + READY_DEADLINE_SECONDS))
	until "$check"; do
		for component in "$@"; do
			pid_alive "$component" || {
				echo "cluster $name: $component exited; last lines of $STATE/logs/$component.log:" >&2
				tail -n 20 "$STATE/logs/$component.log" >&2
				exit 1
			}
		done
		((SECONDS < deadline)) || {
			echo "cluster $name: $check not passing after ${READY_DEADLINE_SECONDS}s; logs in $STATE/logs/" >&2
			exit 1
		}
		sleep 0.5
	done
}

controller_manager_healthy() {
	curl -fsk --max-time 5 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" >/dev/null 2>&1
}

# Starts a component in its own session so that `down` can stop it and all its children.
start() {
	local component=$1
	shift
	setsid "$@" >"$STATE/logs/$component.log" 2>&1 </dev/null &
	echo $! >"$STATE/pids/$component"
}

make_pki() {
	local pki=$STATE/pki
	mkdir -p "$pki"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=oms-e2e-$name-ca" \
		-keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
	# leaf <file stem> <subject> [subjectAltName]
	leaf() {
		local ext
		ext=$(mktemp)
		echo "basicConstraints=CA:FALSE" >"$ext"
		if [[ -n ${3:-} ]]; then
			echo "subjectAltName=$3" >>"$ext"
			echo "extendedKeyUsage=serverAuth,clientAuth" >>"$ext"
		else
			echo "extendedKeyUsage=clientAuth" >>"$ext"
		fi
		openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
		openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
			-days 3650 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
		rm -f "$ext" "$pki/$1.csr"
	}
	leaf apiserver "/CN=kube-apiserver" \
		"IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	leaf admin "/O=system:masters/CN=oms-e2e-admin"
	leaf controller-manager "/CN=system:kube-controller-manager"
	# What the API server presents to kubelets (node.sh) for logs, exec and port-forward.
	leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
	# The key pair that signs and verifies service-account tokens.
	openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# kubeconfig <file> <client cert stem>
write_kubeconfig() {
	local pki=$STATE/pki
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: $name
    cluster:
      server: https://127.0.0.1:$APISERVER_PORT
      certificate-authority: $pki/ca.crt
users:
  - name: $2
    user:
      client-certificate: $pki/$2.crt
      client-key: $pki/$2.key
contexts:
  - name: $name
    context: {cluster: $name, user: $2}
current-context: $name
EOF
}

up() {
	if [[ -f $STATE/ports.env ]] && pid_alive etcd && pid_alive kube-apiserver && pid_alive kube-controller-manager; then
		# shellcheck source=/dev/null
		source "$STATE/ports.env"
		if ready; then
			log "already up on https://127.0.0.1:$APISERVER_PORT"
			return
		fi
	fi
	# Anything half-started before is stopped first, so that `up` always ends in a known state.
	down quiet
	for tool in etcd kube-apiserver kube-controller-manager kubectl; do
		[[ -x $BIN/$tool ]] || {
			echo "cluster: $BIN/$tool is missing; run 'make tools' first" >&2
			exit 1
		}
	done
	mkdir -p "$STATE/logs" "$STATE/pids" "$ETCD_DATA"
	ETCD_PORT=$(free_port) ETCD_PEER_PORT=$(free_port) APISERVER_PORT=$(free_port) CONTROLLER_MANAGER_PORT=$(free_port)
	cat >"$STATE/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
CONTROLLER_MANAGER_PORT=$CONTROLLER_MANAGER_PORT
EOF
	make_pki
	write_kubeconfig "$STATE/kubeconfig" admin
	write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
	local pki=$STATE/pki

	start etcd "$BIN/etcd" --name "$name" --data-dir "$ETCD_DATA" --unsafe-no-fsync \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "$name=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn

	local audit=()
	if [[ ${OMS_AUDIT:-0} == 1 ]]; then
		printf '%s\n' "apiVersion: audit.k8s.io/v1" "kind: Policy" "omitStages: [RequestReceived]" \
			"rules: [{level: Metadata}]" >"$STATE/audit-policy.yaml"
		audit=(--audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$STATE/logs/audit.log" --audit-log-maxsize 0)
	fi

	start kube-apiserver "$BIN/kube-apiserver" "${audit[@]}" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" --etcd-prefix "/oms-e2e-$name" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
		--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
		--client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
		--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$pki/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP,Hostname \
		--service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
		--service-account-issuer "https://kubernetes.default.svc" \
		--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
		--endpoint-reconciler-type none

	# The controller manager starts once the API server has bootstrapped its RBAC roles.
	wait_until ready etcd kube-apiserver
	start kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
		--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
		--use-service-account-credentials --leader-elect=false \
		--cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"

	wait_until controller_manager_healthy etcd kube-apiserver kube-controller-manager
	log "up on https://127.0.0.1:$APISERVER_PORT; kubeconfig: $STATE/kubeconfig"
}

# Stops one component: SIGTERM to its session, then SIGKILL after a grace period.
stop() {
	local component=$1 pidfile=$STATE/pids/$1 pid
	[[ -f $pidfile ]] || return 0
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		# A killed process stays a zombie until its parent (init) reaps it: `down` returns once
		# it is gone, or after 10 s.
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$pidfile"
	[[ ${2:-} == quiet ]] || log "stopped $component"
}

down() {
	local quiet=${1:-}
	# A node lives in this cluster's state directory: it goes first, while the API server answers.
	if [[ -d $STATE/node ]]; then
		"$ROOT/e2e/harness/node.sh" down "$name" || log "node.sh down failed (see above); removing the cluster anyway"
	fi
	# Reverse start order: nothing talks to a component that is already gone.
	for component in kube-controller-manager kube-apiserver etcd; do
		stop "$component" "$quiet"
	done
	rm -rf "$STATE" "$ETCD_DATA"
	[[ $quiet == quiet ]] || log "down"
}

case $action in
up)
	# One `up` of a cluster at a time: test binaries in parallel lanes (e2e-api.sh) ask for the same
	# one, and an `up` that found it half-started would stop it under the other. The lock stays
	# with flock (-o: not with the daemons `up` starts) until the inner `up` is done.
	mkdir -p "$(dirname "$STATE")"
	flock -o "$STATE.up.lock" "$0" locked-up "$name"
	;;
locked-up) up ;;
down) down ;;
status)
	if [[ -f $STATE/ports.env ]] && ready; then
		log "ready ($STATE/kubeconfig)"
	else
		log "not running"
		exit 1
	fi
	;;
*) usage ;;
esac
