//! OCI images: import, verify, unpack, run, and an adversarial corpus of layers that must be
//! refused or contained, with nothing written outside the root and nothing left in the store.
mod common;
use cagette::{ImageError, ImageStore, Sandbox, SandboxSpec, Verdict};
use common::oci::*;
use common::*;
use std::path::{Path, PathBuf};

/// One tar entry, written raw (names are not validated: the corpus needs bad ones).
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A file with PAX records before it (xattrs as `SCHILY.xattr.NAME`, or anything else).
    Pax(&'a str, &'a [u8], u32, &'a [(&'a str, &'a [u8])]),
    /// A file with this owner.
    Owned(&'a str, &'a [u8], u32, u32),
    /// A character device.
    Char(&'a str, u32, u32),
}

/// One PAX record: "LEN key=value\n", LEN counting itself.
fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
    let body = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    [len.to_string().as_bytes(), &body].concat()
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let mut owner = (0, 0);
        let mut dev = None;
        let (name, ty, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) = match e {
            E::Pax(n, d, m, recs) => {
                let data: Vec<u8> = recs.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
                let mut x = tar::Header::new_ustar();
                x.set_path("PaxHeaders/x").unwrap();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_size(data.len() as u64);
                x.set_mode(0o644);
                x.set_cksum();
                b.append(&x, &data[..]).unwrap();
                (n, tar::EntryType::Regular, d, *m, None)
            }
            E::Owned(n, d, u, g) => {
                owner = (*u, *g);
                (n, tar::EntryType::Regular, d, 0o644, None)
            }
            E::Char(n, ma, mi) => {
                dev = Some((*ma, *mi));
                (n, tar::EntryType::Char, b"", 0o666, None)
            }
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
        h.set_uid(owner.0 as u64);
        h.set_gid(owner.1 as u64);
        if let Some((ma, mi)) = dev {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Rewrites an OCI layout's manifest and config (`f` may also add blobs, by `put_blob`), then
/// the index that names them.
fn edit_image(lay: &Path, f: impl FnOnce(&Path, &mut serde_json::Value, &mut serde_json::Value)) {
    let blobs = lay.join("blobs/sha256");
    let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lay.join("index.json")).unwrap()).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blobs.join(&idx["manifests"][0]["digest"].as_str().unwrap()[7..])).unwrap()).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(blobs.join(&manifest["config"]["digest"].as_str().unwrap()[7..])).unwrap()).unwrap();
    f(&blobs, &mut manifest, &mut config);
    let (cd, cn) = put_blob(&blobs, config.to_string().as_bytes());
    manifest["config"]["digest"] = serde_json::json!(cd);
    manifest["config"]["size"] = serde_json::json!(cn);
    let (md, mn) = put_blob(&blobs, manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(lay.join("index.json"), index.to_string()).unwrap();
}

/// Rewrites an OCI layout's config (and the manifest and index that name it).
fn edit_config(lay: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    edit_image(lay, |_, _, config| f(config));
}

