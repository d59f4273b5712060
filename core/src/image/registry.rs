//! Pulling images from registries (cargo feature `registry`): references, platform selection,
//! credentials, and layer blobs streamed straight into the store's unpacker.
//!
//! The HTTP side is `oci-client` (the ORAS project's client of the distribution spec: bearer and
//! basic auth, Range requests). What cagette adds: docker-style names, the user's credential
//! files, plain HTTP only for loopback and named insecure registries, every manifest and blob
//! verified against its digest and bounded, retries that resume a layer where it stopped, and no
//! compressed blob ever written to disk — each layer is hashed, decompressed and applied as it
//! arrives, and committed only once its digests match.

use super::{digest_hex, go_arch, parse_json, ImageError, ImageStore, LayerSrc, Limits, Parsed, Progress, Src};
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// How to pull: platform, transport and credentials. `Default` pulls the host's platform over
/// HTTPS (plain HTTP for loopback registries), with the credentials of the user's files.
///
/// ```no_run
/// use cagette::{ImageStore, PullOptions};
/// let store = ImageStore::open(ImageStore::default_dir())?;
/// let opts = PullOptions { platform: Some("linux/arm64".into()), ..PullOptions::default() };
/// let image = store.pull("ghcr.io/org/tool:1.2", &opts)?;
/// println!("{} ({} layers)", image.manifest, image.layers.len());
/// # Ok::<(), cagette::ImageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// `os/arch[/variant]` to pick from a multi-platform image (default: the host's).
    pub platform: Option<String>,
    /// Registries (`host[:port]`) reached over plain HTTP, as Docker's `insecure-registries`.
    /// Loopback registries (`127.0.0.1`, `localhost`, `[::1]`) always are.
    pub insecure_registries: Vec<String>,
    /// PEM files of certificate authorities to trust besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// User name and password (or token) for the registry; when `None`, the user's credential
    /// files are read (see [`credentials_for`]).
    pub credentials: Option<(String, String)>,
    /// An `auth.json`/`config.json` to read credentials from, before the usual ones.
    pub auth_file: Option<PathBuf>,
    /// Time to connect, and without a byte while reading (each attempt).
    pub timeout: Duration,
    /// Attempts per request on connection errors, timeouts, 429 and 5xx (a layer resumes where
    /// it stopped when the registry allows ranges).
    pub attempts: u32,
    /// Mirrors, as (registry, mirror) pairs (`docker.io`, `mirror.example:5000`): a pull from
    /// the registry tries its mirrors in order, then the registry itself.
    pub mirrors: Vec<(String, String)>,
    /// The containers tools' `registries.conf` to follow (mirrors, insecure and blocked
    /// registries, locations); see [`crate::RegistriesConf`]. Its mirrors come after `mirrors`.
    pub registries_conf: super::registries_conf::RegistriesConf,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions { platform: None, insecure_registries: Vec::new(), ca_files: Vec::new(), credentials: None, auth_file: None, timeout: Duration::from_secs(30), attempts: 4, mirrors: Vec::new(), registries_conf: Default::default() }
    }
}

impl PullOptions {
    /// The options as the Python and Node bindings pass them: a JSON object with `platform`,
    /// `insecure_registries`, `ca_files`, `credentials` (`[user, password]`), `auth_file` and
    /// `timeout` (a number of `timeout_unit`s), in snake_case or camelCase; anything else is an
    /// error (a message naming the value).
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = cagette::PullOptions::from_binding_json(r#"{"insecureRegistries": ["r:5000"], "timeout": 1500}"#, Duration::from_millis(1)).unwrap();
    /// assert_eq!((o.insecure_registries.len(), o.timeout), (1, Duration::from_millis(1500)));
    /// assert!(cagette::PullOptions::from_binding_json(r#"{"timeout": -1}"#, Duration::from_secs(1)).is_err());
    /// ```
    pub fn from_binding_json(json: &str, timeout_unit: Duration) -> Result<PullOptions, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            platform: Option<String>,
            #[serde(default, alias = "insecureRegistries")]
            insecure_registries: Vec<String>,
            #[serde(default, alias = "caFiles")]
            ca_files: Vec<PathBuf>,
            credentials: Option<(String, String)>,
            #[serde(alias = "authFile")]
            auth_file: Option<PathBuf>,
            timeout: Option<f64>,
        }
        let w: Wire = serde_json::from_str(json).map_err(|e| format!("pull options: {e}"))?;
        let mut o = PullOptions { platform: w.platform, insecure_registries: w.insecure_registries, ca_files: w.ca_files, credentials: w.credentials, auth_file: w.auth_file, ..PullOptions::default() };
        if let Some(t) = w.timeout {
            let unit = if timeout_unit == Duration::from_secs(1) { "seconds" } else if timeout_unit == Duration::from_millis(1) { "milliseconds" } else { "time units" };
            let secs = t * timeout_unit.as_secs_f64();
            // Positive and below about 11 days (a finite Duration, and no registry waits longer).
            if !(t.is_finite() && t > 0.0 && secs < 1e6) {
                return Err(format!("timeout: {t}: expected a positive number of {unit}"));
            }
            o.timeout = Duration::from_secs_f64(secs);
        }
        Ok(o)
    }
}

