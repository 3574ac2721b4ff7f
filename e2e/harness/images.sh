#!/usr/bin/env bash
# Container images of our programs and of the brokers and cluster DNS a real node (node.sh) runs,
# without a registry: each is packed with buildah into an OCI archive under $OMS_CACHE/images,
# named by a hash of everything that goes into it, so an unchanged image is never packed twice.
#
#   e2e/harness/images.sh build <image>...   builds what is missing; prints each archive's path
#   e2e/harness/images.sh ref <image>        prints the image's name, as pods and chart values use it
#
# Images:
#   oms-operator, oms-bridge  release builds of our binaries (cargo, in $CARGO_TARGET_DIR, default
#                             $OMS_CACHE/target) with the glibc libraries they link (ldd) and
#                             nothing else; user 65532. Tagged with the chart's appVersion, the
#                             tag the chart's values default to.
#   nats                      the official image's layout: /nats-server (tools.sh nats-server),
#                             /nats-server.conf, / on PATH (the operator runs `nats-server`).
#   coredns                   e2e/tools/coredns (tools.sh coredns) as /coredns; user 65532.
# node.sh imports the archives (`node.sh load <cluster> <archive>...`); pods then use the images
# with imagePullPolicy Never or IfNotPresent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.bin
OMS_CACHE=${OMS_CACHE:-$HOME/.cache/oms}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OMS_CACHE/target}
# shellcheck source=versions.env
source "$ROOT/e2e/harness/versions.env"
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/oms-operator/Chart.yaml")
NONROOT=65532
PATH_IN_IMAGE=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'images: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	echo "usage: $0 build <oms-operator|oms-bridge|nats|coredns>... | ref <image>" >&2
	exit 2
}

ref() {
	case $1 in
	oms-operator | oms-bridge) echo "localhost/oms-e2e/$1:$APP_VERSION" ;;
	nats) echo "localhost/oms-e2e/nats:${NATS_VERSION#v}" ;;
	coredns) echo "localhost/oms-e2e/coredns:${COREDNS_VERSION#v}" ;;
	*) usage ;;
	esac
}

# Both release binaries in one cargo run (a no-op when they are fresh). At the lowest CPU
# priority: other builds and tests share the machine, and the target directory.
cargo_release() {
	[[ -z ${CARGO_BUILT:-} ]] || return 0
	log "cargo build --release of oms-operator and oms-bridge (seconds when fresh, cold many minutes)"
	(cd "$ROOT" && CARGO_TARGET_DIR=$CARGO_TARGET_DIR nice -n 19 cargo build --release --locked --quiet \
		-p oms-operator -p oms-bridge)
	CARGO_BUILT=yes
}

# shared_libraries <binary>: the files the dynamic loader maps for it (the loader included), as
# ldd resolves them on this machine, which is where the binary was linked.
shared_libraries() {
	local out
	out=$(ldd "$1") || die "ldd $1 failed: $out"
	awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" | sort -u
}

# rootfs_<image> <dir>: fills the image's root file system (rootfs_rust <binary name> <dir>).
rootfs_rust() {
	local binary=$CARGO_TARGET_DIR/release/$1 dir=$2 lib
	install -D -m 0755 "$binary" "$dir/usr/local/bin/$1"
	for lib in $(shared_libraries "$binary"); do
		install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
	done
	mkdir -p "$dir/etc" "$dir/tmp"
	chmod 1777 "$dir/tmp"
	printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" "nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin" \
		>"$dir/etc/passwd"
	printf '%s\n' "root:x:0:" "nonroot:x:$NONROOT:" >"$dir/etc/group"
}

rootfs_nats() {
	install -D -m 0755 "$(readlink -f "$BIN/nats-server")" "$1/nats-server"
	# What the image runs without arguments; the operator passes its own --config.
	cat >"$1/nats-server.conf" <<'EOF'
# Default configuration of the oms-e2e nats image: clients, monitoring and cluster routes on the
# usual ports. Pods run by the operator use the configuration it renders instead.
port: 4222
http_port: 8222
cluster {
  name: default
  port: 6222
}
EOF
}

