//! Helpers shared by the integration tests (real namespaces, real mounts, real processes).
#![allow(dead_code)]

pub mod oci;

use cagette::{Output, Sandbox, Stdio};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Runs `sh -c script` in a default sandbox, capturing output.
pub fn sh(script: &str) -> Output {
    Sandbox::new().command("sh").args(["-c", script]).output().expect("spawn")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A sandbox running `sh -c script` with piped output.
pub fn sandbox(script: &str) -> Sandbox {
    Sandbox::new().command("sh").args(["-c", script]).stdout(Stdio::Piped).stderr(Stdio::Piped)
}

/// A busybox rootfs, built once under Cargo's target tmp dir and reused (needs busybox-static).
pub fn busybox_rootfs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_rootfs(Path::new(env!("CARGO_TARGET_TMPDIR")))).clone()
}

pub fn build_rootfs(base: &Path) -> PathBuf {
    let dir = base.join("busybox-rootfs");
    if dir.join("bin/busybox").exists() {
        return dir;
    }
    // Build beside it and rename, so concurrent test binaries never see a half-made rootfs.
    let tmp = base.join(format!("busybox-rootfs.{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-busybox-rootfs.sh");
    let st = Command::new("sh").arg(&script).arg(&tmp).status().expect("run make-busybox-rootfs.sh");
    assert!(st.success(), "building the busybox rootfs failed (is busybox-static installed?)");
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // another process won the race
    }
    dir
}

/// A writable copy of the busybox rootfs at `dir/root` (for tests that change the rootfs).
pub fn busybox_rootfs_copy(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", busybox_rootfs().display())).arg(&root).status().unwrap();
    assert!(st.success(), "copying the busybox rootfs to {} failed", root.display());
    root
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cagette-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host's mount table (mount points), to check that nothing leaked.
pub fn host_mounts() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// Number of open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether this process has any child left, reaped or not.
pub fn has_children() -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL) };
    r == 0
}

/// Pids of processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Waits up to `secs` for `f` to hold.
pub fn eventually(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}