/// A parsed image reference: `alpine` is `docker.io/library/alpine:latest`.
///
/// ```
/// let r = cagette::ImageReference::parse("alpine:3.20")?;
/// assert_eq!(r.registry(), "docker.io");
/// assert_eq!(r.repository(), "library/alpine");
/// assert_eq!(r.to_string(), "docker.io/library/alpine:3.20");
/// # Ok::<(), cagette::ImageError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ImageReference(Reference);

impl ImageReference {
    /// Parses a docker-style reference (`name[:tag][@digest]`, with an optional registry).
    pub fn parse(s: &str) -> Result<ImageReference, ImageError> {
        let r = parse_reference(s).map_err(|e| ImageError::Invalid(format!("image reference {s:?}: {e}")))?;
        if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ImageError::Invalid(format!("image reference {s:?}: repository names are lowercase")));
        }
        if let Some(d) = r.digest() {
            digest_hex(d)?;
        }
        Ok(ImageReference(r))
    }
    /// The registry's host (and port).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }
    /// The repository (`library/alpine`).
    pub fn repository(&self) -> &str {
        self.0.repository()
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }
    /// The digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }
}

/// The reference grammar of the distribution project (what oci-spec's `Reference::from_str`
/// accepts, tags ASCII-only as Docker's), checked by hand and built with oci-spec's
/// constructors: oci-spec's parser compiles a Unicode regex on first use, 35-130 ms per process
/// here, more than a whole pull of an image whose layers are present (see docs/design.md).
/// `reference_grammar_matches_oci_spec` (tests below) compares the two on a corpus.
fn parse_reference(s: &str) -> Result<Reference, &'static str> {
    const INVALID: &str = "invalid reference format";
    // path-component: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    fn path_component(c: &str) -> bool {
        let b = c.as_bytes();
        let (mut i, n) = (0, b.len());
        let run = |i: &mut usize| {
            let start = *i;
            while *i < n && (b[*i].is_ascii_lowercase() || b[*i].is_ascii_digit()) {
                *i += 1;
            }
            *i > start
        };
        if !run(&mut i) {
            return false;
        }
        while i < n {
            match b[i] {
                b'.' => i += 1,
                b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
                b'-' => {
                    while i < n && b[i] == b'-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
            if !run(&mut i) {
                return false;
            }
        }
        true
    }
    // domain: label ("." label)* (":" port)?; label: [a-zA-Z0-9] or [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
    fn domain(d: &str) -> bool {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        let label = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    }
    // digest: algorithm ":" hex{32,}; algorithm: [A-Za-z][A-Za-z0-9]* ([-_+.][A-Za-z][A-Za-z0-9]*)*
    fn digest(d: &str) -> bool {
        let Some((alg, hex)) = d.split_once(':') else { return false };
        let parts_ok = alg.split(['-', '_', '+', '.']).all(|p| p.as_bytes().first().is_some_and(|c| c.is_ascii_alphabetic()) && p.bytes().all(|c| c.is_ascii_alphanumeric()));
        parts_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
    }
    if s.is_empty() {
        return Err("repository name must have at least one component");
    }
    let (rest, dig) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if dig.is_some_and(|d| !digest(d)) {
        return Err(INVALID);
    }
    // A tag is what follows the last ':' after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let b = t.as_bytes();
        let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
        if b.is_empty() || b.len() > 128 || !word(&b[0]) || !b.iter().all(|c| word(c) || *c == b'.' || *c == b'-') {
            return Err(INVALID);
        }
    }
    let comps: Vec<&str> = name.split('/').collect();
    let first_is_domain = comps.len() > 1 && domain(comps[0]);
    let path = if first_is_domain { &comps[1..] } else { &comps[..] };
    if path.is_empty() || !path.iter().all(|c| path_component(c)) {
        return Err(INVALID);
    }
    // Which registry: as oci-spec's split_domain (Docker's rules).
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((left, right)) if left.contains('.') || left.contains(':') || left == "localhost" => (left.to_string(), right.to_string()),
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if registry == "index.docker.io" {
        registry = "docker.io".into();
    }
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if repository.len() > 255 {
        return Err("repository name must not be more than 255 characters");
    }
    if let Some(d) = dig {
        let want = match d.split_once(':').map(|(a, _)| a) {
            Some("sha256") => 64,
            Some("sha384") => 96,
            Some("sha512") => 128,
            _ => return Err("unsupported digest algorithm"),
        };
        if d.len() - d.find(':').map_or(0, |i| i + 1) != want {
            return Err("invalid checksum digest length");
        }
    }
    Ok(match (tag, dig) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t.into(), d.into()),
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
    })
}

impl std::fmt::Display for ImageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.whole())
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') { rest.split(']').next().unwrap_or("") } else { registry.rsplit_once(':').map_or(registry, |(h, _)| h) };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn registry_err(registry: &str, what: impl Into<String>, why: impl std::fmt::Display) -> ImageError {
    ImageError::Registry { registry: registry.to_string(), what: what.into(), why: why.to_string() }
}