rootfs_coredns() {
	install -D -m 0755 "$(readlink -f "$BIN/coredns")" "$1/coredns"
}

# prepare <image>: builds the binaries the image is made of.
prepare() {
	case $1 in
	oms-operator | oms-bridge) cargo_release ;;
	nats) "$ROOT/e2e/harness/tools.sh" nats-server ;;
	coredns) "$ROOT/e2e/harness/tools.sh" coredns ;;
	esac
}

# input_files <image>: the files the image is made of.
input_files() {
	case $1 in
	oms-operator | oms-bridge)
		echo "$CARGO_TARGET_DIR/release/$1"
		shared_libraries "$CARGO_TARGET_DIR/release/$1"
		;;
	nats | coredns) readlink -f "$BIN/$(binary_name "$1")" ;;
	esac
}

binary_name() {
	case $1 in
	nats) echo nats-server ;;
	*) echo "$1" ;;
	esac
}

# image_config <image>: sets CONFIG to the image's `buildah config` flags.
image_config() {
	case $1 in
	oms-operator | oms-bridge)
		CONFIG=(--entrypoint "[\"/usr/local/bin/$1\"]" --user "$NONROOT:$NONROOT" --env "PATH=$PATH_IN_IMAGE")
		;;
	nats)
		# As the official scratch image: root, entrypoint /nats-server, its default config, and /
		# on PATH so that `nats-server` runs as a command.
		CONFIG=(--entrypoint '["/nats-server"]' --cmd '["--config", "nats-server.conf"]'
			--env "PATH=$PATH_IN_IMAGE:/" --port 4222 --port 6222 --port 8222)
		;;
	coredns)
		CONFIG=(--entrypoint '["/coredns"]' --user "$NONROOT:$NONROOT" --env "PATH=$PATH_IN_IMAGE"
			--port 53/udp --port 53/tcp)
		;;
	esac
}

# build <image>: prints the archive, packing it first unless the cache has one for these inputs.
build() {
	local name=$1 image files key archive
	image=$(ref "$name")
	prepare "$name"
	files=$(input_files "$name")
	# Keyed by this script (the recipes), the image's name, every input file and buildah.
	# shellcheck disable=SC2086 # one path a word
	key=$( (cat "${BASH_SOURCE[0]}"; echo "$image"; sha256sum $files; "$BIN/buildah" --version) | sha256sum | cut -c1-12)
	archive=$OMS_CACHE/images/$name-$key.tar
	if [[ ! -f $archive ]]; then
		local work container began=$EPOCHREALTIME
		log "packing $image"
		work=$(mktemp -d)
		case $name in
		oms-operator | oms-bridge) rootfs_rust "$name" "$work/rootfs" ;;
		*) "rootfs_$name" "$work/rootfs" ;;
		esac
		# buildah's own storage under the cache (vfs: no overlay mounts to clean up), as node.sh.
		local buildah=("$BIN/buildah" --root "$OMS_CACHE/images/buildah/root"
			--runroot "$OMS_CACHE/images/buildah/run" --storage-driver vfs)
		container=$("${buildah[@]}" from --quiet scratch)
		"${buildah[@]}" copy --quiet "$container" "$work/rootfs" / >/dev/null
		local CONFIG
		image_config "$name"
		"${buildah[@]}" config "${CONFIG[@]}" --label "org.opencontainers.image.title=$name" "$container"
		"${buildah[@]}" commit --quiet --rm --timestamp 0 "$container" "$image" >/dev/null
		mkdir -p "$OMS_CACHE/images"
		"${buildah[@]}" push --quiet "$image" "oci-archive:$archive.partial:$image"
		"${buildah[@]}" rmi "$image" >/dev/null
		mv "$archive.partial" "$archive"
		rm -rf "$work"
		log "packed $image in $(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s: $archive ($(du -h "$archive" | cut -f1))"
	fi
	echo "$archive"
}

[[ $# -ge 2 ]] || usage
case $1 in
build)
	shift
	for name in "$@"; do
		ref "$name" >/dev/null
		build "$name"
	done
	;;
ref)
	[[ $# -eq 2 ]] || usage
	ref "$2"
	;;
*) usage ;;
esac
