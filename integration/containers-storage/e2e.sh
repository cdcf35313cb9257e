#!/usr/bin/env bash
# End-to-end run of one containers/storage build (stock or patched) with composefs on: layers go
# through the differ path as podman pulls them (cfs-pull: NewDiffer -> PrepareStagedLayer ->
# ApplyStagedLayer), then the containers-storage CLI mounts, diffs and deletes them.
#
# Usage: e2e.sh LABEL CS_BIN PULL_BIN WORKDIR INPUTS RESULTS
#   INPUTS holds base.tar, upper.tar (make-layers.py) and their .gz/.zst/.chunked variants
#   (.chunked.json: the annotations); RESULTS gets one line per check: "check<TAB>PASS|FAIL<TAB>detail".
# Each check is independent: a failure is recorded and the run goes on. Runs as root.
set -uo pipefail

label="$1" cs="$2" pull="$3" work="$4" inputs="$5" results="$6"
: >"$results"
: >"${results%.tsv}-classes.tsv"
log="$work/e2e.log"
mkdir -p "$work"
: >"$log"

record() { # record CHECK OK DETAIL
    local r=FAIL
    [ "$2" = 1 ] && r=PASS
    printf '%s\t%s\t%s\n' "$1" "$r" "$3" >>"$results"
    printf '[%s] %-58s %s %s\n' "$label" "$1" "$r" "$3"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

. "$(dirname "$0")/store.sh"
new_store() { # new_store NAME: a fresh store under the work dir (sets $store), the last one shut down
    close_store
    store="$work/$1"
    new_store_at "$store"
}

# close_store: shuts the current store down, which releases the overlay driver's bind mount of its
# home (the only mount a store keeps when nothing is mounted in it).
close_store() {
    [ -n "${store:-}" ] && "$cs" shutdown >/dev/null 2>&1
    return 0
}

# apply ID PARENT INPUT [EXTRA...]: a layer through the differ; prints its ID or fails.
apply() {
    local id="$1" parent="$2" input="$3"
    shift 3
    local args=()
    [ -n "$parent" ] && args+=(--parent "$parent")
    [ -f "$input.json" ] && args+=(--annotations "$input.json")
    "$pull" apply "${args[@]}" "$@" "$id" "$input" 2>>"$log"
}

# leftovers: mounts, loop devices or staging dirs of this store (empty output: none). The overlay
# driver's private bind mount of its home (graph/overlay on itself) is released by shutdown.
leftovers() {
    "$cs" shutdown >/dev/null 2>&1
    grep -F " $store/" /proc/self/mountinfo | awk '{print "mount " $5}'
    losetup -l -n -O NAME,BACK-FILE 2>/dev/null | grep -F "$store/" | awk '{print "loop " $1 " " $2}'
    find "$store/graph/overlay/staging" -mindepth 1 -maxdepth 1 2>/dev/null | sed 's/^/staging /'
}

# layer_fingerprint ID: the blob sha256 of a composefs layer, then its objects ("xx/yyy... SIZE").
layer_fingerprint() {
    local dir="$store/graph/overlay/$1"
    [ -f "$dir/composefs-data/composefs.blob" ] || { echo "not-composefs"; return; }
    echo "blob=$(sha "$dir/composefs-data/composefs.blob")"
    (cd "$dir/diff" && find . -type f -printf '%P %s\n' | LC_ALL=C sort)
}

# check_view ROOT WHAT: the merged view of base + upper.
check_view() {
    local root="$1" what="$2" ok detail
    ok=1 detail=""
    [ "$(cat "$root/db/data" 2>/dev/null)" = "the database" ] || { ok=0; detail+="/db/data missing; "; }
    record "$what: lower top-level /db visible (SPEC 10.2)" "$ok" "$detail"
    ok=1 detail=""
    [ -e "$root/a/gone" ] && { ok=0; detail+="/a/gone still there; "; }
    [ "$(cat "$root/a/kept" 2>/dev/null)" = "kept" ] || { ok=0; detail+="/a/kept missing; "; }
    ls -a "$root/a" "$root/o" 2>/dev/null | grep -q '^\.wh\.' && { ok=0; detail+=".wh.* names visible; "; }
    record "$what: whiteout hides a lower file (SPEC 10.1)" "$ok" "$detail"
    ok=1 detail=""
    [ -e "$root/o/old" ] && { ok=0; detail+="/o/old still there; "; }
    [ "$(cat "$root/o/new" 2>/dev/null)" = "new in the upper layer" ] || { ok=0; detail+="/o/new missing; "; }
    record "$what: opaque dir hides lower entries (SPEC 10.1)" "$ok" "$detail"
    ok=1 detail=""
    [ "$(cat "$root/b/new" 2>/dev/null)" = "another new file" ] || { ok=0; detail+="/b/new; "; }
    [ "$(cat "$root/b/same2" 2>/dev/null)" = "same content" ] || { ok=0; detail+="/b/same2; "; }
    [ "$(sha "$root/usr/share/big" 2>/dev/null)" = "$(tar -xOf "$inputs/base.tar" usr/share/big | sha256sum | cut -d' ' -f1)" ] ||
        { ok=0; detail+="/usr/share/big content; "; }
    [ "$(stat -c %i "$root/usr/share/link" 2>/dev/null)" = "$(stat -c %i "$root/usr/share/same1" 2>/dev/null)" ] ||
        { ok=0; detail+="hardlink; "; }
    [ "$(readlink "$root/etc/sym")" = "../usr/share/big" ] || { ok=0; detail+="symlink; "; }
    record "$what: files of both layers read back" "$ok" "$detail"
}

base_diffid=$(sha "$inputs/base.tar")
upper_diffid=$(sha "$inputs/upper.tar")

# --- The two-layer stack in every input format.
for fmt in tar tar.gz tar.zst chunked; do
    new_store "stack-$fmt"
    base_in="$inputs/base.$fmt" upper_in="$inputs/upper.$fmt"
    if ! apply base "" "$base_in" >/dev/null || ! apply upper base "$upper_in" >/dev/null; then
        record "$fmt: base + upper applied through the differ" 0 "$(tail -n 2 "$log" | tr '\n' ' ')"
        continue
    fi
    is_cfs=1
    for l in base upper; do [ -d "$store/graph/overlay/$l/composefs-data" ] || is_cfs=0; done
    record "$fmt: base + upper applied through the differ" "$is_cfs" "$([ $is_cfs = 1 ] || echo 'not composefs layers')"
    for l in base upper; do layer_fingerprint "$l" >"$work/fingerprint-$fmt-$l"; done