/// What an `oci-client` error means for the user, without any secret in it.
fn explain(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => "not authorized: log in (`cagette image login`), or give credentials; check the name too (a registry answers 401 for a repository that does not exist)".into(),
        E::ImageManifestNotFoundError(_) => "no such image or tag in the registry".into(),
        E::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as C;
            let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, C::ManifestUnknown | C::NameUnknown | C::NotFound)) {
                format!("no such image or tag in the registry ({envelope})")
            } else if codes.iter().any(|c| matches!(c, C::Unauthorized | C::Denied)) {
                format!("not authorized ({envelope}): log in (`cagette image login`), or give credentials")
            } else {
                envelope.to_string()
            }
        }
        E::RequestError(r) if r.is_timeout() => "the registry did not answer in time".into(),
        E::RequestError(r) if r.is_connect() => format!("cannot connect: {} (check the name and port; a registry on another host needs HTTPS, or --insecure-registry; a certificate of your own needs --ca-file)", causes(r)),
        E::RequestError(r) => causes(r),
        other => other.to_string(),
    }
}

/// An error and its causes, "a: b: c" (reqwest's own message alone says little).
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Retry connection errors, timeouts, 429 and 5xx; not what the registry refused on purpose.
fn retryable(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RequestError(r) => r.is_timeout() || r.is_connect() || r.is_request() || r.is_body() || r.status().is_some_and(|s| s.as_u16() == 429 || s.is_server_error()),
        E::ServerError { code, .. } => *code == 429 || *code >= 500,
        E::IoError(_) => true,
        _ => false,
    }
}

/// The credentials for `registry`, looked up as podman and docker do: `auth_file`, then
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`);
/// in each, a `credHelpers` entry for the registry (run as `docker-credential-<helper> get`), an
/// `auths` entry, or a `credsStore`. `None`: anonymous.
pub fn credentials_for(registry: &str, auth_file: Option<&std::path::Path>) -> Result<Option<(String, String)>, ImageError> {
    for file in auth_files(auth_file) {
        let Ok(bytes) = crate::read_host_file(&file, 1 << 20) else { continue };
        let cfg: AuthFile = serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid(format!("the credentials file {}: {e}", file.display())))?;
        let keys = registry_keys(registry);
        if let Some(helper) = keys.iter().find_map(|k| cfg.cred_helpers.get(k.as_str())) {
            return helper_get(helper, registry).map(Some);
        }
        for k in &keys {
            if let Some(entry) = cfg.auths.get(k.as_str()) {
                if let Some(auth) = &entry.auth {
                    return decode_auth(auth).map(Some).map_err(|why| ImageError::Invalid(format!("the credentials file {}: the entry for {k}: {why}", file.display())));
                }
                if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                    return Ok(Some((u.clone(), p.clone())));
                }
            }
        }
        if let Some(store) = &cfg.creds_store
            && let Ok(c) = helper_get(store, registry) {
                return Ok(Some(c));
            }
    }
    Ok(None)
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Stores credentials for `registry` in a containers `auth.json` (the file podman, buildah and
/// skopeo read): `file`, else `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`,
/// else `~/.config/containers/auth.json`; written atomically, mode 0600, other entries kept.
/// The credentials are not checked here: the next pull uses them. Returns the file.
///
/// ```no_run
/// let file = cagette::login("127.0.0.1:5000", "ci", "s3cret", None)?;
/// # Ok::<(), cagette::ImageError>(())
/// ```
pub fn login(registry: &str, username: &str, password: &str, file: Option<&std::path::Path>) -> Result<PathBuf, ImageError> {
    use base64::Engine;
    if registry.is_empty() || registry.contains('/') || username.contains(':') {
        return Err(ImageError::Invalid(format!("login to {registry:?} as {username:?}: expected a registry host[:port] and a user name without ':'")));
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let path = file
        .map(|p| p.to_path_buf())
        .or_else(|| env("REGISTRY_AUTH_FILE"))
        .or_else(|| env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")))
        .or_else(|| env("HOME").map(|h| h.join(".config/containers/auth.json")))
        .ok_or_else(|| ImageError::Invalid("no credentials file: give one (--authfile), or set REGISTRY_AUTH_FILE or HOME".into()))?;
    let mut doc: serde_json::Value = match crate::read_host_file(&path, 1 << 20) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid(format!("the credentials file {}: {e}", path.display())))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(ImageError::Io { context: format!("read {}", path.display()), source: e }),
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let obj = doc.as_object_mut().ok_or_else(|| ImageError::Invalid(format!("the credentials file {} is not a JSON object", path.display())))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| ImageError::Invalid(format!("the credentials file {}: `auths` is not an object", path.display())))?;
    auths.insert(registry.to_string(), serde_json::json!({ "auth": auth }));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(ImageError::io(format!("create {}", dir.display())))?;
    }
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| ImageError::Invalid(e.to_string()))?;
    crate::fs::hostfile::write_host_file_mode(&path, &text, 0o600).map_err(ImageError::io(format!("write {}", path.display())))?;
    Ok(path)
}

