#!/usr/bin/env bash
# Stock vs patched containers/storage on the realistic layer (a Debian rootfs), in one run: the
# differ paths as podman pulls (cfs-pull apply: NewDiffer -> PrepareStagedLayer ->
# ApplyStagedLayer) and the mount of a 5-layer image. A benchmark that prints figures, not a test.
#
# Each case runs RUNS times (default 5) per build, stock and patched interleaved, each in a fresh
# store, after `sync` and `settle_memory` (scripts/lib.sh: the VM's memory made ready); the table
# shows the median and min-max of wall time, user+sys CPU, and the peak RSS, and the floor
# `zstd -dc rootfs.tar.zst | sha256sum` (decompress and hash once).
#
# What is timed is the layer path alone, as a pull on a running machine sees it:
#   - the stores live on a fresh ext4 filesystem (a sparse file on a loop device, direct I/O) and
#     nothing is deleted until the end: ext4 makes inode allocation slow for a while after many
#     deletions (recently_deleted() in its inode allocator; 4 s of system time instead of 0.4 for
#     a 5k-file layer on the aged disk of a test machine), which would time the disk's history;
#   - each store first takes a tiny layer, untimed: the overlay driver's one-time probes (its
#     ID-mapped lower check mounts and unmounts an overlay, and the unmount flushes every dirty
#     page of the filesystem) run once per runroot, i.e. once per boot on a real machine;
#   - the blob's digest is given, as a manifest gives it (cfs-pull --digest), not computed.
#
# Usage: integration/containers-storage/bench.sh     (after run.sh, whose builds and inputs it uses)
# Env: RUNS, CFS_INTEGRATION_DIR (as run.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
scratch="${CFS_INTEGRATION_DIR:-$ROOT/build/integration/containers-storage}"
runs="${RUNS:-5}"
inputs="$scratch/inputs"
for f in bin-stock/cfs-pull bin-patched/cfs-pull inputs/rootfs.chunked composefs/build/tools/mkcomposefs; do
    [ -e "$scratch/$f" ] || { echo "error: $scratch/$f missing: run integration/containers-storage/run.sh first" >&2; exit 1; }
done
export LD_LIBRARY_PATH="$ROOT/build/stage/usr/local/lib"
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
work="$scratch/bench"
results="$scratch/bench-results.tsv"
image="$scratch/bench-fs.img"
trap 'fresh_fs_unmount "$image" "$work"' EXIT
# Sized for RUNS runs of both builds (about 2.5 GB each run), sparse.
fresh_fs_mount "$image" "$work" "$((8 + 3 * runs))"
: >"$results"

. "$here/store.sh"
# store NAME: a fresh store that has taken the tiny layer (the driver's probes are done).
store() {
    new_store_at "$work/$1"
    "$pull" apply --digest "$(digest_of "$inputs/corpus-noparents-ustar.tar")" warm-up "$inputs/corpus-noparents-ustar.tar" >/dev/null 2>>"$work/log" ||
        { echo "error: the warm-up layer failed:"; tail -n 3 "$work/log"; exit 1; }
}
declare -A digests
digest_of() {
    [ -n "${digests[$1]:-}" ] || digests[$1]="sha256:$(sha256sum <"$1" | cut -d' ' -f1)"
    echo "${digests[$1]}"
}

# timed CASE BUILD CMD...: one timed run (after sync), appended to the results.
timed() {
    local case="$1" build="$2"
    shift 2
    sync
    settle_memory
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>>"$work/log" ||
        { echo "error: $case ($build) failed:"; tail -n 3 "$work/log"; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\n' "$case" "$build" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$rss" >>"$results"
}

path_of() { [ "$1" = stock ] && echo "$scratch/composefs/build/tools:$sys_path" || echo "$sys_path"; }

for i in $(seq "$runs"); do
    echo "run $i/$runs"
    timed "floor (zstd -dc rootfs.tar.zst | sha256sum)" - sh -c "zstd -dc '$inputs/rootfs.tar.zst' | sha256sum"
    for build in stock patched; do
        pull="$scratch/bin-$build/cfs-pull" cs="$scratch/bin-$build/containers-storage"
        export PATH="$(path_of "$build")"
        for fmt in tar tar.gz tar.zst; do
            [ -f "$inputs/rootfs.$fmt" ] || gzip -n -6 -c "$inputs/rootfs.tar" >"$inputs/rootfs.tar.gz"
            store "$i-$build-$fmt"
            timed "convert $fmt" "$build" "$pull" apply --digest "$(digest_of "$inputs/rootfs.$fmt")" rootfs "$inputs/rootfs.$fmt"
        done
        chunked=(--digest "$(digest_of "$inputs/rootfs.chunked")" --annotations "$inputs/rootfs.chunked.json")
        store "$i-$build-chunked"
        timed "zstd:chunked cold" "$build" "$pull" apply "${chunked[@]}" rootfs "$inputs/rootfs.chunked"
        # The same content again beside it: every file is found in the store (dedup).
        timed "zstd:chunked reuse" "$build" "$pull" apply "${chunked[@]}" again "$inputs/rootfs.chunked"
        # A 5-layer image: rootfs, the upper layer, three small layers.
        "$pull" apply --parent rootfs --annotations "$inputs/rootfs-upper.chunked.json" l2 "$inputs/rootfs-upper.chunked" >/dev/null
        "$pull" apply --parent l2 l3 "$inputs/base.tar.zst" >/dev/null
        "$pull" apply --parent l3 l4 "$inputs/upper.tar.zst" >/dev/null
        "$pull" apply --parent l4 l5 "$inputs/base.tar.gz" >/dev/null
        "$cs" create-image --name img l5 >/dev/null
        timed "mount 5-layer image" "$build" sh -c "'$cs' mount -r img && '$cs' unmount img"
    done
    # The stores' bind mounts of their homes (kept until shutdown), for the next run's sync.
    for build in stock patched; do
        for s in "$work/$i-$build-"*/; do
            CONTAINERS_STORAGE_CONF="$s/storage.conf" "$scratch/bin-$build/containers-storage" shutdown >/dev/null 2>&1 || true
        done
    done
done

python3 "$here/../bench-table.py" "$results"
