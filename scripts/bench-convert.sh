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

# Only the dirs this machine has (a fresh machine may lack some); /usr/share if none.
HAVE=
for d in $DIRS; do [ -d "/$d" ] && HAVE="$HAVE $d"; done
DIRS=${HAVE:-usr/share}
# One cached layer per set of dirs.
L=$WORK/layer-$(echo "$DIRS" | cksum | cut -d' ' -f1).tar.zst

if [ ! -s "$L" ]; then
    echo "making layer from:$DIRS" >&2
    # tar exits 1 for files that changed while read: still a good layer.
    # shellcheck disable=SC2086
    (set +o pipefail; tar -C / --sort=name -cf - $DIRS 2>/dev/null | zstd -3 -q -T0 -o "$L.tmp") && mv "$L.tmp" "$L"
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

# Where the outputs go. This kind of machine's root filesystem is ext4 WITHOUT a journal, where
# creating inodes soon after deleting many is slow for every tool: the allocator skips "recently
# deleted" inodes (5 min while their inode table block is dirty) by scanning the group's bitmap,
# quadratic in the deletions (perf: recently_deleted / find_inode_bit, 70% of tar -x and of
# convert alike). A container store sits on a journaled filesystem, so by default the outputs go
# to a scratch journaled ext4 (a sparse image on $WORK, loop-mounted; needs root).
# BENCH_FS=workdir writes into $WORK itself instead.
# Either way every run writes a fresh directory and all are deleted at the end: deleting the
# previous output right before a timed run would time the quirk above, not the tools.
if [ "${BENCH_FS:-scratch}" = scratch ] && [ "$(id -u)" = 0 ]; then
    FS=$WORK/scratch-fs.$$
    mkdir "$FS"
    truncate -s 8G "$FS.img"
    mkfs.ext4 -q -F "$FS.img"
    mount -o loop "$FS.img" "$FS"
    trap 'umount "$FS"; rm -rf "$FS" "$FS.img"' EXIT
    echo "outputs on a scratch journaled ext4 ($FS)"
else
    FS=$WORK
    echo "outputs on $(findmnt -n -o FSTYPE -T "$WORK") at $WORK (BENCH_FS=workdir)"
fi
rm -rf "$FS"/out.*
sync
sleep 6
OUT=$FS/out.$$
mkdir "$OUT"
trap 'rm -rf "$OUT"; if [ "$FS" != "$WORK" ]; then umount "$FS"; rm -rf "$FS" "$FS.img"; fi' EXIT

# Each round runs (a), (b), (c) back to back so they see the same machine load; the best
# wall time and the best CPU time (user+sys of all processes of the pipeline) of each over
# $RUNS rounds are kept. CPU time is reported because wall time is unreliable when other jobs
# share the cores.
run() { # command -> "WALL CPU"
    local out
    sync
    if ! out=$(/usr/bin/time -f "%e %U %S" bash -c "{ $1; } >/dev/null 2>'$OUT/err'" 2>&1 | tail -1); then
        echo "failed: $1" >&2
        cat "$OUT/err" >&2
        exit 1
    fi
    echo "$out" | awk '{print $1, $2 + $3}'
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

A= AC= B= BC= C= CC=
for i in $(seq "$RUNS"); do
    mkdir "$OUT/a$i"
    read -r w c < <(run "zstd -dc '$L' | tar -x -C '$OUT/a$i'")
    A=$(min "$A" "$w"); AC=$(min "$AC" "$c")
    read -r w c < <(run "zstd -dc '$L' | openssl dgst -sha256")
    B=$(min "$B" "$w"); BC=$(min "$BC" "$c")
    read -r w c < <(run "'$BIN' convert --verity off '$L' '$OUT/c$i'")
    C=$(min "$C" "$w"); CC=$(min "$CC" "$c")
done

RSS=$( { /usr/bin/time -f "%M" "$BIN" convert --verity off "$L" "$OUT/rss" >/dev/null; } 2>&1 | tail -1)
OBJS=$(find "$OUT/rss/diff" -type f | wc -l)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '                               wall      cpu (user+sys)\n'
printf '(a) zstd -dc | tar -x          %6.2f s  %6.2f s\n' "$A" "$AC"
printf '(b) zstd -dc | openssl sha256  %6.2f s  %6.2f s\n' "$B" "$BC"
printf '(c) composefs-storage convert  %6.2f s  %6.2f s  (%s objects)\n' "$C" "$CC" "$OBJS"
awk -v a="$A" -v b="$B" -v c="$C" -v ac="$AC" -v bc="$BC" -v cc="$CC" 'BEGIN {
    printf "c/b = %.2f wall, %.2f cpu (goal <= 1.5)\nc/a = %.2f wall, %.2f cpu (goal < 1)\n", c / b, cc / bc, c / a, cc / ac }'
awk -v k="$RSS" 'BEGIN { printf "peak RSS of (c) = %.1f MiB (goal < 64)\n", k / 1024 }'
