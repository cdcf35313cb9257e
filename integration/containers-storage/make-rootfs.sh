#!/usr/bin/env bash
# Writes a realistic base layer: a Debian bookworm minbase rootfs made with debootstrap from the
# machine's Debian mirror (about 200 MB of tar), and a second layer over it that changes a few
# packages' worth of files, deletes /usr/share/doc (a whiteout) and makes /var/cache opaque.
# Usage: make-rootfs.sh OUTDIR   (writes rootfs.tar and rootfs-upper.tar; reuses them if present)
set -euo pipefail
out="$1"
[ -f "$out/rootfs.tar" ] && [ -f "$out/rootfs-upper.tar" ] && exit 0
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /debian$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "error: no Debian mirror in the apt sources" >&2; exit 1; }
dir="$out/rootfs.d"
rm -rf "$dir" "$out/rootfs.tar.tmp"
mkdir -p "$out"
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$out/debootstrap.log" 2>&1 ||
    { tail -n 20 "$out/debootstrap.log"; echo "error: debootstrap failed" >&2; exit 1; }
# Reproducible enough for a benchmark: sorted names, numeric owners.
tar --sort=name --numeric-owner --xattrs --xattrs-include='*' -C "$dir" -cf "$out/rootfs.tar.tmp" .
mv "$out/rootfs.tar.tmp" "$out/rootfs.tar"

up="$out/rootfs-upper.d"
rm -rf "$up" && mkdir -p "$up/usr/share" "$up/var/cache" "$up/etc" "$up/usr/local/bin"
touch "$up/usr/share/.wh.doc" "$up/var/cache/.wh..wh..opq"
{ cat "$dir/usr/lib/os-release"; echo 'VARIANT="composefs-storage test"' ; } >"$up/etc/os-release"
head -c 3000000 /dev/urandom >"$up/usr/local/bin/blob"
cp -a "$dir/usr/bin/bash" "$up/usr/local/bin/bash-copy"   # same content as a base file: one object
tar --sort=name --numeric-owner -C "$up" -cf "$out/rootfs-upper.tar" .
rm -rf "$dir" "$up"
