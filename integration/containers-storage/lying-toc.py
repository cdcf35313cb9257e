#!/usr/bin/env python3
"""Writes a zstd:chunked blob whose TOC lies about a file's mode (setuid), re-signed: its
annotations (SRC.json next to the blob, DST.json written) authenticate the lying TOC, which no
longer matches the tar-split's own headers. containers/storage and this library must refuse it.

Usage: lying-toc.py SRC DST
"""
import hashlib, json, struct, subprocess, sys
src, dst = sys.argv[1], sys.argv[2]
blob = open(src, "rb").read()
ann = json.load(open(src + ".json"))
key_pos, key_sum = "io.github.containers.zstd-chunked.manifest-position", "io.github.containers.zstd-chunked.manifest-checksum"
key_split = "io.github.containers.zstd-chunked.tarsplit-position"
off, length, _, kind = map(int, ann[key_pos].split(":"))
toc = json.loads(subprocess.run(["zstd", "-dc"], input=blob[off:off + length], capture_output=True, check=True).stdout)
victim = next(e for e in toc["entries"] if e["type"] == "reg" and e.get("size", 0) > 0)
victim["mode"] = 0o4755
raw = json.dumps(toc, separators=(",", ":")).encode()
frame = subprocess.run(["zstd", "-c", "-q"], input=raw, capture_output=True, check=True).stdout
s_off, s_len, s_ulen = map(int, ann[key_split].split(":"))
split = blob[s_off:s_off + s_len]
skippable = lambda n: struct.pack("<II", 0x184D2A50, n)
out = blob[:off - 8] + skippable(len(frame)) + frame
new_split_off = len(out) + 8
out += skippable(len(split)) + split
open(dst, "wb").write(out)
ann[key_pos] = f"{off}:{len(frame)}:{len(raw)}:{kind}"
ann[key_sum] = "sha256:" + hashlib.sha256(frame).hexdigest()
ann[key_split] = f"{new_split_off}:{s_len}:{s_ulen}"
json.dump(ann, open(dst + ".json", "w"))
