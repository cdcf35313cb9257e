#!/usr/bin/env bash
# The podman end-to-end run (issue 17), inside a private mount namespace (run.sh starts it with
# `unshare -m --propagation private`): cgroup v2 is mounted here for podman 6, and every mount of
# the run disappears with the namespace, so leftovers are checked before it ends.
#
# Usage: e2e.sh SCRATCH RESULTS   (after build.sh and make-images.py; see run.sh)
# Writes "BUILD<TAB>CHECK<TAB>PASS|FAIL<TAB>DETAIL" lines to RESULTS.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
scratch="$1" results="$2"
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. "$here/env.sh"
: >"$results"
registry="127.0.0.1:5000"

record() { # record BUILD CHECK OK DETAIL
    local r=FAIL
    [ "$3" = 1 ] && r=PASS
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$r" "$4" >>"$results"
    printf '[%s] %-62s %s %s\n' "$1" "$2" "$r" "$4"
}

mount -t cgroup2 cgroup2 /sys/fs/cgroup || { echo "error: cannot mount cgroup2 on /sys/fs/cgroup" >&2; exit 1; }
registry_start "$scratch/registry" || exit 1
trap registry_stop EXIT

# --- The images, pushed by stock podman from a plain overlay store, in both compressions.
podman_env stock "$scratch/store-prep"
sed -i 's/^use_composefs = "true"/use_composefs = "false"/; s/convert_images = "true"/convert_images = "false"/' "$CONTAINERS_STORAGE_CONF"
for ref in base derived variant; do
    id=$(pm pull -q "oci:$scratch/oci:$ref") || { echo "error: loading $ref from the OCI layout failed" >&2; exit 1; }
    for comp in zstd:chunked gzip; do
        tag="${comp%%:*}"
        pm push -q --tls-verify=false --compression-format "$comp" --force-compression "$id" "docker://$registry/$ref:$tag" ||
            { echo "error: pushing $ref as $comp failed" >&2; exit 1; }
    done
done
pm rmi -a -f >/dev/null 2>&1 || true

