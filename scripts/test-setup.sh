#!/usr/bin/env bash
# The test command's bad-input path: a package that cannot be installed stops scripts/setup.sh
# with exit 1 and one line on stderr naming it and the command that installs it, both when apt
# cannot install it (as root) and when there is no right to (as nobody), before anything else runs.
# Usage: scripts/test-setup.sh   (root; asks apt for a package that does not exist)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
pkg=cfs-no-such-package-for-setup-test
passed=0 failed=0

# expect NAME WANT CMD...: CMD must exit 1 with exactly one stderr line, containing WANT.
expect() {
    local name="$1" want="$2" err rc
    shift 2
    err="$("$@" 2>&1 >/dev/null)"
    rc=$?
    if [ "$rc" = 1 ] && [ "$(printf '%s\n' "$err" | grep -c .)" = 1 ] && [[ "$err" == *"$want"* ]]; then
        echo "ok: $name: $err"
        passed=$((passed + 1))
    else
        echo "FAIL: $name: exit $rc, stderr:"
        printf '%s\n' "$err" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

[ "$(id -u)" = 0 ] || { echo "error: run as root (it also runs setup.sh as nobody)" >&2; exit 1; }
export CFS_SETUP_EXTRA_PACKAGES="$pkg"
expect "as root, apt cannot install it" \
    "error: missing packages $pkg; apt-get could not install them (log: " \
    "$ROOT/scripts/setup.sh" apt
# nobody may not be able to enter the checkout: a world-readable copy of the two scripts it runs.
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
mkdir "$copy/scripts" && cp "$ROOT/scripts/setup.sh" "$ROOT/scripts/lib.sh" "$copy/scripts/"
chmod -R a+rX "$copy"
expect "as nobody" \
    "error: missing packages $pkg; install them with: sudo apt-get install -y $pkg" \
    setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/nonexistent \
    CFS_SETUP_EXTRA_PACKAGES="$pkg" PATH=/usr/local/bin:/usr/bin:/bin "$copy/scripts/setup.sh" apt
echo "setup errors: $passed passed, $failed failed"
[ "$failed" = 0 ]
