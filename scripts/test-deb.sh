#!/usr/bin/env bash
# Builds the Debian packages (debian/) offline with dpkg-buildpackage, checks them with lintian and
# by their contents, then installs them into a fresh Debian root (debootstrap, cached under
# build/deb/) and, inside it, builds and runs the C example with pkg-config and runs `go test` of
# bindings/go against the installed package, linked dynamically and statically; then purges them
# and checks that nothing of theirs is left. Needs root (chroot, mounts).
# Usage: scripts/test-deb.sh       Env: CFS_DEB_MIRROR (default: the machine's Debian mirror)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || { echo "error: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
# In a private mount namespace: the fresh root's mounts cannot leak into the machine's, and go away
# with this process whatever happens to it.
if [ -z "${CFS_DEB_NAMESPACE:-}" ]; then
    exec unshare --mount --propagation private env CFS_DEB_NAMESPACE=1 "$0" "$@"
fi
work="$ROOT/build/deb"
version="$(crate_version)"
src="$work/src/composefs-storage-$version"
corpus="$(shared_corpus)" || { echo "error: ../shared/corpus not found (set CFS_CORPUS)" >&2; exit 1; }
mkdir -p "$work"

passed=0 failed=0
check() { # check DESCRIPTION COMMAND...: one counted check
    local what="$1"
    shift
    if "$@"; then
        echo "PASS $what"
        passed=$((passed + 1))
    else
        echo "FAIL $what"
        failed=$((failed + 1))
    fi
}

