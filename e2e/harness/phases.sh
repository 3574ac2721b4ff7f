#!/usr/bin/env bash
# phases.sh PHASE...: runs `make PHASE` for each phase in order, stops at the first that fails,
# and ends with a table of how long each took (printed on failure too), so that a slow or a
# failing phase of `make test` is seen at a glance.
set -uo pipefail

make=${MAKE:-make}
names=() seconds=() results=()
status=0
for phase in "$@"; do
	start=$SECONDS
	"$make" --no-print-directory "$phase"
	rc=$?
	names+=("$phase")
	seconds+=($((SECONDS - start)))
	if ((rc != 0)); then
		results+=("FAILED (exit $rc)")
		status=$rc
		break
	fi
	results+=(ok)
done

total=0
echo
echo "make test: time per phase"
printf '  %-18s %8s  %s\n' phase seconds result
for i in "${!names[@]}"; do
	printf '  %-18s %8d  %s\n' "${names[$i]}" "${seconds[$i]}" "${results[$i]}"
	total=$((total + seconds[i]))
done
printf '  %-18s %8d  (%dm %02ds)\n' total "$total" $((total / 60)) $((total % 60))
exit "$status"
