//! OCI image layouts for the image and registry tests.
use super::busybox_rootfs;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>())
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI image layout with these (uncompressed) layers, gzip-compressed; returns it.
pub fn layout(dir: &Path, layers: &[Vec<u8>], cmd: &[&str]) -> PathBuf {
    let l = dir.join("layout");
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    let blobs = l.join("blobs/sha256");
    let blob = |bytes: &[u8]| put_blob(&blobs, bytes);
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for t in layers {
        diff_ids.push(sha(t));
        let gz = gzip(t);
        let (d, n) = blob(&gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd, "Env": ["FROM_IMAGE=yes"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cn) = blob(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn}, "layers": descs});
    let (md, mn) = blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "platform": {"architecture": "amd64", "os": "linux"}, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(l.join("index.json"), index.to_string()).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    l
}

/// Writes a blob into a layout's blobs/sha256; returns its descriptor's digest and size.
pub fn put_blob(blobs: &Path, bytes: &[u8]) -> (String, usize) {
    let d = sha(bytes);
    std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
    (d, bytes.len())
}

pub fn busybox_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", busybox_rootfs()).unwrap();
    b.into_inner().unwrap()
}

/// Writes an OCI layout holding one image per platform (`(arch, layers)`, gzip) under one
/// index; returns it.
pub fn multi_platform_layout(dir: &Path, images: &[(&str, Vec<Vec<u8>>)]) -> PathBuf {
    let l = dir.join("multi");
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    let mut entries = Vec::new();
    for (i, (arch, layers)) in images.iter().enumerate() {
        let one = layout(&dir.join(format!("one-{i}")), layers, &["/bin/sh"]);
        // Re-tag the config's architecture, then copy every blob over.
        let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(one.join("index.json")).unwrap()).unwrap();
        let blobs = one.join("blobs/sha256");
        let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blobs.join(&idx["manifests"][0]["digest"].as_str().unwrap()[7..])).unwrap()).unwrap();
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(blobs.join(&manifest["config"]["digest"].as_str().unwrap()[7..])).unwrap()).unwrap();
        config["architecture"] = serde_json::json!(arch);
        let (cd, cn) = put_blob(&blobs, config.to_string().as_bytes());
        manifest["config"]["digest"] = serde_json::json!(cd);
        manifest["config"]["size"] = serde_json::json!(cn);
        let (md, mn) = put_blob(&blobs, manifest.to_string().as_bytes());
        for e in std::fs::read_dir(&blobs).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), l.join("blobs/sha256").join(e.file_name())).unwrap();
        }
        entries.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "platform": {"architecture": arch, "os": "linux"}}));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let (xd, xn) = put_blob(&l.join("blobs/sha256"), index.to_string().as_bytes());
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": xd, "size": xn, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(l.join("index.json"), top.to_string()).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    l
}
