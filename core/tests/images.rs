//! OCI images: import, verify, unpack, run, and an adversarial corpus of layers that must be
//! refused or contained, with nothing written outside the root and nothing left in the store.
mod common;
use cagette::{ImageError, ImageStore, Sandbox, SandboxSpec, Verdict};
use common::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// One tar entry, written raw (names are not validated: the corpus needs bad ones).
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, ty, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) = match e {
            E::Dir(n, m) => (n, tar::EntryType::Directory, b"", *m, None),
            E::File(n, d, m) => (n, tar::EntryType::Regular, d, *m, None),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", 0o777, Some(t)),
            E::Hardlink(n, t) => (n, tar::EntryType::Link, b"", 0o644, Some(t)),
        };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI image layout with these (uncompressed) layers, gzip-compressed; returns it.
fn layout(dir: &Path, layers: &[Vec<u8>], cmd: &[&str]) -> PathBuf {
    let l = dir.join("layout");
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    let blob = |bytes: &[u8]| -> (String, usize) {
        let d = sha(bytes);
        std::fs::write(l.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
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
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "platform": {"architecture": "amd64", "os": "linux"}}]});
    std::fs::write(l.join("index.json"), index.to_string()).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    l
}

fn busybox_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", busybox_rootfs()).unwrap();
    b.into_inner().unwrap()
}

/// The store holds no layer and no staging leftovers.
fn store_is_clean(store: &Path) -> bool {
    ["layers/sha256", "tmp"].iter().all(|d| std::fs::read_dir(store.join(d)).map(|r| r.count() == 0).unwrap_or(true))
}

