#!/usr/bin/env bash
# Interleaved cold (or reuse) zstd:chunked pulls of the rootfs layer through containers/storage,
# build against build, for A/B work on the pull: each run in a fresh store on a fresh ext4, after
# the warm-up layer, `sync` and `settle_memory`, as bench.sh times them; prints each run's wall,
# user, sys, peak RSS and the phases (`cfs-pull --times`), then the medians and the A/B ratio pair
# by pair. A tool for a developer at the machine, not a test.
#
# Usage: integration/containers-storage/pairs.sh N A B      (after run.sh)
#   A, B: "stock", "patched", or a name given in the environment:
#     BIN_<name>=DIR   holds cfs-pull and containers-storage (default: run.sh's bin-<name>)
#     LIB_<name>=DIR   LD_LIBRARY_PATH for that build (default: the staged library), e.g. a dir
#                      with an unstripped libcomposefs_storage.so.0 from target/release
#     ENV_<name>="K=V ..."  extra environment for its runs
# Env: REUSE=1 times a second pull of the same layer beside the first (every file found);
#      PERF_AT=RUN-NAME (e.g. 2-patched) records that run with `perf record -g` into
#      $scratch/perf-RUN-NAME.data (see scripts/perf-threads.py); PERF_EVENT replaces the sampling
#      (e.g. "-e sched:sched_switch" for `perf-threads.py blocked`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
. "$here/store.sh"
[ $# -eq 3 ] || { sed -n '8,17p' "$0" >&2; exit 2; }
n="$1" a="$2" b="$3"
scratch="${CFS_INTEGRATION_DIR:-$ROOT/build/integration/containers-storage}"
inputs="$scratch/inputs"
work="$scratch/pairs"
image="$scratch/pairs-fs.img"
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
trap 'fresh_fs_unmount "$image" "$work"' EXIT
fresh_fs_mount "$image" "$work" "$((4 + n))"
chunked=(--digest "sha256:$(sha256sum <"$inputs/rootfs.chunked" | cut -d' ' -f1)" --annotations "$inputs/rootfs.chunked.json")
warm=(--digest "sha256:$(sha256sum <"$inputs/corpus-noparents-ustar.tar" | cut -d' ' -f1)")
results="$scratch/pairs-results.tsv"
: >"$results"

for i in $(seq "$n"); do
    for build in "$a" "$b"; do
        bin_var="BIN_$build" lib_var="LIB_$build" env_var="ENV_$build"
        bin="${!bin_var:-$scratch/bin-$build}"
        export LD_LIBRARY_PATH="${!lib_var:-$ROOT/build/stage/usr/local/lib}"
        if [ "$build" = stock ]; then export PATH="$scratch/composefs/build/tools:$sys_path"; else export PATH="$sys_path"; fi
        new_store_at "$work/$i-$build"
        "$bin/cfs-pull" apply "${warm[@]}" warm "$inputs/corpus-noparents-ustar.tar" >/dev/null 2>>"$work/log"
        id=rootfs
        if [ -n "${REUSE:-}" ]; then
            "$bin/cfs-pull" apply "${chunked[@]}" rootfs "$inputs/rootfs.chunked" >/dev/null 2>>"$work/log"
            id=again
        fi
        sync
        settle_memory
        perf=()
        # shellcheck disable=SC2206 # PERF_EVENT is words
        [ "${PERF_AT:-}" = "$i-$build" ] && perf=(perf record -q -g ${PERF_EVENT:--F 4000} -o "$scratch/perf-$i-$build.data" --)
        # shellcheck disable=SC2086 # ENV_<name> is words
        env ${!env_var:-} "${perf[@]}" /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
            "$bin/cfs-pull" apply --times "${chunked[@]}" "$id" "$inputs/rootfs.chunked" >/dev/null 2>"$work/times"
        read -r wall user sys rss <"$work/time"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$build" "$wall" "$user" "$sys" "$rss" "$(tr -d '\n' <"$work/times")" | tee -a "$results"
        "$bin/containers-storage" shutdown >/dev/null 2>&1 || true
    done
done

python3 - "$results" "$a" "$b" <<'EOF'
import statistics as st, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
wall = {a: [], b: []}
for r in rows:
    wall[r[1]].append(float(r[2]))
for name, cpu_rss in ((a, None), (b, None)):
    rs = [r for r in rows if r[1] == name]
    print(f"{name}: wall {st.median(wall[name]):.3f} s (min {min(wall[name]):.2f}, max {max(wall[name]):.2f}), "
          f"cpu {st.median(float(r[3]) + float(r[4]) for r in rs):.2f} s, RSS {st.median(int(r[5]) for r in rs) / 1024:.0f} MiB")
pairs = [x / y for x, y in zip(wall[a], wall[b])]
print(f"{a}/{b} pair by pair: {st.median(pairs):.3f}x ({min(pairs):.2f}-{max(pairs):.2f})")
EOF