# --- Build: the committed tree (and new files not ignored), as a source package would have it.
echo "== dpkg-buildpackage -us -uc -b (in $src)"
rm -rf "$work/src" && mkdir -p "$src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
    (cd "$ROOT" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
    tar -C "$ROOT" --null -T - -cf - | tar -C "$src" -xf -
# Offline: every crate comes from the local cargo cache (cargo fetch has run in the tests before).
# The target dir outlives the source copy, so a second run builds incrementally.
start=$SECONDS
(cd "$src" && CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$work/target" dpkg-buildpackage -us -uc -b) \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; echo "error: dpkg-buildpackage failed (log: $work/build.log)" >&2; exit 1; }
echo "built in $((SECONDS - start)) s (log: $work/build.log)"
changes="$(ls "$work"/src/composefs-storage_"$version"_*.changes)"
debs=("$work"/src/*_"$version"_*.deb)
for d in "${debs[@]}"; do
    printf '  %-55s %6s KiB, installed %6s KiB\n' "$(basename "$d")" "$(($(stat -c %s "$d") / 1024))" \
        "$(dpkg-deb -f "$d" Installed-Size)"
done
deb() { ls "$work"/src/"$1"_"$version"_*.deb; }

# --- lintian: no error (warnings and infos are printed).
lintian_ok() {
    lintian --display-info --fail-on error "$changes" >"$work/lintian.log" 2>&1
    local rc=$?
    sed 's/^/  /' "$work/lintian.log"
    return "$rc"
}
check "lintian reports no error" lintian_ok

# --- Contents.
# (Output is captured before it is searched: with pipefail, `grep -q`'s early exit can kill the
# writer with SIGPIPE and turn a match into a failure.)
has() { local list; list="$(dpkg-deb -c "$(deb "$1")" | awk '{print $6}')" && grep -qx "$2" <<<"$list"; }
control_has() { local list; list="$(dpkg-deb --ctrl-tarfile "$(deb "$1")" | tar -t)" && grep -qx "$2" <<<"$list"; }
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
check "libcomposefs-storage0 has the .so and its SONAME link" \
    eval 'has libcomposefs-storage0 "./usr/lib/$multiarch/libcomposefs_storage.so.$version" &&
          has libcomposefs-storage0 "./usr/lib/$multiarch/libcomposefs_storage.so.0"'
check "libcomposefs-storage0 has shlibs and symbols files" \
    eval 'control_has libcomposefs-storage0 ./symbols && control_has libcomposefs-storage0 ./shlibs'
check "libcomposefs-storage-dev has the header, .pc, .a, .so link and man page" \
    eval 'has libcomposefs-storage-dev ./usr/include/composefs-storage.h &&
          has libcomposefs-storage-dev "./usr/lib/$multiarch/pkgconfig/composefs-storage.pc" &&
          has libcomposefs-storage-dev "./usr/lib/$multiarch/libcomposefs_storage.a" &&
          has libcomposefs-storage-dev "./usr/lib/$multiarch/libcomposefs_storage.so" &&
          has libcomposefs-storage-dev ./usr/share/man/man3/composefs-storage.3.gz'
check "composefs-storage has the CLI and its man page" \
    eval 'has composefs-storage ./usr/bin/composefs-storage && has composefs-storage ./usr/share/man/man1/composefs-storage.1.gz'
# The -dbgsym package holds the debug info of the shipped, stripped .so under its build id.
dbgsym_matches() {
    local x id
    x="$(mktemp -d)"
    dpkg-deb -x "$(deb libcomposefs-storage0)" "$x/lib"
    dpkg-deb -x "$(ls "$work"/src/libcomposefs-storage0-dbgsym_"$version"_*.*deb)" "$x/dbg"
    local so="$x/lib/usr/lib/$multiarch/libcomposefs_storage.so.$version"
    id="$(build_id "$so")"
    local debug="$x/dbg/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
    echo "  build id $id: shipped .so $(stat -c %s "$so") B, debug file $(stat -c %s "$debug" 2>/dev/null || echo missing) B"
    local so_sections debug_sections
    so_sections="$(LC_ALL=C readelf -S "$so")" && debug_sections="$(LC_ALL=C readelf -S "$debug" 2>/dev/null)"
    ! grep -q '\.debug_info' <<<"$so_sections" && grep -q '\.debug_info' <<<"$debug_sections"
    local rc=$?
    rm -rf "$x"
    return "$rc"
}
check "the .so is stripped and its -dbgsym has its debug info under its build id" dbgsym_matches
# The build's dpkg-gensymbols -c4 (debian/rules) fails when the exports and the symbols file differ:
# shown here with the shipped .so against the symbols file less one symbol, and as shipped.
gensymbols() { # gensymbols SYMBOLS-FILE
    local x rc
    x="$(mktemp -d)"
    dpkg-deb -x "$(deb libcomposefs-storage0)" "$x"
    (cd "$src" && dpkg-gensymbols -plibcomposefs-storage0 -v"$version" -c4 -O/dev/null -I"$1" \
        -e"$x/usr/lib/$multiarch/libcomposefs_storage.so.$version") >"$work/gensymbols.log" 2>&1
    rc=$?
    rm -rf "$x"
    return "$rc"
}
symbols_gate() {
    local less="$work/less.symbols"
    grep -v ' cfs_version@Base ' "$src/debian/libcomposefs-storage0.symbols" >"$less"
    gensymbols "$src/debian/libcomposefs-storage0.symbols" || { cat "$work/gensymbols.log"; return 1; }
    if gensymbols "$less"; then
        echo "  dpkg-gensymbols -c4 accepted a symbols file without cfs_version"
        return 1
    fi
    grep -m1 'error' "$work/gensymbols.log" | sed 's/^/  /'
}
check "dpkg-gensymbols -c4 accepts the symbols file and refuses it less one export" symbols_gate

# --- A fresh Debian root with a C compiler and pkg-config, cached as a tarball.
root_pkgs="gcc,libc6-dev,pkgconf"
root_tar="$work/root-$(echo "$root_pkgs" | sha256sum | cut -c1-12).tar"
if [ ! -f "$root_tar" ]; then
    mirror="${CFS_DEB_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}"
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /debian$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || { echo "error: no Debian mirror in the apt sources (set CFS_DEB_MIRROR)" >&2; exit 1; }
    echo "== debootstrap --variant=minbase --include=$root_pkgs bookworm ($mirror)"
    rm -rf "$work/root.new"
    start=$SECONDS
    debootstrap --variant=minbase --include="$root_pkgs" bookworm "$work/root.new" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log"; echo "error: debootstrap failed" >&2; exit 1; }
    tar -C "$work/root.new" -cf "$root_tar.tmp" . && mv "$root_tar.tmp" "$root_tar"
    rm -rf "$work/root.new"
    echo "made in $((SECONDS - start)) s"
fi
root="$work/root"
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true; done
    # Never rm through a bind mount of /dev or of the repository.
    if grep -q " $root[/ ]" /proc/self/mountinfo; then
        echo "error: mounts left under $root: not removing it" >&2
    else
        rm -rf "$root"
    fi
}
trap cleanup EXIT
rm -rf "$root" && mkdir -p "$root" && tar -C "$root" -xf "$root_tar"
bind() { # bind SRC DEST-in-root [ro]
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    mounts+=("$root$2")
    [ "${3:-}" = ro ] && mount -o remount,bind,ro "$root$2"
    return 0
}
mount -t proc proc "$root/proc" && mounts+=("$root/proc")
mount -t sysfs sysfs "$root/sys" && mounts+=("$root/sys")
# The machine's /dev (loop devices for the mount tests), without its submounts.
bind /dev /dev
# The repository (the C example, bindings/go, the Go toolchain in .tools) and the corpus, read-only.
bind "$ROOT" /src ro
bind "$corpus" /corpus ro
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/root TMPDIR=/tmp "$@"; }

cp "$(deb libcomposefs-storage0)" "$(deb libcomposefs-storage-dev)" "$(deb composefs-storage)" "$root/tmp/"
echo "== dpkg -i in the fresh root"
check "dpkg -i of the three packages" in_root sh -c 'dpkg -i /tmp/*.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }'

# The C example, built with nothing but pkg-config's flags, dynamically and statically.
ex_flags() {
    in_root sh -c 'echo "cflags/libs: $(pkg-config --cflags --libs composefs-storage)"; echo "static libs: $(pkg-config --static --libs composefs-storage)"'
}
check "pkg-config finds the installed package" ex_flags
check "the C example builds dynamically" \
    in_root sh -c 'cc -Wall -Wextra -Werror -o /tmp/convert-dyn /src/examples/convert.c $(pkg-config --cflags --libs composefs-storage)'
check "the C example builds statically" \
    in_root sh -c 'cc -Wall -Wextra -Werror -o /tmp/convert-static /src/examples/convert.c $(pkg-config --cflags composefs-storage) \
        $(pkg-config --static --libs composefs-storage | sed "s/-lcomposefs_storage/-l:libcomposefs_storage.a/")'
# links BINARY: how it links libcomposefs_storage, from its dynamic section. (Not `readelf | grep -q`: see has().)
links() {
    local dynamic
    dynamic="$(LC_ALL=C readelf -d "$1")" || return 1
    [[ "$dynamic" == *"(NEEDED)"*"[libcomposefs_storage.so.0]"* ]] && echo dynamic || echo static
}
layer=cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst
want="sha256:$(zstd -dc "$corpus/$layer" | sha256sum | cut -d' ' -f1)"
run_example() { # run_example BINARY LINKAGE
    local out
    linked="$(links "$root/tmp/$1")"
    [ "$linked" = "$2" ] || { echo "  /tmp/$1 links libcomposefs_storage $linked, not $2"; return 1; }
    out="$(in_root /tmp/"$1" /corpus/$layer /tmp/layer-"$1")" || return 1
    echo "  $1: $(echo "$out" | grep -o '"diffID":"[^"]*"')"
    [[ "$out" == *"\"diffID\":\"$want\""* ]] && [ -f "$root/tmp/layer-$1/composefs-data/composefs.blob" ]
}
check "the dynamic C example converts a layer (DiffID $want)" run_example convert-dyn dynamic
check "the static C example converts a layer" run_example convert-static static
bad_input() {
    local out rc=0
    out="$(in_root /tmp/convert-dyn /src/Cargo.toml /tmp/bad 2>&1)" || rc=$?
    echo "  exit $rc: $out"
    [ "$rc" = 1 ] && [[ "$out" == CFS_STATUS_FORMAT:* ]] && [ ! -e "$root/tmp/bad" ]
}
check "the C example reports a bad layer and leaves nothing" bad_input
check "the CLI runs its built-in example" in_root sh -c 'composefs-storage demo >/tmp/demo.log 2>&1 || { cat /tmp/demo.log; exit 1; }'

# go test of bindings/go against the installed package (no PKG_CONFIG_PATH, no LD_LIBRARY_PATH).
go="$(find_go)"
case "$go" in "$ROOT"/*) go_in_root="/src${go#"$ROOT"}" ;; *) bind "$(dirname "$(dirname "$go")")" /opt/go ro && go_in_root=/opt/go/bin/go ;; esac
gotest() { # gotest LINKAGE GO-FLAGS...
    local linkage="$1" bin linked
    shift
    in_root sh -c "cd /src/bindings/go &&
        GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=1 GOCACHE=/tmp/gocache GOPATH=/tmp/gopath \
        CFS_CORPUS=/corpus CFS_TEST_DATA=/src/tests/data ${CFS_ESTARGZ_DIR:+CFS_ESTARGZ_DIR=/src${CFS_ESTARGZ_DIR#"$ROOT"}} CI=${CI:-} \
        $go_in_root test -count=1 -v $* ./... >/tmp/gotest.log 2>&1; rc=\$?; grep -E '^(ok|FAIL|---)' /tmp/gotest.log | grep -v -- '--- PASS';
        echo \"  \$(grep -c -- '--- PASS' /tmp/gotest.log) passed, \$(grep -c -- '--- SKIP' /tmp/gotest.log) skipped, \$(grep -c -- '--- FAIL' /tmp/gotest.log) failed\";
        [ \$rc = 0 ] && $go_in_root test -c -o /tmp/cfs.test $* ." || return 1
    linked="$(links "$root/tmp/cfs.test")"
    echo "  test binary links libcomposefs_storage $linked"
    [ "$linked" = "$linkage" ]
}
check "go test against the installed package, dynamic" gotest dynamic
check "go test against the installed package, static" gotest static -tags static

# --- Purge: nothing of the packages is left.
purge_clean() {
    local files
    files="$(in_root dpkg -L libcomposefs-storage0 libcomposefs-storage-dev composefs-storage | sort -u)"
    in_root dpkg --purge composefs-storage libcomposefs-storage-dev libcomposefs-storage0 >/dev/null || return 1
    local left=0 f
    while read -r f; do
        [ -f "$root$f" ] || [ -L "$root$f" ] && { echo "  left behind: $f"; left=1; }
    done <<<"$files"
    return "$left"
}
check "dpkg --purge removes every file of the packages" purge_clean

echo "deb: $passed passed, $failed failed"
[ "$failed" = 0 ]
