#!/usr/bin/env bash
# Makes eStargz test blobs with the real encoder (containerd/stargz-snapshotter/estargz as vendored
# in the container-libs snapshot of ../shared/peers), offline: tests/estargz/gen/main.go, built
# inside the snapshot's go.podman.io/storage module, converts each tar of ../shared/corpus/cstorage.
#
# Usage: scripts/gen-estargz.sh [OUTDIR]       (default build/estargz)
#        scripts/gen-estargz.sh --one IN.tar OUT.estargz [generator options]
# Per corpus case, OUTDIR gets <case>.tar (plain) and these blobs, each with OUT.estargz.json:
#   <case>-default.estargz        encoder defaults (4 MiB chunks, gzip 9, .no.prefetch.landmark)
#   <case>-c4k.estargz            -chunk-size 4096 (multi-chunk files)
#   <case>-c64k-prefetch.estargz  -chunk-size 65536, the first 2 regular files prioritized
#   <case>-min64k.estargz         -min-chunk-size 65536 (small files share a gzip member)
# A blob the encoder refuses leaves <blob>.refused (the reason) instead. Up-to-date outputs are
# kept. Generator options: -chunk-size N, -min-chunk-size N, -prioritize a,b, -prioritize-first N,
# -level N, -procs N (run the built binary with -h).
# Env: CFS_ESTARGZ_GEN_DIR (scratch dir: snapshot, Go cache, binary; default build/estargz-gen),
#      CFS_ESTARGZ_PROCS (GOMAXPROCS of the encoder, default 4), CFS_CORPUS.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

snapshot=container-libs-f0ddf1a7
scratch="${CFS_ESTARGZ_GEN_DIR:-$ROOT/build/estargz-gen}"
mkdir -p "$scratch"
scratch="$(cd "$scratch" && pwd)" # the build runs in a subdirectory
gen="$scratch/cfs-estargz-gen"
gen_src="$ROOT/tests/estargz/gen/main.go"
# The encoder splits its input into GOMAXPROCS parts written as separate gzip streams, and the
# split shows in the blob: a fixed value makes the blobs the same on every machine (with the same
# Go: compress/flate's output differs between Go releases).
procs="${CFS_ESTARGZ_PROCS:-4}"

# Builds the generator unless it is newer than its source. The snapshot is unpacked once (stamp).
build_gen() {
    local src="$scratch/src" stamp="$scratch/src/.unpacked-$snapshot" peers go
    if [ -x "$gen" ] && [ "$gen" -nt "$gen_src" ] && [ -f "$stamp" ]; then
        return 0
    fi
    if [ ! -f "$stamp" ]; then
        peers="$(find_shared peers)" && [ -f "$peers/$snapshot.tar.zst" ] ||
            { echo "error: ../shared/peers/$snapshot.tar.zst not found" >&2; return 1; }
        echo "unpacking $snapshot into $src" >&2
        rm -rf "$src" && mkdir -p "$src"
        zstd -dcq "$peers/$snapshot.tar.zst" | tar -x -C "$src" --strip-components=1
        touch "$stamp"
    fi
    go="$(find_go)" && [ -x "$go" ] ||
        { echo "error: no Go toolchain >= 1.21 (run scripts/setup.sh go, or set GO)" >&2; return 1; }
    # Inside module go.podman.io/storage, so that the vendored estargz and go-digest resolve.
    mkdir -p "$src/storage/cmd/cfs-estargz-gen"
    cp "$gen_src" "$src/storage/cmd/cfs-estargz-gen/main.go"
    echo "building cfs-estargz-gen with $("$go" version)" >&2
    # Offline, from the snapshot's vendor/ (go.work at its root), with a build cache of our own.
    (cd "$src" && GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GOCACHE="$scratch/gocache" \
        CGO_ENABLED=0 "$go" build -trimpath -o "$gen.tmp" ./storage/cmd/cfs-estargz-gen)
    mv "$gen.tmp" "$gen"
}

if [ "${1:-}" = --one ]; then
    [ $# -ge 3 ] || { echo "usage: $0 --one IN.tar OUT.estargz [generator options]" >&2; exit 2; }
    in="$2" out="$3"
    shift 3
    build_gen
    # Options before the operands (Go's flag package); a -procs among them overrides the default.
    exec "$gen" -procs "$procs" "$@" "$in" "$out"
fi

outdir="${1:-$ROOT/build/estargz}"
corpus="$(shared_corpus)" || { echo "error: ../shared/corpus not found (set CFS_CORPUS)" >&2; exit 1; }
[ -d "$corpus/cstorage" ] || { echo "error: no $corpus/cstorage" >&2; exit 1; }
build_gen
mkdir -p "$outdir"

variants=(
    "default|"
    "c4k|-chunk-size 4096"
    "c64k-prefetch|-chunk-size 65536 -prioritize-first 2"
    "min64k|-min-chunk-size 65536"
)
made=0 kept=0 refused=0
for dir in "$corpus"/cstorage/*/; do
    case="$(basename "$dir")"
    tar="$outdir/$case.tar"
    # The plain tar, so that tests compare against what went in.
    if [ -f "$dir/$case.tar" ]; then
        [ "$tar" -nt "$dir/$case.tar" ] || cp "$dir/$case.tar" "$tar"
    elif [ -f "$dir/$case.tar.zst" ]; then
        [ "$tar" -nt "$dir/$case.tar.zst" ] || { zstd -dcq "$dir/$case.tar.zst" >"$tar.tmp" && mv "$tar.tmp" "$tar"; }
    else
        continue # legacy/, synthetic/: no layer tar
    fi
    for v in "${variants[@]}"; do
        name="$case-${v%%|*}.estargz" out="$outdir/$case-${v%%|*}.estargz"
        # shellcheck disable=SC2206 # the options are words
        opts=(-procs "$procs" ${v#*|})
        if [ -f "$out.refused" ] && [ "$out.refused" -nt "$tar" ] && [ "$out.refused" -nt "$gen" ]; then
            echo "$name REFUSED: $(cat "$out.refused")"
            refused=$((refused + 1))
            continue
        fi
        # The generator writes OUT.json before OUT: a blob newer than its inputs is complete.
        if [ -f "$out" ] && [ -f "$out.json" ] && [ "$out" -nt "$tar" ] && [ "$out" -nt "$gen" ]; then
            kept=$((kept + 1))
        else
            rm -f "$out" "$out.json" "$out.refused"
            status=0
            "$gen" "${opts[@]}" "$tar" "$out" 2>"$out.err" || status=$?
            if [ "$status" = 3 ]; then
                # Refused by the encoder: a fact about the input, not a failure of this script.
                sed 's/^cfs-estargz-gen: //' "$out.err" >"$out.refused"
                rm -f "$out.err"
                echo "$name REFUSED: $(cat "$out.refused")"
                refused=$((refused + 1))
                continue
            elif [ "$status" != 0 ]; then
                cat "$out.err" >&2
                rm -f "$out.err"
                exit 1
            fi
            grep -v '^$' "$out.err" >&2 || true # notes, e.g. nothing to prioritize
            rm -f "$out.err"
            made=$((made + 1))
        fi
        printf '%-40s %12d\n' "$name" "$(stat -c %s "$out")"
    done
done
echo "gen-estargz: $made made, $kept up to date, $refused refused; $(du -sh "$outdir" | cut -f1) in $outdir"