fn auth_files(first: Option<&std::path::Path>) -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = env("HOME");
    let mut v: Vec<PathBuf> = first.map(|p| p.to_path_buf()).into_iter().collect();
    v.extend(env("REGISTRY_AUTH_FILE"));
    v.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    v.extend(home.as_ref().map(|h| h.join(".config/containers/auth.json")));
    v.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")).or_else(|| home.map(|h| h.join(".docker/config.json"))));
    v
}

/// The keys a credentials file may use for `registry`.
fn registry_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")];
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        keys.extend(["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"].map(String::from));
    }
    keys
}

fn decode_auth(auth: &str) -> Result<(String, String), String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| "`auth` is not base64".to_string())?;
    let s = String::from_utf8(raw).map_err(|_| "`auth` is not UTF-8".to_string())?;
    let (u, p) = s.split_once(':').ok_or_else(|| "`auth` is not user:password".to_string())?;
    Ok((u.to_string(), p.to_string()))
}

/// Runs `docker-credential-<helper> get` with the registry on its stdin.
fn helper_get(helper: &str, registry: &str) -> Result<(String, String), ImageError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if helper.is_empty() || !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(ImageError::Invalid(format!("credential helper name {helper:?}")));
    }
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog).arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(|e| registry_err(registry, format!("run the credential helper {prog}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| registry_err(registry, format!("run the credential helper {prog}"), e))?;
    if !out.status.success() {
        return Err(registry_err(registry, format!("the credential helper {prog}"), format!("it failed ({})", out.status)));
    }
    #[derive(Deserialize)]
    struct Cred {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let c: Cred = serde_json::from_slice(&out.stdout).map_err(|_| registry_err(registry, format!("the credential helper {prog}"), "its answer is not the expected JSON"))?;
    Ok((c.username, c.secret))
}

/// One pull's connection to a registry: a small runtime, the client, the reference.
pub(crate) struct Remote {
    rt: tokio::runtime::Runtime,
    client: Client,
    reference: Reference,
    registry: String,
    attempts: u32,
    timeout: Duration,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reference.whole())
    }
}

impl Remote {
    /// A client for the registry of `reference`, over HTTPS or (`plain`) HTTP.
    fn new(reference: &ImageReference, opts: &PullOptions, plain: bool) -> Result<Remote, ImageError> {
        let registry = reference.0.resolve_registry().to_string();
        let mut extra = Vec::new();
        for f in &opts.ca_files {
            let data = crate::read_host_file(f, 1 << 20).map_err(|e| ImageError::Io { context: format!("read the CA file {}", f.display()), source: e })?;
            extra.push(Certificate { encoding: CertificateEncoding::Pem, data });
        }
        let config = ClientConfig {
            protocol: if plain { ClientProtocol::HttpsExcept(vec![registry.clone(), reference.registry().to_string()]) } else { ClientProtocol::Https },
            // A plain-HTTP client never verifies a certificate: given one root of its own (a
            // throwaway self-signed certificate, never used), it skips loading the system's
            // ~150 roots (~15 ms of a pull whose layers are all present, from the CLI).
            tls_certs_only: if plain { vec![Certificate { encoding: CertificateEncoding::Pem, data: include_bytes!("plain-http-client.pem").to_vec() }] } else { Vec::new() },
            extra_root_certificates: extra,
            read_timeout: Some(opts.timeout),
            connect_timeout: Some(opts.timeout),
            max_concurrent_download: 4,
            ..ClientConfig::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("cagette-pull").enable_all().build().map_err(ImageError::io("start the pull's I/O threads"))?;
        let client = rt.block_on(async { Client::new(config) });
        Ok(Remote { rt, client, reference: reference.0.clone(), registry, attempts: opts.attempts.max(1), timeout: opts.timeout })
    }

    /// Authenticates (a bearer token, when the registry asks for one).
    fn auth(&self, auth: &RegistryAuth, op: RegistryOperation) -> Result<(), oci_client::errors::OciDistributionError> {
        self.rt.block_on(self.client.auth(&self.reference, auth, op)).map(|_| ())
    }

    fn auth_err(&self, e: &oci_client::errors::OciDistributionError) -> ImageError {
        registry_err(&self.registry, format!("authenticate for {}", self.reference.whole()), explain(e))
    }

    /// A manifest or index by tag or digest, bounded, with its sha256 digest.
    fn manifest(&self, reference: &Reference, limits: &Limits) -> Result<(Vec<u8>, String), ImageError> {
        let types = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
        let mut attempt = 0;
        let (bytes, _) = loop {
            attempt += 1;
            match self.rt.block_on(self.client.pull_manifest_raw(reference, &RegistryAuth::Anonymous, &types)) {
                Ok(r) => break r,
                Err(e) if attempt < self.attempts && retryable(&e) => std::thread::sleep(backoff(attempt)),
                Err(e) => return Err(registry_err(&self.registry, format!("fetch the manifest of {}", reference.whole()), explain(&e))),
            }
        };
        if bytes.len() as u64 > limits.max_json {
            return Err(ImageError::limit(format!("the manifest of {} is larger than {} bytes", reference.whole(), limits.max_json)));
        }
        let digest = format!("sha256:{}", super::hex(&Sha256::digest(&bytes)));
        Ok((bytes.to_vec(), digest))
    }

    /// A small blob (the config), bounded and verified.
    fn small_blob(&self, d: &Descriptor, limits: &Limits, what: &str) -> Result<Vec<u8>, ImageError> {
        let digest = d.digest().to_string();
        digest_hex(&digest)?;
        if d.size() > limits.max_json {
            return Err(ImageError::limit(format!("the {what} is larger than {} bytes", limits.max_json)));
        }
        let mut r = self.open(&digest, d.size());
        let mut buf = Vec::new();
        r.by_ref().take(limits.max_json + 1).read_to_end(&mut buf).map_err(|e| registry_err(&self.registry, format!("fetch the {what} {digest}"), e))?;
        let actual = format!("sha256:{}", super::hex(&Sha256::digest(&buf)));
        if buf.len() as u64 != d.size() || actual != digest {
            return Err(ImageError::Digest { what: format!("the {what} from {}", self.registry), expected: format!("{digest} ({} bytes)", d.size()), actual: format!("{actual} ({} bytes)", buf.len()) });
        }
        Ok(buf)
    }

    /// A blob as a blocking reader fed by the runtime: retried and resumed (HTTP Range) on
    /// connection errors; its bytes are verified by the caller.
    pub(crate) fn open(self: &Remote, digest: &str, size: u64) -> Box<dyn Read + Send> {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(16);
        let client = self.client.clone();
        let reference = self.reference.clone();
        let digest = digest.to_string();
        let (attempts, timeout) = (self.attempts, self.timeout);
        self.rt.spawn(async move {
            let mut offset = 0u64;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let started = if offset == 0 {
                    client.pull_blob_stream(&reference, digest.as_str()).await.map(|s| (s, 0))
                } else {
                    client.pull_blob_stream_partial(&reference, digest.as_str(), offset, None).await.map(|r| match r {
                        BlobResponse::Partial(s) => (s, 0),
                        BlobResponse::Full(s) => (s, offset), // no ranges: skip what we have
                    })
                };
                let failure: io::Error = match started {
                    Ok((mut s, mut skip)) => {
                        let mut failed = None;
                        loop {
                            match tokio::time::timeout(timeout, s.stream.next()).await {
                                Ok(Some(Ok(mut b))) => {
                                    if skip > 0 {
                                        let n = skip.min(b.len() as u64);
                                        skip -= n;
                                        b = b.slice(n as usize..);
                                    }
                                    if b.is_empty() {
                                        continue;
                                    }
                                    offset += b.len() as u64;
                                    if offset > size {
                                        let _ = tx.send(Err(io::Error::other(format!("the registry sent more than the {size} bytes of {digest}")))).await;
                                        return;
                                    }
                                    if tx.send(Ok(b)).await.is_err() {
                                        return; // the reader is gone (cancelled, or failed)
                                    }
                                }
                                Ok(Some(Err(e))) => {
                                    failed = Some(e);
                                    break;
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    failed = Some(io::Error::new(io::ErrorKind::TimedOut, format!("no data for {}s", timeout.as_secs())));
                                    break;
                                }
                            }
                        }
                        match failed {
                            None if offset >= size => return, // complete: the channel closes
                            None => io::Error::new(io::ErrorKind::UnexpectedEof, format!("the connection ended after {offset} of {size} bytes")),
                            Some(e) if e.to_string().to_ascii_lowercase().contains("digest") => {
                                let _ = tx.send(Err(io::Error::other(format!("the registry sent bytes that do not match {digest}: {e}")))).await;
                                return;
                            }
                            Some(e) => e,
                        }
                    }
                    Err(e) if retryable(&e) => io::Error::other(explain(&e)),
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::other(explain(&e)))).await;
                        return;
                    }
                };
                if attempt >= attempts {
                    let _ = tx.send(Err(io::Error::new(failure.kind(), format!("{failure} (after {attempt} attempts)")))).await;
                    return;
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        });
        Box::new(ChannelReader { rx, cur: bytes::Bytes::new() })
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(6))
}

