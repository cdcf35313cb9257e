#!/usr/bin/env bash
# Stock vs patched podman, side by side in one run (after run.sh, whose builds, images and
# registry data it uses): `podman pull` of the base image as zstd:chunked and as gzip (cold), the
# pull of the variant sharing base's files (partial), `podman run --rm base true` (start time, the
# composefs mount included; beside stock's classic overlay path, composefs off), `podman save`.
# RUNS runs (default 3), interleaved, median (min-max); a benchmark that prints figures, not a test.
#
# As integration/containers-storage/bench.sh: the stores live on a fresh ext4 filesystem (a sparse
# file on a loop device, direct I/O) where nothing is deleted until the end, each store first pulls
# a small image, untimed (the overlay driver's once-per-runroot probes), and `sync` and
# `settle_memory` (scripts/lib.sh: the VM's memory made ready) run before each timed step.
#
# Usage: integration/podman/bench.sh     Env: RUNS, CFS_INTEGRATION_DIR (as run.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
scratch="${CFS_INTEGRATION_DIR:-$ROOT/build/integration/podman}"
for f in bin-stock/podman bin-patched/podman oci/index.json registry/data; do
    [ -e "$scratch/$f" ] || { echo "error: $scratch/$f missing: run integration/podman/run.sh first" >&2; exit 1; }
done
if [ "${1:-}" != --inside ]; then
    export LD_LIBRARY_PATH="$ROOT/build/stage/usr/local/lib"
    exec unshare -m --propagation private "$0" --inside
fi

runs="${RUNS:-3}"
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. "$here/env.sh"
registry="127.0.0.1:5000"
work="$scratch/bench"
image="$scratch/bench-fs.img"
results="$scratch/bench-results.tsv"
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The namespace takes its mounts with it; the loop device and the image file are freed here.
cleanup() {
    registry_stop
    if mountpoint -q "$work"; then umount -l "$work"; fi
    losetup -j "$image" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d
    rm -f "$image"
}
trap cleanup EXIT
rm -f "$image" && truncate -s "$((10 + 6 * runs))G" "$image"
mkfs.ext4 -q -F "$image"
mkdir -p "$work"
mount "$(losetup -f --show --direct-io=on "$image")" "$work"
registry_start "$scratch/registry"
: >"$results"

# store NAME BUILD [classic]: a fresh store that has pulled the small image (bad-input free).
store() {
    podman_env "$2" "$work/$1"
    if [ "${3:-}" = classic ]; then
        sed -i 's/^use_composefs = "true"/use_composefs = "false"/; s/convert_images = "true"/convert_images = "false"/' "$CONTAINERS_STORAGE_CONF"
    fi
    pm pull -q "$registry/tiny:gzip" >/dev/null
}

# timed CASE BUILD PODMAN_ARGS...: one timed podman command (after sync), appended to the results.
timed() {
    local case="$1" build="$2"
    shift 2
    pm_argv "$@"
    sync
    settle_memory
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "${PM_ARGV[@]}" >/dev/null 2>>"$work/log" ||
        { echo "error: $case ($build) failed:"; tail -n 3 "$work/log"; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\n' "$case" "$build" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$rss" >>"$results"
}

for i in $(seq "$runs"); do
    echo "run $i/$runs"
    for build in stock patched; do
        store "$i-$build" "$build"
        timed "pull base zstd:chunked (cold)" "$build" pull -q "$registry/base:zstd"
        timed "pull variant (partial)" "$build" pull -q "$registry/variant:zstd"
        # A start is 0.2 s, and the machine's noise is as large as the differences: 3 per run.
        for _ in 1 2 3; do
            timed "run --rm base true" "$build" run --rm --net=none "$registry/base:zstd" true
        done
        timed "save base" "$build" save -q -o "$work/$i-$build.tar" "$registry/base:zstd"
        store "$i-$build-gzip" "$build"
        timed "pull base gzip (cold)" "$build" pull -q "$registry/base:gzip"
    done
    store "$i-classic" stock classic
    pm pull -q "$registry/base:zstd" >/dev/null
    for _ in 1 2 3; do
        timed "run --rm base true" "stock, classic overlay" run --rm --net=none "$registry/base:zstd" true
    done
done

python3 "$here/../bench-table.py" "$results" step
