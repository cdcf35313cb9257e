#!/bin/bash
# Benchmark of the zstd:chunked partial pull (issue 5), all in one run:
#   L1 = a realistic layer (a tar of a few /usr dirs, the same one scripts/bench-convert.sh makes),
#   L2 = the same files under other paths (srv/...) and another owner (1000:1000), 90% of them
#        with L1's content and 10% (chosen by name hash) with new content (a byte permutation of
#        the old, so just as compressible); both written as zstd:chunked by `composefs-storage
#        compress` (level 10, as containers/storage).
# Timed, best of N rounds, fresh output dirs each time:
#   (cold)  composefs-storage convert L2.zst            full stream, no other layer
#   (pull0) convert --annotations L2.ann L2.zst         partial pull, no other layer
#   (warm)  convert --annotations L2.ann --source-layer L1-dir --hardlinks L2.zst
#   (warmi) the same with --insecure-skip-diff-id (no DiffID re-read of the whole layer)
# Prints: the share of L2's blob the warm pull read (goal <= 15%), the bytes it wrote for content
# L1 has (goal 0; new content is counted apart), and warm/cold time (goal <= 25%), and the floor
# of the DiffID check (sha256 of L2's tar from one cached file) as a share of the cold time.
#
# Run it as `nice -n -15 scripts/bench-pull.sh` on a shared machine. Output dirs are deleted only
# at the end: on ext4 without a journal, creating inodes right after deleting many is slow.
# Wall times on a loaded machine vary; the CPU figures (user+sys of the process) are steadier.
# Layer dirs go to a scratch journaled ext4 (as in bench-convert.sh: on this kind of machine's
# journal-less root fs, creating inodes after many deletes is slow for every tool), or BENCH_OUT.
# Env: BENCH_DIR (default /var/tmp/cfs-bench), BENCH_OUT (layer dirs; default: the scratch fs when
# root, else BENCH_DIR),
# BENCH_DIRS (what to tar, relative to /), BENCH_RUNS (default 3), BENCH_BIN (prebuilt binary,
# else `cargo build --release`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/cfs-bench}
DIRS=${BENCH_DIRS:-"usr/include usr/lib/python3.11 usr/share/perl usr/share/zoneinfo"}
RUNS=${BENCH_RUNS:-3}
mkdir -p "$WORK"

HAVE=
for d in $DIRS; do [ -d "/$d" ] && HAVE="$HAVE $d"; done
DIRS=${HAVE:-usr/share}
KEY=$(echo "$DIRS" | cksum | cut -d' ' -f1)
L=$WORK/layer-$KEY.tar.zst # shared with bench-convert.sh

if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    (cd "$ROOT" && cargo build --release --bin composefs-storage -q)
    BIN=$ROOT/target/release/composefs-storage
fi

if [ ! -s "$L" ]; then
    echo "making layer from:$DIRS" >&2
    # shellcheck disable=SC2086
    (set +o pipefail; tar -C / --sort=name -cf - $DIRS 2>/dev/null | zstd -3 -q -T0 -o "$L.tmp") && mv "$L.tmp" "$L"
fi

# The two zstd:chunked blobs, made once per layer and binary (the writer's output may change).
SUM=$(cksum <"$BIN" | cut -d' ' -f1)
B1=$WORK/pull-$KEY-$SUM-l1.zst
B2=$WORK/pull-$KEY-$SUM-l2.zst
if [ ! -s "$B1" ] || [ ! -s "$B2" ]; then
    rm -f "$WORK"/pull-"$KEY"-*
    echo "writing L1 and L2 as zstd:chunked" >&2
    "$BIN" compress --annotations-out "$B1.ann" "$L" "$B1" >&2
    zstd -dc "$L" | python3 -c '
import hashlib, sys, tarfile
src = tarfile.open(fileobj=sys.stdin.buffer, mode="r|")
dst = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT)
perm = bytes((b * 7 + 3) % 256 for b in range(256))
new = same = 0
for m in src:
    data = src.extractfile(m) if m.isreg() else None
    changed = m.isreg() and hashlib.sha256(m.name.encode()).digest()[0] < 26  # ~10%
    m.name = "srv/" + m.name
    if m.islnk():
        m.linkname = "srv/" + m.linkname
    m.uid = m.gid = 1000
    m.uname = m.gname = ""
    if changed:
        import io
        body = data.read().translate(perm)
        dst.addfile(m, io.BytesIO(body))
        new += 1
    else:
        dst.addfile(m, data)
        same += m.isreg()
dst.close()
print(f"L2: {same} regular files with L1 content, {new} with new content", file=sys.stderr)
' | "$BIN" compress --annotations-out "$B2.ann" - "$B2" >&2
fi
echo "L1: $B1 ($(stat -c %s "$B1") bytes); L2: $B2 ($(stat -c %s "$B2") bytes)"
cat "$B1" "$B2" >/dev/null # warm the page cache

FS=
if [ -n "${BENCH_OUT:-}" ]; then
    OUTDIR=$BENCH_OUT
elif [ "$(id -u)" = 0 ]; then
    FS=$WORK/scratch-fs.$$
    mkdir "$FS"
    truncate -s 8G "$FS.img"
    mkfs.ext4 -q -F "$FS.img"
    mount -o loop "$FS.img" "$FS"
    OUTDIR=$FS
