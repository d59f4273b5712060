//! Pulling from registries: Debian's `docker-registry` (the CNCF distribution registry) started
//! here on 127.0.0.1 with its own config and storage, images pushed into it with `skopeo`; basic
//! auth (htpasswd), bearer tokens (a token server of this test's own), TLS with a self-signed
//! certificate, and faults through a proxy of this test's own (dropped connections, corrupted
//! bytes, a registry that hangs, a bad challenge). Everything talks to 127.0.0.1 only.
mod common;
use cagette::{ImageError, ImageStore, PullOptions, Sandbox, SandboxSpec, Verdict};
use common::oci::*;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(found, "{tool} is needed by this test: apt-get install {package} (scripts/test.sh installs it)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A docker-registry process with its own config and storage, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    dir: TempDir,
}

impl Registry {
    /// `extra` is YAML added to the config (auth:, or http.tls through `tls`).
    fn start(tag: &str, extra: &str, tls: Option<(&Path, &Path)>) -> Registry {
        need("docker-registry", "docker-registry");
        let dir = TempDir::new(&format!("registry-{tag}"));
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let tls = tls.map(|(c, k)| format!("  tls:\n    certificate: {}\n    key: {}\n", c.display(), k.display())).unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: cagette-test\n{tls}{extra}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry").arg("serve").arg(dir.path().join("config.yml")).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let r = Registry { child, addr, dir };
        assert!(eventually(20.0, || TcpStream::connect(&r.addr).is_ok()), "the registry did not start: {}", std::fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default());
        r
    }

