#!/usr/bin/env bash
# e2e-api.sh: the integration tier (`make e2e-api`) in three lanes that run side by side. The
# tests spend most of their time waiting on brokers, API servers and fault injections, not on
# the two cores, so the tier takes as long as its longest lane. By the times measured at 1f07ab1
# (one binary after another, each running two tests at a time): the bridge data plane alone
# (345 s); two_clouds, render_and_boot, external_tls and brokers (73 + 166 + 69 + 25 s); every
# other test binary of oms-e2e (about 200 s; two lanes took 462 s each). The first two lanes'
# output goes to logs, printed when all are done, so that lanes never interleave. Within a binary
# libtest starts tests in name order, so the data plane's longest test has a name that sorts
# first (a_broker_restart_...): it runs beside the others instead of after them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
cargo=${CARGO:-cargo}
lanes=("bridge_data_plane" "two_clouds render_and_boot external_tls brokers")
state=$ROOT/e2e/.state
mkdir -p "$state"

# Every other integration test file, so that a new one is never left out.
others=()
for file in e2e/tests/*.rs; do
	name=$(basename "$file" .rs)
	[[ " ${lanes[*]} " == *" $name "* ]] || others+=(--test "$name")
done
run=(-- --test-threads=2 --show-output)

# The control planes up before the tier (a demo's, say), which it leaves alone.
clusters_up() {
	local state
	for state in "$ROOT"/e2e/.state/*/ports.env; do
		[[ -e $state ]] && basename "$(dirname "$state")"
	done
	true
}
clusters_before=$(clusters_up | paste -sd ' ')

# Built once up front: the lanes only run.
"$cargo" test -p oms-e2e --locked --no-run

start=$(date +%s)
# lane <n> <test>...: those test binaries in the background; the output in lane-<n>.log, then its
# exit status and seconds in lane-<n>.done.
lane() {
	local n=$1 rc=0
	shift
	rm -f "$state/e2e-api-lane-$n.done"
	"$cargo" test -p oms-e2e --locked "${@/#/--test=}" "${run[@]}" >"$state/e2e-api-lane-$n.log" 2>&1 || rc=$?
	echo "$rc $(($(date +%s) - start))" >"$state/e2e-api-lane-$n.done"
}
jobs=()
for n in "${!lanes[@]}"; do
	# shellcheck disable=SC2086 # the lane's test names, one a word
	lane "$n" ${lanes[n]} &
	jobs+=($!)
done
others_rc=0
"$cargo" test -p oms-e2e --locked --lib --bins "${others[@]}" "${run[@]}" || others_rc=$?
summary="others $(($(date +%s) - start))s (exit $others_rc)"
failed=$((others_rc != 0))
for n in "${!lanes[@]}"; do
	wait "${jobs[n]}" || true
	echo "e2e-api: lane ${lanes[n]} (output below, also in $state/e2e-api-lane-$n.log)"
	cat "$state/e2e-api-lane-$n.log"
	read -r rc seconds <"$state/e2e-api-lane-$n.done" || { rc=1 seconds='?'; }
	summary+=", ${lanes[n]} ${seconds}s (exit $rc)"
	((rc == 0)) || failed=1
done
echo "e2e-api: lanes: $summary"
# The tests share their control planes (e2e/src/cluster.rs starts each once, or finds it up);
# once the tier is done, those it started would only hold memory and CPU that the real-node
# tier after it needs. E2E_API_KEEP=1 leaves them up for another run.
if [[ ${E2E_API_KEEP:-} != 1 ]]; then
	for cluster in $(clusters_up); do
		[[ " $clusters_before " == *" $cluster "* ]] ||
			e2e/harness/cluster.sh down "$cluster" >/dev/null || echo "e2e-api: cluster.sh down $cluster failed" >&2
	done
fi
((failed == 0))
