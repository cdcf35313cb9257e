#!/usr/bin/env bash
# podman on the patched containers/storage, end to end, side by side with stock podman (issue 17).
#
# Builds podman twice from ../shared/peers (build.sh: stock with mkcomposefs 1.0.8 on PATH, and
# patched: integration/containers-storage/patches applied to its vendored go.podman.io/storage,
# this library through pkg-config), makes three images from the realistic rootfs of the
# containers/storage harness (make-images.py), starts Debian's docker-registry on 127.0.0.1, pushes
# them as zstd:chunked and gzip with stock podman, and for both builds (e2e.sh, in a private mount
# namespace with cgroup v2): pull, run, image mount, partial pull, save/load, rmi, and bad input
# uploaded through the registry API (registry-put.py). Prints the side-by-side table (report.py)
# and "podman: N passed, M failed"; exits non-zero on a failure of the patched build, or of stock
# for another reason than a SPEC §10 defect. bench.sh then times both.
#
# Usage: integration/podman/run.sh
# Env: CFS_INTEGRATION_DIR (scratch dir, default build/integration/podman).
# Needs root; installs what is missing through scripts/setup.sh; offline otherwise (debootstrap
# fetches the rootfs from the machine's Debian mirror when the containers/storage harness has not).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
. "$here/../lib.sh"

peers="$ROOT/../shared/peers"
[ -d "$peers" ] || peers="$ROOT/../../shared/peers"
[ -f "$peers/podman-c6580b4a.tar.zst" ] || { echo "error: ../shared/peers not found" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (podman here runs rootful)" >&2; exit 1; }
scratch="${CFS_INTEGRATION_DIR:-$ROOT/build/integration/podman}"
mkdir -p "$scratch"
scratch="$(cd "$scratch" && pwd)"
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

step() { echo; echo "==== $*"; }

step "tools"
"$ROOT/scripts/setup.sh" apt go
go="$(find_go)"
echo "using $("$go" version)"

step "this library: staged make install"
stage_library
export GOPROXY=off GOTOOLCHAIN=local GOCACHE="$scratch/gocache" CGO_ENABLED=1

step "mkcomposefs 1.0.8 (stock podman execs it)"
build_mkcomposefs

. "$here/build.sh"

step "images (OCI layout: base, derived with a whiteout and an opaque dir, variant sharing base's files)"
rootfs="$ROOT/build/integration/containers-storage/rootfs"
"$ROOT/integration/containers-storage/make-rootfs.sh" "$rootfs"
python3 "$here/make-images.py" "$rootfs" "$scratch/oci"
# The bad-input cases' layer (e2e.sh): the containers/storage harness's small upper layer, as
# gzip and as zstd:chunked (the library's compressor writes what containers/storage's does).
inputs="$scratch/inputs"
rm -rf "$inputs" && mkdir -p "$inputs"
python3 "$ROOT/integration/containers-storage/make-layers.py" "$inputs" >/dev/null
gzip -n -6 -c "$inputs/upper.tar" >"$inputs/upper.tar.gz"
"$ROOT/target/release/composefs-storage" compress --annotations-out "$inputs/upper.chunked.json" "$inputs/upper.tar" "$inputs/upper.chunked" >/dev/null

step "end to end"
export LD_LIBRARY_PATH="$libdir"
unshare -m --propagation private "$here/e2e.sh" "$scratch" "$scratch/e2e.tsv"

step "stock vs patched"
python3 "$here/report.py" "$scratch/e2e.tsv"
