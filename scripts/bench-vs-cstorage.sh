#!/usr/bin/env bash
# This library against containers/storage and mkcomposefs 1.0.8 (the peer), pair by pair, on the
# realistic layer of integration/containers-storage (a Debian rootfs, 210 MB): issue 22's table.
# A benchmark that prints figures, not a test.
#
#   convert a .tar.zst   ours: `composefs-storage convert`; peer: c/storage's differ with
#                        convert_images (cfs-pull apply, a fresh store that took a small layer)
#   zstd:chunked, cold   ours: `convert --annotations` (the partial pull); peer: the same differ path
#   zstd:chunked writer  ours: `compress` (one thread per CPU); peer: compressor.ZstdCompressor
#   image writer         ours: `mkimage`; peer: `mkcomposefs --from-file`, of a dump of /usr
#
# PAIRS pairs per case (default 5), peer then ours, each pair twice: after `sync` and back to
# back (no sync, the previous run's dirty pages still going out). Per case: median (min-max) wall
# time, user and sys CPU, peak RSS, and peer/ours pair by pair. Stores and layers live on a fresh
# ext4 on a loop device, nothing deleted until the end (see integration/containers-storage/README.md),
# and each run, of both modes, follows `settle_memory` (scripts/lib.sh: the VM's memory made ready).
#
# Usage: scripts/bench-vs-cstorage.sh    (after integration/containers-storage/run.sh, whose
#        builds and inputs it uses)          Env: PAIRS, CFS_INTEGRATION_DIR
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cs="${CFS_INTEGRATION_DIR:-$ROOT/build/integration/containers-storage}"
inputs="$cs/inputs"
mkcomposefs="$cs/composefs/build/tools/mkcomposefs"
for f in bin-stock/cfs-pull inputs/rootfs.tar inputs/rootfs.tar.zst inputs/rootfs.chunked composefs/build/tools/mkcomposefs; do
    [ -e "$cs/$f" ] || { echo "error: $cs/$f missing: run integration/containers-storage/run.sh first" >&2; exit 1; }
done
pairs="${PAIRS:-5}"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
ours="$ROOT/target/release/composefs-storage"
out="$ROOT/build/bench-vs-cstorage"
work="$out/work" image="$out/fs.img" results="$out/results.tsv"
mkdir -p "$out"
trap 'fresh_fs_unmount "$image" "$work"' EXIT
fresh_fs_mount "$image" "$work" "$((10 + 6 * pairs))"
: >"$results"

# The dump of /usr (134k entries here), made once by mkcomposefs and kept.
dump="$out/usr.dump"
if ! [ -s "$dump" ]; then
    echo "making $dump (mkcomposefs reads all of /usr once)"
    "$mkcomposefs" --threads="$(nproc)" /usr "$out/usr.cfs"
    "$(dirname "$mkcomposefs")/composefs-info" dump "$out/usr.cfs" >"$dump.tmp" && mv "$dump.tmp" "$dump"
fi
echo "dump: $(wc -l <"$dump") entries"

. "$ROOT/integration/containers-storage/store.sh"
peer_path="$(dirname "$mkcomposefs"):$PATH"
sha() { echo "sha256:$(sha256sum <"$1" | cut -d' ' -f1)"; }
warm_digest="$(sha "$inputs/corpus-noparents-ustar.tar")"
zst_digest="$(sha "$inputs/rootfs.tar.zst")"
chunked_digest="$(sha "$inputs/rootfs.chunked")"
# peer_store NAME: a fresh c/storage store that has taken a small layer (the driver's probes done).
peer_store() {
    new_store_at "$work/$1"
    PATH="$peer_path" "$cs/bin-stock/cfs-pull" apply --digest "$warm_digest" warm "$inputs/corpus-noparents-ustar.tar" >/dev/null 2>>"$work/log"
}

# timed CASE BUILD MODE CMD...: one run (after sync when MODE is synced), appended to the results.
timed() {
    local case="$1" build="$2" mode="$3"
    shift 3
    [ "$mode" = synced ] && sync
    settle_memory
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" env PATH="$peer_path" "$@" >/dev/null 2>>"$work/log" ||
        { echo "error: $case ($build) failed:"; tail -n 3 "$work/log"; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case, $mode" "$build" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$rss" "$user" "$sys" >>"$results"
}

for i in $(seq "$pairs"); do
    echo "pair $i/$pairs"
    for mode in synced back-to-back; do
        n="$i-$mode"
        peer_store "peer-zst-$n"
        timed "convert .tar.zst" peer "$mode" "$cs/bin-stock/cfs-pull" apply --digest "$zst_digest" rootfs "$inputs/rootfs.tar.zst"
        timed "convert .tar.zst" ours "$mode" "$ours" convert -q "$inputs/rootfs.tar.zst" "$work/ours-zst-$n"
        peer_store "peer-chunked-$n"
        timed "zstd:chunked cold" peer "$mode" "$cs/bin-stock/cfs-pull" apply --digest "$chunked_digest" \
            --annotations "$inputs/rootfs.chunked.json" rootfs "$inputs/rootfs.chunked"
        timed "zstd:chunked cold" ours "$mode" "$ours" convert -q --annotations "$inputs/rootfs.chunked.json" \
            "$inputs/rootfs.chunked" "$work/ours-chunked-$n"
        timed "zstd:chunked writer" peer "$mode" "$cs/bin-stock/cfs-pull" compress "$inputs/rootfs.tar" \
            "$work/peer-$n.zst" "$work/peer-$n.json"
        timed "zstd:chunked writer" ours "$mode" "$ours" compress "$inputs/rootfs.tar" "$work/ours-$n.zst"
        timed "image writer (dump of /usr)" peer "$mode" "$mkcomposefs" --from-file "$dump" "$work/peer-$n.cfs"
        timed "image writer (dump of /usr)" ours "$mode" "$ours" mkimage "$dump" "$work/ours-$n.cfs"
        cmp -s "$work/peer-$n.cfs" "$work/ours-$n.cfs" || { echo "error: the two images of the dump differ"; exit 1; }
    done
    # The stores' bind mounts of their homes (kept until shutdown), for the next pair's sync.
    for s in "$work/peer-"*/; do
        CONTAINERS_STORAGE_CONF="$s/storage.conf" "$cs/bin-stock/containers-storage" shutdown >/dev/null 2>&1 || true
    done
done

python3 "$ROOT/integration/bench-table.py" "$results" case peer,ours
