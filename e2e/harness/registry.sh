#!/usr/bin/env bash
# The test registry: the CNCF distribution registry (tools.sh registry, from Go modules) on
# 127.0.0.1:$REGISTRY_PORT, plain HTTP, no authentication, storage under the checkout's state.
# Our images and chart are pushed to it (release.sh) and pulled from it as users pull from
# theirs: helm on the machine at localhost:$REGISTRY_PORT, and each node's containerd at the
# same name, which its hosts.toml (node.sh) sends to a forwarder on the host end of its veth.
#
#   e2e/harness/registry.sh up      start it unless it answers already; prints its address
#   e2e/harness/registry.sh down    stop it (when this checkout started it) and remove its storage
#   e2e/harness/registry.sh address print its address: localhost:$REGISTRY_PORT
#
# State: e2e/.state/registry/ (config.yml, data/, registry.log, pid).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$ROOT/e2e/harness/versions.env"
STATE=$ROOT/e2e/.state/registry
ADDRESS=localhost:$REGISTRY_PORT
DEADLINE_SECONDS=30

log() { printf 'registry: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# answers: the registry's API root responds (200, or 401 from a registry with authentication).
answers() {
	[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$REGISTRY_PORT/v2/") =~ ^(200|401)$ ]]
}

up() {
	if answers; then
		echo "$ADDRESS"
		return
	fi
	"$ROOT/e2e/harness/tools.sh" registry
	mkdir -p "$STATE/data"
	cat >"$STATE/config.yml" <<EOF
# The test registry (e2e/harness/registry.sh): loopback only, plain HTTP, files under the state.
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  # One instance: the secret only has to be stable across its own uploads.
  secret: oms-test-registry
EOF
	# No traces to export: the registry would otherwise try an OTLP collector on loopback.
	OTEL_TRACES_EXPORTER=none setsid "$BIN/registry" serve "$STATE/config.yml" \
		>"$STATE/registry.log" 2>&1 </dev/null &
	echo $! >"$STATE/pid"
	local deadline=$((SECONDS + DEADLINE_SECONDS))
	until answers; do
		kill -0 "$(cat "$STATE/pid")" 2>/dev/null || {
			tail -n 20 "$STATE/registry.log" >&2
			die "the registry exited (log: $STATE/registry.log)"
		}
		((SECONDS < deadline)) || die "the registry did not answer on 127.0.0.1:$REGISTRY_PORT within ${DEADLINE_SECONDS}s"
		sleep 0.2
	done
	log "up at $ADDRESS (pid $(cat "$STATE/pid"))"
	echo "$ADDRESS"
}

down() {
	if [[ -f $STATE/pid ]]; then
		local pid
		pid=$(cat "$STATE/pid")
		if kill "$pid" 2>/dev/null; then
			local deadline=$((SECONDS + DEADLINE_SECONDS))
			while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	rm -rf "$STATE"
}

case ${1:-} in
up) up ;;
down) down ;;
address) echo "$ADDRESS" ;;
*)
	echo "usage: $0 up|down|address" >&2
	exit 2
	;;
esac
