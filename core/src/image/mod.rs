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
mod build;
mod gz;
mod layer;
pub use build::{BuildError, BuildEvent, BuildOptions, OptionsError};
pub use layer::{write_layer, WrittenLayer};
#[cfg(feature = "registry")]
mod registry;
#[cfg(feature = "registry")]
mod registries_conf;
#[cfg(feature = "registry")]
pub use registry::{credentials_for, login, ImageReference, PullOptions};
#[cfg(feature = "registry")]
pub use registries_conf::RegistriesConf;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;
use nix::fcntl::{FlockArg, OFlag};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

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
    /// The import was cancelled (its progress callback returned `ControlFlow::Break`): the image
    /// is not recorded and no staging stays; layers that were complete before the cancel stay
    /// in the store, unreferenced, until `gc` (another import may use them).
    #[error("import cancelled")]
    Cancelled,
    /// No image by that name.
    #[error("no image named {0:?} in the store (see `cagette image ls`)")]
    NotFound(String),
    /// The image store's file system is full (or the user's quota reached) while importing.
    #[error("the image store {} is full while writing {layer}: {context}: {source}", store.display())]
    StoreFull {
        /// The store's directory.
        store: PathBuf,
        /// Which layer was being written.
        layer: String,
        /// What was being written.
        context: String,
        /// The underlying error (ENOSPC or EDQUOT).
        #[source]
        source: std::io::Error,
    },
    /// A registry could not be reached, refused a request, or answered something unusable.
    #[error("registry {registry}: {what}: {why}")]
    Registry {
        /// The registry (`host[:port]`).
        registry: String,
        /// What was being done.
        what: String,
        /// Why it failed, and what to do (never a secret).
        why: String,
    },
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
    /// Uncompressed bytes of all the layers of one image.
    pub max_image_bytes: u64,
    /// Bytes of one PAX extended header or GNU long name (names, link targets, xattrs).
    pub max_header: usize,
    /// Bytes of memory that applying one layer may keep until its end (the paths it wrote,
    /// its directories' metadata and xattrs, applied last).
    pub max_kept_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_layer_bytes: 16 << 30, max_entries: 2_000_000, max_path: 4096, max_json: 4 << 20, max_layers: 256, max_image_bytes: 64 << 30, max_header: 1 << 20, max_kept_bytes: 256 << 20 }
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
    /// The config's USER resolved against the image's own /etc/passwd and /etc/group at
    /// import: (uid, gid). None when the image names no user, or a name its files lack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<(u32, u32)>,
    /// What the import could not keep, and why (for example device nodes or file capabilities
    /// when imported without root). Empty for an exact import.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How far an import is, passed to the callback of [`ImageStore::import_with`] before any
/// work, about ten times a second, and once at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Layers the store did not have yet (what this import unpacks).
    pub layers: usize,
    /// Of those, how many are done.
    pub layers_done: usize,
    /// Compressed bytes of those layers.
    pub bytes: u64,
    /// Of those, how many were read so far.
    pub bytes_done: u64,
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

/// How [`ImageStore::export`] writes an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// An OCI image layout directory (`skopeo copy oci:DIR …`, `podman pull oci:DIR`).
    Oci,
    /// A `docker save` archive, one tar file (`docker load`, `podman load`).
    DockerArchive,
}

/// A store of images. See the module docs.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    limits: Limits,
    keep_blobs: bool,
}

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Checks `sha256:<64 lowercase hex>`; returns the hex part.
fn digest_hex(d: &str) -> Result<&str, ImageError> {
    let hex = d.strip_prefix("sha256:").ok_or_else(|| ImageError::Invalid(format!("unsupported digest {d:?}: only sha256 is supported")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ImageError::Invalid(format!("malformed digest {d:?}: expected sha256: and 64 lowercase hex digits")));
    }
    Ok(hex)
}

/// A blob's expected digest and size, from a descriptor.
struct Expected<'a> {
    digest: &'a str,
    size: u64,
}

impl<'a> Expected<'a> {
    fn of(d: &'a Descriptor, digest: &'a str) -> Self {
        Expected { digest, size: d.size() }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Invalid(format!("the {what}: {e}")))
}

