#!/usr/bin/env python3
"""Builds a multi-layer gzip OCI image layout from host directories, for benches/compare-unpack.sh.

    make-bench-image.py OUT_LAYOUT DIR[,DIR...] [DIR[,DIR...] ...]

Each argument after OUT_LAYOUT is one layer: the listed host directories (absolute paths, stored
without their leading /) in one tar, compressed with gzip -6 (GNU gzip, so that `tar -xzf` reads
exactly the blob the other tools read). The image is tagged `bench`. No network, no registry.
"""
import hashlib
import json
import os
import subprocess
import sys


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blob(layout, data_path):
    digest = sha256_file(data_path)
    dest = os.path.join(layout, "blobs", "sha256", digest)
    os.replace(data_path, dest)
    return digest, os.path.getsize(dest)


def put_json(layout, obj):
    path = os.path.join(layout, "blobs", "sha256", "tmp.json")
    with open(path, "wb") as f:
        f.write(json.dumps(obj, sort_keys=True).encode())
    return blob(layout, path)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    layout, layer_specs = sys.argv[1], sys.argv[2:]
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    diff_ids, layers = [], []
    for i, spec in enumerate(layer_specs):
        dirs = [d.lstrip("/") for d in spec.split(",")]
        raw = os.path.join(layout, "blobs", "sha256", f"layer{i}.tar")
        subprocess.run(["tar", "-C", "/", "--numeric-owner", "--xattrs", "-cf", raw, *dirs], check=True)
        diff_ids.append("sha256:" + sha256_file(raw))
        subprocess.run(["gzip", "-6", "-f", raw], check=True)
        digest, size = blob(layout, raw + ".gz")
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + digest, "size": size})
        print(f"layer {i}: {spec}: {os.path.getsize(os.path.join(layout, 'blobs', 'sha256', digest)) >> 20} MiB compressed", file=sys.stderr)
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdigest, csize = put_json(layout, config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cdigest, "size": csize},
                "layers": layers}
    mdigest, msize = put_json(layout, manifest)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mdigest,
                                                 "size": msize, "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
