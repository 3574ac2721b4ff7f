#!/usr/bin/env bash
# One version for a release: the workspace's (Cargo.toml [workspace.package]) is the source; every
# crate inherits it, and the chart's version and appVersion (the tag its images default to, and
# that images.sh and `make release` tag the images with) must equal it. Part of `make lint`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART=$ROOT/charts/oms-operator/Chart.yaml

# The version key of [workspace.package] in Cargo.toml.
workspace=$(awk '/^\[/ { section = $0 } section == "[workspace.package]" && /^version *=/ { gsub(/[" ]/, "", $0); sub(/^version=/, ""); print }' "$ROOT/Cargo.toml")
[[ -n $workspace ]] || {
	echo "check-versions: no version in [workspace.package] of Cargo.toml" >&2
	exit 1
}
failed=0
for manifest in "$ROOT"/*/Cargo.toml; do
	if ! grep -q '^version.workspace = true$' "$manifest"; then
		echo "check-versions: ${manifest#"$ROOT"/} must inherit the version: version.workspace = true" >&2
		failed=1
	fi
done
for key in version appVersion; do
	value=$(sed -n "s/^$key: *\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$CHART")
	if [[ $value != "$workspace" ]]; then
		echo "check-versions: charts/oms-operator/Chart.yaml $key is '$value'; set it to $workspace, the workspace version in Cargo.toml" >&2
		failed=1
	fi
done
((failed == 0)) && echo "check-versions: crates and chart at $workspace"
exit "$failed"
