#!/usr/bin/env bash
# Generates include/composefs-storage.h from src/ffi with the pinned cbindgen CLI (.tools/cargo/bin,
# installed there by scripts/setup.sh when missing). `make header` generates the same bytes through
# cbindgen's library (tests/abi.rs); scripts/check-header.sh compares this one with the committed file.
# Usage: scripts/gen-header.sh [OUTPUT]   (OUTPUT "-" writes to stdout)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out="${1:-$ROOT/include/composefs-storage.h}"
cbindgen="$(find_cbindgen)"
version="$(crate_version)"
IFS=. read -r major minor patch <<<"${version%%[-+]*}"

# Only src/ffi is the C ABI: cbindgen reads that module tree, not the whole crate.
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
(cd "$ROOT" && "$cbindgen" --quiet --config cbindgen.toml src/ffi/mod.rs) |
    sed -e "s/@VERSION_MAJOR@/$major/" -e "s/@VERSION_MINOR@/$minor/" -e "s/@VERSION_PATCH@/$patch/" \
        -e "s/@VERSION@/$version/" -e "s/@CBINDGEN_VERSION@/$CBINDGEN_VERSION/" >"$tmp"

if [ "$out" = "-" ]; then
    cat "$tmp"
else
    mkdir -p "$(dirname "$out")"
    cp "$tmp" "$out"
fi