/// A blocking reader over the chunks a task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// `os/arch[/variant]`, or the host's.
fn platform(p: Option<&str>) -> Result<(String, String, Option<String>), ImageError> {
    let Some(p) = p else {
        return Ok(("linux".into(), go_arch().into(), (go_arch() == "arm64").then(|| "v8".into())));
    };
    let parts: Vec<&str> = p.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok((os.to_string(), arch.to_string(), None)),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => Ok((os.to_string(), arch.to_string(), Some(variant.to_string()))),
        _ => Err(ImageError::Invalid(format!("platform {p:?}: expected os/arch[/variant], like linux/arm64"))),
    }
}

/// Connects to the registry of `r` (its mirrors first, for a pull) and runs `first` (the first
/// real request) there: credentials looked up, authenticated for `op`; a loopback or insecure
/// registry over plain HTTP first, HTTPS when it turns out to speak TLS (Docker tries the other
/// order; this one saves a TLS client, ~50 ms, in the common case); others over HTTPS only.
fn connect<T>(r: &ImageReference, opts: &PullOptions, op: RegistryOperation, first: impl Fn(&Remote) -> Result<T, ImageError>) -> Result<(Remote, T), ImageError> {
    let mut candidates: Vec<ImageReference> = Vec::new();
    let via = |host: &str| {
        let mut m = r.clone();
        m.0.set_mirror_registry(host.to_string());
        m
    };
    if op == RegistryOperation::Pull {
        for (registry, mirror) in &opts.mirrors {
            if registry == r.registry() || registry == r.0.resolve_registry() {
                candidates.push(via(mirror));
            }
        }
    }
    // registries.conf: blocked, insecure, its mirrors, and where the registry really is.
    let rules = opts.registries_conf.load()?;
    let mut opts_conf;
    let mut opts = opts;
    let mut origin = r.clone();
    if let Some(rule) = super::registries_conf::rule_for(&rules, r.registry(), r.repository()) {
        let at = |why: &str| ImageError::Invalid(format!("{}: {why} ([[registry]] prefix {:?} in {})", r, rule.prefix, rule.file.display()));
        if let Some(why) = &rule.unsupported {
            return Err(at(why));
        }
        if rule.blocked {
            return Err(at("the registry is blocked"));
        }
        opts_conf = opts.clone();
        if rule.insecure {
            opts_conf.insecure_registries.push(if rule.prefix.starts_with("*.") { r.registry().to_string() } else { rule.location.clone() });
        }
        if op == RegistryOperation::Pull {
            for (mirror, insecure) in &rule.mirrors {
                candidates.push(via(mirror));
                if *insecure {
                    opts_conf.insecure_registries.push(mirror.clone());
                }
            }
        }
        if !rule.prefix.starts_with("*.") && rule.location != r.registry() {
            origin = via(&rule.location);
        }
        opts = &opts_conf;
    }
    candidates.push(origin);
    let mut last = None;
    for c in &candidates {
        match connect_one(c, opts, op, &first) {
            Ok(x) => return Ok(x),
            // A mirror that fails: the next one, then the registry itself.
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ImageError::Invalid("no registry to try".into())))
}

