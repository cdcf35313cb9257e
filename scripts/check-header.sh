#!/usr/bin/env bash
# Fails when include/composefs-storage.h differs from what cbindgen generates from src/ffi now.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

header="$ROOT/include/composefs-storage.h"
fresh="$(mktemp)"
trap 'rm -f "$fresh"' EXIT
"$ROOT/scripts/gen-header.sh" "$fresh"
if ! diff -u "$header" "$fresh"; then
    echo "error: include/composefs-storage.h is out of date with src/ffi; run \`make header\` and commit it" >&2
    exit 1
fi
echo "header: include/composefs-storage.h is up to date"
