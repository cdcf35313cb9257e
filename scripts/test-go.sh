#!/usr/bin/env bash
# Runs `go test` for bindings/go against a staged `make install` (MODE dynamic, static, race, or all).
# Usage: scripts/test-go.sh [MODE]   Env: CFS_STAGE (default build/stage), CFS_STAGE_PREFIX (/usr/local)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mode="${1:-all}"
stage="${CFS_STAGE:-$ROOT/build/stage}"
prefix="${CFS_STAGE_PREFIX:-/usr/local}"
libdir="$stage$prefix/lib"
[ -f "$libdir/pkgconfig/composefs-storage.pc" ] ||
    { echo "error: no staged install at $stage (run: make install DESTDIR=$stage)" >&2; exit 1; }
go="$(find_go)"
echo "using $("$go" version) ($go)"

export PKG_CONFIG_PATH="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage" LD_LIBRARY_PATH="$libdir"
# Never fetch a toolchain or a module: the module has no dependencies.
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=1
# Go's build cache does not look at C headers or libraries outside the module: key it on the staged
# ones, so that a new install is never tested through stale cgo output.
digest="$(cat "$stage$prefix/include/composefs-storage.h" "$libdir"/libcomposefs_storage.* | sha256sum | cut -c1-16)"
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -DCFS_STAGE_DIGEST=$digest"
export CFS_TEST_DATA="$ROOT/tests/data"
unset CONTAINERS_STORAGE_CONF CONTAINERS_STORAGE_CONF_OVERRIDE

cd "$ROOT/bindings/go"
status=0
passed=0 failed=0
gotest() { # gotest LABEL ARGS...
    local label="$1"
    shift
    echo "== go test $* ($label)"
    if "$go" test -count=1 "$@" ./...; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        status=1
    fi
}
linkcheck() { # linkcheck LABEL TAGS...: the test binary links the library as the mode says
    local label="$1" bin
    shift
    bin="$(mktemp -d)/composefs.test"
    if ! "$go" test -c -o "$bin" "$@" . >/dev/null 2>&1; then
        linked="no binary (build failed)"
    elif grep -q 'NEEDED.*libcomposefs_storage' <<<"$(readelf -d "$bin")"; then
        linked=dynamic
    else
        linked=static
    fi
    rm -rf "$(dirname "$bin")"
    if [ "$linked" = "$label" ]; then
        echo "link check: $label test binary links libcomposefs_storage $linked"
        passed=$((passed + 1))
    else
        echo "link check FAILED: $label test binary links libcomposefs_storage $linked"
        failed=$((failed + 1))
        status=1
    fi
}

"$go" vet ./... || { echo "go vet failed"; failed=$((failed + 1)); status=1; }
unformatted="$("$(dirname "$go")/gofmt" -l .)"
[ -z "$unformatted" ] || { echo "gofmt: not formatted (run gofmt -w): $unformatted"; failed=$((failed + 1)); status=1; }
case "$mode" in all | dynamic) gotest dynamic -v && linkcheck dynamic ;; esac
case "$mode" in all | static) gotest static -tags static && linkcheck static -tags static ;; esac
case "$mode" in all | race) gotest race -race && gotest race-static -race -tags static ;; esac
echo "go-tests: $passed passed, $failed failed"
exit "$status"
