# Shared helpers for scripts/*.sh (sourced, not run).

# The repository root, whatever the caller's working directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The pinned cbindgen version (cbindgen.toml, .ci/run).
CBINDGEN_VERSION=0.29.2

# The crate version from Cargo.toml's [package] section.
crate_version() {
    awk '/^\[/{p = ($0 == "[package]")} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$ROOT/Cargo.toml"
}

# Finds cbindgen at the pinned version (CBINDGEN, PATH, ~/.cargo/bin) or explains how to get it.
find_cbindgen() {
    local c
    for c in "${CBINDGEN:-}" "$(command -v cbindgen || true)" "$HOME/.cargo/bin/cbindgen"; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        if [ "$("$c" --version | awk '{print $2}')" = "$CBINDGEN_VERSION" ]; then
            echo "$c"
            return 0
        fi
    done
    echo "error: cbindgen $CBINDGEN_VERSION not found; install it with" >&2
    echo "    cargo install cbindgen --version $CBINDGEN_VERSION --locked" >&2
    return 1
}

# The exported (defined, dynamic) symbols of a shared library, one per line, sorted.
exported_symbols() {
    nm -D --defined-only --format=posix "$1" | awk '{print $1}' | LC_ALL=C sort
}