fn connect_one<T>(r: &ImageReference, opts: &PullOptions, op: RegistryOperation, first: &impl Fn(&Remote) -> Result<T, ImageError>) -> Result<(Remote, T), ImageError> {
    let host = r.0.resolve_registry().to_string();
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => credentials_for(&host, opts.auth_file.as_deref())?,
    };
    let auth = creds.map_or(RegistryAuth::Anonymous, |(u, p)| RegistryAuth::Basic(u, p));
    let plain_ok = is_loopback(&host) || opts.insecure_registries.iter().any(|x| *x == host || x == r.registry());
    let attempt = |plain: bool| -> Result<(Remote, T), ImageError> {
        let remote = Remote::new(r, opts, plain)?;
        remote.auth(&auth, op).map_err(|e| remote.auth_err(&e))?;
        let t = first(&remote)?;
        Ok((remote, t))
    };
    if !plain_ok {
        return attempt(false);
    }
    match attempt(true) {
        Ok(x) => Ok(x),
        Err(plain_err @ ImageError::Registry { .. }) => match attempt(false) {
            Ok(x) => Ok(x),
            // The registry speaks HTTPS: what went wrong is HTTPS's.
            Err(ImageError::Registry { registry, what, why }) if plain_err.to_string().contains("HTTPS server") => Err(ImageError::Registry { registry, what, why: format!("over HTTPS: {why}") }),
            Err(_) => Err(plain_err),
        },
        Err(e) => Err(e),
    }
}

impl ImageStore {
    /// Pulls `reference` (`alpine:3.20`, `127.0.0.1:5000/app:1`, `ghcr.io/org/tool@sha256:…`)
    /// into the store under that name (`:latest` added when it has neither tag nor digest).
    /// Layers the store has are not downloaded; the others are verified, decompressed and
    /// unpacked while they download, several at a time. See [`pull_with`](Self::pull_with).
    ///
    /// ```no_run
    /// let store = cagette::ImageStore::open("/tmp/store")?;
    /// let image = store.pull("127.0.0.1:5000/app:1", &Default::default())?;
    /// # Ok::<(), cagette::ImageError>(())
    /// ```
    pub fn pull(&self, reference: &str, opts: &PullOptions) -> Result<super::ImageInfo, ImageError> {
        self.pull_with(reference, opts, &mut |_| ControlFlow::Continue(()))
    }

