#!/usr/bin/env bash
# eStargz beside zstd:chunked on the realistic layer (issue 18's figures): a Debian rootfs (the one
# integration/containers-storage makes, 210 MB of tar), made into an eStargz blob by the real
# encoder (scripts/gen-estargz.sh --one, its defaults) and into zstd:chunked by `compress`.
#   full convert   `composefs-storage convert BLOB DIR` of each, interleaved with its floor
#                  (`gzip -dc | sha256sum`, `zstd -dc | sha256sum`): the ratio printed is
#                  floor / ours, so 1/1.3 = 0.77 is the goal's edge for eStargz;
#   partial pull   a second rootfs sharing 90% of its file bytes with the first, pulled in
#                  insecure mode (eStargz has no tar-split: a pull that checks the DiffID must
#                  read the whole blob) with the first as source layer: blob bytes read.
# Timed on a fresh ext4 (scripts/lib.sh), page cache warm for the inputs, `sync` and
# `settle_memory` (scripts/lib.sh) before each run.
# Usage: scripts/bench-estargz.sh [RUNS]   (default 5 interleaved runs)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
runs="${1:-5}"
out="$ROOT/build/bench-estargz"
work="$out/work" image="$out/fs.img" results="$out/results.tsv"
mkdir -p "$out"
cargo build --release --quiet
ours="$ROOT/target/release/composefs-storage"

# The inputs (cached): the rootfs tar, its 90%-shared sibling, and their blobs.
rootfs_dir="$ROOT/build/integration/containers-storage/rootfs"
integration/containers-storage/make-rootfs.sh "$rootfs_dir"
base="$rootfs_dir/rootfs.tar"
if [ ! -f "$out/derived.tar" ]; then
    # A tenth of the file bytes changed, in whole files (each taken while the changed bytes stay
    # within 10% of those seen so far), so that 90% are in files the base has too.
    python3 - "$base" "$out/derived.tar" <<'EOF'
import sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
total = changed = 0
with tarfile.open(src) as tin, tarfile.open(dst + ".tmp", "w", format=tarfile.PAX_FORMAT) as tout:
    for m in tin:
        f = tin.extractfile(m) if m.isreg() else None
        data = f.read() if f else None
        if data:
            total += len(data)
            if changed + len(data) <= total * 0.10:
                data = b"derived\n" + data
                changed += len(data)
                m.size = len(data)
        tout.addfile(m, None if data is None else __import__("io").BytesIO(data))
print(f"derived.tar: {changed} of {total} file bytes changed", file=sys.stderr)
EOF
    mv "$out/derived.tar.tmp" "$out/derived.tar"
fi
for t in base derived; do
    tar_path="$base"
    [ "$t" = derived ] && tar_path="$out/derived.tar"
    [ -f "$out/$t.estargz" ] || scripts/gen-estargz.sh --one "$tar_path" "$out/$t.estargz" >/dev/null
done
[ -f "$out/base.chunked" ] || "$ours" compress "$base" "$out/base.chunked" >/dev/null

cleanup() { fresh_fs_unmount "$image" "$work"; }
trap cleanup EXIT
fresh_fs_mount "$image" "$work" 8
: >"$results"

# timed CASE BUILD CMD...: one run after sync and settle_memory, appended to the results (wall,
# user+sys, RSS).
timed() {
    local case="$1" build="$2"
    shift 2
    sync
    settle_memory
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>>"$work/log"
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$build" "$wall" "$(awk "BEGIN{print $user + $sys}")" "$rss" \
        "$user" "$sys" >>"$results"
}
for r in $(seq "$runs"); do
    echo "run $r of $runs" >&2
    timed "eStargz, full convert" floor sh -c "gzip -dc '$out/base.estargz' | sha256sum"
    rm -rf "$work/e"
    timed "eStargz, full convert" ours "$ours" convert -q --verity off "$out/base.estargz" "$work/e"
    timed "zstd:chunked, full convert" floor sh -c "zstd -dc '$out/base.chunked' | sha256sum"
    rm -rf "$work/z"
    timed "zstd:chunked, full convert" ours "$ours" convert -q --verity off "$out/base.chunked" "$work/z"
done

python3 "$ROOT/integration/bench-table.py" "$results" case floor,ours

# Partial pulls (insecure mode), base first, then the derived layer over it.
# field FILE KEY: a top-level value of a JSON file.
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
annotations() { printf '{"containerd.io/snapshot/stargz/toc.digest":"%s"}' "$(field "$1.json" tocDigest)"; }
annotations "$out/base.estargz" >"$work/base.ann"
annotations "$out/derived.estargz" >"$work/derived.ann"
rm -rf "$work/pb" "$work/pd" "$work/wd"
"$ours" convert -q --json --verity off --insecure-skip-diff-id --annotations "$work/base.ann" \
    "$out/base.estargz" "$work/pb" >"$work/pb.json"
"$ours" convert -q --json --verity off --insecure-skip-diff-id --annotations "$work/derived.ann" \
    --source-layer "$work/pb" "$out/derived.estargz" "$work/pd" >"$work/pd.json"
"$ours" convert -q --json --verity off --annotations "$work/derived.ann" \
    --source-layer "$work/pb" "$out/derived.estargz" "$work/wd" >"$work/wd.json"
echo
printf '%-44s %12s %12s %8s\n' "eStargz pull of the 90%-shared layer" "read (B)" "blob (B)" "share"
for p in "pd:partial (insecure), base as source" "wd:checked DiffID (whole blob), base as source"; do
    f="$work/${p%%:*}.json"
    read_b="$(field "$f" blobBytesFetched)" size="$(field "$f" blobSize)"
    printf '%-44s %12s %12s %7.1f%%\n' "${p#*:}" "$read_b" "$size" "$(awk "BEGIN{print 100 * $read_b / $size}")"
done