/// The runtime settings of an image config, as cagette keeps them.
fn run_config(config: &ImageConfiguration) -> RunConfig {
    config.config().as_ref().map_or_else(RunConfig::default, |c| RunConfig {
        entrypoint: c.entrypoint().clone(),
        cmd: c.cmd().clone(),
        env: c.env().clone(),
        working_dir: c.working_dir().clone(),
        user: c.user().clone(),
    })
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
        if nix::unistd::geteuid().is_root() {
            return "/var/lib/cagette".into();
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into());
        home.join(".local/share/cagette")
    }

    /// Opens (creating) a store.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ImageStore, ImageError> {
        let root: PathBuf = dir.into();
        // Private to its owner: layers hold the images' files with their owners and modes
        // (setuid binaries, device nodes as root), and the locks must not be taken by others.
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&root).map_err(ImageError::io(format!("create the image store at {}", root.display())))?;
        for d in ["layers", "layers/sha256", "images", "tmp", "locks", "blobs", "blobs/sha256"] {
            let p = root.join(d);
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&p).map_err(ImageError::io(format!("create the image store at {}", root.display())))?;
            if d != "images" && fs::metadata(&p).map(|m| m.permissions().mode() & 0o077 != 0).unwrap_or(false) {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).map_err(ImageError::io(format!("make {} private", p.display())))?;
            }
        }
        sweep_tmp(&root.join("tmp"));
        Ok(ImageStore { root, limits: Limits::default(), keep_blobs: false })
    }

    /// Keeps, besides the unpacked layers, the exact bytes of what imports and pulls verify —
    /// the manifest, the config and each compressed layer blob — under `blobs/sha256/`, so
    /// that the image can be pushed ([`push`](Self::push)) or exported
    /// ([`export`](Self::export)) with the same digests. Costs the compressed size on disk.
    /// Images from a `docker save` archive or a plain layer tar have no manifest to keep:
    /// importing one with blobs kept is an error.
    ///
    /// ```no_run
    /// let store = cagette::ImageStore::open("/tmp/store")?.keep_blobs(true);
    /// store.import("./alpine-oci".as_ref(), "alpine:3")?;
    /// store.export("alpine:3", "./alpine-copy".as_ref(), cagette::ExportFormat::Oci)?;
    /// # Ok::<(), cagette::ImageError>(())
    /// ```
    pub fn keep_blobs(mut self, keep: bool) -> ImageStore {
        self.keep_blobs = keep;
        self
    }

    /// Where a kept blob is.
    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Keeps `bytes` (already verified to be `digest`) as a blob: written beside, renamed in.
    fn keep_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(format!("{}-blob-{}", std::process::id(), unique()));
        fs::write(&tmp, bytes).map_err(ImageError::io(format!("keep the blob {digest}")))?;
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::Io { context: format!("keep the blob {digest}"), source: e }
        })
    }

    /// Replaces the bounds on untrusted input.
    pub fn with_limits(mut self, limits: Limits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// All of a JSON document (or a config, hashed as read), at most `max_json` bytes.
    fn read_bounded(&self, f: fs::File, what: &str) -> Result<Vec<u8>, ImageError> {
        let mut buf = Vec::new();
        f.take(self.limits.max_json + 1).read_to_end(&mut buf).map_err(ImageError::io(format!("read the {what}")))?;
        if buf.len() as u64 > self.limits.max_json {
            return Err(ImageError::limit(format!("the {what} is larger than {} bytes", self.limits.max_json)));
        }
        Ok(buf)
    }

    /// One of the store's own JSON records.
    fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &Path, what: &str) -> Result<T, ImageError> {
        let f = fs::File::open(path).map_err(ImageError::io(format!("open the {what} {}", path.display())))?;
        serde_json::from_slice(&self.read_bounded(f, what)?).map_err(|e| ImageError::Invalid(format!("the {what} {}: {e}", path.display())))
    }

    /// A JSON document inside an image layout or archive (see [`open_inside`]).
    fn read_json_inside<T: for<'de> Deserialize<'de>>(&self, root: &Path, rel: &str, what: &str) -> Result<T, ImageError> {
        let buf = self.read_bounded(open_inside(root, Path::new(rel), what)?, what)?;
        serde_json::from_slice(&buf).map_err(|e| ImageError::Invalid(format!("the {what}: {e}")))
    }

    /// Reads a blob of an OCI layout, checking its size and digest.
    fn blob(&self, layout: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
        let digest = d.digest().to_string();
        let hex = digest_hex(&digest)?;
        if d.size() > self.limits.max_json {
            return Err(ImageError::limit(format!("the {what} is larger than {} bytes", self.limits.max_json)));
        }
        let path = layout.join("blobs/sha256").join(hex);
        let f = open_inside(layout, &Path::new("blobs/sha256").join(hex), &format!("{what} blob"))?;
        let mut h = Hashing::new(f, d.size());
        let mut buf = Vec::new();
        h.read_to_end(&mut buf).map_err(|e| ImageError::Invalid(format!("the {what} blob {}: {e}", path.display())))?;
        verify(&h, &Expected::of(d, &digest), what)?;
        Ok(buf)
    }

    fn pick_manifest(&self, layout: &Path, index: ImageIndex, depth: usize) -> Result<Descriptor, ImageError> {
        if depth > 4 {
            return Err(ImageError::Invalid("image indexes nested more than 4 deep".into()));
        }
        let mut fallback = None;
        for m in index.manifests() {
            let matches = m.platform().as_ref().is_none_or(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == go_arch() && (go_arch() != "arm64" || p.variant().as_deref().is_none_or(|v| v == "v8"))
            });
            if !matches {
                continue;
            }
            let nested = match m.media_type() {
                MediaType::ImageIndex => true,
                MediaType::Other(t) => t == DOCKER_LIST,
                _ => false,
            };
            if nested {
                let nested: ImageIndex = parse_json(&self.blob(layout, m, "nested index")?, "nested index")?;
                return self.pick_manifest(layout, nested, depth + 1);
            }
            if m.platform().is_some() {
                return Ok(m.clone());
            }
            fallback.get_or_insert_with(|| m.clone());
        }
        fallback.ok_or_else(|| ImageError::Invalid(format!("no manifest for linux/{} in the index", go_arch())))
    }

    /// Imports an image as `name` (`name:tag`): an OCI image layout directory, a `docker save`
    /// archive (a tar file with manifest.json), or a plain layer tar (gzip, zstd or
    /// uncompressed; the image is that one layer with an empty config). Verifies every blob
    /// and layer; unpacks the layers the store does not have yet, in parallel.
    pub fn import(&self, src: &Path, name: &str) -> Result<ImageInfo, ImageError> {
        self.import_with(src, name, &mut |_| ControlFlow::Continue(()))
    }

    /// [`import`](Self::import), calling `progress` from the calling thread once before any
    /// work (with the totals), about ten times a second, and once at the end; returning
    /// `ControlFlow::Break(())` cancels the import ([`ImageError::Cancelled`]).
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// let store = cagette::ImageStore::open("/tmp/store")?;
    /// store.import_with("./alpine-oci".as_ref(), "alpine:3", &mut |p| {
    ///     eprintln!("{}/{} layers, {} of {} bytes", p.layers_done, p.layers, p.bytes_done, p.bytes);
    ///     ControlFlow::Continue(())
    /// })?;
    /// # Ok::<(), cagette::ImageError>(())
    /// ```
    pub fn import_with(&self, src: &Path, name: &str, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<ImageInfo, ImageError> {
        let file = name_file(name)?;
        // Imports share the store; gc waits for them (it could remove a layer an import found
        // already there before the import records its image).
        let _shared = self.store_lock(FlockArg::LockShared)?;
        // A FIFO or a device would hang or never end: a directory or a regular file only.
        let md = fs::metadata(src).map_err(ImageError::io(format!("read {}", src.display())))?;
        if !(md.is_dir() || md.is_file()) {
            return Err(ImageError::Invalid(format!("{} is neither a directory (an OCI layout) nor a regular file (an archive or a layer)", src.display())));
        }
        if src.is_dir() {
            let parsed = self.parse_layout(src)?;
            return self.import_parsed(parsed, name, &file, progress);
        }
        match sniff(src)? {
            Sniffed::Archive => self.import_docker_archive(src, name, &file, progress),
            Sniffed::Layer => {
                let size = fs::metadata(src).map_err(ImageError::io(format!("read {}", src.display())))?.len();
                let layer = LayerSrc { src: Src::File(src.to_path_buf()), media_type: String::new(), digest: None, size, diff_id: None };
                self.import_parsed(Parsed { layers: vec![layer], manifest: None, config_digest: None, config: RunConfig::default(), manifest_bytes: None, config_bytes: None }, name, &file, progress)
            }
        }
    }

    /// Reads an OCI image layout: index, platform, manifest, config (each verified).
    fn parse_layout(&self, layout: &Path) -> Result<Parsed, ImageError> {
        if open_inside(layout, Path::new("oci-layout"), "oci-layout").is_err() {
            return Err(ImageError::Invalid(format!("{} is not an OCI image layout (no oci-layout file)", layout.display())));
        }
        let index: ImageIndex = self.read_json_inside(layout, "index.json", "index.json")?;
        let mdesc = self.pick_manifest(layout, index, 0)?;
        let manifest_bytes = self.blob(layout, &mdesc, "manifest")?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, "manifest")?;
        let config_bytes = self.blob(layout, manifest.config(), "config")?;
        let config: ImageConfiguration = parse_json(&config_bytes, "config")?;
        let diff_ids = config.rootfs().diff_ids();
        if manifest.layers().len() != diff_ids.len() {
            return Err(ImageError::Invalid(format!("{} layers but {} diff_ids", manifest.layers().len(), diff_ids.len())));
        }
        let mut layers = Vec::new();
        for (d, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = d.digest().to_string();
            let src = Src::Inside(layout.to_path_buf(), Path::new("blobs/sha256").join(digest_hex(&digest)?));
            layers.push(LayerSrc { src, media_type: d.media_type().to_string(), digest: Some(digest), size: d.size(), diff_id: Some(diff_id.clone()) });
        }
        Ok(Parsed { layers, manifest: Some(mdesc.digest().to_string()), config_digest: Some(manifest.config().digest().to_string()), config: run_config(&config), manifest_bytes: Some(manifest_bytes), config_bytes: Some(config_bytes) })
    }

    /// Unpacks what the store lacks, resolves the user, commits the record.
    fn import_parsed(&self, parsed: Parsed, name: &str, file: &str, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<ImageInfo, ImageError> {
        if parsed.layers.len() > self.limits.max_layers {
            return Err(ImageError::limit(format!("{} layers (limit {})", parsed.layers.len(), self.limits.max_layers)));
        }
        for l in &parsed.layers {
            if let Some(d) = &l.diff_id {
                digest_hex(d)?;
            }
            if let Some(d) = &l.digest {
                digest_hex(d)?;
            }
        }
        if self.keep_blobs {
            let (Some(m), Some(c), Some(md), Some(cd)) = (&parsed.manifest_bytes, &parsed.config_bytes, &parsed.manifest, &parsed.config_digest) else {
                return Err(ImageError::Invalid("keeping blobs needs an image with a manifest (an OCI layout or a registry): a `docker save` archive or a plain layer tar has none to push or export".into()));
            };
            if parsed.layers.iter().any(|l| l.digest.is_none()) {
                return Err(ImageError::Invalid("keeping blobs needs every layer's digest".into()));
            }
            self.keep_blob(md, m)?;
            self.keep_blob(cd, c)?;
        }
        let (diff_ids, notes) = self.unpack_layers(&parsed.layers, progress)?;
        let config_digest = match parsed.config_digest {
            Some(d) => d,
            None => {
                let synth = serde_json::json!({ "rootfs": { "type": "layers", "diff_ids": diff_ids } });
                format!("sha256:{}", hex(&Sha256::digest(synth.to_string())))
            }
        };
        let dirs: Vec<PathBuf> = diff_ids.iter().rev().map(|d| self.layer_dir(d)).collect::<Result<_, _>>()?;
        let user_ids = parsed.config.user.as_deref().filter(|u| !u.is_empty()).and_then(|u| resolve_user(u, &dirs));
        let info = ImageInfo { name: name.to_string(), manifest: parsed.manifest.unwrap_or_else(|| config_digest.clone()), config_digest, layers: diff_ids, config: parsed.config, user_ids, notes };
        self.commit_record(file, &info)?;
        Ok(info)
    }

    /// A `docker save` archive: extracted (safely) into staging, then its manifest.json is
    /// followed; layer paths resolve inside the staging directory only.
    fn import_docker_archive(&self, archive: &Path, name: &str, file: &str, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<ImageInfo, ImageError> {
        let staging = Staging::new(self.root.join("tmp").join(format!("{}-archive-{}-{file}", std::process::id(), unique())))?;
        let f = fs::File::open(archive).map_err(ImageError::io(format!("open {}", archive.display())))?;
        apply::apply(&staging.0, BufReader::new(f), apply::Mode::Flatten, &self.limits, &AtomicBool::new(false))?;
        if open_inside(&staging.0, Path::new("oci-layout"), "oci-layout").is_ok() {
            // Newer docker writes an OCI layout inside its archive.
            let parsed = self.parse_layout(&staging.0)?;
            return self.import_parsed(parsed, name, file, progress);
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "Layers")]
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = self.read_json_inside(&staging.0, "manifest.json", "docker manifest.json")?;
        let e = entries.into_iter().next().ok_or_else(|| ImageError::Invalid("manifest.json lists no image".into()))?;
        // Paths of the manifest: resolved inside the extracted archive (its symlinks too),
        // regular files only.
        let inside = |p: &str| -> Result<PathBuf, ImageError> { apply::clean(Path::new(p), &self.limits) };
        let config_bytes = self.read_bounded(open_inside(&staging.0, &inside(&e.config)?, "config")?, "config")?;
        let config_digest = format!("sha256:{}", hex(&Sha256::digest(&config_bytes)));
        let stem = Path::new(&e.config).file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem.len() == 64 && config_digest[7..] != *stem {
            return Err(ImageError::Digest { what: format!("the config {}", e.config), expected: format!("sha256:{stem}"), actual: config_digest });
        }
        let config: ImageConfiguration = parse_json(&config_bytes, "config")?;
        let diff_ids = config.rootfs().diff_ids();
        if e.layers.len() != diff_ids.len() {
            return Err(ImageError::Invalid(format!("{} layers but {} diff_ids", e.layers.len(), diff_ids.len())));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in e.layers.iter().zip(diff_ids.iter().cloned()) {
            let rel = inside(layer)?;
            let size = open_inside(&staging.0, &rel, "layer")?.metadata().map_err(ImageError::io(format!("find layer {layer}")))?.len();
            // A docker layer is named by where it is, not by a digest: the diff_id is what
            // verifies it.
            layers.push(LayerSrc { src: Src::Inside(staging.0.clone(), rel), media_type: String::new(), digest: None, size, diff_id: Some(diff_id) });
        }
        let parsed = Parsed { layers, manifest: Some(config_digest.clone()), config_digest: Some(config_digest), config: run_config(&config), manifest_bytes: None, config_bytes: None };
        self.import_parsed(parsed, name, file, progress)
    }

    fn commit_record(&self, file: &str, info: &ImageInfo) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp").join(format!("{}-record-{}-{file}.json", std::process::id(), unique()));
        fs::write(&tmp, serde_json::to_vec_pretty(info).unwrap_or_default()).map_err(ImageError::io("write the image record"))?;
        fs::rename(&tmp, self.root.join("images").join(format!("{file}.json"))).map_err(ImageError::io("commit the image record"))
    }

    /// The directory of an unpacked layer.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers/sha256").join(digest_hex(diff_id)?))
    }

    /// Unpacks the layers the store lacks, up to one per CPU at a time, each in two threads
    /// (decompress and hash the blob / hash and apply the tar); reports progress from this
    /// thread. Returns the diff_ids (those of plain layers are learnt here) and the notes.
    fn unpack_layers(&self, layers: &[LayerSrc], progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let missing_blob = |l: &LayerSrc| self.keep_blobs && l.digest.as_ref().is_some_and(|d| self.blob_path(d).map(|p| !p.is_file()).unwrap_or(true));
        let mut todo: Vec<usize> = (0..layers.len()).filter(|&i| missing_blob(&layers[i]) || layers[i].diff_id.as_ref().is_none_or(|d| self.layer_dir(d).map(|p| !p.is_dir()).unwrap_or(true))).collect();
        // Largest first: the biggest layer is the critical path.
        todo.sort_by_key(|&i| std::cmp::Reverse(layers[i].size));
        let total: u64 = todo.iter().map(|&i| layers[i].size).sum();
        let job = Job { cancel: AtomicBool::new(false), bytes_done: AtomicU64::new(0), image_bytes: AtomicU64::new(0) };
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<LayerDone, ImageError>>>> = Mutex::new((0..todo.len()).map(|_| None).collect());
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(todo.len()).max(1);
        // A first report before any work: it gives the totals, and a cancel here costs nothing.
        if progress(&Progress { layers: todo.len(), layers_done: 0, bytes: total, bytes_done: 0 }).is_break() {
            return Err(ImageError::Cancelled);
        }
        let (done_tx, done_rx) = mpsc::channel::<bool>();
        let mut cancelled = false;
        std::thread::scope(|s| {
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let (job, next, results, todo) = (&job, &next, &results, &todo);
                s.spawn(move || {
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k >= todo.len() {
                            break;
                        }
                        let r = self.import_layer(layers, todo[k], job);
                        if r.is_err() {
                            job.cancel.store(true, Ordering::SeqCst);
                        }
                        if let Ok(mut v) = results.lock() {
                            v[k] = Some(r);
                        }
                        let _ = done_tx.send(false);
                    }
                    let _ = done_tx.send(true);
                });
            }
            drop(done_tx);
            let (mut finished, mut layers_done) = (0, 0);
            let report = |layers_done| Progress { layers: todo.len(), layers_done, bytes: total, bytes_done: job.bytes_done.load(Ordering::Relaxed).min(total) };
            while finished < workers {
                match done_rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Ok(true) => finished += 1,
                    Ok(false) => layers_done += 1,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if !cancelled && progress(&report(layers_done)).is_break() {
                    cancelled = true;
                    job.cancel.store(true, Ordering::SeqCst);
                }
            }
        });
        let results = results.into_inner().map_err(|_| ImageError::Invalid("a layer worker panicked".into()))?;
        // The first real error wins over the `Cancelled` that other workers report because of it.
        let mut done = std::collections::HashMap::new();
        let mut first_err = cancelled.then_some(ImageError::Cancelled);
        for (r, &i) in results.into_iter().zip(&todo) {
            match r {
                Some(Ok(d)) => {
                    done.insert(i, d);
                }
                Some(Err(ImageError::Cancelled)) | None => {
                    first_err.get_or_insert(ImageError::Cancelled);
                }
                Some(Err(e)) if matches!(first_err, None | Some(ImageError::Cancelled)) => first_err = Some(e),
                Some(Err(_)) => {}
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut diff_ids: Vec<String> = Vec::new();
        let mut notes = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            match (done.remove(&i), &l.diff_id) {
                (Some(d), _) => {
                    if let Some((staging, links)) = d.deferred {
                        // Bottom-up: every lower layer is in the store by now.
                        let lowers: Vec<PathBuf> = diff_ids.iter().rev().map(|d| self.layer_dir(d)).collect::<Result<_, _>>()?;
                        apply::resolve_lower_links(&staging.0, &lowers, &links, &self.limits)?;
                        staging.commit(&self.layer_dir(&d.diff_id)?)?;
                    }
                    notes.extend(d.notes);
                    diff_ids.push(d.diff_id);
                }
                (None, Some(d)) => diff_ids.push(d.clone()),
                (None, None) => return Err(ImageError::Invalid("a layer was not unpacked".into())),
            }
        }
        let _ = progress(&Progress { layers: todo.len(), layers_done: todo.len(), bytes: total, bytes_done: total });
        Ok((diff_ids, notes))
    }

    /// One layer: lock, unpack into staging, verify, resolve links to lower layers, commit.
    fn import_layer(&self, layers: &[LayerSrc], i: usize, job: &Job) -> Result<LayerDone, ImageError> {
        self.import_layer_inner(layers, i, job).map_err(|e| match e {
            // A full disk is the store's problem, not the image's: say which store and layer.
            ImageError::Io { context, source } if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
                let l = &layers[i];
                let which = l.digest.as_deref().or(l.diff_id.as_deref()).map(|d| format!(" ({d})")).unwrap_or_default();
                ImageError::StoreFull { store: self.root.clone(), layer: format!("layer {} of {}{which}", i + 1, layers.len()), context, source }
            }
            e => e,
        })
    }

    fn import_layer_inner(&self, layers: &[LayerSrc], i: usize, job: &Job) -> Result<LayerDone, ImageError> {
        let l = &layers[i];
        if let (true, Some(d), Some(digest)) = (self.keep_blobs, &l.diff_id, &l.digest)
            && self.layer_dir(d)?.is_dir() && !self.blob_path(digest)?.is_file() {
                // Unpacked already, its blob wanted: read it through, verified, into blobs/.
                let mut r = BufReader::with_capacity(1 << 20, Hashing::new(Counting { inner: l.src.open(l.size)?, done: &job.bytes_done }, l.size));
                let tmp = self.root.join("tmp").join(format!("{}-blob-{}", std::process::id(), unique()));
                let mut out = fs::File::create(&tmp).map_err(ImageError::io("keep a layer blob"))?;
                let copied = io::copy(&mut r, &mut out).map_err(|e| ImageError::Tar(format!("layer {digest}: {e}")));
                let verified = copied.and_then(|_| verify(r.get_ref(), &Expected { digest, size: l.size }, "layer blob"));
                match verified.and_then(|()| fs::rename(&tmp, self.blob_path(digest)?).map_err(ImageError::io("keep a layer blob"))) {
                    Ok(()) => return Ok(LayerDone { diff_id: d.clone(), notes: Vec::new(), deferred: None }),
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        return Err(e);
                    }
                }
            }
        // One process does the work; the others wait on the lock and find it done.
        let lock = match &l.diff_id {
            Some(d) => {
                if self.layer_dir(d)?.is_dir() {
                    return Ok(LayerDone { diff_id: d.clone(), notes: Vec::new(), deferred: None });
                }
                let lock = self.lock(d)?;
                if self.layer_dir(d)?.is_dir() {
                    return Ok(LayerDone { diff_id: d.clone(), notes: Vec::new(), deferred: None });
                }
                Some(lock)
            }
            None => None,
        };
        let staging = Staging::new(self.root.join("tmp").join(format!("{}-layer-{i}-{}", std::process::id(), unique())))?;
        let (applied, actual) = self.unpack_blob(l, &staging.0, job)?;
        let diff_id = l.diff_id.clone().unwrap_or(actual);
        let _lock = match lock {
            Some(lock) => lock,
            None => {
                let lock = self.lock(&diff_id)?;
                if self.layer_dir(&diff_id)?.is_dir() {
                    return Ok(LayerDone { diff_id, notes: applied.summary(), deferred: None });
                }
                lock
            }
        };
        if !applied.lower_links.is_empty() {
            // Links to lower layers' files: resolved once those are in the store, after the
            // workers (see unpack_layers). The lock is released meanwhile (waiting with it held
            // could deadlock two imports); the rename that commits stays atomic.
            let notes = applied.summary();
            return Ok(LayerDone { diff_id, notes, deferred: Some((staging, applied.lower_links)) });
        }
        staging.commit(&self.layer_dir(&diff_id)?)?;
        Ok(LayerDone { diff_id, notes: applied.summary(), deferred: None })
    }

    /// A lock file of `locks/`, held (flock `how`) until the returned file is dropped.
    fn flock(&self, name: &str, how: FlockArg) -> Result<fs::File, ImageError> {
        let path = self.root.join("locks").join(name);
        let lock = fs::File::options().create(true).truncate(false).write(true).open(&path).map_err(ImageError::io(format!("open the lock {}", path.display())))?;
        // nix's `Flock` guard would add a LOCK_UN (and a panic if it fails) on drop; the lock
        // is released by closing the file, as before. The fd is borrowed for this call only.
        #[allow(deprecated)]
        nix::fcntl::flock(lock.as_raw_fd(), how).map_err(|e| ImageError::io(format!("lock {}", path.display()))(e.into()))?;
        Ok(lock)
    }

    /// Shared by imports, exclusive for gc.
    fn store_lock(&self, how: FlockArg) -> Result<fs::File, ImageError> {
        self.flock("store", how)
    }

    /// One layer's: one process unpacks it.
    fn lock(&self, diff_id: &str) -> Result<fs::File, ImageError> {
        self.flock(digest_hex(diff_id)?, FlockArg::LockExclusive)
    }

    /// Decompresses, applies and verifies one layer blob. A producer thread reads the blob,
    /// hashes it, decompresses it and hashes the tar stream (the diff_id); this thread applies
    /// the tar (file-system work, the larger half on layers of many small files). Returns the
    /// diff_id of what was read (checked against the expected one, if any).
    fn unpack_blob(&self, l: &LayerSrc, dest: &Path, job: &Job) -> Result<(apply::Applied, String), ImageError> {
        const CHUNK: usize = 1 << 20;
        let f = l.src.open(l.size)?;
        let what = l.digest.clone().unwrap_or_else(|| l.src.to_string());
        let limits = &self.limits;
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let what = what.as_str();
        std::thread::scope(|s| {
            // Ok(None): the applier stopped first (its error is the one to report).
            let producer = s.spawn(move || -> Result<Option<String>, ImageError> {
                let counted = Counting { inner: f, done: &job.bytes_done };
                // With blobs kept, the compressed bytes go to a file too, renamed into blobs/
                // once verified.
                let keep = match (self.keep_blobs, &l.digest) {
                    (true, Some(d)) => {
                        let tmp = self.root.join("tmp").join(format!("{}-blob-{}", std::process::id(), unique()));
                        let file = fs::File::create(&tmp).map_err(ImageError::io("keep a layer blob"))?;
                        Some((tmp, self.blob_path(d)?, file))
                    }
                    _ => None,
                };
                let (keep_paths, keep_file) = match keep {
                    Some((tmp, dest, file)) => (Some((tmp, dest)), Some(file)),
                    None => (None, None),
                };
                let _cleanup = keep_paths.as_ref().map(|(tmp, _)| RemoveOnDrop(tmp.clone()));
                let teed = Tee { inner: counted, out: keep_file };
                let mut blob = BufReader::with_capacity(CHUNK, Hashing::new(teed, l.size));
                let head = blob.fill_buf().map_err(|e| ImageError::Invalid(format!("layer {what}: {e}")))?;
                let gz = head.starts_with(&[0x1f, 0x8b]);
                let zst = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
                let mt = l.media_type.as_str();
                if (mt.ends_with("+gzip") || mt.ends_with(".tar.gzip")) && !gz || mt.ends_with("+zstd") && !zst {
                    return Err(ImageError::Invalid(format!("layer {what}: media type {mt} but the data is not in that format")));
                }
                let decoder: Box<dyn Read + '_> = if gz {
                    Box::new(gz::GzMembers::new(&mut blob))
                } else if zst {
                    Box::new(zstd::stream::read::Decoder::with_buffer(&mut blob).map_err(ImageError::io("start zstd"))?)
                } else {
                    Box::new(&mut blob)
                };
                let mut decoded = Hashing::new(decoder, limits.max_layer_bytes);
                loop {
                    if job.cancel.load(Ordering::Relaxed) {
                        return Err(ImageError::Cancelled);
                    }
                    let mut buf = back_rx.try_recv().unwrap_or_default();
                    buf.resize(CHUNK, 0);
                    match read_full(&mut decoded, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            buf.truncate(n);
                            if job.image_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limits.max_image_bytes {
                                let _ = tx.send(Err(io::Error::other("the image limit")));
                                return Err(ImageError::limit(format!("the image decompresses to more than {} bytes", limits.max_image_bytes)));
                            }
                            if tx.send(Ok(buf)).is_err() {
                                return Ok(None);
                            }
                        }
                        Err(e) => {
                            // The counting reader refused to go past the limit: that, not the
                            // tar error it causes, is what to report.
                            let err = if decoded.count > limits.max_layer_bytes {
                                ImageError::limit(format!("layer {what} decompresses to more than {} bytes", limits.max_layer_bytes))
                            } else {
                                ImageError::Tar(format!("layer {what}: {e}"))
                            };
                            let _ = tx.send(Err(e));
                            return Err(err);
                        }
                    }
                }
                drop(tx);
                let diff_id = decoded.digest();
                drop(decoded);
                io::copy(&mut blob, &mut io::sink()).map_err(|e| ImageError::Tar(format!("layer {what}: {e}")))?;
                if let Some(d) = &l.digest {
                    verify(blob.get_ref(), &Expected { digest: d, size: l.size }, "layer blob")?;
                }
                if let Some((tmp, dest)) = &keep_paths {
                    drop(blob);
                    if !dest.is_file() {
                        fs::rename(tmp, dest).map_err(ImageError::io("keep a layer blob"))?;
                    }
                }
                Ok(Some(diff_id))
            });
            let mut chunks = Chunks { rx, cur: Vec::new(), pos: 0, back: back_tx };
            let applied = apply::apply(dest, &mut chunks, apply::Mode::Overlay, limits, &job.cancel);
            // Read to the end (what follows the tar's end blocks counts in the diff_id too).
            let drained = match &applied {
                Ok(_) => io::copy(&mut chunks, &mut io::sink()).map(|_| ()),
                Err(_) => Ok(()),
            };
            drop(chunks); // a producer still sending stops
            let produced = producer.join().map_err(|_| ImageError::Invalid("the decompressor thread panicked".into()))?;
            // What the producer saw first (a limit, a corrupt stream); then the applier's error.
            let produced = produced?;
            let applied = applied?;
            drained.map_err(|e| ImageError::Tar(format!("layer {what}: {e}")))?;
            let actual = produced.ok_or_else(|| ImageError::Tar(format!("layer {what}: the decompressor stopped early")))?;
            if let Some(expected) = &l.diff_id
                && actual != *expected {
                    return Err(ImageError::Digest { what: format!("the uncompressed layer {what}"), expected: expected.clone(), actual });
                }
            Ok((applied, actual))
        })
    }

    /// The images in the store.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("images")).map_err(ImageError::io("list images"))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                let info: ImageInfo = self.read_json(&e.path(), "image record")?;
                // A build step's record (the build cache) is not an image of the store's own.
                if !build::is_cache_name(&info.name) {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a: &ImageInfo, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One image, by name or digest.
    ///
    /// `name` is a `name:tag`, or a digest: `sha256:` and the manifest's (or the config's) hex
    /// digits, at least 12 of them, naming one image.
    pub fn get(&self, name: &str) -> Result<ImageInfo, ImageError> {
        if let Some(hex) = name.strip_prefix("sha256:")
            && hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                let found: Vec<ImageInfo> = self.list()?.into_iter().filter(|i| i.manifest[7..].starts_with(hex) || i.config_digest[7..].starts_with(hex)).collect();
                let mut ids: Vec<&str> = found.iter().map(|i| i.manifest.as_str()).collect();
                ids.sort();
                ids.dedup();
                return match ids.len() {
                    0 => Err(ImageError::NotFound(name.to_string())),
                    1 => Ok(found.into_iter().next().ok_or_else(|| ImageError::NotFound(name.to_string()))?),
                    n => Err(ImageError::Invalid(format!("{name} names {n} different images: give more digits"))),
                };
            }
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
    /// The build cache (the records of `cagette build`'s steps) goes too.
    pub fn gc(&self) -> Result<usize, ImageError> {
        let _exclusive = self.store_lock(FlockArg::LockExclusive)?;
        for e in fs::read_dir(self.root.join("images")).map_err(ImageError::io("list images"))?.flatten() {
            if e.file_name().to_string_lossy().starts_with("build-cache%3a") {
                let _ = fs::remove_file(e.path());
            }
        }
        let used: std::collections::HashSet<String> = self.list()?.into_iter().flat_map(|i| i.layers).filter_map(|d| digest_hex(&d).ok().map(str::to_string)).collect();
        let mut removed = 0;
        let mut first_err = None;
        for e in fs::read_dir(self.root.join("layers/sha256")).map_err(ImageError::io("list layers"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if used.contains(&name) {
                continue;
            }
            // Under the layer's lock (an import of it may be committing), moved out of
            // layers/ first: a layer is either whole in the store or not there at all.
            let r = (|| -> Result<(), ImageError> {
                let _lock = self.lock(&format!("sha256:{name}"))?;
                let doomed = self.root.join("tmp").join(format!("{}-gc-{name}", std::process::id()));
                fs::rename(e.path(), &doomed).map_err(ImageError::io(format!("remove layer {name}")))?;
                remove_tree(&doomed).map_err(ImageError::io(format!("remove layer {name}")))
            })();
            match r {
                Ok(()) => removed += 1,
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        // Kept blobs no image refers to (its manifest, config and layer blobs).
        let mut blobs: std::collections::HashSet<String> = std::collections::HashSet::new();
        for i in self.list()? {
            for d in [&i.manifest, &i.config_digest] {
                blobs.extend(digest_hex(d).ok().map(str::to_string));
            }
            if let Ok(bytes) = fs::read(self.blob_path(&i.manifest)?)
                && let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) {
                    blobs.extend(m.layers().iter().filter_map(|l| digest_hex(l.digest().as_ref()).ok().map(str::to_string)));
                }
        }
        for e in fs::read_dir(self.root.join("blobs/sha256")).map_err(ImageError::io("list blobs"))?.flatten() {
            if !blobs.contains(e.file_name().to_string_lossy().as_ref())
                && let Err(err) = fs::remove_file(e.path()) {
                    first_err.get_or_insert(ImageError::Io { context: format!("remove the blob {}", e.file_name().to_string_lossy()), source: err });
                }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Writes image `name` to `dest` as an OCI image layout directory or a `docker save`
    /// archive, from its kept blobs (see [`keep_blobs`](Self::keep_blobs)): the same manifest,
    /// config and layer bytes, so the same digests. `dest` must not exist; it is written beside
    /// and renamed into place.
    pub fn export(&self, name: &str, dest: &Path, format: ExportFormat) -> Result<(), ImageError> {
        let info = self.get(name)?;
        if fs::symlink_metadata(dest).is_ok() {
            return Err(ImageError::Invalid(format!("{} exists: export writes a new directory or file", dest.display())));
        }
        let kept = |digest: &str| -> Result<PathBuf, ImageError> {
            let p = self.blob_path(digest)?;
            if p.is_file() {
                Ok(p)
            } else {
                Err(ImageError::Invalid(format!("{name}: the store has not kept its blob {digest}, which an export writes as it is: pull or import it again with blobs kept (`--keep-blobs`)")))
            }
        };
        let manifest_path = kept(&info.manifest)?;
        let manifest_bytes = fs::read(&manifest_path).map_err(ImageError::io(format!("read the manifest of {name}")))?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, "manifest")?;
        let mut blobs = vec![manifest.config().digest().to_string()];
        blobs.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
        let paths: Vec<PathBuf> = blobs.iter().map(|d| kept(d)).collect::<Result<_, _>>()?;
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".{}.cagette-export-{}", dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), unique()));
        let tag = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t.to_string()).unwrap_or_else(|| "latest".into());
        let written = match format {
            ExportFormat::Oci => (|| -> Result<(), ImageError> {
                let b = tmp.join("blobs/sha256");
                fs::create_dir_all(&b).map_err(ImageError::io(format!("create {}", b.display())))?;
                for (d, p) in std::iter::once((&info.manifest, &manifest_path)).chain(blobs.iter().zip(&paths)) {
                    fs::copy(p, b.join(digest_hex(d)?)).map_err(ImageError::io(format!("write the blob {d}")))?;
                }
                let media = manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
                let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": media, "digest": info.manifest, "size": manifest_bytes.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
                fs::write(tmp.join("index.json"), index.to_string()).map_err(ImageError::io("write index.json"))?;
                fs::write(tmp.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(ImageError::io("write oci-layout"))
            })(),
            ExportFormat::DockerArchive => (|| -> Result<(), ImageError> {
                let f = fs::File::create(&tmp).map_err(ImageError::io(format!("create {}", tmp.display())))?;
                let mut t = tar::Builder::new(io::BufWriter::new(f));
                let cfg = format!("{}.json", digest_hex(&blobs[0])?);
                let mut layers = Vec::new();
                t.append_path_with_name(&paths[0], &cfg).map_err(ImageError::io("write the config"))?;
                for (d, p) in blobs[1..].iter().zip(&paths[1..]) {
                    let entry = format!("{}/layer.tar", digest_hex(d)?);
                    t.append_path_with_name(p, &entry).map_err(ImageError::io(format!("write the layer {d}")))?;
                    layers.push(entry);
                }
                let repo_tag = if name.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/')) { name.to_string() } else { format!("{name}:latest") };
                let m = serde_json::json!([{"Config": cfg, "RepoTags": [repo_tag], "Layers": layers}]).to_string();
                let mut h = tar::Header::new_gnu();
                h.set_size(m.len() as u64);
                h.set_mode(0o644);
                t.append_data(&mut h, "manifest.json", m.as_bytes()).map_err(ImageError::io("write manifest.json"))?;
                let out = t.into_inner().map_err(ImageError::io("write the archive"))?;
                out.into_inner().map_err(|e| ImageError::Io { context: "write the archive".into(), source: e.into_error() })?.sync_all().map_err(ImageError::io("write the archive"))
            })(),
        };
        match written.and_then(|()| fs::rename(&tmp, dest).map_err(ImageError::io(format!("move the export to {}", dest.display())))) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = if tmp.is_dir() { fs::remove_dir_all(&tmp) } else { fs::remove_file(&tmp) };
                Err(e)
            }
        }
    }

    /// Writes an image's layers, in order, into `dest` as one flat rootfs (whiteouts delete,
    /// opaque directories hide what is below). Returns what could not be kept (device nodes
    /// without root, for example), empty for an exact copy.
    pub fn unpack(&self, name: &str, dest: &Path) -> Result<Vec<String>, ImageError> {
        let info = self.get(name)?;
        // Never through a symlink (a sandbox that can write there could have planted it).
        if fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ImageError::Invalid(format!("{} is a symlink: unpack writes into a real directory only (give the path it points to)", dest.display())));
        }
        fs::create_dir_all(dest).map_err(ImageError::io(format!("create {}", dest.display())))?;
        let mut notes = Vec::new();
        for diff_id in &info.layers {
            notes.extend(apply::flatten_layer(&self.layer_dir(diff_id)?, dest)?);
        }
        Ok(notes)
    }
}

