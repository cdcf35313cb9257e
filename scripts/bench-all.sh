#!/bin/bash
# Every benchmark in one run, ending with one table: each figure next to its baseline measured
# in the same run, and their ratio.
#
#   scripts/bench-all.sh [--quick]
#
# Runs scripts/bench-convert.sh (convert vs classic unpack and vs the decompress+hash floor),
# scripts/bench-image.sh (image writer vs the composefs crate), scripts/bench-pull.sh (a
# zstd:chunked layer L2 sharing 90% of its contents with L1, pulled with L1 present vs converted
# cold), scripts/bench-index.sh (object lookups across 500 vs 5 source layers) and
# scripts/bench-mount.sh (mount stacks, needs root + EROFS + overlayfs). All data is
# made on this machine from its own files (the zstd:chunked blobs by `composefs-storage compress`).
#
# Time: about 5-10 minutes on 2 cores (most of it release builds the first time); --quick does
# one round of each on smaller data (about 2-3 minutes once built). Logs: $BENCH_DIR/logs.
# Env: BENCH_DIR (work dir, default /var/tmp/cfs-bench), BENCH_OUT (see bench-pull.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=
case "${1:-}" in
--quick) QUICK=1 ;;
"") ;;
*)
    echo "usage: $0 [--quick]" >&2
    exit 2
    ;;
esac
WORK=${BENCH_DIR:-/var/tmp/cfs-bench}
LOGS=$WORK/logs
mkdir -p "$LOGS"
export BENCH_DIR=$WORK
START=$(date +%s)