    /// Pushes an OCI layout into `repo:tag` with skopeo (all platforms of an index).
    fn push(&self, layout: &Path, reference: &str, creds: Option<&str>, tls_verify: bool, cert_dir: Option<&Path>) {
        need("skopeo", "skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--all", "-q", &format!("--dest-tls-verify={tls_verify}")]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        if let Some(d) = cert_dir {
            cmd.arg(format!("--dest-cert-dir={}", d.display()));
        }
        let o = cmd.arg(format!("oci:{}:t", layout.display())).arg(format!("docker://{}/{reference}", self.addr)).output().unwrap();
        assert!(o.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store(d: &TempDir) -> ImageStore {
    ImageStore::open(d.path().join("store")).unwrap()
}

/// No staging and no half layer: every layer directory is a committed one.
fn store_consistent(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("tmp")).map(|r| r.count() == 0).unwrap_or(true)
}

fn run_image(store_dir: &Path, image: &str, script: &str) -> (Verdict, String) {
    let spec = SandboxSpec { image: Some(image.into()), image_store: Some(store_dir.to_path_buf()), argv: vec!["/bin/sh".into(), "-c".into(), script.into()], ..SandboxSpec::default() };
    let out = Sandbox::from_spec(spec).output().unwrap();
    let text = stdout(&out);
    (out.status, text)
}

fn file_layer(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// Incompressible bytes, so a layer is big on the wire too.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn pull_by_tag_and_digest_then_run() {
    let reg = Registry::start("plain", "", None);
    let d = TempDir::new("pull-plain");
    let lay = layout(d.path(), &[busybox_layer(), file_layer("etc/message", b"pulled\n")], &["/bin/sh"]);
    reg.push(&lay, "app:1", None, false, None);
    let s = store(&d);
    let name = format!("{}/app:1", reg.addr);
    let info = s.pull(&name, &PullOptions::default()).unwrap();
    assert_eq!(info.name, name);
    assert_eq!(info.layers.len(), 2);
    let (v, out) = run_image(&d.path().join("store"), &name, "cat /etc/message; echo $FROM_IMAGE");
    assert_eq!((v, out.as_str()), (Verdict::Exited(0), "pulled\nyes\n"));
    // Again: every layer is there, nothing is downloaded (the registry is gone).
    let manifest = info.manifest.clone();
    drop(reg);
    let again = s.pull(&name, &PullOptions { attempts: 1, timeout: Duration::from_secs(2), ..PullOptions::default() });
    assert!(matches!(again, Err(ImageError::Registry { .. })), "the manifest is fetched every time: {again:?}");
    let reg = Registry::start("plain2", "", None);
    reg.push(&lay, "app:1", None, false, None);
    let by_digest = format!("{}/app@{manifest}", reg.addr);
    let again = s.pull(&by_digest, &PullOptions::default()).unwrap();
    assert_eq!(again.manifest, manifest, "the same image by its digest");
    // A digest that is not the image's: refused.
    let wrong = format!("{}/app@sha256:{}", reg.addr, "0".repeat(64));
    let e = s.pull(&wrong, &PullOptions::default()).unwrap_err();
    assert!(matches!(e, ImageError::Registry { .. }) && e.to_string().contains("manifest"), "{e}");
    // A tag that does not exist, a repository that does not exist: clear errors.
    let e = s.pull(&format!("{}/app:nope", reg.addr), &PullOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no such image or tag") || e.to_string().contains("not found") || e.to_string().contains("unknown"), "{e}");
    assert!(store_consistent(&d.path().join("store")));
}

#[test]
fn multi_platform_index_picks_the_platform() {
    let reg = Registry::start("multi", "", None);
    let d = TempDir::new("pull-multi");
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let lay = multi_platform_layout(d.path(), &[(other, vec![busybox_layer(), file_layer("etc/arch", other.as_bytes())]), (arch, vec![busybox_layer(), file_layer("etc/arch", arch.as_bytes())])]);
    reg.push(&lay, "multi:1", None, false, None);
    let s = store(&d);
    let name = format!("{}/multi:1", reg.addr);
    s.pull(&name, &PullOptions::default()).unwrap();
    let (v, out) = run_image(&d.path().join("store"), &name, "cat /etc/arch");
    assert_eq!((v, out.as_str()), (Verdict::Exited(0), arch));
    // The other platform, stored under another name; its layer differs.
    let s2 = ImageStore::open(d.path().join("store2")).unwrap();
    let info = s2.pull(&name, &PullOptions { platform: Some(format!("linux/{other}")), ..PullOptions::default() }).unwrap();
    assert_eq!(info.layers.len(), 2);
    let unpacked = d.path().join("unpacked");
    s2.unpack(&name, &unpacked).unwrap();
    assert_eq!(std::fs::read_to_string(unpacked.join("etc/arch")).unwrap(), other);
    // A platform the index lacks: the error lists what it has.
    let e = s2.pull(&name, &PullOptions { platform: Some("linux/s390x".into()), ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("linux/s390x") && e.to_string().contains(&format!("linux/{arch}")), "{e}");
    let e = s2.pull(&name, &PullOptions { platform: Some("nonsense".into()), ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("os/arch"), "{e}");
}

#[test]
fn basic_auth_from_options_and_credential_files() {
    need("htpasswd", "apache2-utils");
    let d = TempDir::new("pull-basic");
    let htpasswd = d.path().join("htpasswd");
    let o = Command::new("htpasswd").args(["-Bbc"]).arg(&htpasswd).args(["ci", "s3cret"]).output().unwrap();
    assert!(o.status.success());
    let reg = Registry::start("basic", &format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", htpasswd.display()), None);
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    reg.push(&lay, "private/app:1", Some("ci:s3cret"), false, None);
    let s = store(&d);
    let name = format!("{}/private/app:1", reg.addr);
    // No credentials: refused, with what to do.
    let nowhere = d.path().join("no-auth.json");
    let e = s.pull(&name, &PullOptions { auth_file: Some(nowhere.clone()), ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("not authorized") && e.to_string().contains("login"), "{e}");
    // Wrong ones: refused too, and the password is in no message.
    let e = s.pull(&name, &PullOptions { credentials: Some(("ci".into(), "wrong-password".into())), ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("not authorized") && !e.to_string().contains("wrong-password"), "{e}");
    // Given ones.
    s.pull(&name, &PullOptions { credentials: Some(("ci".into(), "s3cret".into())), ..PullOptions::default() }).unwrap();
    // From an auth.json written by login (mode 0600), as podman and skopeo read it.
    let auth = d.path().join("containers/auth.json");
    let written = cagette::login(&reg.addr, "ci", "s3cret", Some(&auth)).unwrap();
    assert_eq!(written, auth);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(cagette::credentials_for(&reg.addr, Some(&auth)).unwrap(), Some(("ci".into(), "s3cret".into())));
    let s2 = ImageStore::open(d.path().join("store2")).unwrap();
    s2.pull(&name, &PullOptions { auth_file: Some(auth.clone()), ..PullOptions::default() }).unwrap();
    // docker's config.json shape, with https:// in the key.
    let docker = d.path().join("docker-config.json");
    std::fs::write(&docker, format!(r#"{{"auths":{{"https://{}":{{"auth":"Y2k6czNjcmV0"}}}}}}"#, reg.addr)).unwrap();
    assert_eq!(cagette::credentials_for(&reg.addr, Some(&docker)).unwrap(), Some(("ci".into(), "s3cret".into())));
    // A broken credentials file is named.
    std::fs::write(&docker, "{not json").unwrap();
    let e = cagette::credentials_for(&reg.addr, Some(&docker)).unwrap_err();
    assert!(e.to_string().contains("docker-config.json"), "{e}");
}

/// A token server for the registry's `auth: token`: every request gets a JWT (RS256, signed by
/// `openssl`) granting what it asked for, after checking basic credentials.
struct TokenServer {
    addr: String,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicU64>,
}

fn b64url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

impl TokenServer {
    fn start(dir: &Path, key: PathBuf, cert_der: Vec<u8>) -> TokenServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicU64::new(0));
        let (stop2, issued2, dir) = (stop.clone(), issued.clone(), dir.to_path_buf());
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap_or(0);
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) <= 2 {
                        break;
                    }
                    // ci:s3cret
                    if h.to_ascii_lowercase().starts_with("authorization: basic y2k6cznjcmv0") || h.starts_with("Authorization: Basic Y2k6czNjcmV0") {
                        authorized = true;
                    }
                }
                let query = line.split_whitespace().nth(1).unwrap_or("").split_once('?').map(|x| x.1).unwrap_or("").to_string();
                let scope = query.split('&').find_map(|kv| kv.strip_prefix("scope=")).map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",")).unwrap_or_default();
                if !authorized {
                    let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let access: Vec<serde_json::Value> = scope
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| {
                        let p: Vec<&str> = s.splitn(3, ':').collect();
                        (p.len() == 3).then(|| serde_json::json!({"type": p[0], "name": p[1], "actions": p[2].split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64_std(&cert_der)]});
                let claims = serde_json::json!({"iss": "cagette-test", "sub": "ci", "aud": "cagette-registry", "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", issued2.load(Ordering::Relaxed)), "access": access});
                let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
                let input_file = dir.join("jwt-input");
                std::fs::write(&input_file, &signing_input).unwrap();
                let sig = Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&key).arg(&input_file).output().unwrap();
                assert!(sig.status.success());
                let token = format!("{signing_input}.{}", b64url(&sig.stdout));
                issued2.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
                let _ = c.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
            }
        });
        TokenServer { addr, stop, issued }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn base64_std(b: &[u8]) -> String {
    let mut s = b64url(b).replace('-', "+").replace('_', "/");
    while s.len() % 4 != 0 {
        s.push('=');
    }
    s
}

/// A self-signed certificate (and key), for signing tokens: PEM paths.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN={name}"), "-keyout", path(&key), "-out", path(&cert)]);
    (cert, key)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A certificate authority and a server certificate it signed for 127.0.0.1: (CA, cert, key).
fn ca_and_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cagette test CA", "-keyout", path(&ca_key), "-out", path(&ca)]);
    let (csr, cert, key, ext) = (dir.join("server.csr"), dir.join("server.crt"), dir.join("server.key"), dir.join("server.ext"));
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", path(&key), "-out", path(&csr)]);
    std::fs::write(&ext, "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(&["x509", "-req", "-in", path(&csr), "-CA", path(&ca), "-CAkey", path(&ca_key), "-CAcreateserial", "-days", "2", "-extfile", path(&ext), "-out", path(&cert)]);
    (ca, cert, key)
}

#[test]
fn bearer_token_auth() {
    need("openssl", "openssl");
    let d = TempDir::new("pull-token");
    let (cert, key) = self_signed(d.path(), "token-signer");
    let der = Command::new("openssl").args(["x509", "-outform", "der", "-in"]).arg(&cert).output().unwrap().stdout;
    let tokens = TokenServer::start(d.path(), key, der);
    let reg = Registry::start(
        "token",
        &format!("auth:\n  token:\n    realm: http://{}/token\n    service: cagette-registry\n    issuer: cagette-test\n    rootcertbundle: {}\n", tokens.addr, cert.display()),
        None,
    );
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    reg.push(&lay, "team/app:1", Some("ci:s3cret"), false, None);
    let s = store(&d);
    let name = format!("{}/team/app:1", reg.addr);
    let before = tokens.issued.load(Ordering::Relaxed);
    s.pull(&name, &PullOptions { credentials: Some(("ci".into(), "s3cret".into())), ..PullOptions::default() }).unwrap();
    assert!(tokens.issued.load(Ordering::Relaxed) > before, "the pull went through the token server");
    let (v, out) = run_image(&d.path().join("store"), &name, "echo ok");
    assert_eq!((v, out.as_str()), (Verdict::Exited(0), "ok\n"));
    // Without credentials the token server refuses: a clear error.
    let s2 = ImageStore::open(d.path().join("store2")).unwrap();
    let e = s2.pull(&name, &PullOptions { auth_file: Some(d.path().join("none.json")), ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("not authorized"), "{e}");
}

#[test]
fn tls_with_a_certificate_of_our_own() {
    need("openssl", "openssl");
    let d = TempDir::new("pull-tls");
    let (ca, cert, key) = ca_and_server_cert(d.path());
    let reg = Registry::start("tls", "", Some((&cert, &key)));
    let certs = d.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    reg.push(&lay, "secure:1", None, true, Some(&certs));
    let s = store(&d);
    let name = format!("{}/secure:1", reg.addr);
    // Without its CA: the certificate is refused, and the error says so (even for a loopback
    // registry, which would have been allowed plain HTTP).
    let e = s.pull(&name, &PullOptions { attempts: 1, ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("HTTPS") && e.to_string().to_lowercase().contains("certificate"), "{e}");
    s.pull(&name, &PullOptions { ca_files: vec![ca.clone()], ..PullOptions::default() }).unwrap();
    let (v, out) = run_image(&d.path().join("store"), &name, "echo tls");
    assert_eq!((v, out.as_str()), (Verdict::Exited(0), "tls\n"));
}

/// A TCP proxy in front of a registry that misbehaves on the blob `target` (by digest hex):
/// `drop_after`: closes the connection once after that many body bytes; `corrupt_at`: flips
/// that body byte of every response for it; `slow`: 2 ms per 8 KiB of it (~2 s for 8 MiB).
struct Proxy {
    addr: String,
    stop: Arc<AtomicBool>,
    blob_requests: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: &str, target: &str, drop_after: Option<u64>, corrupt_at: Option<u64>, slow: bool) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let blob_requests = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let (stop2, upstream, target, requests) = (stop.clone(), upstream.to_string(), target.to_string(), blob_requests.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(&upstream).unwrap();
                let hit = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out, hit2, target, requests) = (client.try_clone().unwrap(), server.try_clone().unwrap(), hit.clone(), target.clone(), requests.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        let n = match c_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("GET ") && text.contains(&format!("/blobs/sha256:{target}")) {
                            hit2.store(true, Ordering::SeqCst);
                            requests.fetch_add(1, Ordering::SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out, dropped) = (server, client, dropped.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    let mut body: Option<u64> = None; // bytes of the target's body passed so far
                    let mut head = Vec::new();
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut chunk = buf[..n].to_vec();
                        if hit.load(Ordering::SeqCst) && body.is_none() {
                            head.extend_from_slice(&chunk);
                            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                                let start = chunk.len() - (head.len() - (p + 4));
                                body = Some(0);
                                let rest = chunk.split_off(start);
                                if c_out.write_all(&chunk).is_err() {
                                    break;
                                }
                                chunk = rest;
                            } else {
                                if c_out.write_all(&chunk).is_err() {
                                    break;
                                }
                                continue;
                            }
                        }
                        if let Some(done) = body.as_mut() {
                            if slow {
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            if let Some(at) = corrupt_at.filter(|&at| at >= *done && at < *done + chunk.len() as u64) {
                                chunk[(at - *done) as usize] ^= 0xff;
                            }
                            if let Some(after) = drop_after.filter(|&a| *done + chunk.len() as u64 > a && !dropped.load(Ordering::SeqCst)) {
                                let keep = (after - *done) as usize;
                                let _ = c_out.write_all(&chunk[..keep]);
                                dropped.store(true, Ordering::SeqCst);
                                let _ = c_out.shutdown(std::net::Shutdown::Both);
                                let _ = s_in.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            *done += chunk.len() as u64;
                        }
                        if c_out.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy { addr, stop, blob_requests }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The registry, a two-layer image whose second layer is ~8 MB of noise, and that layer's digest.
fn big_image(tag: &str) -> (Registry, TempDir, String) {
    let reg = Registry::start(tag, "", None);
    let d = TempDir::new(&format!("pull-{tag}"));
    let big = file_layer("data/noise", &noise(8 << 20, 7));
    let lay = layout(d.path(), &[busybox_layer(), big.clone()], &["/bin/sh"]);
    reg.push(&lay, "big:1", None, false, None);
    let digest = sha(&gzip(&big))[7..].to_string();
    (reg, d, digest)
}

#[test]
fn a_dropped_connection_resumes_the_layer() {
    let (reg, d, digest) = big_image("drop");
    let proxy = Proxy::start(&reg.addr, &digest, Some(3 << 20), None, false);
    let s = store(&d);
    let name = format!("{}/big:1", proxy.addr);
    let info = s.pull(&name, &PullOptions::default()).unwrap();
    assert_eq!(info.layers.len(), 2);
    assert!(proxy.blob_requests.load(Ordering::SeqCst) >= 2, "the layer was asked for again after the drop");
    let (v, out) = run_image(&d.path().join("store"), &name, "wc -c < /data/noise");
    assert_eq!((v, out.trim()), (Verdict::Exited(0), (8u64 << 20).to_string().as_str()));
}

#[test]
fn corrupted_bytes_commit_nothing() {
    let (reg, d, digest) = big_image("corrupt");
    let proxy = Proxy::start(&reg.addr, &digest, None, Some(5 << 20), false);
    let store_dir = d.path().join("store");
    let s = store(&d);
    let name = format!("{}/big:1", proxy.addr);
    let e = s.pull(&name, &PullOptions { attempts: 2, ..PullOptions::default() }).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&digest[..12]) || msg.contains("do not match") || msg.contains("digest"), "{msg}");
    assert!(s.get(&name).is_err(), "no image recorded");
    assert!(store_consistent(&store_dir));
    assert!(s.list().unwrap().is_empty());
    // The corrupted layer is not in the store (the intact one may be: another image can use it).
    let layers: Vec<_> = std::fs::read_dir(store_dir.join("layers/sha256")).unwrap().collect();
    assert!(layers.len() <= 1, "at most the intact layer: {layers:?}");
}

#[test]
fn a_registry_that_hangs_times_out() {
    // Accepts, reads, never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let d = TempDir::new("pull-hang");
    let s = store(&d);
    let started = std::time::Instant::now();
    let e = s.pull(&format!("{addr}/app:1"), &PullOptions { timeout: Duration::from_secs(1), attempts: 2, ..PullOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("did not answer in time") || e.to_string().contains("timed out"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded by the timeouts");
    assert!(store_consistent(&d.path().join("store")));
}

#[test]
fn a_bad_challenge_and_bad_references_are_clear_errors() {
    // 401 with a challenge no client can answer.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bogus realm=\"x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let d = TempDir::new("pull-bad");
    let s = store(&d);
    let e = s.pull(&format!("{addr}/app:1"), &PullOptions { attempts: 1, ..PullOptions::default() }).unwrap_err();
    assert!(matches!(e, ImageError::Registry { .. }), "{e}");
    assert!(e.to_string().contains(&addr), "{e}");
    for bad in ["", "UPPER/case:1", "app@sha256:1234", "a:b:c:d", "app:../x"] {
        let e = s.pull(bad, &PullOptions::default()).unwrap_err();
        assert!(matches!(e, ImageError::Invalid(_)), "{bad:?}: {e}");
    }
    // A public registry name without network: fails on connecting, clearly (no hang).
    assert!(store_consistent(&d.path().join("store")));
}

#[test]
fn a_manifest_over_the_bound_is_refused() {
    let reg = Registry::start("bound", "", None);
    let d = TempDir::new("pull-bound");
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    reg.push(&lay, "app:1", None, false, None);
    let s = ImageStore::open(d.path().join("store")).unwrap().with_limits(cagette::ImageLimits { max_json: 200, ..cagette::ImageLimits::default() });
    let e = s.pull(&format!("{}/app:1", reg.addr), &PullOptions::default()).unwrap_err();
    assert!(matches!(e, ImageError::Limit(_)), "{e}");
    assert!(store_consistent(&d.path().join("store")));
}

/// Run by `a_killed_pull_leaves_the_store_consistent` in a child process (this test binary, with
/// the store and image in the environment), to be killed mid-pull.
#[test]
#[ignore = "run as a child process by a_killed_pull_leaves_the_store_consistent"]
fn pull_in_a_child_process() {
    let (Some(store_dir), Some(name)) = (std::env::var_os("CAGETTE_TEST_PULL_STORE"), std::env::var("CAGETTE_TEST_PULL_NAME").ok()) else {
        return;
    };
    ImageStore::open(store_dir).unwrap().pull(&name, &PullOptions::default()).unwrap();
}

#[test]
fn a_killed_pull_leaves_the_store_consistent() {
    let (reg, d, digest) = big_image("killed");
    // The big layer comes slowly (~2 s), so the pull is still running when it is killed.
    let proxy = Proxy::start(&reg.addr, &digest, None, None, true);
    let store_dir = d.path().join("store");
    let name = format!("{}/big:1", proxy.addr);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pull_in_a_child_process", "--ignored", "--test-threads=1"])
        .env("CAGETTE_TEST_PULL_STORE", &store_dir)
        .env("CAGETTE_TEST_PULL_NAME", &name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it is unpacking the big layer.
    let staged = eventually(30.0, || proxy.blob_requests.load(Ordering::SeqCst) > 0 && std::fs::read_dir(store_dir.join("tmp")).map(|r| r.count() > 0).unwrap_or(false));
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(staged, "the pull staged a layer before it was killed");
    // No image recorded; the next open sweeps the dead pull's staging; a new pull works.
    let s = ImageStore::open(&store_dir).unwrap();
    assert!(s.get(&name).is_err());
    assert!(store_consistent(&store_dir), "staging of the dead pull swept");
    s.pull(&name, &PullOptions::default()).unwrap();
    let (v, _) = run_image(&store_dir, &name, "test -s /data/noise");
    assert_eq!(v, Verdict::Exited(0));
}

fn tree_of(store: &ImageStore, name: &str, dest: &Path) -> Vec<String> {
    store.unpack(name, dest).unwrap();
    let o = Command::new("sh").arg("-c").arg("find . -printf '%p %y %m %s %l\\n' | sort").current_dir(dest).output().unwrap();
    String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()
}

#[test]
fn push_then_pull_back_export_and_podman() {
    let src = Registry::start("push-src", "", None);
    let dst = Registry::start("push-dst", "", None);
    let d = TempDir::new("push");
    let lay = layout(d.path(), &[busybox_layer(), file_layer("etc/pushed", b"yes\n")], &["/bin/sh"]);
    src.push(&lay, "app:1", None, false, None);
    let from = format!("{}/app:1", src.addr);
    // Without kept blobs there is nothing to push, and the error says what to do.
    let plain = ImageStore::open(d.path().join("plain")).unwrap();
    plain.pull(&from, &PullOptions::default()).unwrap();
    let e = plain.push(&from, &format!("{}/team/app:1", dst.addr), &PullOptions::default()).unwrap_err();
    assert!(e.to_string().contains("--keep-blobs"), "{e}");
    // With them: pushed byte for byte (same manifest digest), then pulled back: the same tree.
    let keep = ImageStore::open(d.path().join("keep")).unwrap().keep_blobs(true);
    let info = keep.pull(&from, &PullOptions::default()).unwrap();
    let to = format!("{}/team/app:1", dst.addr);
    let pushed = keep.push(&from, &to, &PullOptions::default()).unwrap();
    assert_eq!(pushed, info.manifest);
    // Again: every blob is there (HEAD), only the manifest goes.
    assert_eq!(keep.push(&from, &to, &PullOptions::default()).unwrap(), info.manifest);
    let back = ImageStore::open(d.path().join("back")).unwrap();
    let again = back.pull(&to, &PullOptions::default()).unwrap();
    assert_eq!(again.manifest, info.manifest);
    assert_eq!(again.layers, info.layers);
    assert_eq!(tree_of(&keep, &from, &d.path().join("t1")), tree_of(&back, &to, &d.path().join("t2")));
    // podman pulls what cagette pushed.
    need("podman", "podman");
    let pr = d.path().join("podman");
    let o = Command::new("podman")
        .arg("--root")
        .arg(pr.join("root"))
        .arg("--runroot")
        .arg(pr.join("run"))
        .args(["--storage-driver", "vfs", "pull", "-q", "--tls-verify=false", &to])
        .output()
        .unwrap();
    assert!(o.status.success(), "podman pull: {}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!id.is_empty());
    let o = Command::new("podman").arg("--root").arg(pr.join("root")).arg("--runroot").arg(pr.join("run")).args(["--storage-driver", "vfs", "image", "inspect", "--format", "{{.Digest}}", &to]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), info.manifest, "{}", String::from_utf8_lossy(&o.stderr));
    let _ = Command::new("podman").arg("--root").arg(pr.join("root")).arg("--runroot").arg(pr.join("run")).args(["--storage-driver", "vfs", "rmi", "-a", "-f"]).output();
    // Export: an OCI layout skopeo reads with the same digest, and a docker archive skopeo
    // copies (as podman load would read it).
    let oci = d.path().join("export-oci");
    keep.export(&from, &oci, cagette::ExportFormat::Oci).unwrap();
    let o = Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}", oci.display())).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha(&o.stdout), info.manifest);
    let archive = d.path().join("export.tar");
    keep.export(&from, &archive, cagette::ExportFormat::DockerArchive).unwrap();
    let o = Command::new("skopeo").args(["--insecure-policy", "copy", "-q"]).arg(format!("docker-archive:{}", archive.display())).arg(format!("oci:{}:t", d.path().join("from-archive").display())).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reimported = ImageStore::open(d.path().join("reimport")).unwrap();
    let r = reimported.import(&d.path().join("from-archive"), "re:1").unwrap();
    assert_eq!(r.layers, info.layers, "the same layers (diff_ids) through the docker archive");
    // An existing destination is refused; a store without the blobs says what to do.
    let e = keep.export(&from, &oci, cagette::ExportFormat::Oci).unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
    let e = plain.export(&from, &d.path().join("x"), cagette::ExportFormat::Oci).unwrap_err();
    assert!(e.to_string().contains("--keep-blobs"), "{e}");
    // Blobs go with gc once no image uses them.
    let blobs = d.path().join("keep/blobs/sha256");
    assert!(std::fs::read_dir(&blobs).unwrap().count() >= 4, "manifest, config, two layers");
    keep.remove(&from).unwrap();
    keep.gc().unwrap();
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    // Keeping blobs of a plain layer tar: nothing to push later, so refused up front.
    let tarf = d.path().join("layer.tar");
    std::fs::write(&tarf, file_layer("x", b"y")).unwrap();
    let e = keep.import(&tarf, "plain:1").unwrap_err();
    assert!(e.to_string().contains("manifest"), "{e}");
}

#[test]
fn mirrors_first_then_the_registry() {
    let mirror = Registry::start("mirror", "", None);
    let origin = Registry::start("origin", "", None);
    let d = TempDir::new("mirrors");
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    origin.push(&lay, "app:1", None, false, None);
    // A mirror that lacks the image: the registry itself serves it.
    let s = store(&d);
    let name = format!("{}/app:1", origin.addr);
    let opts = PullOptions { mirrors: vec![(origin.addr.clone(), mirror.addr.clone())], ..PullOptions::default() };
    s.pull(&name, &opts).unwrap();
    // A mirror that has it: used even when the registry is down.
    mirror.push(&lay, "app:1", None, false, None);
    let dead = format!("127.0.0.1:{}", free_port());
    let s2 = ImageStore::open(d.path().join("store2")).unwrap();
    let info = s2.pull(&format!("{dead}/app:1"), &PullOptions { mirrors: vec![(dead.clone(), mirror.addr.clone())], attempts: 1, ..PullOptions::default() }).unwrap();
    assert_eq!(info.name, format!("{dead}/app:1"), "recorded under the name asked for");
}

#[test]
fn registries_conf_mirrors_locations_and_blocks() {
    let real = Registry::start("regconf", "", None);
    let d = TempDir::new("regconf");
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    real.push(&lay, "app:1", None, false, None);
    let dead = format!("127.0.0.1:{}", free_port());
    let conf = d.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = [\"docker.io\"]\n\
             [[registry]]\nprefix = \"{dead}\"\n[[registry.mirror]]\nlocation = \"{real}\"\n\n\
             [[registry]]\nprefix = \"registry.invalid\"\nlocation = \"{real}\"\n\n\
             [[registry]]\nlocation = \"blocked.invalid\"\nblocked = true\n\n\
             [[registry]]\nprefix = \"ns.invalid/team\"\nlocation = \"{real}/team\"\n",
            real = real.addr
        ),
    )
    .unwrap();
    let opts = PullOptions { registries_conf: cagette::RegistriesConf::File(conf.clone()), attempts: 1, ..PullOptions::default() };
    let s = store(&d);
    // A mirror of a registry that is down.
    let info = s.pull(&format!("{dead}/app:1"), &opts).unwrap();
    assert_eq!(info.name, format!("{dead}/app:1"));
    // A registry served from another location.
    let info = s.pull("registry.invalid/app:1", &opts).unwrap();
    assert_eq!(info.name, "registry.invalid/app:1");
    // Blocked, and a rule cagette cannot honour: refused, naming the file; nothing recorded.
    let e = s.pull("blocked.invalid/app:1", &opts).unwrap_err().to_string();
    assert!(e.contains("blocked") && e.contains(&conf.display().to_string()), "{e}");
    let e = s.pull("ns.invalid/team/app:1", &opts).unwrap_err().to_string();
    assert!(e.contains("not supported") && e.contains("ns.invalid/team"), "{e}");
    let names: Vec<String> = s.list().unwrap().into_iter().map(|i| i.name).collect();
    assert!(!names.iter().any(|n| n.contains(".invalid/team") || n.starts_with("blocked")), "{names:?}");
    // Without it, the registry that is down is just down.
    assert!(s.pull(&format!("{dead}/app:1"), &PullOptions { registries_conf: cagette::RegistriesConf::Off, attempts: 1, ..PullOptions::default() }).is_err());
}

/// Run by `credential_helpers_are_run` in a child process whose PATH has a fake helper.
#[test]
#[ignore = "run as a child process by credential_helpers_are_run"]
fn credential_helper_in_a_child_process() {
    let Some(file) = std::env::var_os("CAGETTE_TEST_AUTH_FILE") else { return };
    let c = cagette::credentials_for("registry.example:5000", Some(Path::new(&file))).unwrap();
    assert_eq!(c, Some(("helper-user".into(), "helper-secret".into())));
    // A store (credsStore) is asked for registries without an entry of their own.
    let c = cagette::credentials_for("other.example", Some(Path::new(&file))).unwrap();
    assert_eq!(c, Some(("store-user".into(), "store-secret".into())));
}

#[test]
fn credential_helpers_are_run() {
    // docker-credential-<helper> get: the registry on stdin, {"Username","Secret"} on stdout.
    let d = TempDir::new("credhelper");
    for (helper, user) in [("cagettetest", "helper"), ("cagettestore", "store")] {
        let p = d.path().join(format!("docker-credential-{helper}"));
        std::fs::write(&p, format!("#!/bin/sh\nread reg\necho '{{\"ServerURL\":\"'$reg'\",\"Username\":\"{user}-user\",\"Secret\":\"{user}-secret\"}}'\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let auth = d.path().join("config.json");
    std::fs::write(&auth, r#"{"credHelpers":{"registry.example:5000":"cagettetest"},"credsStore":"cagettestore"}"#).unwrap();
    let path = format!("{}:{}", d.path().display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "credential_helper_in_a_child_process", "--ignored", "--test-threads=1"])
        .env("PATH", path)
        .env("CAGETTE_TEST_AUTH_FILE", &auth)
        .output()
        .unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("1 passed"), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_build_pulls_a_missing_base_with_its_blobs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: building images needs root");
        return;
    }
    let reg = Registry::start("build-base", "", None);
    let d = TempDir::new("build-pull");
    let lay = layout(d.path(), &[busybox_layer()], &["/bin/sh"]);
    reg.push(&lay, "bb:1", None, false, None);
    let base = format!("{}/bb:1", reg.addr);
    let ctx = d.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {base}\nRUN echo built > /x\n")).unwrap();
    let build = |store: &ImageStore, pull: bool| {
        let mut o = cagette::BuildOptions::default();
        o.tag = Some("built:1".into());
        o.network_host = false;
        o.pull = pull.then(PullOptions::default);
        let mut pulled = Vec::new();
        let r = store.build(&ctx, &o, &mut |e| {
            if let cagette::BuildEvent::Pulling(r) = e {
                pulled.push(r.clone());
            }
            std::ops::ControlFlow::Continue(())
        });
        (r, pulled)
    };
    // Without pulling (the library's default): a missing base is an error naming it.
    let s = store(&d);
    let e = build(&s, false).0.unwrap_err().to_string();
    assert!(e.contains(&format!("FROM {base}")) && e.contains("no image named"), "{e}");
    // Pulled when missing, with its blobs (the built image's manifest names the base's).
    let (r, pulled) = build(&s, true);
    let info = r.unwrap();
    assert_eq!(pulled, [base.clone()]);
    assert_eq!(run_image(&d.path().join("store"), "built:1", "cat /x"), (Verdict::Exited(0), "built\n".into()));
    s.export("built:1", &d.path().join("built-oci"), cagette::ExportFormat::Oci).unwrap();
    // Pushed as it is (its blobs were kept), pulled into another store: the same image, it runs.
    let pushed = format!("{}/built:1", reg.addr);
    assert_eq!(s.push("built:1", &pushed, &PullOptions::default()).unwrap(), info.manifest);
    let third = ImageStore::open(d.path().join("third")).unwrap();
    assert_eq!(third.pull(&pushed, &PullOptions::default()).unwrap().manifest, info.manifest);
    assert_eq!(run_image(&d.path().join("third"), &pushed, "cat /x"), (Verdict::Exited(0), "built\n".into()));
    // A base the store holds without its blobs is pulled again, with them.
    let other = ImageStore::open(d.path().join("other")).unwrap();
    other.import(&lay, &base).unwrap();
    let (r, pulled) = build(&other, true);
    assert_eq!(pulled, [base.clone()]);
    assert_eq!(r.unwrap().manifest, info.manifest, "the same image from the same base");
    // The base is there now: no pull.
    let (_, pulled) = build(&other, true);
    assert!(pulled.is_empty());
}