/// Applies `data` as one layer tar (overlay form, the import path) to a fresh directory under
/// `scratch`, then checks what a layer must never do: leave anything outside its root, or make
/// the root something other than a directory. Errors are fine (most fuzz inputs are refused);
/// an escape panics. For the cargo-fuzz target `tar_apply` and its corpus replay test; not a
/// stable API.
#[doc(hidden)]
pub fn fuzz_apply_layer(scratch: &Path, data: &[u8]) -> Result<(), ImageError> {
    let root = scratch.join("root");
    let _ = remove_tree(scratch);
    fs::create_dir_all(&root).map_err(ImageError::io("create the fuzz root"))?;
    let limits = Limits { max_layer_bytes: 64 << 20, max_entries: 10_000, ..Limits::default() };
    let r = apply::apply(&root, data, apply::Mode::Overlay, &limits, &AtomicBool::new(false)).map(|_| ());
    let outside: Vec<_> = fs::read_dir(scratch).map_err(ImageError::io("list the scratch dir"))?.flatten().map(|e| e.file_name()).filter(|n| n != "root").collect();
    assert!(outside.is_empty(), "a layer wrote outside its root: {outside:?}");
    assert!(fs::symlink_metadata(&root).map(|m| m.is_dir()).unwrap_or(false), "the root is no longer a directory");
    let _ = remove_tree(scratch);
    r
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

fn verify<R>(h: &Hashing<R>, d: &Expected<'_>, what: &str) -> Result<(), ImageError> {
    let actual = h.digest();
    if h.count != d.size {
        return Err(ImageError::Digest { what: format!("the size of the {what} {}", d.digest), expected: d.size.to_string(), actual: h.count.to_string() });
    }
    if actual != d.digest {
        return Err(ImageError::Digest { what: format!("the {what}"), expected: d.digest.to_string(), actual });
    }
    Ok(())
}

/// Where one layer comes from.
struct LayerSrc {
    /// The blob (or the tar in an extracted docker archive).
    src: Src,
    media_type: String,
    /// The blob's digest, when the format names one.
    digest: Option<String>,
    size: u64,
    /// None for a plain layer tar: learnt by unpacking it.
    diff_id: Option<String>,
}

/// A reader that also writes what it reads to a file (when it has one).
struct Tee<R> {
    inner: R,
    out: Option<fs::File>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = &mut self.out {
            io::Write::write_all(f, &buf[..n])?;
        }
        Ok(n)
    }
}