# --- Bad input, uploaded through the registry API (registry-put.py): the small layer run.sh wrote
# into $scratch/inputs (upper.tar of the containers/storage harness: a whiteout, an opaque dir, a
# few files).
cs_inputs="$(cd "$here/../containers-storage" && pwd)"
csin="$scratch/inputs"
upper_diff_id="sha256:$(sha256sum <"$csin/upper.tar" | cut -d' ' -f1)"
gz=application/vnd.oci.image.layer.v1.tar+gzip zst=application/vnd.oci.image.layer.v1.tar+zstd
put() { python3 "$here/registry-put.py" "$registry" "$@" >/dev/null || { echo "error: registry-put.py $1 failed" >&2; exit 1; }; }
put bad/corrupt:gzip "$csin/upper.tar.gz" "$gz" "$upper_diff_id"
put bad/corrupt:zstd "$csin/upper.chunked" "$zst" "$upper_diff_id" "$csin/upper.chunked.json"
python3 "$cs_inputs/lying-toc.py" "$csin/upper.chunked" "$scratch/lying-toc.chunked"
put bad/lying-toc:zstd "$scratch/lying-toc.chunked" "$zst" "$upper_diff_id" "$scratch/lying-toc.chunked.json"
# A blob of its own (gzip -1): the corrupt one below is shared by content.
gzip -1 -n -c "$csin/upper.tar" >"$scratch/upper-1.tar.gz"
put bad/diff-id:gzip "$scratch/upper-1.tar.gz" "$gz" "sha256:$(printf '0%.0s' {1..64})"
# The same layer under its true DiffID: a small good image (bench.sh's warm-up pull).
put tiny:gzip "$scratch/upper-1.tar.gz" "$gz" "$upper_diff_id"
# Flip bytes in the corrupt images' stored blobs: a quarter into the gzip stream, and 8 bytes into
# the compressed data of the zstd:chunked blob's first file (its content, not the frame's own
# checksum at the end, which containers/storage does not check: it verifies the content digest).
flip() { # flip FILE OFFSET
    local d
    d=$(sha256sum <"$1" | cut -d' ' -f1)
    printf '\xff\xff\xff\xff' | dd of="$scratch/registry/data/docker/registry/v2/blobs/sha256/${d:0:2}/$d/data" bs=1 seek="$2" conv=notrunc status=none
}
flip "$csin/upper.tar.gz" $(($(stat -c %s "$csin/upper.tar.gz") / 4))
flip "$csin/upper.chunked" $(($(python3 -c '
import json, subprocess, sys
blob = open(sys.argv[1], "rb").read()
off, length = map(int, json.load(open(sys.argv[1] + ".json"))["io.github.containers.zstd-chunked.manifest-position"].split(":")[:2])
toc = json.loads(subprocess.run(["zstd", "-dc"], input=blob[off:off + length], capture_output=True, check=True).stdout)
print(min(e["offset"] for e in toc["entries"] if e.get("offset")))' "$csin/upper.chunked") + 8))

# The compressed layer digests of an image in the registry, in order.
layer_digests() { # layer_digests REF:TAG
    curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$registry/v2/${1%%:*}/manifests/${1##*:}" |
        python3 -c 'import json,sys; print("\n".join(l["digest"] for l in json.load(sys.stdin)["layers"]))'
}
layer_sizes() {
    curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$registry/v2/${1%%:*}/manifests/${1##*:}" |
        python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))'
}

# leftovers STORE: mounts and loop devices of the store (empty: none).
leftovers() {
    { grep -F " $1/" /proc/self/mountinfo || true; } | awk '{print "mount " $5}'
    losetup -a | grep -F "$1/" | cut -d: -f1 | sed 's/^/loop /' || true
}

# --- Each build: pull, run, mount, partial pull, save/load, rmi.
for build in stock patched; do
    store="$scratch/store-$build"
    for tag in zstd gzip; do
        podman_env "$build" "$store-$tag"
        if out=$(pm pull -q "$registry/derived:$tag" 2>&1); then
            record "$build" "pull derived ($tag)" 1 ""
        else
            record "$build" "pull derived ($tag)" 0 "$(echo "$out" | tail -n 1)"
            continue
        fi
        img="$registry/derived:$tag"
        # Files of both layers, deleted and opaqued paths, a write into the upper dir.
        got=$(pm run --rm --net=none "$img" sh -c '
            cat /etc/debian_version >/dev/null && echo base-file-ok
            grep -q composefs-storage /etc/os-release && echo upper-file-ok
            cmp -s /usr/local/bin/bash-copy /usr/bin/bash && echo shared-content-ok
            [ -f /db/data ] && echo lower-db-ok
            [ -e /usr/share/doc ] || echo whiteout-ok
            [ -z "$(ls -A /var/cache)" ] && echo opaque-ok
            echo hello >/root/written && [ "$(cat /root/written)" = hello ] && echo write-ok
            ls -a /usr/share | grep -q "^\.wh\." || echo no-wh-names-ok' 2>&1)
        for c in base-file upper-file shared-content lower-db whiteout opaque write no-wh-names; do
            ok=0
            echo "$got" | grep -qx "$c-ok" && ok=1
            check="run $tag: $c"
            case $c in whiteout | opaque | no-wh-names) check="$check (SPEC 10.1)" ;; lower-db) check="$check (SPEC 10.2)" ;; esac
            record "$build" "$check" "$ok" "$([ $ok = 1 ] || echo "$got" | tail -n 2 | tr '\n' ' ')"
        done
        if mnt=$(pm image mount "$img" 2>&1) && grep -q composefs-storage "$mnt/etc/os-release"; then
            record "$build" "image mount $tag: files of both layers" 1 ""
            record "$build" "image mount $tag: deleted dir gone (SPEC 10.1)" "$([ -e "$mnt/usr/share/doc" ] && echo 0 || echo 1)" ""
        else
            record "$build" "image mount $tag: files of both layers" 0 "$(echo "$mnt" | tail -n 1)"
        fi
        pm image unmount "$img" >/dev/null 2>&1
        # save, then load into another store: the same image ID.
        id=$(pm images -q --no-trunc "$img")
        pm save -q -o "$scratch/saved-$build-$tag.tar" "$img" >/dev/null 2>&1
        (podman_env "$build" "$store-$tag-load" && pm load -q -i "$scratch/saved-$build-$tag.tar" >/dev/null 2>&1
            id2=$(pm images -q --no-trunc | head -n 1)
            record "$build" "save + load $tag: same image ID" "$([ -n "$id" ] && [ "$id" = "$id2" ] && echo 1 || echo 0)" "$id / $id2"
            pm rmi -a -f >/dev/null 2>&1)
        rm -f "$scratch/saved-$build-$tag.tar"
        # The partial pull: variant shares base's files (zstd:chunked only).
        if [ "$tag" = zstd ]; then
            from=$(($(wc -l <"$scratch/registry/registry.log") + 1))
            if pm pull -q "$registry/variant:zstd" >/dev/null 2>&1; then
                d=$(layer_digests variant:zstd | tail -n 1)
                served=$(blob_bytes_served "$scratch/registry/registry.log" "$d" "$from")
                size=$(layer_sizes variant:zstd)
                pct=$(awk "BEGIN{printf \"%.1f\", 100 * $served / $size}")
                record "$build" "partial pull of variant: blob bytes fetched <= 15%" "$(awk "BEGIN{print ($served <= 0.15 * $size) ? 1 : 0}")" "$served of $size bytes ($pct%)"
            else
                record "$build" "partial pull of variant: blob bytes fetched <= 15%" 0 "pull failed"
            fi
        fi
        pm rmi -a -f >/dev/null 2>&1
        left=$(leftovers "$store-$tag")
        objects=$(find "$store-$tag/graph/overlay" -mindepth 3 -path '*/diff/*' -type f 2>/dev/null | wc -l)
        record "$build" "rmi $tag: no mount, loop device or object left" "$([ -z "$left" ] && [ "$objects" = 0 ] && echo 1 || echo 0)" "$left objects: $objects"
        pm system reset -f >/dev/null 2>&1 || true
    done
done
# layers_of STORE: what the overlay driver holds: its layer dirs, and anything in its staging and
# temporary dirs.
layers_of() {
    { ls "$1/graph/overlay"; find "$1/graph/overlay/staging" "$1/graph/overlay/tempdirs" -mindepth 1 -maxdepth 1 2>/dev/null; } |
        grep -v -x -e l -e staging -e tempdirs | sort
}

# --- Bad input: the pull fails with a clear error, the store is as before, nothing is left.
for build in stock patched; do
    podman_env "$build" "$scratch/store-$build-bad"
    pm pull -q "$registry/base:zstd" >/dev/null 2>&1
    before=$(pm images -q --no-trunc | sort)
    layers_before=$(layers_of "$scratch/store-$build-bad")
    for case in "corrupt:gzip a gzip blob with flipped bytes" "corrupt:zstd a zstd:chunked blob with flipped file data" \
        "lying-toc:zstd a zstd:chunked TOC that lies about a file's mode (re-signed)" "diff-id:gzip an image whose DiffID does not match"; do
        ref="bad/${case%% *}" what="${case#* }"
        if out=$(pm pull -q "$registry/$ref" 2>&1); then
            record "$build" "bad input: $what is refused" 0 "it was pulled"
            pm rmi -f "$registry/$ref" >/dev/null 2>&1
            continue
        fi
        after=$(pm images -q --no-trunc | sort)
        layers_after=$(layers_of "$scratch/store-$build-bad")
        left=$(leftovers "$scratch/store-$build-bad")
        ok=0
        [ "$after" = "$before" ] && [ "$layers_after" = "$layers_before" ] && [ -z "$left" ] && ok=1
        changed=$( { diff <(echo "$before") <(echo "$after"); diff <(echo "$layers_before") <(echo "$layers_after"); echo "$left"; } | grep '^[<>]\|^mount\|^loop' | tr '\n' ' ')
        record "$build" "bad input: $what is refused" "$ok" "$(echo "$out" | tail -n 1 | sed 's/.*partial pull of blob sha256:[0-9a-f]*: //' | cut -c1-200)$([ $ok = 1 ] || echo " (left: $changed)")"
    done
    pm rmi -a -f >/dev/null 2>&1
    pm system reset -f >/dev/null 2>&1 || true
done

left=$(leftovers "$scratch")
record all "end: nothing of the run left mounted" "$([ -z "$left" ] && echo 1 || echo 0)" "$(echo $left)"
