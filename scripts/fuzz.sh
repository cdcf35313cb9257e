#!/usr/bin/env bash
# Runs one cargo-fuzz target for a given time: scripts/fuzz.sh TARGET SECONDS [libFuzzer args...]
#
# Seeds come from the shared corpus (../shared/corpus next to the repository, or $FUZZ_CORPUS) and
# from fuzz/seeds/TARGET/; they are copied into the git-ignored fuzz/corpus/TARGET/, which also
# keeps what the fuzzer finds between runs. Crashes land in fuzz/artifacts/TARGET/ and make this
# script exit non-zero. Limits: 2 GiB RSS, 1 GiB per allocation, $FUZZ_TIMEOUT seconds per input
# (default 60: generous, because the fuzzer runs at nice 19 on a busy machine; each a finding).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer args...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2

repo=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir=$repo/fuzz
if [[ ! -f $fuzz_dir/fuzz_targets/$target.rs ]]; then
    echo "$0: no fuzz target $target (see fuzz/fuzz_targets/)" >&2
    exit 2
fi

# cargo-fuzz needs a nightly compiler (sanitizer flags); on a stable-only machine
# RUSTC_BOOTSTRAP=1 unlocks the same flags.
# The pinned cargo-fuzz, from .tools/cargo/bin (scripts/setup.sh installs it there when missing).
. "$repo/scripts/lib.sh"
use_cargo_fuzz
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

corpus=${FUZZ_CORPUS:-}
if [[ -z $corpus ]]; then
    for c in "$repo/../shared/corpus" "$repo/../../shared/corpus"; do
        if [[ -d $c ]]; then
            corpus=$c
            break
        fi
    done
fi
# The working corpus: kept between runs unless the caller names another dir (the smoke run does).
seed_dir=${FUZZ_WORK_CORPUS:-$fuzz_dir/corpus/$target}
mkdir -p "$seed_dir" "$fuzz_dir/artifacts/$target"
if [[ -n $corpus && -d $corpus ]] && command -v python3 >/dev/null 2>&1; then
    python3 "$fuzz_dir/seeds.py" "$target" "$corpus" "$seed_dir"
else
    echo "$0: no shared corpus or python3; running $target from committed seeds only" >&2
fi
if [[ -d $fuzz_dir/seeds/$target ]]; then
    cp -n "$fuzz_dir/seeds/$target"/* "$seed_dir"/ 2>/dev/null || true
fi

cd "$fuzz_dir"
# Inputs up to 256 KiB, or the largest seed (an object index file is at least 256 KiB).
max_len=262144
largest=$(find "$seed_dir" -type f -printf '%s\n' | sort -n | tail -1)
((${largest:-0} > max_len)) && max_len=$largest
args=(-max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout="${FUZZ_TIMEOUT:-60}"
    -max_len="$max_len" -print_final_stats=1 "$@")
if [[ -n ${FUZZ_PREBUILT:-} ]]; then
    # Already built by `cargo fuzz build -O` (the smoke run): skip cargo's own start-up.
    host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
    exec "$fuzz_dir/target/$host/release/$target" -artifact_prefix="$fuzz_dir/artifacts/$target/" \
        "${args[@]}" "$seed_dir"
fi
exec cargo "${toolchain[@]}" fuzz run -O "$target" "$seed_dir" -- "${args[@]}"
