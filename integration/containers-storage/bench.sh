#!/usr/bin/env bash
# Stock vs patched containers/storage on the realistic layer (a Debian rootfs), in one run: the
# differ paths as podman pulls (cfs-pull apply: NewDiffer -> PrepareStagedLayer ->
# ApplyStagedLayer) and the mount of a 5-layer image. A benchmark that prints figures, not a test.
#
# Each case runs RUNS times (default 5) per build, stock and patched interleaved, each in a fresh
# store, after `sync`; the table shows the median and min-max of wall time, user+sys CPU, and the
# peak RSS, and the floor `zstd -dc rootfs.tar.zst | sha256sum` (decompress and hash once).
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
results="$work/results.tsv"
rm -rf "$work" && mkdir -p "$work"
: >"$results"

. "$here/store.sh"
store() { new_store_at "$work/$1"; }

# timed CASE BUILD CMD...: one timed run (after sync), appended to the results.
timed() {
    local case="$1" build="$2"
    shift 2
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>>"$work/log" ||
        { echo "error: $case ($build) failed:"; tail -n 3 "$work/log"; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\n' "$case" "$build" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$rss" >>"$results"
}

path_of() { [ "$1" = stock ] && echo "$scratch/composefs/build/tools:$sys_path" || echo "$sys_path"; }

for i in $(seq "$runs"); do
    echo "run $i/$runs"
    timed floor - sh -c "zstd -dc '$inputs/rootfs.tar.zst' | sha256sum"
    for build in stock patched; do
        pull="$scratch/bin-$build/cfs-pull" cs="$scratch/bin-$build/containers-storage"
        export PATH="$(path_of "$build")"
        for fmt in tar tar.gz tar.zst; do
            [ -f "$inputs/rootfs.$fmt" ] || gzip -n -6 -c "$inputs/rootfs.tar" >"$inputs/rootfs.tar.gz"
            store "$build-$fmt"
            timed "convert $fmt" "$build" "$pull" apply rootfs "$inputs/rootfs.$fmt"
        done
        store "$build-chunked"
        timed "zstd:chunked cold" "$build" "$pull" apply --annotations "$inputs/rootfs.chunked.json" rootfs "$inputs/rootfs.chunked"
        # The same content again beside it: every file is found in the store (dedup).
        timed "zstd:chunked reuse" "$build" "$pull" apply --annotations "$inputs/rootfs.chunked.json" again "$inputs/rootfs.chunked"
        # A 5-layer image: rootfs, the upper layer, three small layers.
        "$pull" apply --parent rootfs --annotations "$inputs/rootfs-upper.chunked.json" l2 "$inputs/rootfs-upper.chunked" >/dev/null
        "$pull" apply --parent l2 l3 "$inputs/base.tar.zst" >/dev/null
        "$pull" apply --parent l3 l4 "$inputs/upper.tar.zst" >/dev/null
        "$pull" apply --parent l4 l5 "$inputs/base.tar.gz" >/dev/null
        "$cs" create-image --name img l5 >/dev/null
        timed "mount 5-layer image" "$build" sh -c "'$cs' mount -r img && '$cs' unmount img"
        "$cs" shutdown >/dev/null 2>&1 || true
    done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cases = []
for r in rows:
    if r[0] not in cases:
        cases.append(r[0])
def stats(case, build, col):
    v = [float(r[col]) for r in rows if r[0] == case and r[1] == build]
    return statistics.median(v), min(v), max(v)
floor = stats("floor", "-", 2)[0]
print(f"floor (zstd -dc rootfs.tar.zst | sha256sum): {floor:.2f} s")
print(f"{'case':22} {'stock wall s':>18} {'patched wall s':>18} {'stock/patched':>13} {'cpu s stock':>11} {'cpu s patched':>13} {'RSS MiB s/p':>12}")
for c in cases:
    if c == "floor":
        continue
    s, p = stats(c, "stock", 2), stats(c, "patched", 2)
    sc, pc = stats(c, "stock", 3)[0], stats(c, "patched", 3)[0]
    sr, pr = stats(c, "stock", 4)[0] / 1024, stats(c, "patched", 4)[0] / 1024
    print(f"{c:22} {s[0]:6.2f} ({s[1]:.2f}-{s[2]:.2f}) {p[0]:6.2f} ({p[1]:.2f}-{p[2]:.2f}) {s[0] / p[0]:12.2f}x {sc:11.2f} {pc:13.2f} {sr:5.0f}/{pr:<5.0f}")
EOF
