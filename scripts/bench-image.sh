#!/bin/bash
# Image writer benchmark: ours vs the composefs crate's mkfs_erofs on a tree walked from ROOT
# (default /usr), each writer in a child process. Prints times, the ratio and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../benches/image-bench"
cargo build --release --quiet
exec ./target/release/image-bench "${1:-/usr}"
