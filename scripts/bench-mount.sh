#!/bin/sh
# Mount + unmount time of 1- and 20-layer composefs stacks vs classic stacks (needs root,
# EROFS and overlayfs). CFS_BENCH_ITERATIONS sets the rounds per case (default 50).
set -eu
cd "$(dirname "$0")/.."
exec cargo test --release --test mount_bench -- --ignored --nocapture --test-threads=1
