#!/usr/bin/env bash
# containers/storage on this library, side by side with stock containers/storage (issue 16).
#
# Unpacks the container-libs snapshot of ../shared/peers twice into a scratch dir, builds stock
# (with mkcomposefs 1.0.8 built from the composefs snapshot, which stock needs on PATH) and
# patched (patches/*.patch, build tag libcomposefs_storage, this library found by pkg-config from
# a staged `make install`), then for both:
#   - c/storage's own Go tests (drivers/overlay, pkg/chunked, and the rest of storage/ with
#     --full) and its bats suite (storage/tests, with overlay.use_composefs=true), counts
#     printed; every test that passes on stock must pass patched;
#   - the end-to-end run of e2e.sh: layers through the differ (tar, tar.gz, tar.zst with
#     convert_images, zstd:chunked), stacked with whiteouts and a lower /db, mounted as an image
#     and as a container, diffed (= DiffID), deleted (nothing left), the shared corpus, bad input;
#   - layer dirs compared: blob and object set equal where stock is right.
# Prints a side-by-side table and "containers-storage: N passed, M failed"; exits non-zero on a
# failure of the patched build or a regression against stock.
#
# Usage: integration/containers-storage/run.sh [--full]
#   --full  also runs `go test ./storage/...` (all of c/storage's Go tests that run here).
# Env: CFS_INTEGRATION_DIR (scratch dir, default build/integration/containers-storage).
# Needs root (mounts); installs what is missing through scripts/setup.sh (apt packages, Go), and
# debootstrap fetches the rootfs from the machine's Debian mirror; all else works offline.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
. "$here/../lib.sh"
full=0
[ "${1:-}" = --full ] && full=1

peers="$ROOT/../shared/peers"
[ -d "$peers" ] || peers="$ROOT/../../shared/peers"
[ -f "$peers/container-libs-f0ddf1a7.tar.zst" ] || { echo "error: ../shared/peers not found" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (the end-to-end run mounts layers)" >&2; exit 1; }
scratch="${CFS_INTEGRATION_DIR:-$ROOT/build/integration/containers-storage}"
mkdir -p "$scratch"
scratch="$(cd "$scratch" && pwd)"

step() { echo; echo "==== $*"; }

step "tools"
"$ROOT/scripts/setup.sh" apt go
go="$(find_go)"
echo "using $("$go" version)"

step "this library: staged make install"
stage_library

step "mkcomposefs 1.0.8 (stock containers/storage execs it)"
build_mkcomposefs

# Go: offline, from the snapshot's vendor/, with a build cache of our own.
export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GOCACHE="$scratch/gocache" CGO_ENABLED=1

# tree NAME: a fresh container-libs tree with cfs-pull in it.
tree() {
    local dir="$scratch/$1"
    rm -rf "$dir" && mkdir -p "$dir"
    zstd -dc "$peers/container-libs-f0ddf1a7.tar.zst" | tar -x -C "$dir" --strip-components=1
    mkdir -p "$dir/storage/cmd/cfs-pull"
    cp "$here/cfs-pull/main.go" "$dir/storage/cmd/cfs-pull/"
}

step "stock containers/storage"
tree stock
stock_tags="exclude_graphdriver_btrfs"
(cd "$scratch/stock" && "$go" build -tags "$stock_tags" -o "$scratch/bin-stock/" ./storage/cmd/containers-storage ./storage/cmd/cfs-pull)
ls -l "$scratch/bin-stock"

step "patched containers/storage (patches/*.patch, tag libcomposefs_storage)"
tree patched
# The Go binding joins the workspace (go.work), as a module of its own; no vendoring needed.
mkdir -p "$scratch/patched/composefs-storage-go"
tar -C "$ROOT/bindings/go" --exclude='*_test.go' -c . | tar -x -C "$scratch/patched/composefs-storage-go"
sed -i 's#^use (#use (\n\t./composefs-storage-go#' "$scratch/patched/go.work"
for p in "$here"/patches/*.patch; do
    echo "applying $(basename "$p")"
    patch -d "$scratch/patched" -p1 --batch --forward --quiet <"$p"
done
patched_tags="exclude_graphdriver_btrfs libcomposefs_storage"
(cd "$scratch/patched" && "$go" build -tags "$patched_tags" -o "$scratch/bin-patched/" ./storage/cmd/containers-storage ./storage/cmd/cfs-pull)
ls -l "$scratch/bin-patched"
export LD_LIBRARY_PATH="$libdir"
ldd "$scratch/bin-patched/containers-storage" | grep -F libcomposefs_storage ||
    { echo "error: the patched build does not link libcomposefs_storage" >&2; exit 1; }

step "c/storage's own Go tests"
gotest_pkgs=(./storage/drivers/overlay/... ./storage/pkg/chunked/...)
[ "$full" = 1 ] && gotest_pkgs=(./storage/...)
# gotests NAME TAGS PATHPREFIX: runs them, writes "<package>.<test> <pass|fail|skip>" lines.
gotests() {
    local name="$1" tags="$2" pathprefix="$3"
    (cd "$scratch/$name" && PATH="$pathprefix$PATH" "$go" test -count=1 -json -tags "$tags" "${gotest_pkgs[@]}" \
        >"$scratch/gotest-$name.json" 2>"$scratch/gotest-$name.err") || true
    python3 "$here/gotest-summary.py" "$scratch/gotest-$name.json" >"$scratch/gotest-$name.txt"
    echo "$name: $(awk '{n[$2]++} END {printf "%d passed, %d failed, %d skipped", n["pass"], n["fail"], n["skip"]}' "$scratch/gotest-$name.txt")"
}
gotests stock "$stock_tags" "$mkcomposefs_dir:"
gotests patched "$patched_tags" ""

step "c/storage's bats suite (storage/tests) with overlay.use_composefs=true"
# bats NAME PATHPREFIX: TAP output in bats-NAME.tap.
run_bats() {
    local name="$1" pathprefix="$2"
    (cd "$scratch/$name/storage" && PATH="$pathprefix$PATH" STORAGE_BINARY="$scratch/bin-$name/containers-storage" \
        STORAGE_DRIVER=overlay STORAGE_OPTION=overlay.use_composefs=true bats --tap tests >"$scratch/bats-$name.tap" 2>&1) || true
    echo "$name: $(grep -c '^ok ' "$scratch/bats-$name.tap") ok ($(grep -c '^ok .*# skip' "$scratch/bats-$name.tap") skipped), $(grep -c '^not ok ' "$scratch/bats-$name.tap") not ok"
}
run_bats stock "$mkcomposefs_dir:"
run_bats patched ""

step "end to end"
inputs="$scratch/inputs"
rm -rf "$inputs" && mkdir -p "$inputs"
python3 "$here/make-layers.py" "$inputs"
for l in base upper; do
    gzip -n -6 -k "$inputs/$l.tar"
    zstd -q -3 -k "$inputs/$l.tar"
    # zstd:chunked as containers/storage's own compressor writes it.
    "$scratch/bin-stock/cfs-pull" compress "$inputs/$l.tar" "$inputs/$l.chunked" "$inputs/$l.chunked.json"
done
# The realistic layer: a Debian rootfs (cached in the scratch dir across runs).
"$here/make-rootfs.sh" "$scratch/rootfs"
for l in rootfs rootfs-upper; do
    ln -sf "$scratch/rootfs/$l.tar" "$inputs/$l.tar"
    zstd -q -3 -T0 -c "$scratch/rootfs/$l.tar" >"$inputs/$l.tar.zst"
    "$scratch/bin-stock/cfs-pull" compress "$inputs/$l.tar" "$inputs/$l.chunked" "$inputs/$l.chunked.json"
done
sha256sum "$inputs/rootfs.tar" | cut -d' ' -f1 >"$inputs/rootfs.diffid"
corpus="$ROOT/../shared/corpus"
[ -d "$corpus" ] || corpus="$ROOT/../../shared/corpus"
for c in handmade-pax handmade-archive etc-doc-gnu noparents-ustar empty; do
    for f in "$corpus/cstorage/$c/$c".{tar,tar.gz,tar.zst,zstd-chunked}; do
        [ -f "$f" ] || continue
        ext="${f##*/$c.}"
        ln -sf "$f" "$inputs/corpus-$c.$ext"
        [ "$ext" = zstd-chunked ] && cp "$corpus/cstorage/$c/$c.annotations.json" "$inputs/corpus-$c.$ext.json"
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["diffID"].split(":")[1])' \
            "$corpus/cstorage/$c/$c.compress.json" >"$inputs/diffid-$c.$ext"
    done