    /// [`pull`](Self::pull) with progress, as [`import_with`](Self::import_with): `bytes` are
    /// the compressed bytes of the layers to download; returning `ControlFlow::Break(())`
    /// cancels (nothing half-done is recorded).
    pub fn pull_with(&self, reference: &str, opts: &PullOptions, progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>) -> Result<super::ImageInfo, ImageError> {
        let r = ImageReference::parse(reference)?;
        let name = if r.tag().is_none() && r.digest().is_none() { format!("{reference}:latest") } else { reference.to_string() };
        let file = super::name_file(&name)?;
        let (os, arch, variant) = platform(opts.platform.as_deref())?;
        let limits = &self.limits;
        let (remote, (mut bytes, mut digest)) = connect(&r, opts, RegistryOperation::Pull, |remote| remote.manifest(&remote.reference, limits))?;
        let remote = Arc::new(remote);
        if let Some(want) = r.digest()
            && digest != want {
                return Err(ImageError::Digest { what: format!("the manifest of {reference}"), expected: want.to_string(), actual: digest });
            }
        // An index (or Docker manifest list): pick the platform's manifest, then fetch it by
        // digest and check it is the one the index named.
        for depth in 0.. {
            let v: serde_json::Value = parse_json(&bytes, "manifest")?;
            let media = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
            if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) || media.starts_with(DOCKER_SCHEMA1) {
                return Err(ImageError::Invalid(format!("{reference} has a Docker schema 1 manifest, which cagette does not support (deprecated since 2019): push it again with a current docker, podman or skopeo")));
            }
            if v.get("manifests").is_none() {
                break;
            }
            if depth >= 4 {
                return Err(ImageError::Invalid("image indexes nested more than 4 deep".into()));
            }
            let index: ImageIndex = parse_json(&bytes, "index")?;
            let pick = index.manifests().iter().find(|m| {
                m.platform().as_ref().is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch && variant.as_deref().is_none_or(|want| p.variant().as_deref().is_none_or(|v| v == want)))
            });
            let Some(pick) = pick else {
                let have: Vec<String> = index.manifests().iter().filter_map(|m| m.platform().as_ref()).map(|p| format!("{}/{}{}", p.os(), p.architecture(), p.variant().as_deref().map(|v| format!("/{v}")).unwrap_or_default())).collect();
                return Err(ImageError::Invalid(format!("{reference} has no image for {os}/{arch}{}; it has: {}", variant.as_deref().map(|v| format!("/{v}")).unwrap_or_default(), if have.is_empty() { "none with a platform".into() } else { have.join(", ") })));
            };
            let want = pick.digest().to_string();
            let by_digest = remote.reference.clone_with_digest(want.clone());
            (bytes, digest) = remote.manifest(&by_digest, limits)?;
            if digest != want {
                return Err(ImageError::Digest { what: format!("the {os}/{arch} manifest of {reference}"), expected: want, actual: digest });
            }
        }
        let manifest: ImageManifest = parse_json(&bytes, "manifest")?;
        let config_bytes = remote.small_blob(manifest.config(), limits, "image config")?;
        let config: ImageConfiguration = parse_json(&config_bytes, "image config")?;
        let diff_ids = config.rootfs().diff_ids();
        if manifest.layers().len() != diff_ids.len() {
            return Err(ImageError::Invalid(format!("{} layers but {} diff_ids", manifest.layers().len(), diff_ids.len())));
        }
        let mut layers = Vec::new();
        for (d, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let layer_digest = d.digest().to_string();
            digest_hex(&layer_digest)?;
            let media = d.media_type().to_string();
            if media.contains("foreign") || media.contains("nondistributable") {
                return Err(ImageError::Invalid(format!("layer {layer_digest} is a non-distributable ({media}) layer, which cagette does not fetch")));
            }
            layers.push(LayerSrc { src: Src::Remote(remote.clone(), layer_digest.clone()), media_type: media, digest: Some(layer_digest), size: d.size(), diff_id: Some(diff_id.clone()) });
        }
        let parsed = Parsed { layers, manifest: Some(digest), config_digest: Some(manifest.config().digest().to_string()), config: super::run_config(&config), manifest_bytes: Some(bytes), config_bytes: Some(config_bytes) };
        let _shared = self.store_lock(nix::fcntl::FlockArg::LockShared)?;
        self.import_parsed(parsed, &name, &file, progress)
    }

    /// Pushes image `name` of the store to `destination` (`registry/repo:tag`): the config and
    /// layer blobs the registry lacks (a HEAD first; streamed from the store, chunked by the
    /// client), then the manifest, byte for byte, so its digest is the one the store records.
    /// Needs the image's blobs kept ([`keep_blobs`](Self::keep_blobs) when it was pulled or
    /// imported). Credentials and transport as for [`pull`](Self::pull). Returns the manifest's
    /// digest.
    ///
    /// ```no_run
    /// let store = cagette::ImageStore::open("/tmp/store")?.keep_blobs(true);
    /// store.pull("127.0.0.1:5000/app:1", &Default::default())?;
    /// let digest = store.push("127.0.0.1:5000/app:1", "127.0.0.1:5001/team/app:1", &Default::default())?;
    /// # Ok::<(), cagette::ImageError>(())
    /// ```
    pub fn push(&self, name: &str, destination: &str, opts: &PullOptions) -> Result<String, ImageError> {
        let info = self.get(name)?;
        let kept = |digest: &str| -> Result<PathBuf, ImageError> {
            let p = self.blob_path(digest)?;
            if p.is_file() {
                Ok(p)
            } else {
                Err(ImageError::Invalid(format!("{name}: the store has not kept its blob {digest}, which a push sends as it is: pull or import it again with blobs kept (`--keep-blobs`)")))
            }
        };
        let manifest_bytes = crate::read_host_file(&kept(&info.manifest)?, self.limits.max_json).map_err(ImageError::io(format!("read the manifest of {name}")))?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, "manifest")?;
        let media_type = manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| OCI_MANIFEST.to_string());
        let mut blobs: Vec<(String, u64)> = vec![(manifest.config().digest().to_string(), manifest.config().size())];
        blobs.extend(manifest.layers().iter().map(|l| (l.digest().to_string(), l.size())));
        let paths: Vec<PathBuf> = blobs.iter().map(|(d, _)| kept(d)).collect::<Result<_, _>>()?;
        let dest = ImageReference::parse(destination)?;
        let (remote, ()) = connect(&dest, opts, RegistryOperation::Push, |_| Ok(()))?;
        let what = |d: &str| format!("push {d} to {}", remote.reference.whole());
        for ((digest, size), path) in blobs.iter().zip(&paths) {
            let exists = remote.rt.block_on(remote.client.blob_exists(&remote.reference, digest)).map_err(|e| registry_err(&remote.registry, what(digest), explain(&e)))?;
            if exists {
                continue;
            }
            let file = std::fs::File::open(path).map_err(ImageError::io(format!("read the blob {digest}")))?;
            let stream = futures_util::stream::unfold(file, |mut f| async move {
                let mut buf = vec![0u8; 1 << 20];
                match f.read(&mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(bytes::Bytes::from(buf)), f))
                    }
                    Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
                }
            });
            remote.rt.block_on(remote.client.push_blob_stream(&remote.reference, stream, digest, Some(*size))).map_err(|e| registry_err(&remote.registry, what(digest), explain(&e)))?;
        }
        let content_type = http::HeaderValue::from_str(&media_type).map_err(|_| ImageError::Invalid(format!("manifest media type {media_type:?}")))?;
        remote.rt.block_on(remote.client.push_manifest_raw(&remote.reference, manifest_bytes.clone(), content_type)).map_err(|e| registry_err(&remote.registry, format!("push the manifest of {}", remote.reference.whole()), explain(&e)))?;
        Ok(format!("sha256:{}", super::hex(&Sha256::digest(&manifest_bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written grammar accepts and builds exactly what oci-spec's regex parser does
    /// (ASCII tags aside: Docker's are ASCII, the regex's `\w` is Unicode).
    #[test]
    fn reference_grammar_matches_oci_spec() {
        let h64 = "a".repeat(64);
        let mut corpus: Vec<String> = [
            "alpine", "alpine:3.20", "library/alpine", "docker.io/alpine", "index.docker.io/library/alpine:1",
            "127.0.0.1:5000/app:1", "localhost/app", "localhost:5000/a/b/c:tag", "ghcr.io/org/tool:v2.1-rc_1",
            "my-registry.example.com:443/team/app", "a.b.c/d", "foo/bar", "Foo/bar", "foo/Bar", "UPPER", "a__b/c", "a___b",
            "a--b/c-d", "a-/b", "-a/b", "a/-b", "a/b-", "a..b", "a.b", "a._b", "a_b.c", "x:", ":tag", "a:b:c", "a/b:c/d",
            "host:port/app", "host:80/app:", "a@", "a@sha256", "a:t@", "", "/", "a/", "/a", "a//b", "a:-x", "a:_x", "a:.x",
            "a:x.y-z_W", "ab cd", "a\tb", "a/b/c/d/e/f", "1.2.3.4/x", "[::1]:5000/app", "a:b@c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        corpus.push(format!("alpine@sha256:{h64}"));
        corpus.push(format!("alpine:3@sha256:{h64}"));
        corpus.push(format!("127.0.0.1:5000/x@sha256:{}", "A".repeat(64)));
        corpus.push(format!("x@sha256:{}", "a".repeat(63)));
        corpus.push(format!("x@sha512:{}", "a".repeat(128)));
        corpus.push(format!("x@sha384:{}", "a".repeat(64)));
        corpus.push(format!("x@md5:{}", "a".repeat(32)));
        corpus.push(format!("x@sha256+b64.v2:{}", "a".repeat(32)));
        corpus.push(format!("x@1sha:{}", "a".repeat(32)));
        corpus.push(format!("x:{}", "t".repeat(128)));
        corpus.push(format!("x:{}", "t".repeat(129)));
        corpus.push(format!("r.io/{}", "a".repeat(256)));
        corpus.push(format!("{}", "a".repeat(250)));
        for s in &corpus {
            let theirs: Result<Reference, _> = s.parse();
            let ours = parse_reference(s);
            match (&theirs, &ours) {
                (Ok(a), Ok(b)) => assert_eq!((a.registry(), a.repository(), a.tag(), a.digest()), (b.registry(), b.repository(), b.tag(), b.digest()), "{s:?}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{s:?}: oci-spec says {theirs:?}, ours {ours:?}"),
            }
        }
    }
}
