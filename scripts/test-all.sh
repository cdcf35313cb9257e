#!/usr/bin/env bash
# Runs every test of the project and prints a summary; exits non-zero if any step failed.
#   eStargz test blobs from the real encoder (scripts/gen-estargz.sh), Rust (cargo test), header and symbol checks, a staged `make install` with pkg-config checks,
#   the C tests (dynamic, static, valgrind, AddressSanitizer), the Go tests (dynamic, static, race),
#   the Debian packages built, checked by lintian and tested installed in a fresh root (scripts/test-deb.sh),
#   containers/storage built stock and patched with its own tests and an end-to-end run
#   (integration/containers-storage/run.sh), podman built stock and patched, end to end through a
#   local registry (integration/podman/run.sh), and a fuzz smoke run.
# First installs what is missing (scripts/setup.sh: apt packages, and pinned cbindgen, cargo-fuzz and
# Go in .tools/); it stops before any test when something cannot be installed.
# Usage: scripts/test-all.sh     (the same as `make check`, and what .ci/run runs)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh" || exit 1

stage="$ROOT/build/stage"
prefix=/usr/local
logs="$ROOT/build/logs"
mkdir -p "$logs"
export CFS_STAGE="$stage" CFS_STAGE_PREFIX="$prefix"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

names=() results=() times=()
failed_any=0

# step NAME COMMAND...: runs a step, its output shown and kept in build/logs/NAME.log.
step() {
    local name="$1" start rc
    shift
    echo
    echo "===== $name: $*"
    start=$(date +%s)
    "$@" 2>&1 | tee "$logs/$name.log"
    rc=${PIPESTATUS[0]}
    names+=("$name")
    times+=($(($(date +%s) - start)))
    if [ "$rc" = 0 ]; then
        results+=(PASS)
    else
        results+=("FAIL (exit $rc)")
        failed_any=1
    fi
    return "$rc"
}

# skip NAME REASON: records a step that could not run.
skip() {
    echo
    echo "===== $1: skipped: $2"
    names+=("$1")
    results+=("FAIL (not run: $2)")
    times+=(0)
    failed_any=1
}

stage_install() {
    rm -rf "$stage"
    make --no-print-directory build && make --no-print-directory install DESTDIR="$stage" PREFIX="$prefix" &&
        make --no-print-directory install-debug DESTDIR="$stage"
}

# `make install` installs stripped files, `make install-debug` their debug info under their build ids.
check_stripped() {
    local f id debug bad=0 sections
    for f in "$stage$prefix/lib/libcomposefs_storage.so.$(crate_version)" "$stage$prefix/bin/composefs-storage" \
        "$stage$prefix/lib/libcomposefs_storage.a"; do
        sections="$(LC_ALL=C readelf -S -W "$f" 2>/dev/null)"
        # (.debug_gdb_scripts is loaded data, not debug info: strip keeps it.)
        if grep -Eq '\.debug_(info|line|str|abbrev|ranges|loc)' <<<"$sections"; then
            echo "error: $f is not stripped of its debug info"
            bad=1
        fi
        printf '  %-40s %9s bytes installed\n' "${f#"$stage"}" "$(stat -c %s "$f")"
        [[ "$f" == *.a ]] && continue
        id="$(build_id "$f")"
        debug="$stage/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
        if [ -n "$id" ] && grep -q '\.debug_info' <<<"$(LC_ALL=C readelf -S -W "$debug" 2>/dev/null)"; then
            printf '  %-40s %9s bytes\n' "${debug#"$stage"}" "$(stat -c %s "$debug")"
        else
            echo "error: no debug file with .debug_info for $f (build id '${id}')"
            bad=1
        fi
    done
    [ "$bad" = 0 ] && echo "stripped: 3 installed files stripped, 2 debug files under their build ids"
}

# pkg-config against the staged install gives the staged paths and the static link's libraries.
check_pkg_config() {
    local pc="$stage$prefix/lib/pkgconfig" flags static private
    flags="$(PKG_CONFIG_PATH="$pc" PKG_CONFIG_SYSROOT_DIR="$stage" pkg-config --cflags --libs composefs-storage)" || return 1
    static="$(PKG_CONFIG_PATH="$pc" PKG_CONFIG_SYSROOT_DIR="$stage" pkg-config --static --libs composefs-storage)" || return 1
    private="$(cat build/native-static-libs.txt)"
    echo "pkg-config --cflags --libs:        $flags"
    echo "pkg-config --static --libs:        $static"
    echo "rustc native-static-libs:          $private"
    [[ "$flags" == *"-I$stage$prefix/include"* && "$flags" == *"-L$stage$prefix/lib"* &&
        "$flags" == *"-lcomposefs_storage"* ]] || { echo "error: --cflags --libs lacks the staged paths"; return 1; }
    [[ "$static" == *"$private"* ]] || { echo "error: --static --libs lacks Libs.private"; return 1; }
    local so
    for so in libcomposefs_storage.so libcomposefs_storage.so.0 "libcomposefs_storage.so.$(crate_version)" \
        libcomposefs_storage.a; do
        [ -e "$stage$prefix/lib/$so" ] || { echo "error: $so not installed"; return 1; }
    done
    [ -x "$stage$prefix/bin/composefs-storage" ] || { echo "error: the CLI is not installed"; return 1; }
    echo "pkg-config: 1 passed, 0 failed"
}

# The installer's own bad-input path (a package that cannot be installed).
step setup-errors scripts/test-setup.sh
# eStargz blobs made by the real encoder, for the Rust and Go tests (tests/estargz.rs).
export CFS_ESTARGZ_DIR="$ROOT/build/estargz"
step estargz-blobs scripts/gen-estargz.sh "$CFS_ESTARGZ_DIR"
step rust-tests cargo test --no-fail-fast
# The crate as a Rust program with its own global allocator would take it (src/mapped_alloc.rs).
step no-default-features cargo check --lib --no-default-features
step header-check scripts/check-header.sh
if step stage-install stage_install; then
    step symbol-check scripts/check-symbols.sh "${CARGO_TARGET_DIR:-target}/release/libcomposefs_storage.so"
    step pkg-config check_pkg_config
    step stripped check_stripped
    step c-dynamic scripts/test-c.sh dynamic
    step c-static scripts/test-c.sh static
    step c-valgrind scripts/test-c.sh valgrind
    step c-asan scripts/test-c.sh asan
    step go-dynamic scripts/test-go.sh dynamic
    step go-static scripts/test-go.sh static
    step go-race scripts/test-go.sh race
else
    for s in symbol-check pkg-config stripped c-dynamic c-static c-valgrind c-asan go-dynamic go-static go-race; do
        skip "$s" "stage-install failed"
    done
fi

# The Debian packages (debian/): built offline, lintian, installed into a fresh debootstrap root
# where the C example and bindings/go's tests build against them with pkg-config.
step deb scripts/test-deb.sh

# containers/storage built stock and patched (integration/containers-storage), side by side.
step containers-storage integration/containers-storage/run.sh

# podman built stock and patched (integration/podman): pull, run, mount, partial pull, save/load,
# rmi and bad input through a local registry, side by side.
step podman integration/podman/run.sh

# A minute of fuzzing over every cargo-fuzz target, from their seeds (not a campaign: scripts/fuzz.sh).
step fuzz-smoke scripts/fuzz-smoke.sh

echo
echo "===== summary (logs in build/logs/)"
passed=0 failed=0
for i in "${!names[@]}"; do
    printf '  %-18s %-28s %4ss\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
    if [ "${results[$i]}" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "test-all: $passed passed, $failed failed"
exit "$failed_any"
