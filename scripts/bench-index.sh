#!/usr/bin/env bash
# Object lookups across 5 vs 500 source layers, with and without their lookaside caches
# (tests/index_bench.rs, ignored in normal test runs). Prints figures; run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test index_bench -- --ignored --nocapture 2>&1 | grep -E "^(lookups| *(caches|no caches))"