    ok=1 detail=""
    "$cs" diff -f "$work/d.tar" base 2>>"$log" && [ "$(sha "$work/d.tar")" = "$base_diffid" ] || { ok=0; detail+="base; "; }
    "$cs" diff -f "$work/d.tar" upper 2>>"$log" && [ "$(sha "$work/d.tar")" = "$upper_diffid" ] || { ok=0; detail+="upper; "; }
    rm -f "$work/d.tar"
    record "$fmt: diff of each layer is its DiffID" "$ok" "$detail"

    "$cs" create-image --name img upper >/dev/null 2>>"$log"
    if m=$("$cs" mount -r img 2>>"$log") && [ -d "$m" ]; then
        check_view "$m" "$fmt image mount"
        "$cs" unmount img >/dev/null 2>>"$log"
    else
        record "$fmt image mount: mounted read-only" 0 "$(tail -n 1 "$log")"
    fi
    "$cs" create-container --name ctr img >/dev/null 2>>"$log"
    if m=$("$cs" mount ctr 2>>"$log") && [ -d "$m" ]; then
        ok=1
        echo written >"$m/b/written" && [ "$(cat "$m/b/written")" = written ] || ok=0
        [ -f "$store/graph/overlay/$("$cs" container ctr 2>/dev/null | awk '/^Layer:/{print $2}')/diff/b/written" ] || ok=0
        record "$fmt container mount: write lands in the upper dir" "$ok" ""
        [ "$fmt" = chunked ] && check_view "$m" "$fmt container mount"
        "$cs" unmount ctr >/dev/null 2>>"$log"
    else
        record "$fmt container mount: mounted read-write" 0 "$(tail -n 1 "$log")"
    fi
    "$cs" delete-container ctr >/dev/null 2>>"$log"
    "$cs" delete-image img >/dev/null 2>>"$log"
    "$cs" delete-layer upper >/dev/null 2>>"$log"
    "$cs" delete-layer base >/dev/null 2>>"$log"
    left="$(leftovers; ls "$store/graph/overlay" | grep -v -x -e l -e staging -e tempdirs | sed 's/^/layer dir /')"
    record "$fmt: delete leaves no mount, loop device or layer" "$([ -z "$left" ] && echo 1 || echo 0)" "$(echo $left)"
done

# --- A layer that the patched differ leaves to c/storage's own code (staged with a forced mask, as
# rootless podman may), over a layer of the same files: its NewDiffer skipped c/storage's layers
# cache (the library path needs none), which ApplyDiff then loads for c/storage's code.
new_store forced-mask
check="forced mask: staged by c/storage's own code, files read back"
if apply base "" "$inputs/base.chunked" >/dev/null && apply masked base "$inputs/base.chunked" --force-mask 0755 >/dev/null; then
    "$cs" create-image --name img masked >/dev/null 2>>"$log"
    if m=$("$cs" mount -r img 2>>"$log") && [ -d "$m" ]; then
        ok=1
        for f in db/data a/kept; do cmp -s "$m/$f" <(tar -xOf "$inputs/base.tar" "$f") || ok=0; done
        "$cs" unmount img >/dev/null 2>>"$log"
        record "$check" "$ok" "$([ $ok = 1 ] || echo 'files differ from the tar')"
    else
        record "$check" 0 "$(tail -n 1 "$log")"
    fi
else
    record "$check" 0 "$(tail -n 2 "$log" | tr '\n' ' ')"
fi

# --- A realistic layer (a Debian rootfs, make-rootfs.sh) and a layer over it, when given.
for fmt in tar.zst chunked; do
    [ -f "$inputs/rootfs.$fmt" ] || continue
    new_store "rootfs-$fmt"
    if ! apply rootfs "" "$inputs/rootfs.$fmt" >/dev/null || ! apply rootfs-upper rootfs "$inputs/rootfs-upper.$fmt" >/dev/null; then
        record "rootfs $fmt: base + upper applied through the differ" 0 "$(tail -n 1 "$log")"
        continue
    fi
    record "rootfs $fmt: base + upper applied through the differ" 1 ""
    for l in rootfs rootfs-upper; do layer_fingerprint "$l" >"$work/fingerprint-$fmt-$l"; done
    ok=1 detail=""
    "$cs" diff -f "$work/d.tar" rootfs 2>>"$log" && [ "$(sha "$work/d.tar")" = "$(cat "$inputs/rootfs.diffid")" ] || { ok=0; detail+="base; "; }
    "$cs" diff -f "$work/d.tar" rootfs-upper 2>>"$log" && [ "$(sha "$work/d.tar")" = "$(sha "$inputs/rootfs-upper.tar")" ] || { ok=0; detail+="upper; "; }
    rm -f "$work/d.tar"
    record "rootfs $fmt: diff of each layer is its DiffID" "$ok" "$detail"
    "$cs" create-image --name base rootfs >/dev/null 2>>"$log"
    "$cs" create-image --name img rootfs-upper >/dev/null 2>>"$log"
    if m=$("$cs" mount -r base 2>>"$log") && [ -d "$m" ]; then
        out=$(python3 "$(dirname "$0")/check-tree.py" "$inputs/rootfs.tar" "$m" 2>&1)
        rc=$?
        record "rootfs $fmt: mounted tree equals the tar" "$([ $rc = 0 ] && echo 1 || echo 0)" "$(echo $out | cut -c1-200)"
        "$cs" unmount base >/dev/null 2>>"$log"
    else
        record "rootfs $fmt: mounted tree equals the tar" 0 "$(tail -n 1 "$log")"
    fi
    if m=$("$cs" mount -r img 2>>"$log") && [ -d "$m" ]; then
        ok=1 detail=""
        [ -e "$m/usr/share/doc" ] && { ok=0; detail+="/usr/share/doc still there; "; }
        [ -n "$(ls -A "$m/var/cache")" ] && { ok=0; detail+="/var/cache not empty; "; }
        [ -e "$m/usr/share/.wh.doc" ] && { ok=0; detail+=".wh.doc visible; "; }
        record "rootfs $fmt: upper's whiteout and opaque dir applied (SPEC 10.1)" "$ok" "$detail"
        ok=1
        grep -q composefs-storage "$m/etc/os-release" && cmp -s "$m/usr/local/bin/bash-copy" "$m/usr/bin/bash" && [ -x "$m/usr/bin/dpkg" ] || ok=0
        record "rootfs $fmt: files of both layers read back" "$ok" ""
        "$cs" unmount img >/dev/null 2>>"$log"
    else
        record "rootfs $fmt: upper's whiteout and opaque dir applied (SPEC 10.1)" 0 "$(tail -n 1 "$log")"
    fi
    "$cs" delete-image img >/dev/null 2>>"$log"
    "$cs" delete-image base >/dev/null 2>>"$log"
    left="$(leftovers; ls "$store/graph/overlay" | grep -v -x -e l -e staging -e tempdirs | sed 's/^/layer dir /')"
    record "rootfs $fmt: delete leaves no mount, loop device or layer" "$([ -z "$left" ] && echo 1 || echo 0)" "$(echo $left)"
done

# --- The shared corpus: each layer through the differ, its diff is its DiffID.
new_store corpus
for input in "$inputs"/corpus-*; do
    case "$input" in *.json) continue ;; esac
    name=$(basename "$input")
    want=$(cat "$inputs/diffid-${name#corpus-}" 2>/dev/null) || continue
    id="c$(echo "$name" | sha256sum | cut -c1-12)"
    if apply "$id" "" "$input" >/dev/null; then
        "$cs" diff -f "$work/d.tar" "$id" 2>>"$log"
        got=$(sha "$work/d.tar")
        layer_fingerprint "$id" >"$work/fingerprint-$name"
        record "corpus $name: applied, diff is its DiffID" "$([ "$got" = "$want" ] && echo 1 || echo 0)" ""
    else
        record "corpus $name: applied, diff is its DiffID" 0 "$(tail -n 1 "$log")"
    fi