/// Removes a staging file when dropped (a no-op once it was renamed away).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Where a layer's bytes are.
enum Src {
    /// A file the caller named (a plain layer tar).
    File(PathBuf),
    /// A path inside an image layout or an extracted archive (untrusted: see [`open_inside`]).
    Inside(PathBuf, PathBuf),
    /// A blob of a registry, by digest.
    #[cfg(feature = "registry")]
    Remote(std::sync::Arc<registry::Remote>, String),
}

impl Src {
    fn open(&self, size: u64) -> Result<Box<dyn Read + Send>, ImageError> {
        let _ = size;
        match self {
            Src::File(p) => {
                let f = fs::File::open(p).map_err(ImageError::io(format!("open {}", p.display())))?;
                if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
                    return Err(ImageError::Invalid(format!("{} is not a regular file", p.display())));
                }
                Ok(Box::new(f))
            }
            Src::Inside(root, rel) => Ok(Box::new(open_inside(root, rel, "layer blob")?)),
            #[cfg(feature = "registry")]
            Src::Remote(remote, digest) => Ok(remote.open(digest, size)),
        }
    }
}

impl std::fmt::Display for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Src::File(p) => write!(f, "{}", p.display()),
            Src::Inside(root, rel) => write!(f, "{}", root.join(rel).display()),
            #[cfg(feature = "registry")]
            Src::Remote(remote, digest) => write!(f, "{digest} of {remote:?}"),
        }
    }
}

