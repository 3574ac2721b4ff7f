#!/usr/bin/env bash
# e2e-api.sh: the integration tier (`make e2e-api`) in two lanes that run side by side. The
# tests spend most of their time waiting on brokers, API servers and fault injections, not on
# the two cores: the bridge data-plane binary (the longest, 388 s at a4c12ac), the two-clouds one
# (79 s) and brokers (33 s) run in one lane, every other test binary of oms-e2e in the other
# (about 515 s; 547 s against 467 s with brokers there), which balances the lanes (346 s against
# 520 s with the data plane alone in its lane; three lanes at fbdfb78, the data plane alone, took
# 463, 489 and 358 s, every test slower once the two cores were the limit). Each binary still
# runs two tests at a time. The first lane's output goes to a log, printed when both lanes are
# done, so the two never interleave. Within a binary libtest starts tests in name order, so the
# data plane's longest test has a name that sorts first (a_broker_restart_...): it runs beside
# the others instead of after them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
cargo=${CARGO:-cargo}
long=(bridge_data_plane two_clouds brokers)
log=$ROOT/e2e/.state/e2e-api-long-lane.log
mkdir -p "$(dirname "$log")"

# Every other integration test file, so that a new one is never left out.
others=()
for file in e2e/tests/*.rs; do
	name=$(basename "$file" .rs)
	[[ " ${long[*]} " == *" $name "* ]] || others+=(--test "$name")
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

start=$SECONDS
# The lane's exit status and its own time (not when it was waited for) in $log.done.
long_lane() {
	local rc=0
	"$cargo" test -p oms-e2e --locked "${long[@]/#/--test=}" "${run[@]}" >"$log" 2>&1 || rc=$?
	echo "$rc $((SECONDS - start))" >"$log.done"
}
rm -f "$log.done"
long_lane &
lane=$!
others_rc=0
"$cargo" test -p oms-e2e --locked --lib --bins "${others[@]}" "${run[@]}" || others_rc=$?
others_done=$((SECONDS - start))
wait "$lane" || true
read -r long_rc long_done <"$log.done" || { long_rc=1 long_done='?'; }

echo "e2e-api: lane ${long[*]} (output below, also in $log)"
cat "$log"
echo "e2e-api: lanes: others ${others_done}s (exit $others_rc), ${long[*]} ${long_done}s (exit $long_rc)"
# The tests share their control planes (e2e/src/cluster.rs starts each once, or finds it up);
# once the tier is done, those it started would only hold memory and CPU that the real-node
# tier beside it needs. E2E_API_KEEP=1 leaves them up for another run.
# E2E_API_LEAVE names clusters another tier runs beside this one (e2e.sh), left alone too.
if [[ ${E2E_API_KEEP:-} != 1 ]]; then
	for cluster in $(clusters_up); do
		[[ " $clusters_before ${E2E_API_LEAVE:-} " == *" $cluster "* ]] ||
			e2e/harness/cluster.sh down "$cluster" >/dev/null || echo "e2e-api: cluster.sh down $cluster failed" >&2
	done
fi
((others_rc == 0 && long_rc == 0))