#[test]
fn three_layers_whiteout_opaque_links_setuid_then_run() {
    let d = TempDir::new("img3");
    let l1 = tar_of(&[
        E::Dir("etc", 0o755),
        E::File("etc/keep", b"keep", 0o644),
        E::File("etc/gone", b"gone", 0o644),
        E::Dir("data", 0o755),
        E::File("data/old", b"old", 0o644),
        E::File("bin-suid", b"#!/bin/sh\n", 0o4755),
    ]);
    let l2 = tar_of(&[
        E::File("etc/.wh.gone", b"", 0o644),
        E::Dir("data", 0o755),
        E::File("data/.wh..wh..opq", b"", 0o644),
        E::File("data/new", b"new", 0o644),
        E::File("etc/target", b"linked", 0o640),
        E::Hardlink("etc/hard", "etc/target"),
        E::Symlink("etc/soft", "/etc/keep"),
    ]);
    let l3 = busybox_layer();
    let lay = layout(d.path(), &[l1, l2, l3], &["/bin/sh", "-c", "cat /etc/keep /etc/soft /etc/hard /data/new; ls /data; test -e /etc/gone || echo gone-hidden; echo $FROM_IMAGE"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let info = store.import(&lay, "test:3").unwrap();
    assert_eq!(info.layers.len(), 3);

    // Run from it: the image's Cmd and Env.
    let spec = SandboxSpec { image: Some("test:3".into()), image_store: Some(store_dir.clone()), ..Default::default() };
    let o = Sandbox::from_spec(spec.clone()).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert_eq!(stdout(&o), "keepkeeplinkednewnew\ngone-hidden\nyes\n");

    // Writing to / changes nothing in the store.
    let before = tree_listing(&store_dir);
    let o = Sandbox::from_spec(SandboxSpec { argv: vec!["/bin/sh".into(), "-c".into(), "echo x > /written && rm /etc/keep && echo ok".into()], ..spec }).output().unwrap();
    assert_eq!(stdout(&o), "ok\n");
    assert_eq!(tree_listing(&store_dir), before, "a job changed the store");

    // Flat unpack: the same view, setuid kept, hardlink shared.
    let flat = d.path().join("flat");
    store.unpack("test:3", &flat).unwrap();
    assert!(!flat.join("etc/gone").exists() && !flat.join("data/old").exists());
    assert_eq!(std::fs::read_to_string(flat.join("data/new")).unwrap(), "new");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::symlink_metadata(flat.join("bin-suid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read_link(flat.join("etc/soft")).unwrap(), Path::new("/etc/keep"));

    // Names, removal, gc.
    assert_eq!(store.list().unwrap().iter().map(|i| i.name.clone()).collect::<Vec<_>>(), ["test:3"]);
    store.remove("test:3").unwrap();
    assert!(matches!(store.get("test:3"), Err(ImageError::NotFound(_))));
    assert_eq!(store.gc().unwrap(), 3);
    assert!(store_is_clean(&store_dir));
}

fn tree_listing(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("find").arg(dir).arg("-printf").arg("%P %y %m %s\n").output().unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn two_imports_of_the_same_image_at_once() {
    let d = TempDir::new("imgconc");
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let (lay, store_dir) = (lay.clone(), store_dir.clone());
            std::thread::spawn(move || ImageStore::open(&store_dir).unwrap().import(&lay, &format!("bb:{i}")).unwrap())
        })
        .collect();
    let infos: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(infos[0].layers, infos[1].layers);
    assert_eq!(std::fs::read_dir(store_dir.join("layers/sha256")).unwrap().count(), 1, "the layer was unpacked once");
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
}

/// Imports a one-layer image made of `entries`; the import must fail or stay inside the layer
/// directory. Returns the result; checks the host and the store.
fn adversarial(tag: &str, layer: Vec<u8>) -> Result<cagette::ImageInfo, ImageError> {
    let d = TempDir::new(tag);
    let marker_dir = d.path().join("outside");
    std::fs::create_dir_all(&marker_dir).unwrap();
    let before = tree_listing(d.path());
    let lay = layout(&d.path().join("img"), &[layer], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let r = store.import(&lay, "evil:1");
    // Nothing outside the store and the layout changed.
    let after: Vec<String> = tree_listing(d.path()).into_iter().filter(|l| !l.starts_with("store") && !l.starts_with("img")).collect();
    let before: Vec<String> = before.into_iter().filter(|l| !l.starts_with("store") && !l.starts_with("img")).collect();
    assert_eq!(after, before, "{tag}: something was written outside the store");
    if r.is_err() {
        assert!(store_is_clean(&store_dir), "{tag}: a failed import left something in the store");
    }
    r
}

#[test]
fn adversarial_names_are_refused() {
    for (tag, name) in [("dotdot", "../../x"), ("inner-dotdot", "a/../../x"), ("deep-dotdot", "a/b/../../../x")] {
        let e = adversarial(tag, tar_of(&[E::File(name, b"pwned", 0o644)])).unwrap_err();
        assert!(matches!(e, ImageError::UnsafeEntry { .. }), "{tag}: {e}");
        assert!(e.to_string().contains(".."), "{tag}: {e}");
    }
}

#[test]
fn absolute_names_stay_inside() {
    let i = adversarial("abs", tar_of(&[E::File("/etc/cagette-abs", b"inside", 0o644)])).unwrap();
    assert_eq!(i.layers.len(), 1);
    assert!(!Path::new("/etc/cagette-abs").exists());
}

#[test]
fn symlinks_cannot_redirect_writes() {
    // A symlink to the host's /etc, then a file through it: resolved inside the root, where
    // there is no /etc (refused: contained either way).
    let r = adversarial("via-abs-link", tar_of(&[E::Symlink("s", "/etc"), E::File("s/cagette-pwned", b"x", 0o644)]));
    assert!(matches!(r, Err(ImageError::Io { .. })), "{r:?}");
    assert!(!Path::new("/etc/cagette-pwned").exists());
    // Relative escapes: `..` chains resolve at the root at most.
    adversarial("via-dotdot-link", tar_of(&[E::Dir("a", 0o755), E::Symlink("a/up", "../../../../.."), E::File("a/up/cagette-up", b"x", 0o644)])).unwrap();
    // A symlink, then a directory of the same name: the symlink is replaced, not followed.
    adversarial("link-then-dir", tar_of(&[E::Symlink("d", "/tmp"), E::Dir("d", 0o755), E::File("d/f", b"x", 0o644)])).unwrap();
    // A symlink to a host file, then a regular file of that name: replaced, never written through.
    let host = std::env::temp_dir().join(format!("cagette-host-file-{}", std::process::id()));
    std::fs::write(&host, "host").unwrap();
    adversarial("link-then-file", tar_of(&[E::Symlink("f", host.to_str().unwrap()), E::File("f", b"pwned", 0o644)])).unwrap();
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "host");
    std::fs::remove_file(&host).unwrap();
    // A directory replaced by a symlink in the same layer, then written under: the write
    // resolves afresh, inside the root (no stale cache of "x is a directory").
    let r = adversarial("dir-then-link", tar_of(&[E::Dir("x", 0o755), E::Symlink("x", "/etc"), E::File("x/cagette-swap", b"x", 0o644)]));
    assert!(matches!(r, Err(ImageError::Io { .. })), "{r:?}");
    assert!(!Path::new("/etc/cagette-swap").exists());
}

#[test]
fn bad_hardlinks_are_refused() {
    for (tag, target) in [("hl-abs", "/etc/passwd"), ("hl-escape", "../../etc/passwd"), ("hl-missing", "nope")] {
        let r = adversarial(tag, tar_of(&[E::Hardlink("h", target)]));
        match r {
            Err(ImageError::UnsafeEntry { .. }) | Err(ImageError::Io { .. }) => {}
            other => panic!("{tag}: {other:?}"),
        }
    }
    let r = adversarial("hl-dir", tar_of(&[E::Dir("d", 0o755), E::Hardlink("h", "d")]));
    assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
}

#[test]
fn the_root_stays_a_directory_and_whiteouts_are_checked() {
    adversarial("root-file", tar_of(&[E::File(".", b"x", 0o644), E::File("ok", b"y", 0o644)])).unwrap();
    adversarial("root-link", tar_of(&[E::Symlink("/", "/etc"), E::File("ok", b"y", 0o644)])).unwrap();
    for (tag, name) in [("wh-empty", ".wh."), ("wh-dotdot", ".wh..."), ("wh-dot", ".wh..")] {
        let r = adversarial(tag, tar_of(&[E::File(name, b"", 0o644)]));
        assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{tag}: {r:?}");
    }
    // A whiteout under a symlinked directory resolves inside the root (where /etc is absent).
    let r = adversarial("wh-under-link", tar_of(&[E::Symlink("l", "/etc"), E::File("l/.wh.passwd", b"", 0o644)]));
    assert!(matches!(r, Err(ImageError::Io { .. })), "{r:?}");
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn digests_and_sizes_are_verified() {
    let d = TempDir::new("digest");
    let lay = layout(d.path(), &[tar_of(&[E::File("f", b"data", 0o644)])], &["/bin/true"]);
    // Corrupt the layer blob (same size).
    let blobs = lay.join("blobs/sha256");
    let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lay.join("index.json")).unwrap()).unwrap();
    let mhex = idx["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blobs.join(&mhex)).unwrap()).unwrap();
    let lhex = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    let mut bytes = std::fs::read(blobs.join(&lhex)).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 0xff; // inside the gzip trailer (CRC): same size, different digest
    std::fs::write(blobs.join(&lhex), &bytes).unwrap();
    let store_dir = d.path().join("store");
    let e = ImageStore::open(&store_dir).unwrap().import(&lay, "x:1").unwrap_err();
    assert!(matches!(e, ImageError::Digest { .. } | ImageError::Tar(_)), "{e}");
    assert!(store_is_clean(&store_dir));

    // A digest that tries to leave blobs/: refused by syntax.
    let d2 = TempDir::new("digest2");
    let lay2 = layout(d2.path(), &[tar_of(&[E::File("f", b"data", 0o644)])], &["/bin/true"]);
    let idx = std::fs::read_to_string(lay2.join("index.json")).unwrap();
    let bad = idx.replacen("\"digest\":\"sha256:", "\"digest\":\"sha256:../../", 1);
    std::fs::write(lay2.join("index.json"), bad).unwrap();
    let e = ImageStore::open(d2.path().join("store")).unwrap().import(&lay2, "x:1").unwrap_err();
    assert!(e.to_string().contains("malformed digest"), "{e}");
}

#[test]
fn truncated_and_oversized_layers_are_refused() {
    // Truncated tar (cut in the middle of a file's data) with a correct digest of the cut bytes.
    let full = tar_of(&[E::File("big", &[7u8; 4096], 0o644)]);
    let cut = full[..1024].to_vec();
    let r = adversarial("truncated", cut);
    assert!(matches!(r, Err(ImageError::Tar(_))), "{r:?}");
    // A gzip bomb beyond the configured limit.
    let d = TempDir::new("bomb");
    let lay = layout(d.path(), &[tar_of(&[E::File("zeros", &vec![0u8; 8 << 20], 0o644)])], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap().with_limits(cagette::ImageLimits { max_layer_bytes: 1 << 20, ..Default::default() });
    let e = store.import(&lay, "bomb:1").unwrap_err();
    assert!(matches!(e, ImageError::Limit(_)), "{e}");
    assert!(store_is_clean(&store_dir));
}

#[test]
fn unpack_matches_umoci_raw_unpack() {
    if std::process::Command::new("umoci").arg("--version").output().is_err() {
        panic!("umoci is needed for this test (apt-get install umoci)");
    }
    let d = TempDir::new("umoci");
    let l1 = tar_of(&[E::Dir("etc", 0o755), E::File("etc/a", b"a", 0o600), E::File("etc/gone", b"g", 0o644), E::File("suid", b"s", 0o4755)]);
    let l2 = tar_of(&[E::File("etc/.wh.gone", b"", 0o644), E::Symlink("etc/link", "a"), E::File("etc/b", b"bb", 0o640), E::Hardlink("etc/hard", "etc/b")]);
    let lay = layout(d.path(), &[l1, l2], &["/bin/true"]);
    std::fs::write(lay.join("index.json"), {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lay.join("index.json")).unwrap()).unwrap();
        v["manifests"][0]["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "t"});
        v.to_string()
    })
    .unwrap();
    let store = ImageStore::open(d.path().join("store")).unwrap();
    store.import(&lay, "t:1").unwrap();
    let ours = d.path().join("ours");
    store.unpack("t:1", &ours).unwrap();
    let theirs = d.path().join("theirs");
    let st = std::process::Command::new("umoci").args(["raw", "unpack", "--image"]).arg(format!("{}:t", lay.display())).arg(&theirs).status().unwrap();
    assert!(st.success());
    // Paths, types, modes, owners, link targets, sizes (content hashes below).
    let list = |p: &Path| -> Vec<String> {
        let o = std::process::Command::new("find").arg(p).arg("-mindepth").arg("1").arg("-printf").arg("%P %y %m %U %G %l %s\n").output().unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(list(&ours), list(&theirs));
    for f in ["etc/a", "suid", "etc/hard", "etc/b"] {
        assert_eq!(std::fs::read(ours.join(f)).unwrap(), std::fs::read(theirs.join(f)).unwrap(), "{f}");
    }
}

#[test]
fn docker_archive_from_skopeo_and_zstd_layers() {
    if std::process::Command::new("skopeo").arg("--version").output().is_err() {
        panic!("skopeo is needed for this test (apt-get install skopeo)");
    }
    let d = TempDir::new("docker");
    let lay = layout(d.path(), &[busybox_layer(), tar_of(&[E::Dir("etc", 0o755), E::File("etc/motd", b"hello from docker-archive\n", 0o644)])], &["/bin/cat", "/etc/motd"]);
    // Name the manifest in the index so skopeo can address it.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lay.join("index.json")).unwrap()).unwrap();
    v["manifests"][0]["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "t"});
    std::fs::write(lay.join("index.json"), v.to_string()).unwrap();
    let archive = d.path().join("image.tar");
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:t", lay.display()))
        .arg(format!("docker-archive:{}:test/bb:1", archive.display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy failed");
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let info = store.import(&archive, "bb:docker").unwrap();
    assert_eq!(info.layers.len(), 2);
    let o = Sandbox::from_spec(SandboxSpec { image: Some("bb:docker".into()), image_store: Some(store_dir.clone()), ..Default::default() }).output().unwrap();
    assert_eq!(stdout(&o), "hello from docker-archive\n", "{o:?}");
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);

    // zstd-compressed layers, by media type, checked against the magic bytes.
    let z = TempDir::new("zstd");
    let lay = layout(z.path(), &[tar_of(&[E::File("z", b"zstd!", 0o644)])], &["/bin/true"]);
    let blobs = lay.join("blobs/sha256");
    let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lay.join("index.json")).unwrap()).unwrap();
    let mhex = idx["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blobs.join(&mhex)).unwrap()).unwrap();
    let tar = tar_of(&[E::File("z", b"zstd!", 0o644)]);
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let zd = sha(&zst);
    std::fs::write(blobs.join(&zd[7..]), &zst).unwrap();
    manifest["layers"][0] = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": zd, "size": zst.len()});
    let mbytes = manifest.to_string().into_bytes();
    let md = sha(&mbytes);
    std::fs::write(blobs.join(&md[7..]), &mbytes).unwrap();
    let mut idx = idx;
    idx["manifests"][0]["digest"] = serde_json::json!(md);
    idx["manifests"][0]["size"] = serde_json::json!(mbytes.len());
    std::fs::write(lay.join("index.json"), idx.to_string()).unwrap();
    let store = ImageStore::open(z.path().join("store")).unwrap();
    store.import(&lay, "z:1").unwrap();
    store.unpack("z:1", &z.path().join("flat")).unwrap();
    assert_eq!(std::fs::read(z.path().join("flat/z")).unwrap(), b"zstd!");
}