/// A tar of raw headers: (name, type, data), for entries `tar_of` cannot express.
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, ty, data) in entries {
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
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
        E::Hardlink("etc/hard-keep", "etc/keep"),
        E::Pax("etc/xattr", b"", 0o644, &[("SCHILY.xattr.user.origin", b"image")]),
    ]);
    let l3 = busybox_layer();
    let lay = layout(d.path(), &[l1, l2, l3], &["/bin/sh", "-c", "cat /etc/keep /etc/soft /etc/hard /etc/hard-keep /data/new; ls /data; test -e /etc/gone || echo gone-hidden; echo $FROM_IMAGE"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let info = store.import(&lay, "test:3").unwrap();
    assert_eq!(info.layers.len(), 3);

    // Run from it: the image's Cmd and Env.
    let spec = SandboxSpec { image: Some("test:3".into()), image_store: Some(store_dir.clone()), ..Default::default() };
    let o = Sandbox::from_spec(spec.clone()).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert_eq!(stdout(&o), "keepkeeplinkedkeepnewnew\ngone-hidden\nyes\n");
    assert_eq!(xattr(&store.layer_dir(&info.layers[1]).unwrap().join("etc/xattr"), "user.origin").as_deref(), Some(&b"image"[..]));

    // Writing to / changes nothing in the store.
    let before = tree_listing(&store_dir);
    let o = Sandbox::from_spec(SandboxSpec { argv: vec!["/bin/sh".into(), "-c".into(), "echo x > /written && rm /etc/keep && echo ok".into()], ..spec }).output().unwrap();
    assert_eq!(stdout(&o), "ok\n");
    assert_eq!(tree_listing(&store_dir), before, "a job changed the store");

    // Flat unpack: the same view, setuid kept, hardlink shared.
    let flat = d.path().join("flat");
    store.unpack("test:3", &flat).unwrap();
    // The same image as a docker-archive (skopeo): the same tree.
    let archive = d.path().join("docker.tar");
    let st = std::process::Command::new("skopeo").args(["copy", "--quiet"]).arg(format!("oci:{}:t", lay.display())).arg(format!("docker-archive:{}:test/three:1", archive.display())).status().expect("skopeo (apt-get install skopeo)");
    assert!(st.success(), "skopeo copy failed");
    let from_docker = store.import(&archive, "test:3-docker").unwrap();
    assert_eq!(from_docker.layers, info.layers, "same layers, found in the store");
    let flat_docker = d.path().join("flat-docker");
    store.unpack("test:3-docker", &flat_docker).unwrap();
    let listing = |p: &Path| {
        let o = std::process::Command::new("find").arg(p).arg("-mindepth").arg("1").arg("-printf").arg("%P %y %m %U %G %l %s\n").output().unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(listing(&flat), listing(&flat_docker));
    store.remove("test:3-docker").unwrap();
    assert!(!flat.join("etc/gone").exists() && !flat.join("data/old").exists());
    assert_eq!(std::fs::read_to_string(flat.join("data/new")).unwrap(), "new");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::symlink_metadata(flat.join("bin-suid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read_link(flat.join("etc/soft")).unwrap(), Path::new("/etc/keep"));

    // By digest (a prefix of 12+ hex digits of the manifest's), also to run.
    assert_eq!(store.get(&info.manifest[..19]).unwrap().name, "test:3");
    assert!(matches!(store.get("sha256:0123456789ab"), Err(ImageError::NotFound(_))));
    let o = Sandbox::from_spec(SandboxSpec { image: Some(info.manifest.clone()), image_store: Some(store_dir.clone()), argv: vec!["/bin/cat".into(), "/etc/keep".into()], ..Default::default() }).output().unwrap();
    assert_eq!(stdout(&o), "keep", "{o:?}");

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
    // oci-spec's digest type refuses it while parsing the index.
    assert!(matches!(e, ImageError::Invalid(_)) && e.to_string().contains("index.json") && e.to_string().contains("../../"), "{e}");
}

#[test]
fn a_wrong_diff_id_is_refused() {
    let d = TempDir::new("diffid");
    let lay = layout(d.path(), &[tar_of(&[E::File("f", b"data", 0o644)])], &["/bin/true"]);
    // Rewrite the config with another diff_id (and the manifest that names the config).
    edit_config(&lay, |c| c["rootfs"]["diff_ids"][0] = serde_json::json!(sha(b"something else")));
    let store_dir = d.path().join("store");
    let e = ImageStore::open(&store_dir).unwrap().import(&lay, "x:1").unwrap_err();
    match &e {
        ImageError::Digest { what, expected, .. } => assert!(what.contains("uncompressed") && *expected == sha(b"something else"), "{e}"),
        other => panic!("{other}"),
    }
    assert!(store_is_clean(&store_dir));
}

#[test]
fn docker_manifest_paths_stay_inside_the_archive() {
    let d = TempDir::new("docker-paths");
    let layer = tar_of(&[E::File("f", b"data", 0o644)]);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]}}).to_string();
    for (tag, layer_path) in [("dotdot", "../../../etc/passwd"), ("inner", "a/../../x.tar")] {
        let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": [layer_path]}]).to_string();
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("manifest.json", manifest.as_bytes()), ("config.json", config.as_bytes()), ("layer.tar", &layer[..])] {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        let archive = d.path().join(format!("{tag}.tar"));
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let store_dir = d.path().join(format!("store-{tag}"));
        let e = ImageStore::open(&store_dir).unwrap().import(&archive, "x:1").unwrap_err();
        assert!(matches!(e, ImageError::UnsafeEntry { .. }) && e.to_string().contains(".."), "{tag}: {e}");
        assert!(store_is_clean(&store_dir), "{tag}");
    }
    // Symlinks inside the archive: a layer or config path through a link to the host, a
    // config that is a link, a layer that is a FIFO (must not hang).
    for (tag, extra, layer_path, config_path) in [
        ("dir-link", vec![E::Symlink("d", "/etc")], "d/passwd", "config.json"),
        ("config-link", vec![E::Symlink("c.json", "/etc/passwd")], "layer.tar", "c.json"),
        ("fifo", vec![], "fifo", "config.json"),
    ] {
        let manifest = serde_json::json!([{"Config": config_path, "RepoTags": ["x:1"], "Layers": [layer_path]}]).to_string();
        let mut entries = vec![E::File("manifest.json", manifest.as_bytes(), 0o644), E::File("config.json", config.as_bytes(), 0o644), E::File("layer.tar", &layer, 0o644)];
        entries.extend(extra);
        let mut bytes = tar_of(&entries);
        if tag == "fifo" {
            bytes.truncate(bytes.len() - 1024);
            bytes.extend(raw_tar(&[("fifo", tar::EntryType::Fifo, b"")]));
        }
        let archive = d.path().join(format!("{tag}.tar"));
        std::fs::write(&archive, bytes).unwrap();
        let store_dir = d.path().join(format!("store-{tag}"));
        let e = ImageStore::open(&store_dir).unwrap().import(&archive, "x:1").unwrap_err();
        assert!(matches!(e, ImageError::Io { .. } | ImageError::Invalid(_)), "{tag}: {e}");
        assert!(store_is_clean(&store_dir), "{tag}");
    }
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
    let l2 = tar_of(&[
        E::File("etc/.wh.gone", b"", 0o644),
        E::Symlink("etc/link", "a"),
        E::File("etc/b", b"bb", 0o640),
        E::Hardlink("etc/hard", "etc/b"),
        // A hardlink to a file of the lower layer, and an xattr.
        E::Hardlink("etc/hard-lower", "etc/a"),
        E::Pax("etc/xa", b"x", 0o644, &[("SCHILY.xattr.user.cagette", b"1")]),
    ]);
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
    // Content hashes of every regular file.
    let hashes = |p: &Path| -> Vec<String> {
        let o = std::process::Command::new("sh").arg("-c").arg("find . -type f -print0 | sort -z | xargs -0 sha256sum").current_dir(p).output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
    };
    assert_eq!(hashes(&ours), hashes(&theirs));
    assert_eq!(hashes(&ours).len(), 6, "{:?}", hashes(&ours));
    assert_eq!(xattr(&ours.join("etc/xa"), "user.cagette").as_deref(), Some(&b"1"[..]));
    assert_eq!(xattr(&ours.join("etc/xa"), "user.cagette"), xattr(&theirs.join("etc/xa"), "user.cagette"));
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
    edit_image(&lay, |blobs, manifest, _| {
        let tar = tar_of(&[E::File("z", b"zstd!", 0o644)]);
        let (zd, zn) = put_blob(blobs, &zstd::encode_all(&tar[..], 3).unwrap());
        manifest["layers"][0] = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": zd, "size": zn});
    });
    let store = ImageStore::open(z.path().join("store")).unwrap();
    store.import(&lay, "z:1").unwrap();
    store.unpack("z:1", &z.path().join("flat")).unwrap();
    assert_eq!(std::fs::read(z.path().join("flat/z")).unwrap(), b"zstd!");
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut v = vec![0u8; 4096];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr() as *mut libc::c_void, v.len()) };
    (r >= 0).then(|| {
        v.truncate(r as usize);
        v
    })
}