/// Opens a regular file at `rel` inside `root` (an image layout or extracted archive, which
/// may hold symlinks of its own): every component resolved inside `root`
/// (`RESOLVE_IN_ROOT`), the last one not followed, and anything but a regular file (a FIFO
/// that would hang, a device) refused.
fn open_inside(root: &Path, rel: &Path, what: &str) -> Result<fs::File, ImageError> {
    let dir = fs::File::open(root).map_err(ImageError::io(format!("open {}", root.display())))?;
    let fd = apply::open_in_root(dir.as_fd(), rel, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).map_err(ImageError::io(format!("open the {what} {}", rel.display())))?;
    let f = fs::File::from(fd);
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(ImageError::Invalid(format!("the {what} {} is not a regular file", rel.display())));
    }
    Ok(f)
}

/// An image, read but not unpacked.
struct Parsed {
    layers: Vec<LayerSrc>,
    manifest: Option<String>,
    config_digest: Option<String>,
    config: RunConfig,
    /// The verified bytes of the manifest and the config, when the image has them (an OCI
    /// layout, a registry), for `keep_blobs`.
    manifest_bytes: Option<Vec<u8>>,
    config_bytes: Option<Vec<u8>>,
}

/// What the workers of one import share.
struct Job {
    cancel: AtomicBool,
    bytes_done: AtomicU64,
    image_bytes: AtomicU64,
}

