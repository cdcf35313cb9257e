#!/usr/bin/env bash
# Fails when the built shared library's exports differ from src/ffi/exported-symbols.txt or from
# debian/libcomposefs-storage0.symbols, or when it
# exports anything outside cfs_*. Usage: scripts/check-symbols.sh [LIB.so]   (default target/release)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

so="${1:-$ROOT/target/release/libcomposefs_storage.so}"
list="$ROOT/src/ffi/exported-symbols.txt"
[ -f "$so" ] || { echo "error: $so not built (run \`make\`)" >&2; exit 1; }
actual="$(mktemp)"
trap 'rm -f "$actual"' EXIT
exported_symbols "$so" >"$actual"
status=0
if grep -v '^cfs_' "$actual"; then
    echo "error: the symbols above are exported but are not cfs_* (see src/ffi/libcomposefs_storage.map)" >&2
    status=1
fi
if ! diff -u <(grep -v '^#' "$list") "$actual"; then
    echo "error: $so exports differ from src/ffi/exported-symbols.txt (- listed, + built);" >&2
    echo "       if the change is intended, run \`make symbols\` and commit the list" >&2
    status=1
fi
# The Debian symbols file names the same symbols (dpkg-gensymbols checks the built package against it).
deb="$ROOT/debian/libcomposefs-storage0.symbols"
if ! diff -u <(sed -n 's/^ \([a-z_0-9]*\)@Base .*$/\1/p' "$deb") "$actual"; then
    echo "error: $deb differs from the built exports (- listed, + built); run \`make symbols\`" >&2
    status=1
fi
[ "$status" = 0 ] && echo "symbols: $(wc -l <"$actual") exports match src/ffi/exported-symbols.txt"
exit "$status"