else
    OUTDIR=$WORK
fi
echo "layer dirs on $(findmnt -n -o FSTYPE -T "$OUTDIR") at $OUTDIR"
P=$OUTDIR/pull-run-$$
mkdir -p "$P"
trap 'rm -rf "$P"; if [ -n "$FS" ]; then umount "$FS"; rm -rf "$FS" "$FS.img"; fi' EXIT
"$BIN" convert -q --verity off --annotations "$B1.ann" "$B1" "$P/l1" >/dev/null

run() { # name command -> "WALL CPU"; the command's stdout in $P/name.json
    local out
    sync
    if ! out=$( { /usr/bin/time -f "%e %U %S" bash -c "$2 >'$P/$1.json' 2>'$P/err'"; } 2>&1 | tail -1); then
        echo "failed: $2" >&2
        cat "$P/err" >&2
        exit 1
    fi
    echo "$out" | awk '{print $1, $2 + $3}'
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

# The floor of any DiffID check: sha256 of L2's tar, read from one cached file (a pull reads it
# from thousands of objects, re-assembled with its headers from the tar-split).
zstd -dcq "$B2" >"$P/l2.tar"
HASH=
for i in $(seq "$RUNS"); do
    read -r w _ < <(run hash "openssl dgst -sha256 '$P/l2.tar'")
    HASH=$(min "$HASH" "$w")
done
rm -f "$P/l2.tar"

COLD= PULL0= WARM= WARMI= COLDC= PULL0C= WARMC= WARMIC=
for i in $(seq "$RUNS"); do
    read -r w c < <(run cold "'$BIN' convert -q --verity off --json '$B2' '$P/cold-$i'")
    COLD=$(min "$COLD" "$w") COLDC=$(min "$COLDC" "$c")
    read -r w c < <(run pull0 "'$BIN' convert -q --verity off --json --annotations '$B2.ann' '$B2' '$P/pull0-$i'")
    PULL0=$(min "$PULL0" "$w") PULL0C=$(min "$PULL0C" "$c")
    read -r w c < <(run warm "'$BIN' convert -q --verity off --json --hardlinks --annotations '$B2.ann' \
        --source-layer '$P/l1' '$B2' '$P/warm-$i'")
    WARM=$(min "$WARM" "$w") WARMC=$(min "$WARMC" "$c")
    read -r w c < <(run warmi "'$BIN' convert -q --verity off --json --hardlinks --insecure-skip-diff-id \
        --annotations '$B2.ann' --source-layer '$P/l1' '$B2' '$P/warmi-$i'")
    WARMI=$(min "$WARMI" "$w") WARMIC=$(min "$WARMIC" "$c")
done

j() { sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" "$P/$1.json" | head -1; }
SIZE=$(j warm blobSize)
READ=$(j warm blobBytesFetched)
WRITTEN=$(j warm bytesWritten)
REUSED=$(j warm bytesReused)
# Content L1 does not have: objects of L2 absent from L1's diff/ (by name = sha256).
NEW=$(comm -23 <(cd "$P/warm-1/diff" && find . -type f -printf '%P %s\n' | sort) \
    <(cd "$P/l1/diff" && find . -type f -printf '%P %s\n' | sort) | awk '{ s += $2 } END { print s + 0 }')
LINKED=$(find "$P/warm-1/diff" -type f -links +1 | wc -l)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '                                            wall      cpu (user+sys)\n'
printf '(cold)  convert L2 (full stream)           %6.2f s  %6.2f s\n' "$COLD" "$COLDC"
printf '(pull0) partial pull of L2, no L1          %6.2f s  %6.2f s\n' "$PULL0" "$PULL0C"
printf '(warm)  partial pull of L2, L1 present     %6.2f s  %6.2f s\n' "$WARM" "$WARMC"
printf '(warmi) the same, DiffID check skipped     %6.2f s  %6.2f s\n' "$WARMI" "$WARMIC"
awk -v s="$SIZE" -v r="$READ" 'BEGIN { printf "L2 blob read by the warm pull: %d of %d bytes = %.1f%% (goal <= 15%%)\n", r, s, 100 * r / s }'
echo "bytes written for content L1 has: $((WRITTEN - NEW)) (goal 0); new content written: $NEW; reused: $REUSED; hardlinked objects: $LINKED"
awk -v w="$WARM" -v c="$COLD" -v p="$PULL0" -v wc="$WARMC" -v cc="$COLDC" -v pc="$PULL0C" \
    -v wi="$WARMI" -v wic="$WARMIC" 'BEGIN {
    printf "warm/cold time = %.1f%% wall, %.1f%% cpu (goal <= 25%%); warm/pull0 = %.1f%% wall, %.1f%% cpu\n",
        100 * w / c, 100 * wc / cc, 100 * w / p, 100 * wc / pc
    printf "warmi/cold time = %.1f%% wall, %.1f%% cpu (the DiffID check alone re-reads and hashes the whole layer)\n",
        100 * wi / c, 100 * wic / cc }'
awk -v h="$HASH" -v c="$COLD" 'BEGIN {
    printf "DiffID floor: sha256 of L2'"'"'s tar alone (openssl, one cached file) %.2f s = %.1f%% of the cold convert\n", h, 100 * h / c
    printf "  (sha256 is sequential: no pull that checks the DiffID can take less, on any number of cores)\n" }'