note() { echo "== $*" >&2; }
# The first number after a pattern in a log (empty when absent).
grab() { sed -n "s/.*$2[^0-9]*\([0-9][0-9.]*\).*/\1/p" "$1" | head -1; }
# The second number after it.
grab2() { sed -n "s/.*$2[^0-9]*[0-9][0-9.]*[^0-9]*\([0-9][0-9.]*\).*/\1/p" "$1" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
# A figure "1.23 s" or "-" when absent.
fmt() { if [ -n "$1" ]; then echo "$1 $2"; else echo "-"; fi; }
ROWS=()
row() { ROWS+=("$(printf '%-44s %-16s %-34s %-8s %s' "$1" "$2" "$3" "$4" "$5")"); }

note "building the release CLI"
(cd "$ROOT" && cargo build --release --bin composefs-storage -q)
BIN=$ROOT/target/release/composefs-storage

# --- convert ------------------------------------------------------------------------------
if [ -n "$QUICK" ]; then
    CONV_ENV=(BENCH_RUNS=1 BENCH_DIRS="${BENCH_DIRS:-usr/include usr/share/zoneinfo}")
else
    CONV_ENV=(BENCH_RUNS="${BENCH_RUNS:-3}")
fi
note "convert (scripts/bench-convert.sh)"
if env "${CONV_ENV[@]}" BENCH_BIN="$BIN" bash "$ROOT/scripts/bench-convert.sh" 2>&1 | tee "$LOGS/convert.log" >&2; then
    A=$(grab "$LOGS/convert.log" '(a) zstd -dc | tar -x')
    B=$(grab "$LOGS/convert.log" '(b) zstd -dc | openssl sha256')
    C=$(grab "$LOGS/convert.log" '(c) composefs-storage convert')
    AC=$(grab2 "$LOGS/convert.log" '(a) zstd -dc | tar -x')
    BC=$(grab2 "$LOGS/convert.log" '(b) zstd -dc | openssl sha256')
    CC=$(grab2 "$LOGS/convert.log" '(c) composefs-storage convert')
    RSS=$(grab "$LOGS/convert.log" 'peak RSS of (c) =')
    USIZE=$(sed -n 's/.*, \([0-9]*\) bytes uncompressed.*/\1/p' "$LOGS/convert.log" | head -1)
    row "convert a layer (wall)" "$(fmt "$C" s)" "decompress+sha256 floor $(fmt "$B" s)" "$(ratio "$C" "$B")" "goal <= 1.5x"
    row "convert a layer (wall)" "$(fmt "$C" s)" "zstd -dc | tar -x $(fmt "$A" s)" "$(ratio "$C" "$A")" "goal < 1x"
    row "convert a layer (cpu: user+sys)" "$(fmt "$CC" s)" "decompress+sha256 floor $(fmt "$BC" s)" "$(ratio "$CC" "$BC")" ""
    row "convert a layer (cpu: user+sys)" "$(fmt "$CC" s)" "zstd -dc | tar -x $(fmt "$AC" s)" "$(ratio "$CC" "$AC")" ""
    row "convert peak RSS" "$(fmt "$RSS" MiB)" "layer tar $(awk -v u="$USIZE" 'BEGIN { printf "%.0f MiB", u / 1048576 }')" \
        "$(ratio "$RSS" "$(awk -v u="$USIZE" 'BEGIN { print u / 1048576 }')")" "goal < 64 MiB"
else
    row "convert" "failed" "see $LOGS/convert.log" "-" ""
fi

# --- image writer -------------------------------------------------------------------------
IMG_ROOT=/usr
[ -n "$QUICK" ] && IMG_ROOT=/usr/share
note "image writer (scripts/bench-image.sh $IMG_ROOT)"
if env ${QUICK:+ROUNDS=1} bash "$ROOT/scripts/bench-image.sh" "$IMG_ROOT" 2>&1 | tee "$LOGS/image.log" >&2; then
    # Rows: writer parse-s write-s "RSS-pre MB" "RSS-peak MB" ...
    read -r _ _ OW _ _ ORSS _ < <(grep '^ours ' "$LOGS/image.log" || echo "- - - - - - -")
    read -r _ _ CW _ _ CRSS _ < <(grep '^composefs-rs ' "$LOGS/image.log" || echo "- - - - - - -")
    ENTRIES=$(sed -n 's/.*(\([0-9]*\) entries).*/\1/p' "$LOGS/image.log" | head -1)
    SAME=$(sed -n 's/^images identical: \([a-zA-Z]*\).*/\1/p' "$LOGS/image.log")
    row "EROFS image write, $ENTRIES entries" "$(fmt "$OW" s)" "composefs crate $(fmt "$CW" s)" "$(ratio "$OW" "$CW")" "identical: $SAME"
    row "EROFS image write peak RSS" "$(fmt "$ORSS" MB)" "composefs crate $(fmt "$CRSS" MB)" "$(ratio "$ORSS" "$CRSS")" ""
else
    row "image writer" "failed" "see $LOGS/image.log" "-" ""
fi

# --- partial pull -------------------------------------------------------------------------
note "partial pull (scripts/bench-pull.sh)"
PULL_ENV=(BENCH_BIN="$BIN")
[ -n "$QUICK" ] && PULL_ENV+=(BENCH_RUNS=1 BENCH_DIRS="${BENCH_DIRS:-usr/include usr/share/zoneinfo}")
if env "${PULL_ENV[@]}" bash "$ROOT/scripts/bench-pull.sh" 2>&1 | tee "$LOGS/pull.log" >&2; then
    COLD=$(grab "$LOGS/pull.log" '(cold)  convert L2 (full stream)')
    COLDC=$(grab2 "$LOGS/pull.log" '(cold)  convert L2 (full stream)')
    PULL0=$(grab "$LOGS/pull.log" '(pull0) partial pull of L2, no L1')
    WARM=$(grab "$LOGS/pull.log" '(warm)  partial pull of L2, L1 present')
    WARMC=$(grab2 "$LOGS/pull.log" '(warm)  partial pull of L2, L1 present')
    READ=$(grab "$LOGS/pull.log" 'L2 blob read by the warm pull:')
    SIZE=$(grab2 "$LOGS/pull.log" 'L2 blob read by the warm pull:')
    SAME=$(grab "$LOGS/pull.log" 'bytes written for content L1 has:')
    NEW=$(grab "$LOGS/pull.log" 'new content written:')
    mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }
    row "pull L2 with L1 present (wall)" "$(fmt "$WARM" s)" "cold convert of L2 $(fmt "$COLD" s)" "$(ratio "$WARM" "$COLD")" "goal <= 0.25x"
    row "pull L2 with L1 present (cpu: user+sys)" "$(fmt "$WARMC" s)" "cold convert of L2 $(fmt "$COLDC" s)" "$(ratio "$WARMC" "$COLDC")" ""
    WARMI=$(grab "$LOGS/pull.log" '(warmi) the same, DiffID check skipped')
    row "  same, DiffID check skipped (wall)" "$(fmt "$WARMI" s)" "cold convert of L2 $(fmt "$COLD" s)" "$(ratio "$WARMI" "$COLD")" "insecure option"
    row "pull L2 with L1 present: blob read" "$(mb "$READ")" "L2 blob $(mb "$SIZE")" "$(ratio "$READ" "$SIZE")" "goal <= 0.15x"
    row "pull L2 with L1 present: bytes written" "$(mb "$SAME") for L1's" "new content $(mb "$NEW")" "-" "goal 0 for L1's"
    row "cold pull of L2 vs cold convert (wall)" "$(fmt "$PULL0" s)" "cold convert of L2 $(fmt "$COLD" s)" "$(ratio "$PULL0" "$COLD")" ""
    HASH=$(sed -n 's/^DiffID floor: .* \([0-9.]*\) s = .*/\1/p' "$LOGS/pull.log" | head -1)
    row "DiffID floor: sha256 of L2's tar alone" "$(fmt "$HASH" s)" "cold convert of L2 $(fmt "$COLD" s)" "$(ratio "$HASH" "$COLD")" "no checked pull is faster"
