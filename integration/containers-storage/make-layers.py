#!/usr/bin/env python3
"""Writes the two stacked test layers of the containers/storage end-to-end run, as plain tars.

base.tar: a small tree with a top-level /db (a two-hex-digit name a root whiteout stub would hide,
SPEC §10.2), files to delete and a directory to make opaque, a hardlink pair, a symlink, a file in
several directories with the same content (one object), and an empty file.
upper.tar: over base, deletes /a/gone (.wh.gone), makes /o opaque (.wh..wh..opq) with a new file,
adds /b/new, and has no /db. Deterministic: fixed owners and mtimes.

Usage: make-layers.py OUTDIR
"""
import io
import os
import sys
import tarfile

MTIME = 1_700_000_000


def add(tar, name, data=None, kind=tarfile.REGTYPE, mode=0o644, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, MTIME, 0, 0
    info.linkname = linkname
    if kind == tarfile.DIRTYPE:
        info.mode = mode if mode != 0o644 else 0o755
    body = None
    if data is not None:
        info.size = len(data)
        body = io.BytesIO(data)
    tar.addfile(info, body)


def base(path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ["db", "a", "o", "b", "etc", "usr", "usr/share"]:
            add(t, d, kind=tarfile.DIRTYPE)
        add(t, "db/data", b"the database\n")
        add(t, "a/gone", b"deleted by the upper layer\n")
        add(t, "a/kept", b"kept\n")
        add(t, "o/old", b"hidden by the opaque upper /o\n")
        add(t, "etc/hostname", b"composefs-storage\n")
        add(t, "etc/empty", b"")
        add(t, "usr/share/big", bytes(range(256)) * 4096)  # 1 MiB
        add(t, "usr/share/same1", b"same content\n")
        add(t, "b/same2", b"same content\n")
        add(t, "usr/share/link", kind=tarfile.LNKTYPE, linkname="usr/share/same1")
        add(t, "etc/sym", kind=tarfile.SYMTYPE, linkname="../usr/share/big", mode=0o777)


def upper(path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ["a", "o", "b"]:
            add(t, d, kind=tarfile.DIRTYPE)
        add(t, "a/.wh.gone", b"")
        add(t, "o/.wh..wh..opq", b"")
        add(t, "o/new", b"new in the upper layer\n")
        add(t, "b/new", b"another new file\n")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__.strip())  # not a dir named "--help" full of layers
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    base(os.path.join(out, "base.tar"))
    upper(os.path.join(out, "upper.tar"))
