#!/usr/bin/env python3
"""Writes the harness's images as an OCI image layout (uncompressed layers), for `podman pull
oci:DIR:REF` and a push to the registry in each compression:

  base     one layer: the Debian minbase rootfs (rootfs.tar, from
           ../containers-storage/make-rootfs.sh)
  derived  base's layer, a small layer with /db/data (a top-level name of two hex digits, which
           mkcomposefs's root whiteout stubs hide: SPEC 10.2), and rootfs-upper.tar over them:
           /usr/share/doc deleted (a whiteout), /var/cache made opaque, /etc/os-release changed,
           a new 3 MB file
  variant  one layer that shares all of base's files and adds /opt/app (8 MB of new data): its
           partial pull after base fetches little more than /opt/app

Usage: make-images.py ROOTFS_DIR OUT_DIR   (ROOTFS_DIR holds rootfs.tar and rootfs-upper.tar)
"""
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

rootfs_dir, out = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "blobs", "sha256")
shutil.rmtree(out, ignore_errors=True)
os.makedirs(blobs)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def add_file_blob(path):
    """A layer tar as a blob (hard-linked when possible): its digest and size."""
    digest = sha256_file(path)
    dst = os.path.join(blobs, digest)
    if not os.path.exists(dst):
        try:
            os.link(path, dst)
        except OSError:
            shutil.copyfile(path, dst)
    return digest, os.path.getsize(path)


def add_json_blob(obj):
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return digest, len(data)


def variant_tar(base_tar, path):
    """base's tar with /opt/app appended (new paths only: a TOC refuses duplicate names)."""
    shutil.copyfile(base_tar, path)
    data = hashlib.shake_256(b"composefs-storage variant").digest(8 << 20)
    with tarfile.open(path, "a", format=tarfile.PAX_FORMAT) as t:
        for name, body, mode in (("opt/app/", None, 0o755), ("opt/app/data.bin", data, 0o644),
                                 ("opt/app/config", b"answer = 42\n", 0o644)):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime, info.mode, info.uid, info.gid = 1700000000, mode, 0, 0
            if body is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(body)
                t.addfile(info, io.BytesIO(body))


def db_tar(path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, body in (("db", None), ("db/data", b"kept by the lower layer\n")):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid = 1700000000, 0, 0
            if body is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size, info.mode = len(body), 0o644
                t.addfile(info, io.BytesIO(body))


def image(ref, layer_paths):
    layers = [add_file_blob(p) for p in layer_paths]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d, _ in layers]},
        "history": [{"created_by": "composefs-storage integration/podman/make-images.py " + ref} for _ in layers],
    }
    cdigest, csize = add_json_blob(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cdigest, "size": csize},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": s} for d, s in layers],
    }
    mdigest, msize = add_json_blob(manifest)
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mdigest, "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": ref}}


base_tar = os.path.join(rootfs_dir, "rootfs.tar")
upper_tar = os.path.join(rootfs_dir, "rootfs-upper.tar")
variant = os.path.join(out, "variant-layer.tar")
variant_tar(base_tar, variant)
db = os.path.join(out, "db-layer.tar")
db_tar(db)
index = {"schemaVersion": 2, "manifests": [
    image("base", [base_tar]),
    image("derived", [base_tar, db, upper_tar]),
    image("variant", [variant]),
]}
os.unlink(variant)
os.unlink(db)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(out)
