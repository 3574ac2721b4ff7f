#!/usr/bin/env bash
# Publishes a release to an OCI registry as users consume it: the oms-operator and oms-bridge
# images (images.sh: built from their Containerfiles) tagged with the version, and the chart as an
# OCI artifact (helm package + helm push). `make release REGISTRY=<host[:port][/path]>`.
#
#   e2e/harness/release.sh <registry>
#     <registry>/oms-operator:<version>, <registry>/oms-bridge:<version>
#     oci://<registry>/charts/oms-operator, chart version <version>
#
# <version> is the chart's appVersion, which `make lint` keeps equal to the crates' version.
# Plain HTTP for a registry on localhost or 127.0.0.1 (the test registry, registry.sh), TLS for
# any other; log in first where the registry asks for it (buildah login, helm registry login).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
OMS_CACHE=${OMS_CACHE:-$HOME/.cache/oms}

log() { printf 'release: %s\n' "$*" >&2; }

[[ $# -eq 1 && -n $1 ]] || {
	echo "usage: $0 <registry host[:port][/path]>" >&2
	exit 2
}
registry=${1%/}
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/oms-operator/Chart.yaml")
buildah_tls=() helm_tls=()
if [[ $registry =~ ^(localhost|127\.0\.0\.1)(:[0-9]+)?(/|$) ]]; then
	buildah_tls=(--tls-verify=false) helm_tls=(--plain-http)
fi
"$ROOT/e2e/harness/tools.sh" helm node-runtime

began=$EPOCHREALTIME
# Through a variable: a failed build must stop us, which `< <(...)` would not.
built=$("$ROOT/e2e/harness/images.sh" build oms-operator oms-bridge)
mapfile -t archives <<<"$built"
buildah=("$BIN/buildah" --root "$OMS_CACHE/images/buildah/root" --runroot "$OMS_CACHE/images/buildah/run"
	--storage-driver vfs)
for archive in "${archives[@]}"; do
	name=$(basename "$archive")
	name=${name%-*.tar}
	# buildah pushes from its storage: in from the archive, out to the registry, then removed.
	image=$("${buildah[@]}" pull --quiet "oci-archive:$archive")
	"${buildah[@]}" push --quiet "${buildah_tls[@]}" "$image" "docker://$registry/$name:$version"
	"${buildah[@]}" rmi --force "$image" >/dev/null
	log "pushed $registry/$name:$version"
done
package=$(mktemp -d)
"$BIN/helm" package "$ROOT/charts/oms-operator" --destination "$package" >/dev/null
"$BIN/helm" push "${helm_tls[@]}" "$package/oms-operator-$version.tgz" "oci://$registry/charts" 2>&1 | sed 's/^/release: helm push: /' >&2
rm -rf "$package"
log "pushed oci://$registry/charts/oms-operator --version $version in $(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
