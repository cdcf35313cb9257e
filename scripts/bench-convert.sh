#!/bin/bash
# Benchmark of `composefs-storage convert` (issue 4), all in one run on the same layer:
#   (a) classic unpack:        zstd -dc L | tar -x -C dir
#   (b) floor:                 zstd -dc L | openssl dgst -sha256   (decompress + hash)
#   (c) this library:          composefs-storage convert --verity off L dir   (release build)
# Prints the best of N runs of each, the ratios c/b (goal <= 1.5) and c/a (goal < 1), and the
# peak RSS of (c) (goal < 64 MiB).
#
# The layer is a tar of a big part of /usr (about 200 MB uncompressed), zstd -3, made once.
# On a shared machine run it as `nice -n -15 scripts/bench-convert.sh` (same priority for all
# three) and read the CPU column too: wall times of multi-threaded (c) suffer most from
# run-queue delays when other jobs load the cores.
# Env: BENCH_DIR (work dir, default /var/tmp/cfs-bench), BENCH_DIRS (what to tar, relative
# to /), BENCH_RUNS (default 3), BENCH_BIN (prebuilt binary, else `cargo build --release`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/cfs-bench}
DIRS=${BENCH_DIRS:-"usr/include usr/lib/python3.11 usr/share/perl usr/share/zoneinfo"}
RUNS=${BENCH_RUNS:-3}
mkdir -p "$WORK"
L=$WORK/layer.tar.zst

if [ ! -s "$L" ]; then
    echo "making layer from: $DIRS" >&2
    # shellcheck disable=SC2086
    tar -C / --sort=name -cf - $DIRS 2>/dev/null | zstd -3 -q -T0 -o "$L"
fi
USIZE=$(zstd -dc "$L" | wc -c)
ENTRIES=$(zstd -dc "$L" | tar -t | wc -l)
echo "layer: $L, $(stat -c %s "$L") bytes compressed, $USIZE bytes uncompressed, $ENTRIES entries"

if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    (cd "$ROOT" && cargo build --release --bin composefs-storage -q)
    BIN=$ROOT/target/release/composefs-storage
fi

cat "$L" >/dev/null # warm the page cache

# Each round runs (a), (b), (c) back to back so they see the same machine load; the best
# wall time and the best CPU time (user+sys of all processes of the pipeline) of each over
# $RUNS rounds are kept. CPU time is reported because wall time is unreliable when other jobs
# share the cores.
run() { # name setup command -> "WALL CPU"
    local out
    eval "$2"
    sync
    if ! out=$(/usr/bin/time -f "%e %U %S" bash -c "{ $3; } >/dev/null 2>'$WORK/err'" 2>&1 | tail -1); then
        echo "failed: $3" >&2
        cat "$WORK/err" >&2
        exit 1
    fi
    echo "$out" | awk '{print $1, $2 + $3}'
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

A= AC= B= BC= C= CC=
for _ in $(seq "$RUNS"); do
    read -r w c < <(run a "rm -rf '$WORK/a'; mkdir '$WORK/a'" "zstd -dc '$L' | tar -x -C '$WORK/a'")
    A=$(min "$A" "$w"); AC=$(min "$AC" "$c")
    read -r w c < <(run b ":" "zstd -dc '$L' | openssl dgst -sha256")
    B=$(min "$B" "$w"); BC=$(min "$BC" "$c")
    read -r w c < <(run c "rm -rf '$WORK/c'" "'$BIN' convert --verity off '$L' '$WORK/c'")
    C=$(min "$C" "$w"); CC=$(min "$CC" "$c")
done

rm -rf "$WORK/c"
RSS=$( { /usr/bin/time -f "%M" "$BIN" convert --verity off "$L" "$WORK/c" >/dev/null; } 2>&1 | tail -1)
OBJS=$(find "$WORK/c/diff" -type f | wc -l)
rm -rf "$WORK/a" "$WORK/c"

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '                               wall      cpu (user+sys)\n'
printf '(a) zstd -dc | tar -x          %6.2f s  %6.2f s\n' "$A" "$AC"
printf '(b) zstd -dc | openssl sha256  %6.2f s  %6.2f s\n' "$B" "$BC"
printf '(c) composefs-storage convert  %6.2f s  %6.2f s  (%s objects)\n' "$C" "$CC" "$OBJS"
awk -v a="$A" -v b="$B" -v c="$C" -v ac="$AC" -v bc="$BC" -v cc="$CC" 'BEGIN {
    printf "c/b = %.2f wall, %.2f cpu (goal <= 1.5)\nc/a = %.2f wall, %.2f cpu (goal < 1)\n", c / b, cc / bc, c / a, cc / ac }'
awk -v k="$RSS" 'BEGIN { printf "peak RSS of (c) = %.1f MiB (goal < 64)\n", k / 1024 }'