#[test]
fn xattrs_are_filtered_and_overlay_ones_escaped() {
    let d = TempDir::new("xattr");
    let l1 = tar_of(&[E::Dir("d", 0o755), E::File("d/lower", b"lower", 0o644)]);
    // The image tries to plant overlayfs metadata: an opaque mark on d (which would hide
    // d/lower) through both namespaces. It must be stored escaped and have no effect.
    let l2 = tar_of(&[
        E::Pax("d/upper", b"upper", 0o644, &[("SCHILY.xattr.user.overlay.opaque", b"y"), ("SCHILY.xattr.trusted.overlay.redirect", b"/etc")]),
        E::Pax("kept", b"k", 0o644, &[("SCHILY.xattr.user.cagette", b"kept"), ("SCHILY.xattr.security.selinux", b"system_u:object_r:etc_t:s0"), ("SCHILY.xattr.security.ima", b"x")]),
        E::Pax("cap", b"c", 0o755, &[("SCHILY.xattr.security.capability", &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]),
    ]);
    let lay = layout(d.path(), &[l1, busybox_layer(), l2], &["/bin/sh", "-c", "ls /d"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let info = store.import(&lay, "x:1").unwrap();
    let top = store.layer_dir(&info.layers[2]).unwrap();
    assert_eq!(xattr(&top.join("d/upper"), "user.overlay.overlay.opaque").as_deref(), Some(&b"y"[..]), "escaped in the store");
    assert_eq!(xattr(&top.join("d/upper"), "user.overlay.opaque"), None);
    assert_eq!(xattr(&top.join("d/upper"), "trusted.overlay.overlay.redirect").as_deref(), Some(&b"/etc"[..]));
    assert_eq!(xattr(&top.join("kept"), "user.cagette").as_deref(), Some(&b"kept"[..]));
    assert_eq!(xattr(&top.join("kept"), "security.selinux"), None, "SELinux labels are dropped");
    assert!(xattr(&top.join("cap"), "security.capability").is_some(), "file capabilities kept (root)");
    let notes = info.notes.join("\n");
    assert!(notes.contains("security.selinux") && notes.contains("security.ima"), "{notes}");
    // Through the overlay: d/lower is still there.
    let o = Sandbox::from_spec(SandboxSpec { image: Some("x:1".into()), image_store: Some(store_dir.clone()), ..Default::default() }).output().unwrap();
    assert_eq!(stdout(&o), "lower\nupper\n", "{o:?}");
    // A flat unpack keeps the image's own xattrs but no overlay ones.
    let flat = d.path().join("flat");
    store.unpack("x:1", &flat).unwrap();
    assert_eq!(xattr(&flat.join("kept"), "user.cagette").as_deref(), Some(&b"kept"[..]));
    assert_eq!(xattr(&flat.join("d/upper"), "user.overlay.overlay.opaque"), None);
    assert_eq!(xattr(&flat.join("d/upper"), "user.overlay.opaque"), None);
    assert!(flat.join("d/lower").exists());
}

#[test]
fn pax_headers_are_bounded_and_sizes_must_agree() {
    // A PAX size that differs from the header's: two readers would see two archives.
    let mut t = tar_of(&[E::Pax("a", b"1234", 0o644, &[("size", b"1536")])]);
    let r = adversarial("pax-size", std::mem::take(&mut t));
    match r {
        Err(ImageError::UnsafeEntry { why, .. }) => assert!(why.contains("PAX size"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A PAX path is honoured (and cleaned like any name).
    let i = adversarial("pax-path", tar_of(&[E::Pax("short", b"x", 0o644, &[("path", b"../../escape")])]));
    assert!(matches!(i, Err(ImageError::UnsafeEntry { .. })), "{i:?}");
    // A PAX header beyond the bound.
    let d = TempDir::new("pax-big");
    let big = vec![b'v'; 300_000];
    let lay = layout(d.path(), &[tar_of(&[E::Pax("f", b"x", 0o644, &[("SCHILY.xattr.user.big", &big[..60_000]), ("comment", &big)])])], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap().with_limits(cagette::ImageLimits { max_header: 64 << 10, ..Default::default() });
    let e = store.import(&lay, "big:1").unwrap_err();
    assert!(matches!(e, ImageError::Limit(ref m) if m.contains("XHeader")), "{e}");
    assert!(store_is_clean(&store_dir));
}

#[test]
fn gzip_trailing_garbage_is_refused() {
    let d = TempDir::new("gz-garbage");
    let lay = layout(d.path(), &[tar_of(&[E::File("f", b"data", 0o644)])], &["/bin/true"]);
    // Append garbage to the layer blob and fix its descriptor (digest and size) so that only
    // the gzip framing is wrong.
    edit_image(&lay, |blobs, manifest, _| {
        let mut bytes = std::fs::read(blobs.join(&manifest["layers"][0]["digest"].as_str().unwrap()[7..])).unwrap();
        bytes.extend_from_slice(b"trailing garbage");
        let (nd, nn) = put_blob(blobs, &bytes);
        manifest["layers"][0]["digest"] = serde_json::json!(nd);
        manifest["layers"][0]["size"] = serde_json::json!(nn);
    });
    let store_dir = d.path().join("store");
    let e = ImageStore::open(&store_dir).unwrap().import(&lay, "g:1").unwrap_err();
    assert!(e.to_string().contains("not a gzip member"), "{e}");
    assert!(store_is_clean(&store_dir));
}

#[test]
fn plain_layer_tars_gzip_and_uncompressed() {
    let d = TempDir::new("plain");
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let mut bb = busybox_layer();
    let layer_gz = d.path().join("layer.tar.gz");
    std::fs::write(&layer_gz, gzip(&bb)).unwrap();
    let info = store.import(&layer_gz, "plain:gz").unwrap();
    assert_eq!(info.layers, [sha(&bb)], "the diff_id is learnt from the data");
    assert_eq!(info.config.cmd, None);
    let o = Sandbox::from_spec(SandboxSpec { image: Some("plain:gz".into()), image_store: Some(store_dir.clone()), argv: vec!["/bin/echo".into(), "plain".into()], ..Default::default() }).output().unwrap();
    assert_eq!(stdout(&o), "plain\n", "{o:?}");
    // The same content uncompressed: same layer, not unpacked twice.
    let layer_tar = d.path().join("layer.tar");
    std::fs::write(&layer_tar, &bb).unwrap();
    let again = store.import(&layer_tar, "plain:tar").unwrap();
    assert_eq!(again.layers, info.layers);
    assert_eq!(std::fs::read_dir(store_dir.join("layers/sha256")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
    // A truncated plain layer: refused, nothing left.
    bb.truncate(bb.len() / 2);
    let cut = d.path().join("cut.tar.gz");
    std::fs::write(&cut, &gzip(&bb)[..]).unwrap();
    let s2 = d.path().join("store2");
    let e = ImageStore::open(&s2).unwrap().import(&cut, "cut:1").unwrap_err();
    assert!(matches!(e, ImageError::Tar(_)), "{e}");
    assert!(store_is_clean(&s2));
}

#[test]
fn named_user_is_resolved_from_the_image() {
    let d = TempDir::new("user");
    let etc = tar_of(&[
        E::Dir("etc", 0o755),
        E::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:5678:app:/home/app:/bin/sh\n", 0o644),
        E::File("etc/group", b"root:x:0:\napp:x:5678:\nstaff:x:50:\n", 0o644),
    ]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    for (user, expect) in [("app", Some("1234 5678")), ("app:staff", Some("1234 50")), ("77", Some("77 0")), ("ghost", None)] {
        let sub = d.path().join(user.replace(':', "-"));
        let lay = layout(&sub, &[busybox_layer(), etc.clone()], &["/bin/sh", "-c", "echo $(id -u) $(id -g)"]);
        // Set the config's User (rewrite the config and the manifest that names it).
        edit_config(&lay, |c| c["config"]["User"] = serde_json::json!(user));
        let name = format!("u:{}", user.replace(':', "-"));
        store.import(&lay, &name).unwrap();
        let r = Sandbox::from_spec(SandboxSpec { image: Some(name), image_store: Some(store_dir.clone()), ..Default::default() }).output();
        match expect {
            Some(ids) => assert_eq!(stdout(&r.unwrap()), format!("{ids}\n"), "{user}"),
            None => {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("ghost") && e.contains("/etc/passwd"), "{e}");
            }
        }
    }
}

#[test]
fn progress_is_reported_and_cancel_leaves_nothing() {
    use std::ops::ControlFlow;
    let d = TempDir::new("progress");
    let lay = layout(d.path(), &[busybox_layer(), tar_of(&[E::File("f", &vec![1u8; 4 << 20], 0o644)])], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let mut seen = Vec::new();
    store.import_with(&lay, "p:1", &mut |p| {
        seen.push(p.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    let last = seen.last().expect("at least the final report");
    assert_eq!((last.layers, last.layers_done), (2, 2));
    assert!(last.bytes > 0 && last.bytes_done == last.bytes, "{last:?}");
    assert!(seen.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done && w[0].layers_done <= w[1].layers_done), "{seen:?}");
    // Cancel at the first report: Cancelled, and the store is as before (no layer, no staging).
    let s2 = d.path().join("store2");
    let e = ImageStore::open(&s2).unwrap().import_with(&lay, "p:1", &mut |_| ControlFlow::Break(())).unwrap_err();
    assert!(matches!(e, ImageError::Cancelled), "{e}");
    assert!(store_is_clean(&s2), "{:?}", tree_listing(&s2));
    assert!(ImageStore::open(&s2).unwrap().list().unwrap().is_empty());
}

#[test]
fn a_killed_import_is_swept_by_the_next_open() {
    let d = TempDir::new("sweep");
    let store_dir = d.path().join("store");
    ImageStore::open(&store_dir).unwrap();
    // What a SIGKILLed import leaves: staging named by a pid that no longer exists.
    std::fs::create_dir_all(store_dir.join("tmp/999999999-layer-0-0/usr")).unwrap();
    std::fs::write(store_dir.join("tmp/999999999-record-1-x.json"), "{}").unwrap();
    // And one of a live process (this one): kept.
    let live = store_dir.join(format!("tmp/{}-layer-0-7", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    ImageStore::open(&store_dir).unwrap();
    let left: Vec<_> = std::fs::read_dir(store_dir.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, [live]);
}

/// Rootless import: the same test binary, re-run as nobody (65534), imports into a store it
/// owns. Whiteouts are character devices 0:0, which an unprivileged user may create (Linux >=
/// 5.8); opaque marks use `user.overlay.opaque`; device nodes, foreign owners and file
/// capabilities cannot be kept and are reported as notes.
#[test]
fn rootless_import_as_nobody() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test starts as root and drops to nobody");
    let d = TempDir::new("rootless");
    let l1 = tar_of(&[
        E::Dir("etc", 0o755),
        E::File("etc/gone", b"gone", 0o644),
        E::Dir("data", 0o755),
        E::File("data/old", b"old", 0o644),
        E::Dir("dev", 0o755),
        E::Char("dev/null", 1, 3),
        E::Owned("owned-by-1000", b"o", 1000, 1000),
        E::Pax("capped", b"c", 0o755, &[("SCHILY.xattr.security.capability", &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]),
    ]);
    let l2 = tar_of(&[E::File("etc/.wh.gone", b"", 0o644), E::Dir("data", 0o755), E::File("data/.wh..wh..opq", b"", 0o644), E::File("data/new", b"new", 0o644), E::File("suid", b"s", 0o4755)]);
    let lay = layout(d.path(), &[busybox_layer(), l1, l2], &["/bin/sh", "-c", "ls /data; test -e /etc/gone || echo gone-hidden"]);
    // A second image, whose layer locks a directory (mode 0) and whose diff_id is wrong: its
    // staging must still be removed by a non-root importer.
    let lay2 = layout(&d.path().join("two"), &[tar_of(&[E::Dir("locked", 0o000), E::Dir("locked/sub", 0o500), E::File("locked/sub/f", b"f", 0o400)])], &["/bin/true"]);
    edit_config(&lay2, |c| c["rootfs"]["diff_ids"][0] = serde_json::json!(sha(b"not this")));
    std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(d.path()).status().unwrap();
    let store_dir = d.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    std::os::unix::fs::chown(&store_dir, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rootless_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CAGETTE_ROOTLESS_LAYOUT", &lay)
        .env("CAGETTE_ROOTLESS_LAYOUT2", &lay2)
        .env("CAGETTE_ROOTLESS_STORE", &store_dir)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("rootless-child-ok"), "{text}");
    // In the store: a whiteout the overlay understands, owned by nobody.
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(store_dir.join("images/r%3a1.json")).unwrap()).unwrap();
    let top = store_dir.join("layers/sha256").join(&info["layers"][2].as_str().unwrap()[7..]);
    let wh = std::fs::symlink_metadata(top.join("etc/gone")).unwrap();
    assert_eq!((wh.mode() & libc::S_IFMT, wh.rdev(), wh.uid()), (libc::S_IFCHR, 0, 65534));
    assert_eq!(xattr(&top.join("data"), "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(std::fs::symlink_metadata(top.join("suid")).unwrap().mode() & 0o7777, 0o4755);
}

#[test]
#[ignore = "run as nobody by rootless_import_as_nobody"]
fn rootless_child() {
    let (Some(lay), Some(store_dir)) = (std::env::var_os("CAGETTE_ROOTLESS_LAYOUT"), std::env::var_os("CAGETTE_ROOTLESS_STORE")) else {
        panic!("run by rootless_import_as_nobody");
    };
    assert_ne!(unsafe { libc::geteuid() }, 0);
    let store = ImageStore::open(PathBuf::from(&store_dir)).unwrap();
    let info = store.import(Path::new(&lay), "r:1").unwrap();
    let notes = info.notes.join("\n");
    for want in ["dev/null", "security.capability", "ownership needs root"] {
        assert!(notes.contains(want), "no note about {want}: {notes}");
    }
    let o = Sandbox::from_spec(SandboxSpec { image: Some("r:1".into()), image_store: Some(PathBuf::from(&store_dir)), ..Default::default() }).output().unwrap();
    assert_eq!(stdout(&o), "new\ngone-hidden\n", "{o:?}");
    let flat = PathBuf::from(&store_dir).join("flat");
    let notes = store.unpack("r:1", &flat).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert!(!flat.join("dev/null").exists(), "the device was not imported");
    assert!(!flat.join("etc/gone").exists() && !flat.join("data/old").exists() && flat.join("data/new").exists());
    let e = store.import(Path::new(&std::env::var_os("CAGETTE_ROOTLESS_LAYOUT2").unwrap()), "locked:1").unwrap_err();
    assert!(matches!(e, ImageError::Digest { .. }), "{e}");
    assert_eq!(std::fs::read_dir(PathBuf::from(&store_dir).join("tmp")).unwrap().count(), 0, "staging with a mode-0 directory was left");
    println!("rootless-child-ok");
}

/// The adversarial layers, as fuzz seeds.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let host = "/etc/passwd";
    vec![
        ("dotdot", tar_of(&[E::File("../../x", b"pwned", 0o644)])),
        ("inner-dotdot", tar_of(&[E::File("a/../../x", b"pwned", 0o644)])),
        ("abs", tar_of(&[E::File("/etc/cagette-abs", b"inside", 0o644)])),
        ("via-abs-link", tar_of(&[E::Symlink("s", "/etc"), E::File("s/cagette-pwned", b"x", 0o644)])),
        ("via-dotdot-link", tar_of(&[E::Dir("a", 0o755), E::Symlink("a/up", "../../../../.."), E::File("a/up/cagette-up", b"x", 0o644)])),
        ("link-then-dir", tar_of(&[E::Symlink("d", "/tmp"), E::Dir("d", 0o755), E::File("d/f", b"x", 0o644)])),
        ("link-then-file", tar_of(&[E::Symlink("f", host), E::File("f", b"pwned", 0o644)])),
        ("dir-then-link", tar_of(&[E::Dir("x", 0o755), E::Symlink("x", "/etc"), E::File("x/cagette-swap", b"x", 0o644)])),
        ("hl-abs", tar_of(&[E::Hardlink("h", host)])),
        ("hl-escape", tar_of(&[E::Hardlink("h", "../../etc/passwd")])),
        ("hl-dir", tar_of(&[E::Dir("d", 0o755), E::Hardlink("h", "d")])),
        ("root-file", tar_of(&[E::File(".", b"x", 0o644), E::File("ok", b"y", 0o644)])),
        ("root-link", tar_of(&[E::Symlink("/", "/etc"), E::File("ok", b"y", 0o644)])),
        ("wh-dotdot", tar_of(&[E::File(".wh...", b"", 0o644)])),
        ("wh-under-link", tar_of(&[E::Symlink("l", "/etc"), E::File("l/.wh.passwd", b"", 0o644)])),
        ("opaque", tar_of(&[E::Dir("d", 0o755), E::File("d/.wh..wh..opq", b"", 0o644), E::File("d/f", b"f", 0o644)])),
        ("pax-size", tar_of(&[E::Pax("a", b"1234", 0o644, &[("size", b"1536")])])),
        ("pax-path", tar_of(&[E::Pax("short", b"x", 0o644, &[("path", b"../../escape")])])),
        ("pax-xattrs", tar_of(&[E::Pax("x", b"x", 0o644, &[("SCHILY.xattr.user.overlay.opaque", b"y"), ("SCHILY.xattr.security.selinux", b"l")])])),
        ("device", tar_of(&[E::Char("null", 1, 3), E::Owned("o", b"o", 1000, 1000)])),
    ]
}

#[test]
#[ignore = "writes the fuzz seeds: cargo test -p cagette --test images write_fuzz_corpus -- --ignored"]
fn write_fuzz_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tar_apply");
    std::fs::create_dir_all(&dir).unwrap();
    for (tag, bytes) in seeds() {
        std::fs::write(dir.join(format!("seed-{tag}")), bytes).unwrap();
    }
}

/// Every file of the fuzz corpus (seeds and whatever fuzzing kept) goes through the applier:
/// refused or contained, never an escape (which panics).
#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tar_apply");
    let d = TempDir::new("fuzz-replay");
    let mut n = 0;
    let mut refused = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        if cagette::fuzz_apply_layer(&d.path().join("scratch"), &bytes).is_err() {
            refused += 1;
        }
        n += 1;
    }
    assert!(n >= seeds().len(), "the corpus lost its seeds ({n} files in {})", dir.display());
    assert!(refused > 0 && refused < n, "{refused} of {n} refused: the corpus should hold both kinds");
    assert!(!Path::new("/etc/cagette-pwned").exists() && !Path::new("/etc/cagette-swap").exists() && !Path::new("/etc/cagette-abs").exists());
}


#[test]
fn the_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("private");
    let store_dir = d.path().join("store");
    ImageStore::open(&store_dir).unwrap();
    for sub in ["", "layers", "layers/sha256", "tmp", "locks"] {
        let mode = std::fs::metadata(store_dir.join(sub)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{sub:?}: {mode:o}");
    }
    // An existing store made by hand with open modes is tightened.
    std::fs::set_permissions(store_dir.join("layers"), std::fs::Permissions::from_mode(0o755)).unwrap();
    ImageStore::open(&store_dir).unwrap();
    assert_eq!(std::fs::metadata(store_dir.join("layers")).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn entries_other_readers_would_read_differently_are_refused() {
    // Data after a directory header: tar-rs would skip it, Go would read it as headers.
    let hidden = tar_of(&[E::File("hidden", b"only one reader sees this", 0o644)]);
    let r = adversarial("dir-with-data", raw_tar(&[("d", tar::EntryType::Directory, &hidden[..hidden.len() - 1024])]));
    assert!(matches!(&r, Err(ImageError::UnsafeEntry { why, .. }) if why.contains("bytes of data")), "{r:?}");
    let r = adversarial("link-with-data", raw_tar(&[("s", tar::EntryType::Symlink, &[0u8; 512][..])]));
    assert!(matches!(&r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
    // A regular file named like a directory (a directory to Go).
    let r = adversarial("file-slash", raw_tar(&[("f/", tar::EntryType::Regular, b"x")]));
    assert!(matches!(&r, Err(ImageError::UnsafeEntry { why, .. }) if why.contains("'/'")), "{r:?}");
    // A GNU long name and a PAX path for the same entry.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "a-gnu-long-name-".repeat(10), &b"x"[..]).unwrap(); // writes a GNU long-name header
    let gnu = b.into_inner().unwrap();
    let pax: Vec<u8> = pax_record("path", b"the-pax-name");
    let mut x = tar::Header::new_ustar();
    x.set_path("PaxHeaders/x").unwrap();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(pax.len() as u64);
    x.set_mode(0o644);
    x.set_cksum();
    let mut b2 = tar::Builder::new(Vec::new());
    b2.append(&x, &pax[..]).unwrap();
    let mut both = b2.into_inner().unwrap();
    both.truncate(both.len() - 1024); // drop its end blocks: the GNU entry follows
    both.extend_from_slice(&gnu);
    let r = adversarial("gnu-and-pax", both);
    assert!(matches!(&r, Err(ImageError::UnsafeEntry { why, .. }) if why.contains("GNU long name and a PAX path")), "{r:?}");
}

#[test]
fn hardlinks_to_a_lower_file_copy_it_once_and_count_it() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("lower-links");
    let big = vec![5u8; 1 << 20];
    let links: Vec<String> = (0..50).map(|i| format!("l{i}")).collect();
    let l2: Vec<E> = links.iter().map(|n| E::Hardlink(n, "big")).collect();
    let lay = layout(d.path(), &[tar_of(&[E::File("big", &big, 0o644)]), tar_of(&l2)], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap().with_limits(cagette::ImageLimits { max_layer_bytes: 4 << 20, ..Default::default() });
    let info = store.import(&lay, "l:1").unwrap();
    let top = store.layer_dir(&info.layers[1]).unwrap();
    let m = std::fs::metadata(top.join("l7")).unwrap();
    // A later entry at a link's path wins over the link (tar order), also for lower links.
    let d3 = TempDir::new("lower-links-order");
    let lay3 = layout(d3.path(), &[tar_of(&[E::File("t", b"lower", 0o644)]), tar_of(&[E::Hardlink("x", "t"), E::File("x", b"later", 0o644), E::Hardlink("y", "t"), E::File("y/z", b"under", 0o644)])], &["/bin/true"]);
    let s3 = ImageStore::open(d3.path().join("store")).unwrap();
    let i3 = s3.import(&lay3, "o:1").unwrap();
    assert_eq!(std::fs::read(s3.layer_dir(&i3.layers[1]).unwrap().join("x")).unwrap(), b"later");
    assert_eq!(std::fs::read(s3.layer_dir(&i3.layers[1]).unwrap().join("y/z")).unwrap(), b"under");
    assert_eq!((m.len(), m.nlink()), (1 << 20, 50), "one copy, linked 50 times");
    // Links to five different 1 MiB lower files copy 5 MiB: beyond the 4 MiB limit.
    let d2 = TempDir::new("lower-links-limit");
    let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    let l1: Vec<E> = names.iter().map(|n| E::File(n, &big, 0o644)).collect();
    let lk: Vec<String> = (0..5).map(|i| format!("h{i}")).collect();
    let l2: Vec<E> = lk.iter().zip(&names).map(|(l, t)| E::Hardlink(l, t)).collect();
    let lay = layout(d2.path(), &[tar_of(&l1[..2]), tar_of(&l1[2..]), tar_of(&l2)], &["/bin/true"]);
    let store_dir = d2.path().join("store");
    let e = ImageStore::open(&store_dir).unwrap().with_limits(cagette::ImageLimits { max_layer_bytes: 4 << 20, ..Default::default() }).import(&lay, "l:2").unwrap_err();
    assert!(matches!(&e, ImageError::Limit(m) if m.contains("hardlinks")), "{e}");
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
}

#[test]
fn metadata_kept_in_memory_is_bounded() {
    let d = TempDir::new("kept");
    let names: Vec<String> = (0..2000).map(|i| format!("dir-with-a-long-name-{i:05}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::Dir(n, 0o755)).collect();
    let lay = layout(d.path(), &[tar_of(&entries)], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let e = ImageStore::open(&store_dir).unwrap().with_limits(cagette::ImageLimits { max_kept_bytes: 64 << 10, ..Default::default() }).import(&lay, "k:1").unwrap_err();
    assert!(matches!(&e, ImageError::Limit(m) if m.contains("memory")), "{e}");
    assert!(store_is_clean(&store_dir));
}

// ---- layers written from a directory (cagette::write_layer, for image builds) ----

/// The entries of a gzip layer: (path, kind, mode, uid, gid, mtime, link target, size, pax keys).
fn layer_entries(blob: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let pax: Vec<String> = e.pax_extensions().unwrap().map(|it| it.map(|p| p.unwrap().key().unwrap().to_string()).collect()).unwrap_or_default();
        let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
        out.push(format!("{} {:?} {:o} {}:{} {} {} {} {:?}", e.path().unwrap().display(), h.entry_type(), h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap(), link, h.size().unwrap(), pax));
    }
    out
}

/// A tree of each kind a layer holds: directories, files with odd modes, a symlink, two names
/// of one file, a FIFO, an xattr.
fn make_tree(root: &Path, reverse: bool) {
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| std::fs::create_dir_all(root.join("etc/app")).unwrap()),
        Box::new(|| std::fs::write(root.join("etc/app/conf"), b"k=v\n").unwrap()),
        Box::new(|| std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap()),
        Box::new(|| std::fs::write(root.join("big"), vec![7u8; 300_000]).unwrap()),
    ];
    if reverse {
        steps.swap(2, 3);
    }
    for s in &steps {
        s();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(root.join("etc/app/conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink("/etc/app/conf", root.join("conf-link")).unwrap();
    std::fs::hard_link(root.join("run.sh"), root.join("etc/run-again")).unwrap();
    nix::unistd::mkfifo(&root.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let c = std::ffi::CString::new(root.join("etc/app/conf").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a 2-byte value.
    assert_eq!(unsafe { libc::lsetxattr(c.as_ptr(), c"user.test".as_ptr(), b"ok".as_ptr() as *const libc::c_void, 2, 0) }, 0);
}

#[test]
fn a_written_layer_is_reproducible_and_round_trips() {
    let d = TempDir::new("write-layer");
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    make_tree(&a, false);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // other mtimes for b
    std::fs::create_dir(&b).unwrap();
    make_tree(&b, true);
    let (mut blob_a, mut blob_b) = (Vec::new(), Vec::new());
    let la = cagette::write_layer(&a, 0, &mut blob_a).unwrap();
    let lb = cagette::write_layer(&b, 0, &mut blob_b).unwrap();
    // The same tree made in another order at another time: the same bytes.
    assert_eq!(la, lb);
    assert_eq!(blob_a, blob_b);
    assert_eq!(la.size, blob_a.len() as u64);
    let entries = layer_entries(&blob_a);
    let names: Vec<&str> = entries.iter().map(|e| e.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["big", "conf-link", "etc", "etc/app", "etc/app/conf", "etc/run-again", "pipe", "run.sh"], "{entries:#?}");
    let me = format!("{}:{}", nix::unistd::geteuid(), nix::unistd::getegid());
    assert!(entries.iter().all(|e| e.contains(&format!(" {me} 0 "))), "owners and mtimes (clamped to 0): {entries:#?}");
    assert!(entries.iter().any(|e| e.starts_with("conf-link Symlink ") && e.contains(" /etc/app/conf ")), "{entries:#?}");
    assert!(entries.iter().any(|e| e.starts_with("etc/app/conf Regular 644") && e.contains("SCHILY.xattr.user.test")), "{entries:#?}");
    // run.sh comes after etc/run-again in the order: it is the link to the first name.
    assert!(entries.iter().any(|e| e.starts_with("etc/run-again Regular 4755")) && entries.iter().any(|e| e.starts_with("run.sh Link 4755") && e.contains(" etc/run-again ")), "{entries:#?}");
    assert!(entries.iter().any(|e| e.starts_with("pipe Fifo 600")), "{entries:#?}");
    // An epoch later than the files keeps their mtimes.
    let mut later = Vec::new();
    cagette::write_layer(&a, u64::MAX, &mut later).unwrap();
    assert!(layer_entries(&later).iter().all(|e| !e.contains(&format!(" {me} 0 "))), "mtimes kept below the epoch");
    // Imported as a plain layer and unpacked: the same tree as the source.
    let blob_path = d.path().join("layer.tar.gz");
    std::fs::write(&blob_path, &blob_a).unwrap();
    let store = ImageStore::open(d.path().join("store")).unwrap();
    let info = store.import(&blob_path, "written:1").unwrap();
    assert_eq!(info.layers, [la.diff_id.clone()]);
    let flat = d.path().join("flat");
    store.unpack("written:1", &flat).unwrap();
    let strip = |v: Vec<String>| v.into_iter().filter(|l| !l.is_empty()).collect::<Vec<_>>();
    assert_eq!(strip(tree_listing(&flat)), strip(tree_listing(&a)));
    assert_eq!(std::fs::read(flat.join("big")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(xattr(&flat.join("etc/app/conf"), "user.test").as_deref(), Some(&b"ok"[..]));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(flat.join("run.sh")).unwrap().ino(), std::fs::metadata(flat.join("etc/run-again")).unwrap().ino());
}

#[test]
fn an_overlay_upper_becomes_a_layer_of_whiteouts_and_refusals_are_clear() {
    let d = TempDir::new("write-upper");
    let up = d.path().join("upper");
    std::fs::create_dir_all(up.join("gone-dir")).unwrap();
    std::fs::create_dir_all(up.join("redone")).unwrap();
    std::fs::write(up.join("redone/new"), b"new").unwrap();
    // What overlayfs writes for a removed file (a 0:0 character device, which Linux >= 5.8
    // lets anyone make) and for a directory made again (opaque).
    nix::sys::stat::mknod(&up.join("removed"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
    let opaque = if nix::unistd::geteuid().is_root() { "trusted.overlay.opaque" } else { "user.overlay.opaque" };
    let set = |p: &Path, name: &str, v: &[u8]| {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid NUL-terminated strings and a value of the given length.
        assert_eq!(unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr() as *const libc::c_void, v.len(), 0) }, 0, "{name}");
    };
    set(&up.join("redone"), opaque, b"y");
    let mut blob = Vec::new();
    cagette::write_layer(&up, 0, &mut blob).unwrap();
    let entries = layer_entries(&blob);
    let names: Vec<&str> = entries.iter().map(|e| e.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["gone-dir", "redone", "redone/.wh..wh..opq", "redone/new", ".wh.removed"], "{entries:#?}");
    assert!(!entries.iter().any(|e| e.contains("overlay")), "overlay xattrs are not copied: {entries:#?}");
    // Overlay metadata no layer can carry, a symlink as the directory, a missing one.
    set(&up.join("redone/new"), opaque.replace("opaque", "redirect").as_str(), b"/elsewhere");
    let e = cagette::write_layer(&up, 0, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("/redone/new") && e.contains("redirect"), "{e}");
    std::os::unix::fs::symlink(&up, d.path().join("link")).unwrap();
    let e = cagette::write_layer(&d.path().join("link"), 0, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("open the directory") && e.contains("link"), "{e}");
    let e = cagette::write_layer(&d.path().join("nothing"), 0, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("nothing"), "{e}");
}

#[test]
fn what_a_job_writes_to_an_image_root_becomes_a_layer_that_runs() {
    let d = TempDir::new("image-upper");
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/true"]);
    let store_dir = d.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let base = store.import(&lay, "base:1").unwrap();
    let (upper, work) = (d.path().join("step/upper"), d.path().join("step/work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // A "RUN" step: add a file, remove one of the image's.
    let in_store = |sb: Sandbox| {
        let mut spec = sb.spec().clone();
        spec.image_store = Some(store_dir.clone());
        Sandbox::from_spec(spec)
    };
    let o = in_store(Sandbox::new().image("base:1").image_upper(&upper, &work).command("sh").args(["-c", "echo built > /greeting && rm /bin/true && ls /bin/true 2>&1; exit 0"]))
        .output()
        .unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(upper.join("greeting")).unwrap(), b"built\n");
    // The layer of that step: the new file and a whiteout for the removed one.
    let blob = d.path().join("step.tar.gz");
    let l = cagette::write_layer(&upper, 0, std::fs::File::create(&blob).unwrap()).unwrap();
    let entries = layer_entries(&std::fs::read(&blob).unwrap());
    assert!(entries.iter().any(|e| e.starts_with("bin/.wh.true ")) && entries.iter().any(|e| e.starts_with("greeting Regular")), "{entries:#?}");
    // Stacked on the base as a new image (an OCI layout of the base's layer and this one): the
    // step's change is there, the base is unchanged.
    let step_layer = std::fs::read(&blob).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&step_layer[..]), &mut raw).unwrap();
    assert_eq!(sha(&raw), l.diff_id);
    let lay2 = layout(&d.path().join("two"), &[busybox_layer(), raw], &["/bin/sh", "-c", "cat /greeting; ls /bin/true"]);
    let two = store.import(&lay2, "built:1").unwrap();
    assert_eq!(two.layers.len(), 2);
    assert_eq!(two.layers[0], base.layers[0]);
    let o = in_store(Sandbox::new().image("built:1").stdout(cagette::Stdio::Piped).stderr(cagette::Stdio::Piped)).output().unwrap();
    assert_eq!(stdout(&o), "built\n", "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(o.status, Verdict::Exited(0), "/bin/true was removed by the step");
    // Bad values: one without the other, or without an image.
    let e = in_store(Sandbox::new().image("base:1").command("true")).spec().clone();
    let mut half = e.clone();
    half.image_upper = Some(upper.clone());
    assert!(Sandbox::from_spec(half).output().unwrap_err().to_string().contains("both image_upper and image_work"));
    let mut in_the_store = e.clone();
    in_the_store.image_upper = Some(store_dir.join("layers"));
    in_the_store.image_work = Some(work.clone());
    let err = Sandbox::from_spec(in_the_store).output().unwrap_err().to_string();
    assert!(err.contains("outside the image store"), "{err}");
    let mut no_image = e;
    no_image.image = None;
    no_image.image_upper = Some(upper.clone());
    no_image.image_work = Some(work.clone());
    assert!(Sandbox::from_spec(no_image).output().unwrap_err().to_string().contains("image_upper needs an image"));
}
