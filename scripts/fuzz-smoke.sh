#!/usr/bin/env bash
# CI smoke run of every fuzz target: builds them once, then runs each for a few seconds so that
# all together take a minute or less: $FUZZ_SMOKE_TOTAL seconds of fuzzing (default 24, 2 s a
# target), plus about 2 s a target to prepare the seeds and for libFuzzer's start and stop. Each target starts from its seeds only, in a temporary corpus, so
# the time does not grow with earlier runs. Exits non-zero when any target crashes, goes past the
# memory limits, or times out.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
total=${FUZZ_SMOKE_TOTAL:-24}

# The pinned cargo-fuzz, from .tools/cargo/bin (scripts/setup.sh installs it there when missing).
. "$repo/scripts/lib.sh"
use_cargo_fuzz
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    # Stable compiler: let it accept the nightly-only sanitizer flags cargo-fuzz passes.
    export RUSTC_BOOTSTRAP=1
fi

cd "$repo/fuzz"
mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "$0: no fuzz targets" >&2
    exit 1
fi
cargo "${toolchain[@]}" fuzz build -O

per=$((total / ${#targets[@]}))
((per >= 1)) || per=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
failed=()
for t in "${targets[@]}"; do
    echo "=== $t: ${per}s"
    if ! FUZZ_PREBUILT=1 FUZZ_WORK_CORPUS=$work/$t "$repo/scripts/fuzz.sh" "$t" "$per" -print_final_stats=0; then
        failed+=("$t")
    fi
done
echo "$0: the runs took $((SECONDS - start))s"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "$0: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "$0: ${#targets[@]} targets ran ${per}s each without a finding"
