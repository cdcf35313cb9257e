#!/usr/bin/env bash
# Builds the C tests in tests/c against a staged `make install` with pkg-config, linked dynamically
# and statically, and runs them (MODE dynamic, static, valgrind, asan, or all). MODE asan builds
# them again with gcc's -fsanitize=address,undefined (LeakSanitizer on), both link ways.
# Usage: scripts/test-c.sh [MODE]   Env: CFS_STAGE (default build/stage), CFS_STAGE_PREFIX (/usr/local)
#
# A test file may start with "// requires: cfs_name" lines: it is skipped, with the reason printed,
# until the header declares those functions.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mode="${1:-all}"
stage="${CFS_STAGE:-$ROOT/build/stage}"
prefix="${CFS_STAGE_PREFIX:-/usr/local}"
libdir="$stage$prefix/lib"
out="$ROOT/build/c"
header="$stage$prefix/include/composefs-storage.h"
[ -f "$header" ] || { echo "error: no staged install at $stage (run: make install DESTDIR=$stage)" >&2; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
cflags="$(pkg-config --cflags composefs-storage)"
libs="$(pkg-config --libs composefs-storage)"
static_libs="$(pkg-config --static --libs composefs-storage)"
# Static link of this library: name the archive, as the .so sits next to it.
static_libs="${static_libs/-lcomposefs_storage/-l:libcomposefs_storage.a}"
CC="${CC:-cc}"
CXX="${CXX:-c++}"
warn=(-Wall -Wextra -Werror -g)
# AddressSanitizer and UBSan instrument the C side; their malloc interposition also checks every
# allocation the (uninstrumented) Rust library hands to or takes from C. Any report fails the run.
asan=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)

mkdir -p "$out/tmp"
rm -f "$out"/*-dynamic "$out"/*-static "$out"/*-asan-*
python3 "$ROOT/scripts/gen-null-tests.py" "$header" "$ROOT/tests/c/null-exempt.txt" "$out/test_null_args.c"

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $*"; }

build() { # build LABEL COMMAND...: compiler output goes to a log, shown on failure
    local label="$1"
    shift
    if ! "$@" >"$out/$label.build.log" 2>&1; then
        fail "$label: build failed: $*"
        sed 's/^/    /' "$out/$label.build.log"
        return 1
    fi
}

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

# Build every test, both ways; check each binary links the library the way it claims.
programs=()
for src in "$ROOT"/tests/c/test_*.c "$out/test_null_args.c"; do
    name="$(basename "$src" .c)"
    missing=""
    for fn in $(sed -n 's|^// requires: *||p' "$src"); do
        grep -q "\b$fn(" "$header" || missing="$missing $fn"
    done
    if [ -n "$missing" ]; then
        skip "$name: the header does not declare$missing yet"
        continue
    fi
    # shellcheck disable=SC2086
    if ! build "$name-dynamic" "$CC" -std=c99 -pedantic "${warn[@]}" -I"$ROOT/tests/c" $cflags "$src" \
        -o "$out/$name-dynamic" $libs; then
        continue
    fi
    # shellcheck disable=SC2086
    if ! build "$name-static" "$CC" -std=c99 -pedantic "${warn[@]}" -I"$ROOT/tests/c" $cflags "$src" \
        -o "$out/$name-static" $static_libs; then
        continue
    fi
    if [ "$mode" = asan ] || [ "$mode" = all ]; then
        # shellcheck disable=SC2086
        build "$name-asan-dynamic" "$CC" -std=c99 -pedantic "${warn[@]}" "${asan[@]}" -I"$ROOT/tests/c" $cflags \
            "$src" -o "$out/$name-asan-dynamic" $libs || continue
        # shellcheck disable=SC2086
        build "$name-asan-static" "$CC" -std=c99 -pedantic "${warn[@]}" "${asan[@]}" -I"$ROOT/tests/c" $cflags \
            "$src" -o "$out/$name-asan-static" $static_libs || continue
    fi
    if ! needed "$out/$name-dynamic" | grep -qx "libcomposefs_storage.so.0"; then
        fail "$name-dynamic does not link libcomposefs_storage.so.0"
    elif needed "$out/$name-static" | grep -q "libcomposefs_storage"; then
        fail "$name-static links libcomposefs_storage dynamically"
    fi
    programs+=("$name")
done
# shellcheck disable=SC2086
if build cxx_compat-dynamic "$CXX" -std=c++11 "${warn[@]}" $cflags "$ROOT/tests/c/cxx_compat.cpp" \
    -o "$out/cxx_compat-dynamic" $libs; then
    programs+=(cxx_compat)
fi

# The tests' environment: the staged library, test data, and no containers-storage overrides.
run_env=(env -u CONTAINERS_STORAGE_CONF -u CONTAINERS_STORAGE_CONF_OVERRIDE
    CFS_TEST_DATA="$ROOT/tests/data" TMPDIR="$out/tmp")
# CFS_ALLOC=malloc: the library's large blocks from malloc too, where the checkers see them
# (src/mapped_alloc.rs).
valgrind=(env CFS_ALLOC=malloc valgrind -q --suppressions="$ROOT/tests/c/valgrind.supp" --leak-check=full --show-leak-kinds=all
    --errors-for-leak-kinds=all --error-exitcode=99)
# The staged .so is stripped, and valgrind looks for split debug info by build id only under
# /usr/lib/debug: its dynamic runs load the unstripped build of the same library instead, so that
# reports name functions (the suppressions match names). Same build: the build ids must agree.
unstripped="$out/unstripped"
build_so="$ROOT/${CARGO_TARGET_DIR:-target}/release/libcomposefs_storage.so"
if [[ "$mode" == all || "$mode" == valgrind ]]; then
    staged_id="$(build_id "$(readlink -f "$libdir/libcomposefs_storage.so.0")")"
    [ -n "$staged_id" ] && [ "$(build_id "$build_so")" = "$staged_id" ] ||
        { echo "error: $build_so is not the build of the staged library (build id $staged_id): run make" >&2; exit 1; }
    mkdir -p "$unstripped"
    ln -sfn "$build_so" "$unstripped/libcomposefs_storage.so.0"
fi

sanitizer_env=(CFS_ALLOC=malloc ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=98:strict_string_checks=1:detect_stack_use_after_return=1
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=97)

run() { # run LABEL BINARY [PREFIX...]   (Env: ld_path, the dir of the .so to load)
    local label="$1" bin="$2" log
    shift 2
    log="$out/$label.log"
    if (cd "$out" && "${run_env[@]}" LD_LIBRARY_PATH="${ld_path:-$libdir}" "$@" "$bin") >"$log" 2>&1; then
        pass "$label ($(tail -n 1 "$log"))"
    else
        fail "$label (exit $?):"
        sed 's/^/    /' "$log"
    fi
}

for name in "${programs[@]}"; do
    for link in dynamic static; do
        [ -x "$out/$name-$link" ] || continue
        case "$mode" in
            all | "$link") run "$name-$link" "$out/$name-$link" ;;
        esac
        case "$mode" in
            all | valgrind) ld_path="$unstripped" run "$name-$link-valgrind" "$out/$name-$link" "${valgrind[@]}" ;;
        esac
        case "$mode" in
            all | asan)
                [ -x "$out/$name-asan-$link" ] &&
                    run "$name-asan-$link" "$out/$name-asan-$link" env "${sanitizer_env[@]}"
                ;;
        esac
    done
done

echo "C tests, $mode:"
echo "c-tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
