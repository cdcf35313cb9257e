#!/bin/bash
# Benchmark of `composefs-storage convert` (issue 4), all in one run on the same layer:
#   (a) classic unpack:        zstd -dc L | tar -x -C dir
#   (b) floor:                 zstd -dc L | openssl dgst -sha256   (decompress + hash)
#   (c) this library:          composefs-storage convert --verity off L dir   (release build)
# Prints the best of N runs of each, the ratios c/b (goal <= 1.5) and c/a (goal < 1), and the
# peak RSS of (c) (goal < 64 MiB).
#
# The layer is a tar of a big part of /usr (about 200 MB uncompressed), zstd -3, made once.
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

# best wall time (seconds) of $RUNS runs of a shell command; $1 = setup run before each.
best() {
    local setup=$1 cmd=$2 best="" t
    for _ in $(seq "$RUNS"); do
        eval "$setup"
        sync
        t=$( { /usr/bin/time -f "%e" bash -c "$cmd" >/dev/null; } 2>&1 | tail -1)
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    done
    echo "$best"
}

A=$(best "rm -rf '$WORK/a'; mkdir '$WORK/a'" "zstd -dc '$L' | tar -x -C '$WORK/a'")
B=$(best ":" "zstd -dc '$L' | openssl dgst -sha256")
C=$(best "rm -rf '$WORK/c'" "'$BIN' convert --verity off '$L' '$WORK/c'")

rm -rf "$WORK/c"
RSS=$( { /usr/bin/time -f "%M" "$BIN" convert --verity off "$L" "$WORK/c" >/dev/null; } 2>&1 | tail -1)
OBJS=$(find "$WORK/c/diff" -type f | wc -l)
rm -rf "$WORK/a" "$WORK/c"

printf '(a) zstd -dc | tar -x        %6.2f s\n' "$A"
printf '(b) zstd -dc | openssl sha256 %6.2f s\n' "$B"
printf '(c) composefs-storage convert %6.2f s  (%s objects)\n' "$C" "$OBJS"
awk -v a="$A" -v b="$B" -v c="$C" 'BEGIN {
    printf "c/b = %.2f (goal <= 1.5)\nc/a = %.2f (goal < 1)\n", c / b, c / a }'
awk -v k="$RSS" 'BEGIN { printf "peak RSS of (c) = %.1f MiB (goal < 64)\n", k / 1024 }'