else
    row "partial pull" "failed" "see $LOGS/pull.log" "-" ""
fi

# --- object index -------------------------------------------------------------------------
note "object lookups across source layers (scripts/bench-index.sh)"
if bash "$ROOT/scripts/bench-index.sh" 2>&1 | tee "$LOGS/index.log" >&2 && grep -q 'caches + index:' "$LOGS/index.log"; then
    for label in "caches + index" "caches only" "no caches"; do
        line=$(grep "^ *$label:" "$LOGS/index.log" | head -1)
        T5=$(echo "$line" | sed -n 's/.* 5 layers \([0-9.]*\)s.*/\1/p')
        T500=$(echo "$line" | sed -n 's/.* 500 layers \([0-9.]*\)s.*/\1/p')
        goal=
        [ "$label" = "caches + index" ] && goal="goal <= 1.1x"
        row "object lookups 500 vs 5 layers, $label" "$(fmt "$T500" s)" "5 layers $(fmt "$T5" s)" "$(ratio "$T500" "$T5")" "$goal"
    done
else
    row "object lookups" "failed" "see $LOGS/index.log" "-" ""
fi

# --- mount --------------------------------------------------------------------------------
note "mount stacks (scripts/bench-mount.sh)"
ITER=${CFS_BENCH_ITERATIONS:-50}
[ -n "$QUICK" ] && ITER=10
if [ "$(id -u)" != 0 ]; then
    row "mount + unmount" "skipped" "needs root" "-" ""
elif CFS_BENCH_ITERATIONS=$ITER sh "$ROOT/scripts/bench-mount.sh" 2>&1 | tee "$LOGS/mount.log" >&2 &&
    grep -q 'composefs 20 layers:' "$LOGS/mount.log"; then
    M1=$(grab "$LOGS/mount.log" 'composefs  1 layer :')
    K1=$(grab "$LOGS/mount.log" 'classic    1 layer :')
    M20=$(grab "$LOGS/mount.log" 'composefs 20 layers:')
    K20=$(grab "$LOGS/mount.log" 'classic   20 layers:')
    MF=$(grab "$LOGS/mount.log" 'flatten off):')
    row "mount+umount, 1 layer (median)" "$(fmt "$M1" ms)" "classic $(fmt "$K1" ms)" "$(ratio "$M1" "$K1")" ""
    row "mount+umount, 20 layers (median)" "$(fmt "$M20" ms)" "classic $(fmt "$K20" ms)" "$(ratio "$M20" "$K20")" "goal <= 1.5x"
    row "  same, one EROFS per layer (flatten off)" "$(fmt "$MF" ms)" "classic $(fmt "$K20" ms)" "$(ratio "$MF" "$K20")" ""
else
    row "mount + unmount" "skipped/failed" "see $LOGS/mount.log" "-" ""
fi

# --- the table ----------------------------------------------------------------------------
echo
echo "composefs-storage benchmarks$([ -n "$QUICK" ] && echo " (--quick)"), $(date -u +%Y-%m-%d), $(nproc) CPUs:" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); total $(($(date +%s) - START)) s"
echo
printf '%-44s %-16s %-34s %-8s %s\n' "figure" "ours" "baseline (same run)" "ratio" "note"
printf '%s\n' "${ROWS[@]}"
echo
echo "ratio = ours / baseline: below 1 is faster (or smaller) than the baseline."
