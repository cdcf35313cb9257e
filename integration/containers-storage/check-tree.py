#!/usr/bin/env python3
"""Compares a mounted layer tree with the layer's tar: every entry's path, type, mode, owner,
size and symlink target, and the content of a deterministic sample of regular files (every one
with --all). Hardlinks must share an inode. Prints the first differences; exits 1 on any.

Usage: check-tree.py [--all] LAYER.tar ROOT
"""
import hashlib
import os
import stat
import sys
import tarfile

args = sys.argv[1:]
check_all = args[0] == "--all"
if check_all:
    args = args[1:]
tar_path, root = args
problems = []
expected = {}
links = {}
with tarfile.open(tar_path) as t:
    members = t.getmembers()
    for m in members:
        name = os.path.normpath(m.name).lstrip("./") if m.name not in (".", "./") else ""
        if not name or os.path.basename(name).startswith(".wh."):
            continue
        if m.islnk():
            links[name] = os.path.normpath(m.linkname).lstrip("./")
            continue
        expected[name] = m
    for name, target in links.items():
        expected[name] = expected.get(target)
    sample = sorted(n for n, m in expected.items() if m is not None and m.isreg())
    if not check_all:
        sample = sample[:: max(1, len(sample) // 50)]
    for name in sample:
        want = hashlib.sha256(t.extractfile(expected[name]).read()).hexdigest()
        try:
            with open(os.path.join(root, name), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            got = str(e)
        if got != want:
            problems.append(f"{name}: content differs")

found = set()
for dirpath, dirnames, filenames in os.walk(root):
    for n in dirnames + filenames:
        found.add(os.path.relpath(os.path.join(dirpath, n), root))
for name, m in expected.items():
    p = os.path.join(root, name)
    try:
        st = os.lstat(p)
    except OSError:
        problems.append(f"{name}: missing")
        continue
    if m is None:
        continue
    kind = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK, tarfile.CHRTYPE: stat.S_IFCHR,
            tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}.get(m.type, stat.S_IFREG)
    if stat.S_IFMT(st.st_mode) != kind:
        problems.append(f"{name}: type {stat.S_IFMT(st.st_mode):o}, want {kind:o}")
    elif stat.S_IMODE(st.st_mode) != m.mode & 0o7777:
        problems.append(f"{name}: mode {stat.S_IMODE(st.st_mode):o}, want {m.mode & 0o7777:o}")
    elif (st.st_uid, st.st_gid) != (m.uid, m.gid):
        problems.append(f"{name}: owner {st.st_uid}:{st.st_gid}, want {m.uid}:{m.gid}")
    elif kind == stat.S_IFREG and st.st_size != m.size:
        problems.append(f"{name}: size {st.st_size}, want {m.size}")
    elif kind == stat.S_IFLNK and os.readlink(p) != m.linkname:
        problems.append(f"{name}: symlink to {os.readlink(p)}, want {m.linkname}")
for name, target in links.items():
    try:
        if os.lstat(os.path.join(root, name)).st_ino != os.lstat(os.path.join(root, target)).st_ino:
            problems.append(f"{name}: not a hardlink of {target}")
    except OSError:
        pass
extra = sorted(found - set(expected))
problems += [f"{n}: not in the tar" for n in extra[:5]]
print(f"{len(expected)} entries, {len(sample)} contents compared; {len(problems)} differences")
for p in problems[:10]:
    print("  " + p)
sys.exit(1 if problems else 0)