done
rm -f "$work/d.tar"

# --- Bad input: an error, the store as before, nothing left behind.
new_store bad
apply base "" "$inputs/base.tar.zst" >/dev/null 2>&1
before=$("$cs" layers 2>/dev/null | sort)
bad_case() { # bad_case CHECK INPUT [EXTRA...]
    local what="$1" input="$2"
    shift 2
    local err
    if apply "bad$RANDOM" base "$input" "$@" >/dev/null; then
        record "bad input: $what is refused" 0 "it was accepted"
        return
    fi
    # The error, and its class (the step that failed, fallback or not) compared with stock's.
    err=$(grep -v '^error class: ' "$log" | tail -n 1 | cut -c1-140)
    printf '%s\t%s\n' "$what" "$(grep '^error class: ' "$log" | tail -n 1 | cut -d' ' -f3-)" >>"${results%.tsv}-classes.tsv"
    local after left
    after=$("$cs" layers 2>/dev/null | sort)
    left=$(leftovers)
    if [ "$after" = "$before" ] && [ -z "$left" ]; then
        record "bad input: $what is refused" 1 "$err"
    else
        record "bad input: $what is refused" 0 "left: $(echo $left) layers: $(echo $after)"
    fi
}
# A zstd:chunked blob whose TOC frame is damaged (bytes flipped in its middle).
cp "$inputs/upper.chunked" "$work/bad-toc.chunked"
cp "$inputs/upper.chunked.json" "$work/bad-toc.chunked.json"
pos=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["io.github.containers.zstd-chunked.manifest-position"])' "$inputs/upper.chunked.json")
IFS=: read -r off len _ <<<"$pos"
printf '\xff\xff\xff\xff' | dd of="$work/bad-toc.chunked" bs=1 seek=$((off + len / 2)) conv=notrunc status=none
bad_case "a zstd:chunked blob with a damaged TOC" "$work/bad-toc.chunked"
# A zstd:chunked blob whose TOC lies about a file's mode (setuid), re-signed: the annotations
# authenticate the lying TOC, which no longer matches the tar-split's own headers.
python3 "$(dirname "$0")/lying-toc.py" "$inputs/upper.chunked" "$work/lying-toc.chunked"
bad_case "a zstd:chunked TOC that lies about a file's mode (re-signed)" "$work/lying-toc.chunked"
# A tar cut short, in the middle of a file's data (tar pads to 10 KiB records: a cut near the end
# could leave every entry whole).
head -c 600000 "$inputs/base.tar" >"$work/truncated.tar"
bad_case "a truncated tar" "$work/truncated.tar"
# A layer whose DiffID is not the one expected.
bad_case "a layer with a lying DiffID" "$inputs/upper.tar.zst" --diff-id "sha256:$(printf '0%.0s' {1..64})"
close_store
left=$({ grep -F " $work/" /proc/self/mountinfo || true; } | awk '{print $5}')
record "end: nothing of the run left mounted" "$([ -z "$left" ] && echo 1 || echo 0)" "$(echo $left)"
exit 0
