#!/usr/bin/env bash
# e2e.sh: both end-to-end tiers side by side (`make e2e`, a phase of `make test`). Each leaves
# about half of the two cores idle while it waits on brokers, JVMs and fault injections (warm
# at efb631d, one after the other: e2e-api 511 s at 60% busy after its first three minutes,
# e2e-nodes 372 s at 65%); side by side they took 697 and 728 s, so the pair ends 155 s sooner.
# They share nothing: the API tier's control planes are cloud-a, cloud-b and e2e-bare on
# loopback, the node tier's e2e-a and e2e-b in network namespaces of their own. The node tier's
# output goes to a log, printed after the API tier's, so that the two never interleave.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
make=${MAKE:-make}
nodes_clusters=(e2e-a e2e-b)
log=$ROOT/e2e/.state/e2e-nodes.log
mkdir -p "$(dirname "$log")"

start=$SECONDS
# The tier's exit status and its own time in $log.done, as e2e-api.sh does for its lanes.
nodes_tier() {
	local rc=0
	"$make" --no-print-directory e2e-nodes >"$log" 2>&1 || rc=$?
	echo "$rc $((SECONDS - start))" >"$log.done"
}
rm -f "$log.done"
nodes_tier &
nodes=$!
api_rc=0
# The API tier takes down the control planes it started when it ends; not the node tier's.
E2E_API_LEAVE="${nodes_clusters[*]}" "$make" --no-print-directory e2e-api || api_rc=$?
api_done=$((SECONDS - start))
wait "$nodes" || true
read -r nodes_rc nodes_done <"$log.done" || { nodes_rc=1 nodes_done='?'; }

echo "e2e: e2e-nodes (output below, also in $log)"
cat "$log"
echo "e2e: side by side: e2e-api ${api_done}s (exit $api_rc), e2e-nodes ${nodes_done}s (exit $nodes_rc)"
((api_rc == 0 && nodes_rc == 0))
