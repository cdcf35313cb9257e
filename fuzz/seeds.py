#!/usr/bin/env python3
"""Copies seeds for one fuzz target from the shared corpus into fuzz/corpus/<target>/.

Usage: seeds.py TARGET CORPUS_DIR OUT_DIR. Seeds bigger than MAX_SEED are left out (they slow
libFuzzer down); big zstd:chunked blobs are compacted to their TOC, tar-split and footer frames.
"""
import glob
import json
import os
import shutil
import struct
import subprocess
import sys

MAX_SEED = 100 << 10
SKIPPABLE = b"\x50\x2a\x4d\x18"


def files(corpus, *patterns):
    for p in patterns:
        yield from sorted(glob.glob(os.path.join(corpus, p), recursive=True))


def put(out, name, data):
    if len(data) <= MAX_SEED:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def zstd_text(path):
    """A .zst file decompressed by the zstd CLI, or None when it is missing."""
    try:
        return subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def frame(payload):
    return SKIPPABLE + struct.pack("<I", len(payload)) + payload


def compact_blob(blob):
    """(compact blob, toc position, tar-split position) keeping only the skippable frames the
    reader looks at, or None when the blob has no current footer."""
    if len(blob) < 72 or blob[-8:] != b"GNUlInUx":
        return None
    f = struct.unpack("<7Q", blob[-64:-8])
    toc = blob[f[0] : f[0] + f[1]]
    ts = blob[f[4] : f[4] + f[5]]
    out = bytearray(b"\0" * 8)  # leading bytes so that no offset is 8
    toc_off = len(out) + 8
    out += frame(toc)
    ts_off = len(out) + 8
    out += frame(ts)
    out += frame(struct.pack("<7Q", toc_off, f[1], f[2], 1, ts_off, f[5], f[6]) + b"GNUlInUx")
    return bytes(out), (toc_off, f[1], f[2]), (ts_off, f[5], f[6])


def manifest_seeds(corpus, out):
    for path in files(corpus, "cstorage/*/*.zstd-chunked", "cstorage/legacy/*/blobs/sha256/*"):
        if not path.endswith(".zstd-chunked") and "." in os.path.basename(path):
            continue
        blob = read(path)
        if blob[-8:] not in (b"GNUlInUx", b"GnUlInUx"):
            continue
        name = os.path.basename(path)[:24]
        put(out, name + ".footer", b"\0" + blob)
        if path.endswith(".zstd-chunked"):
            ann_path = path[: -len(".zstd-chunked")] + ".annotations.json"
        else:
            ann_path = path + ".renamed-annotations.json"
        ann = json.load(open(ann_path)) if os.path.exists(ann_path) else None
        if ann is not None:
            put(out, name + ".annotations", b"\1" + lines(ann) + b"\0" + blob)
        c = compact_blob(blob)
        if c:
            put(out, name + ".compact.footer", b"\0" + c[0])
            if ann is not None:
                pos = "io.github.containers.zstd-chunked.manifest-position"
                ts = "io.github.containers.zstd-chunked.tarsplit-position"
                ann = dict(ann)
                ann[pos] = "%d:%d:%d:1" % c[1]
                ann[ts] = "%d:%d:%d" % c[2]
                put(out, name + ".compact.annotations", b"\1" + lines(ann) + b"\0" + c[0])


def lines(ann):
    return "".join("%s=%s\n" % kv for kv in sorted(ann.items())).encode()


def main():
    target, corpus, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    if target == "chunked_footer":
        for p in files(corpus, "cstorage/*/*.zstd-chunked", "cstorage/legacy/*/blobs/sha256/*"):
            put(out, os.path.basename(p)[:24] + ".tail", read(p)[-72:])
    elif target == "chunked_toc":
        for p in files(corpus, "cstorage/**/*.toc*.json"):
            put(out, os.path.basename(p), read(p))
    elif target == "chunked_tarsplit":
        for p in files(corpus, "cstorage/**/*.ndjson"):
            put(out, os.path.basename(p), read(p))
        for p in files(corpus, "cstorage/**/*.ndjson.zst"):
            data = zstd_text(p)
            if data is not None:
                put(out, os.path.basename(p)[:-4], data)
    elif target == "chunked_cache":
        # Mode byte 1/3: a cache built from the TOC (see the target); raw cache files are in fuzz/seeds/.
        for p in files(corpus, "cstorage/**/*.toc*.json"):
            put(out, os.path.basename(p) + ".classic", b"\1" + read(p))
            put(out, os.path.basename(p) + ".flat", b"\3" + read(p))
    elif target == "image_dump":
        # Mode byte 1: strict, as the upstream checksum test parses; 0: lenient.
        for p in files(corpus, "composefs-assets/*.dump", "cstorage/*/*.dump", "cstorage-images/*.dump"):
            put(out, os.path.basename(p) + ".strict", b"\1" + read(p))
            put(out, os.path.basename(p) + ".lenient", b"\0" + read(p))
    elif target == "image_erofs":
        for p in files(corpus, "cstorage-images/*.cfs"):
            put(out, os.path.basename(p), read(p))
    elif target in ("source_tar", "layer_convert"):
        prefix = b"\0" if target == "source_tar" else b""
        for p in files(corpus, "cstorage/*/*.tar"):
            put(out, os.path.basename(p), prefix + read(p))
            if target == "source_tar":
                put(out, os.path.basename(p) + ".read", b"\1" + read(p))
    elif target == "source_stream":
        for p in files(corpus, "cstorage/*/*.tar.gz", "cstorage/*/*.tar.zst", "cstorage/*/*.zstd-chunked"):
            put(out, os.path.basename(p), read(p))
        for p in files(corpus, "cstorage/*/*.tar"):
            put(out, os.path.basename(p), read(p))
    elif target == "layer_pull":
        for p in files(corpus, "cstorage/*/*.zstd-chunked"):
            blob = read(p)
            base = p[: -len(".zstd-chunked")]
            if len(blob) > MAX_SEED or blob[-8:] != b"GNUlInUx" or not os.path.exists(base + ".tarsplit.ndjson"):
                continue
            toc = json.loads(read(base + ".toc.raw.json"))
            toc["tarSplitDigest"] = "@TARSPLIT@"
            toc = json.dumps(toc, separators=(",", ":")).encode()
            data = blob[: struct.unpack("<Q", blob[-64:-56])[0] - 8]
            body = toc + b"\0" + read(base + ".tarsplit.ndjson") + b"\0" + data
            for flags in (0, 1, 3):
                put(out, "%s.%d" % (os.path.basename(base), flags), bytes([flags]) + body)
    elif target == "chunked_manifest":
        manifest_seeds(corpus, out)
    else:
        # Targets whose seeds are committed (fuzz/seeds/<target>/) or made by their own helper.
        pass


if __name__ == "__main__":
    main()
