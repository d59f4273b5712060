//! OCI images: import from an OCI image layout, verify, unpack each layer once into a
//! content-addressed store, list, remove, garbage-collect, and unpack to a flat rootfs.
//!
//! ```no_run
//! use cagette::ImageStore;
//! let store = ImageStore::open(ImageStore::default_dir())?;
//! let image = store.import("./alpine-oci".as_ref(), "alpine:3")?;
//! println!("{} layers", image.layers.len());
//! store.unpack("alpine:3", "./rootfs".as_ref())?;
//! # Ok::<(), cagette::ImageError>(())
//! ```
//!
//! Layout of a store: `layers/sha256/<diff_id>/` (one unpacked layer, overlay-ready),
//! `images/<name>.json` (what an image is made of), `tmp/` (staging; committed by rename only
//! after both digests verified), `locks/` (one file lock per layer: two processes importing the
//! same layer do the work once).

mod apply;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Errors of the image code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The input is not a valid image (bad JSON, missing field, unknown media type, ...).
    #[error("invalid image: {0}")]
    Invalid(String),
    /// A blob's size or digest, or a layer's diff_id, did not match.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        /// What was being verified.
        what: String,
        /// The digest the image claims.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// A tar entry that would escape the root or is malformed.
    #[error("unsafe layer entry {path}: {why}")]
    UnsafeEntry {
        /// The entry's name in the tar.
        path: PathBuf,
        /// Why it was refused.
        why: String,
    },
    /// A configured bound was exceeded.
    #[error("limit exceeded: {0} (see image limits)")]
    Limit(String),
    /// The tar stream could not be read.
    #[error("malformed layer: {0}")]
    Tar(String),
    /// No image by that name.
    #[error("no image named {0:?} in the store (see `cagette image ls`)")]
    NotFound(String),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    fn unsafe_entry(path: &Path, why: &str) -> ImageError {
        ImageError::UnsafeEntry { path: path.to_path_buf(), why: why.to_string() }
    }
    fn limit(what: String) -> ImageError {
        ImageError::Limit(what)
    }
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let c = context.into();
        move |source| ImageError::Io { context: c, source }
    }
}

/// Bounds on untrusted input.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Uncompressed bytes of one layer.
    pub max_layer_bytes: u64,
    /// Entries in one layer.
    pub max_entries: u64,
    /// Bytes of an entry's path.
    pub max_path: usize,
    /// Bytes of a JSON document (index, manifest, config).
    pub max_json: u64,
    /// Layers in one image.
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_layer_bytes: 16 << 30, max_entries: 2_000_000, max_path: 4096, max_json: 4 << 20, max_layers: 256 }
    }
}

/// What an image is made of, as the store records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `name:tag`.
    pub name: String,
    /// Digest of the manifest.
    pub manifest: String,
    /// Digest of the config.
    pub config_digest: String,
    /// Layer diff_ids, bottom first.
    pub layers: Vec<String>,
    /// The runtime part of the config.
    pub config: RunConfig,
}

/// The image config's runtime settings (`config` in the OCI image config).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RunConfig {
    /// ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    pub cmd: Option<Vec<String>>,
    /// ENV, as K=V.
    pub env: Option<Vec<String>>,
    /// WORKDIR.
    pub working_dir: Option<String>,
    /// USER.
    pub user: Option<String>,
}

/// A store of images. See the module docs.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    limits: Limits,
}

const LAYOUT_MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Checks `sha256:<64 lowercase hex>`; returns the hex part.
fn digest_hex(d: &str) -> Result<&str, ImageError> {
    let hex = d.strip_prefix("sha256:").ok_or_else(|| ImageError::Invalid(format!("unsupported digest {d:?}: only sha256 is supported")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ImageError::Invalid(format!("malformed digest {d:?}: expected sha256: and 64 lowercase hex digits")));
    }
    Ok(hex)
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// Hashes and counts what passes through, refusing more than `limit` bytes.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(format!("more than {} bytes", self.limit)));
        }
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R, limit: u64) -> Self {
        Hashing { inner, hasher: Sha256::new(), count: 0, limit }
    }
    fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A file-name-safe form of an image name.
