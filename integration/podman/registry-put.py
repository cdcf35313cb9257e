#!/usr/bin/env python3
"""Uploads a one-layer image to the local registry through its HTTP API, for the bad-input cases
that a well-behaved client would never push: a layer blob as given (a lying zstd:chunked TOC, a
gzip stream), with the layer annotations given, and a config whose DiffID may be wrong.

Usage: registry-put.py REGISTRY NAME:TAG LAYER MEDIATYPE DIFF_ID [ANNOTATIONS.json]
  DIFF_ID: sha256:... (the config's rootfs.diff_ids[0]; give a wrong one on purpose)
"""
import hashlib
import json
import sys
import urllib.request

registry, ref, layer_path, media_type, diff_id = sys.argv[1:6]
annotations = json.load(open(sys.argv[6])) if len(sys.argv) > 6 else None
name, tag = ref.rsplit(":", 1)
base = f"http://{registry}/v2/{name}"


def request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req)


def put_blob(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = request("POST", f"{base}/blobs/uploads/").headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{registry}{loc}"
    sep = "&" if "?" in loc else "?"
    request("PUT", f"{loc}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
    return digest, len(data)


layer = open(layer_path, "rb").read()
layer_digest, layer_size = put_blob(layer)
config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
          "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
config_digest, config_size = put_blob(json.dumps(config).encode())
descriptor = {"mediaType": media_type, "digest": layer_digest, "size": layer_size}
if annotations:
    descriptor["annotations"] = annotations
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [descriptor]}
request("PUT", f"{base}/manifests/{tag}", json.dumps(manifest).encode(),
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
print(f"{registry}/{ref}")