struct LayerDone {
    diff_id: String,
    notes: Vec<String>,
    /// Staged, with hardlinks to lower layers still to resolve.
    deferred: Option<(Staging, Vec<(PathBuf, PathBuf, PathBuf)>)>,
}

/// A staging directory, removed unless committed (also on an error, a cancellation or a panic).
struct Staging(PathBuf);

impl Staging {
    fn new(path: PathBuf) -> Result<Staging, ImageError> {
        let _ = remove_tree(&path);
        fs::create_dir(&path).map_err(ImageError::io(format!("create the staging directory {}", path.display())))?;
        Ok(Staging(path))
    }
    fn commit(self, dest: &Path) -> Result<(), ImageError> {
        match fs::rename(&self.0, dest) {
            Ok(()) => {
                std::mem::forget(self);
                Ok(())
            }
            // Another import committed the same content first: ours goes (on drop).
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(ImageError::io(format!("commit {}", dest.display()))(e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// Removes what imports of processes that no longer exist left in `tmp/` (their names start
/// with the pid): a killed import leaves nothing behind for long.
fn sweep_tmp(tmp: &Path) {
    let Ok(rd) = fs::read_dir(tmp) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
            let p = e.path();
            let _ = if p.is_dir() { remove_tree(&p) } else { fs::remove_file(&p) };
        }
    }
}

/// Removes a tree the store wrote, also when an image made some of its directories
/// unreadable or unwritable (mode 0, 0500: a non-root owner must fix the modes first).
fn remove_tree(p: &Path) -> io::Result<()> {
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(p);
            fs::remove_dir_all(p)
        }
    }
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Counts the bytes read (for progress).
struct Counting<'a, R> {
    inner: R,
    done: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decompressed stream, as chunks from the producer thread; spent chunks go back to it.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    back: mpsc::Sender<Vec<u8>>,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let spent = std::mem::replace(&mut self.cur, next);
                    let _ = self.back.send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

enum Sniffed {
    /// A `docker save` archive (or an OCI layout in a tar).
    Archive,
    /// A plain layer.
    Layer,
}

/// A file given to import: an archive has `manifest.json` or `oci-layout` at its top level; a
/// compressed file or any other tar is a plain layer.
fn sniff(path: &Path) -> Result<Sniffed, ImageError> {
    let mut f = fs::File::open(path).map_err(ImageError::io(format!("open {}", path.display())))?;
    let mut magic = [0u8; 4];
    let n = read_full(&mut f, &mut magic).map_err(ImageError::io(format!("read {}", path.display())))?;
    if magic[..n.min(2)] == [0x1f, 0x8b] || magic[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
        return Ok(Sniffed::Layer);
    }
    let f = fs::File::open(path).map_err(ImageError::io(format!("open {}", path.display())))?;
    let mut archive = tar::Archive::new(f);
    let entries = archive.entries_with_seek().map_err(|e| ImageError::Tar(format!("{}: {e}", path.display())))?;
    for (k, e) in entries.raw(true).enumerate() {
        let Ok(e) = e else { break };
        let name = e.path_bytes();
        let name = name.strip_prefix(b"./").unwrap_or(&name);
        if name == b"manifest.json" || name == b"oci-layout" {
            return Ok(Sniffed::Archive);
        }
        if k > 100_000 {
            break;
        }
    }
    Ok(Sniffed::Layer)
}

/// Reads a small file of the image (like `etc/passwd`) from its layers (top first, as
/// overlayfs would: the first layer that has the path, as a file or a whiteout, decides).
fn read_from_layers(layers_top_first: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    for dir in layers_top_first {
        // Looked up inside the layer, never following a link out of it.
        match open_inside(dir, Path::new(rel), rel) {
            Ok(f) => {
                let mut v = Vec::new();
                f.take(1 << 20).read_to_end(&mut v).ok()?;
                return Some(v);
            }
            Err(ImageError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(_) => return None, // a whiteout, a link, a whiteout on the way, ...
        }
    }
    None
}

/// The image's USER (`name`, `uid`, `name:group`, `uid:gid`) as numbers, looked up in its
/// /etc/passwd and /etc/group like docker does: a missing group is the user's primary one.
fn resolve_user(user: &str, layers_top_first: &[PathBuf]) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_from_layers(layers_top_first, "etc/passwd").unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd);
    let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry.as_ref()?.get(2)?.parse().ok()?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = read_from_layers(layers_top_first, "etc/group").unwrap_or_default();
                let group = String::from_utf8_lossy(&group);
                let found = group.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 3 && f[0] == g)?;
                found[2].parse().ok()?
            }
        },
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Some((uid, gid))
}