fn name_file(name: &str) -> Result<String, ImageError> {
    if name.is_empty() || name.len() > 255 || name.contains('/') && name.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(ImageError::Invalid(format!("invalid image name {name:?}")));
    }
    Ok(name.bytes().map(|b| if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' { (b as char).to_string() } else { format!("%{b:02x}") }).collect())
}

impl ImageStore {
    /// The default store: `$CAGETTE_STORE`, else `/var/lib/cagette` as root, else
    /// `~/.local/share/cagette`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("CAGETTE_STORE") {
            return d.into();
        }
        if unsafe { libc::geteuid() } == 0 {
            return "/var/lib/cagette".into();
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into());
        home.join(".local/share/cagette")
    }

    /// Opens (creating) a store.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ImageStore, ImageError> {
        let root = dir.into();
        for d in ["layers/sha256", "images", "tmp", "locks"] {
            fs::create_dir_all(root.join(d)).map_err(ImageError::io(format!("create the image store at {}", root.display())))?;
        }
        Ok(ImageStore { root, limits: Limits::default() })
    }

    /// Replaces the bounds on untrusted input.
    pub fn with_limits(mut self, limits: Limits) -> ImageStore {
        self.limits = limits;
        self
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &Path, what: &str) -> Result<T, ImageError> {
        let f = fs::File::open(path).map_err(ImageError::io(format!("open the {what} {}", path.display())))?;
        let mut buf = Vec::new();
        f.take(self.limits.max_json + 1).read_to_end(&mut buf).map_err(ImageError::io(format!("read the {what}")))?;
        if buf.len() as u64 > self.limits.max_json {
            return Err(ImageError::limit(format!("the {what} is larger than {} bytes", self.limits.max_json)));
        }
        serde_json::from_slice(&buf).map_err(|e| ImageError::Invalid(format!("the {what} {}: {e}", path.display())))
    }

    /// Reads a blob of an OCI layout, checking its size and digest.
    fn blob(&self, layout: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
        let hex = digest_hex(&d.digest)?;
        if d.size > self.limits.max_json {
            return Err(ImageError::limit(format!("the {what} is larger than {} bytes", self.limits.max_json)));
        }
        let path = layout.join("blobs/sha256").join(hex);
        let f = fs::File::open(&path).map_err(ImageError::io(format!("open the {what} blob {}", path.display())))?;
        let mut h = Hashing::new(f, d.size);
        let mut buf = Vec::new();
        h.read_to_end(&mut buf).map_err(|e| ImageError::Invalid(format!("the {what} blob {}: {e}", path.display())))?;
        verify(&h, d, what)?;
        Ok(buf)
    }

    fn pick_manifest(&self, layout: &Path, index: Index, depth: usize) -> Result<Descriptor, ImageError> {
        if depth > 4 {
            return Err(ImageError::Invalid("image indexes nested more than 4 deep".into()));
        }
        let mut fallback = None;
        for m in index.manifests {
            let matches = m.platform.as_ref().is_none_or(|p| p.os == "linux" && p.architecture == go_arch() && (go_arch() != "arm64" || p.variant.as_deref().is_none_or(|v| v == "v8")));
            if !matches {
                continue;
            }
            if m.media_type == LAYOUT_MEDIA_INDEX || m.media_type == DOCKER_LIST {
                let bytes = self.blob(layout, &m, "nested index")?;
                let nested: Index = serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid(format!("a nested index: {e}")))?;
                return self.pick_manifest(layout, nested, depth + 1);
            }
            if m.platform.is_some() {
                return Ok(m);
            }
            fallback.get_or_insert(m);
        }
        fallback.ok_or_else(|| ImageError::Invalid(format!("no manifest for linux/{} in the index", go_arch())))
    }

    /// Imports an image as `name` (`name:tag`): an OCI image layout directory, or a `docker
    /// save` archive (a tar file). Verifies every blob and layer; unpacks the layers the store
    /// does not have yet.
    pub fn import(&self, layout: &Path, name: &str) -> Result<ImageInfo, ImageError> {
        if layout.is_file() {
            return self.import_docker_archive(layout, name);
        }
        let file = name_file(name)?;
        if !layout.join("oci-layout").is_file() {
            return Err(ImageError::Invalid(format!("{} is not an OCI image layout (no oci-layout file)", layout.display())));
        }
        let index: Index = self.read_json(&layout.join("index.json"), "index.json")?;
        let mdesc = self.pick_manifest(layout, index, 0)?;
        let manifest: Manifest = serde_json::from_slice(&self.blob(layout, &mdesc, "manifest")?).map_err(|e| ImageError::Invalid(format!("the manifest: {e}")))?;
        let config: ConfigFile = serde_json::from_slice(&self.blob(layout, &manifest.config, "config")?).map_err(|e| ImageError::Invalid(format!("the config: {e}")))?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(ImageError::Invalid(format!("{} layers but {} diff_ids", manifest.layers.len(), config.rootfs.diff_ids.len())));
        }
        if manifest.layers.len() > self.limits.max_layers {
            return Err(ImageError::limit(format!("{} layers (limit {})", manifest.layers.len(), self.limits.max_layers)));
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            self.import_layer(layout, layer, diff_id)?;
        }
        let info = ImageInfo { name: name.to_string(), manifest: mdesc.digest.clone(), config_digest: manifest.config.digest.clone(), layers: config.rootfs.diff_ids.clone(), config: config.config.unwrap_or_default() };
        self.commit_record(&file, &info)?;
        Ok(info)
    }

    /// A `docker save` archive: extracted (safely) into staging, then its manifest.json is
    /// followed; layer paths resolve inside the staging directory only.
    fn import_docker_archive(&self, archive: &Path, name: &str) -> Result<ImageInfo, ImageError> {
        let file = name_file(name)?;
        let staging = self.root.join("tmp").join(format!("archive-{}-{}", std::process::id(), file));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).map_err(ImageError::io("create a staging directory"))?;
        let r = (|| {
            let f = fs::File::open(archive).map_err(ImageError::io(format!("open {}", archive.display())))?;
            apply::apply(&staging, BufReader::new(f), apply::Mode::Flatten, &self.limits)?;
            if staging.join("oci-layout").is_file() {
                // Newer docker writes an OCI layout inside its archive.
                return self.import(&staging, name);
            }
            #[derive(Deserialize)]
            struct Entry {
                #[serde(rename = "Config")]
                config: String,
                #[serde(rename = "Layers")]
                layers: Vec<String>,
            }
            let entries: Vec<Entry> = self.read_json(&staging.join("manifest.json"), "docker manifest.json")?;
            let e = entries.into_iter().next().ok_or_else(|| ImageError::Invalid("manifest.json lists no image".into()))?;
            let inside = |p: &str| -> Result<PathBuf, ImageError> { Ok(staging.join(apply::clean(Path::new(p), &self.limits)?)) };
            let config_path = inside(&e.config)?;
            let config_bytes = fs::read(&config_path).map_err(ImageError::io(format!("read the config {}", e.config)))?;
            let config_digest = format!("sha256:{}", hex(&Sha256::digest(&config_bytes)));
            let stem = Path::new(&e.config).file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem.len() == 64 && config_digest[7..] != *stem {
                return Err(ImageError::Digest { what: format!("the config {}", e.config), expected: format!("sha256:{stem}"), actual: config_digest });
            }
            let config: ConfigFile = serde_json::from_slice(&config_bytes).map_err(|e| ImageError::Invalid(format!("the config: {e}")))?;
            if e.layers.len() != config.rootfs.diff_ids.len() {
                return Err(ImageError::Invalid(format!("{} layers but {} diff_ids", e.layers.len(), config.rootfs.diff_ids.len())));
            }
            for (layer, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
                let path = inside(layer)?;
                let size = fs::symlink_metadata(&path).map_err(ImageError::io(format!("find layer {layer}")))?.len();
                // A docker layer is named by where it is, not by a digest: the diff_id check below
                // is what verifies it. Hand it to the common path as a pseudo-descriptor.
                let digest = format!("sha256:{}", hex(&Sha256::digest(fs::read(&path).map_err(ImageError::io(format!("read layer {layer}")))?)));
                let blob_dir = staging.join("blobs/sha256");
                fs::create_dir_all(&blob_dir).map_err(ImageError::io("arrange layers"))?;
                let _ = fs::rename(&path, blob_dir.join(&digest[7..]));
                self.import_layer(&staging, &Descriptor { media_type: String::new(), digest, size, platform: None }, diff_id)?;
            }
            let info = ImageInfo { name: name.to_string(), manifest: config_digest.clone(), config_digest, layers: config.rootfs.diff_ids.clone(), config: config.config.unwrap_or_default() };
            self.commit_record(&file, &info)?;
            Ok(info)
        })();
        let _ = fs::remove_dir_all(&staging);
        r
    }

    fn commit_record(&self, file: &str, info: &ImageInfo) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp").join(format!("{file}.{}.json", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(info).unwrap_or_default()).map_err(ImageError::io("write the image record"))?;
        fs::rename(&tmp, self.root.join("images").join(format!("{file}.json"))).map_err(ImageError::io("commit the image record"))
    }

    /// The directory of an unpacked layer.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers/sha256").join(digest_hex(diff_id)?))
    }

    fn import_layer(&self, layout: &Path, d: &Descriptor, diff_id: &str) -> Result<(), ImageError> {
        let hex = digest_hex(diff_id)?.to_string();
        let dest = self.layer_dir(diff_id)?;
        if dest.is_dir() {
            return Ok(());
        }
        // One process does the work; the others wait on the lock and find it done.
        let lock = fs::File::options().create(true).truncate(false).write(true).open(self.root.join("locks").join(&hex)).map_err(ImageError::io("open a layer lock"))?;
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ImageError::io("lock a layer")(io::Error::last_os_error()));
        }
        if dest.is_dir() {
            return Ok(());
        }
        let staging = self.root.join("tmp").join(format!("layer-{hex}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir(&staging).map_err(ImageError::io("create a staging directory"))?;
        let r = self.unpack_blob(layout, d, diff_id, &staging, apply::Mode::Overlay);
        if let Err(e) = r {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        fs::rename(&staging, &dest).map_err(ImageError::io("commit a layer"))?;
        Ok(())
    }

    /// Decompresses, applies and verifies one layer blob (blob digest and diff_id).
    fn unpack_blob(&self, layout: &Path, d: &Descriptor, diff_id: &str, dest: &Path, mode: apply::Mode) -> Result<(), ImageError> {
        let hex = digest_hex(&d.digest)?;
        let path = layout.join("blobs/sha256").join(hex);
        let f = fs::File::open(&path).map_err(ImageError::io(format!("open the layer blob {}", path.display())))?;
        let mut blob = Hashing::new(BufReader::with_capacity(1 << 20, f), d.size);
        let mut magic = [0u8; 4];
        let n = read_full(&mut blob, &mut magic).map_err(ImageError::io("read a layer"))?;
        let head = io::Cursor::new(magic[..n].to_vec());
        let stream = head.chain(&mut blob);
        let gz = magic[..2] == [0x1f, 0x8b];
        let zst = magic == [0x28, 0xb5, 0x2f, 0xfd];
        let mt = d.media_type.as_str();
        if (mt.ends_with("+gzip") || mt.ends_with(".tar.gzip")) && !gz || mt.ends_with("+zstd") && !zst {
            return Err(ImageError::Invalid(format!("layer {}: media type {mt} but the data is not in that format", d.digest)));
        }
        let decoded: Box<dyn Read + '_> = if gz {
            Box::new(flate2::read::GzDecoder::new(stream))
        } else if zst {
            Box::new(zstd::stream::read::Decoder::new(stream).map_err(ImageError::io("start zstd"))?)
        } else {
            Box::new(stream)
        };
        let mut tar_stream = Hashing::new(decoded, self.limits.max_layer_bytes);
        let applied = apply::apply(dest, &mut tar_stream, mode, &self.limits);
        // The counting reader refused to go past the limit: that, not the tar error it caused,
        // is what to report.
        if tar_stream.count > self.limits.max_layer_bytes {
            return Err(ImageError::limit(format!("layer {} decompresses to more than {} bytes", d.digest, self.limits.max_layer_bytes)));
        }
        applied?;
        // Hash to the end: the diff_id covers the whole uncompressed stream.
        io::copy(&mut tar_stream, &mut io::sink()).map_err(|e| ImageError::Tar(format!("layer {}: {e}", d.digest)))?;
        let actual = tar_stream.digest();
        drop(tar_stream);
        io::copy(&mut blob, &mut io::sink()).map_err(|e| ImageError::Tar(format!("layer {}: {e}", d.digest)))?;
        verify(&blob, d, "layer blob")?;
        if actual != diff_id {
            return Err(ImageError::Digest { what: format!("the uncompressed layer {}", d.digest), expected: diff_id.to_string(), actual });
        }
        Ok(())
    }

    /// The images in the store.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("images")).map_err(ImageError::io("list images"))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                out.push(self.read_json(&e.path(), "image record")?);
            }
        }
        out.sort_by(|a: &ImageInfo, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One image by name.
    pub fn get(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let p = self.root.join("images").join(format!("{}.json", name_file(name)?));
        if !p.is_file() {
            return Err(ImageError::NotFound(name.to_string()));
        }
        self.read_json(&p, "image record")
    }

    /// Removes an image's record (its layers stay until `gc`).
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        let p = self.root.join("images").join(format!("{}.json", name_file(name)?));
        fs::remove_file(&p).map_err(|e| if e.kind() == io::ErrorKind::NotFound { ImageError::NotFound(name.to_string()) } else { ImageError::io("remove the image record")(e) })
    }

    /// Removes layers no image refers to; returns how many.
    pub fn gc(&self) -> Result<usize, ImageError> {
        let used: std::collections::HashSet<String> = self.list()?.into_iter().flat_map(|i| i.layers).filter_map(|d| digest_hex(&d).ok().map(str::to_string)).collect();
        let mut removed = 0;
        for e in fs::read_dir(self.root.join("layers/sha256")).map_err(ImageError::io("list layers"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !used.contains(&name) {
                fs::remove_dir_all(e.path()).map_err(ImageError::io(format!("remove layer {name}")))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes an image's layers, in order, into `dest` as one flat rootfs (whiteouts delete).
    pub fn unpack(&self, name: &str, dest: &Path) -> Result<(), ImageError> {
        let info = self.get(name)?;
        fs::create_dir_all(dest).map_err(ImageError::io(format!("create {}", dest.display())))?;
        for diff_id in &info.layers {
            let dir = self.layer_dir(diff_id)?;
            // Re-apply from the unpacked layer: walk it as a tar stream of its own files.
            let mut buf = Vec::new();
            {
                let mut b = tar::Builder::new(&mut buf);
                b.follow_symlinks(false);
                b.append_dir_all(".", &dir).map_err(ImageError::io(format!("read layer {diff_id}")))?;
                b.finish().map_err(ImageError::io("read a layer"))?;
            }
            apply::clear_opaque_dirs(&dir, dest)?;
            apply::apply(dest, io::Cursor::new(buf), apply::Mode::Flatten, &self.limits)?;
        }
        Ok(())
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn verify<R>(h: &Hashing<R>, d: &Descriptor, what: &str) -> Result<(), ImageError> {
    let actual = h.digest();
    if h.count != d.size {
        return Err(ImageError::Digest { what: format!("the size of the {what} {}", d.digest), expected: d.size.to_string(), actual: h.count.to_string() });
    }
    if actual != d.digest {
        return Err(ImageError::Digest { what: format!("the {what}"), expected: d.digest.clone(), actual });
    }
    Ok(())
}