done
# eStargz blobs of the real encoder (scripts/gen-estargz.sh), with their TOC digest annotation:
# c/storage takes them through its differ's fallback (no tar-split, so the whole blob is converted).
estargz_dir="${CFS_ESTARGZ_DIR:-$ROOT/build/estargz}"
"$ROOT/scripts/gen-estargz.sh" "$estargz_dir" >/dev/null
for c in handmade-archive etc-doc-gnu; do
    ln -sf "$estargz_dir/$c-c4k.estargz" "$inputs/corpus-$c.estargz"
    python3 - "$estargz_dir/$c-c4k.estargz.json" "$inputs/corpus-$c.estargz.json" "$inputs/diffid-$c.estargz" <<'EOF2'
import json, sys
m = json.load(open(sys.argv[1]))
json.dump({"containerd.io/snapshot/stargz/toc.digest": m["tocDigest"]}, open(sys.argv[2], "w"))
open(sys.argv[3], "w").write(m["diffID"].split(":")[1] + "\n")
EOF2
done
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PATH="$mkcomposefs_dir:$sys_path" "$here/e2e.sh" stock "$scratch/bin-stock/containers-storage" \
    "$scratch/bin-stock/cfs-pull" "$scratch/e2e-stock" "$inputs" "$scratch/e2e-stock.tsv"
if PATH="$sys_path" command -v mkcomposefs >/dev/null; then
    echo "error: mkcomposefs is on the system PATH; the patched run must show it is not needed" >&2
    exit 1
fi
PATH="$sys_path" "$here/e2e.sh" patched "$scratch/bin-patched/containers-storage" \
    "$scratch/bin-patched/cfs-pull" "$scratch/e2e-patched" "$inputs" "$scratch/e2e-patched.tsv"

step "side by side"
python3 "$here/report.py" "$scratch"
