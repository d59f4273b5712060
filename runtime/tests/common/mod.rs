//! Helpers of the runtime's tests: bundles on a busybox rootfs, the runtime binary, a state
//! root and a cgroup parent of the test's own (removed at the end).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RUNTIME: &str = env!("CARGO_BIN_EXE_cagette-runtime");

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A busybox rootfs built once per target dir (scripts/make-busybox-rootfs.sh).
pub fn busybox_rootfs() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join("busybox-rootfs");
        if dir.join("bin/busybox").exists() {
            return dir;
        }
        let tmp = base.join(format!("busybox-rootfs.{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-busybox-rootfs.sh");
        assert!(Command::new("sh").arg(&script).arg(&tmp).status().expect("run make-busybox-rootfs.sh").success());
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
    .clone()
}

/// A test's world: a state root, a cgroup parent, bundles; all removed on drop (containers
/// still there are deleted with --force first).
pub struct World {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub cgroup_parent: String,
}

impl World {
    pub fn new(tag: &str) -> World {
        let dir = std::env::temp_dir().join(format!("cagette-rt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("state");
        World { dir, root, cgroup_parent: format!("/cagette-test-rt-{tag}-{}", std::process::id()) }
    }

    /// `cagette-runtime --root <root> args...`
    pub fn rt(&self, args: &[&str]) -> Output {
        Command::new(RUNTIME).arg("--root").arg(&self.root).args(args).stdin(std::process::Stdio::null()).output().expect("run cagette-runtime")
    }

    /// `rt`, with the global flags `pre` first, killed (and the test failed) if it has not
    /// ended within `secs`: for input that once hung the runtime.
    pub fn rt_within(&self, secs: u64, pre: &[&str], args: &[&str]) -> Output {
        use std::io::Read;
        let mut c = Command::new(RUNTIME)
            .arg("--root")
            .arg(&self.root)
            .args(pre)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run cagette-runtime");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                panic!("cagette-runtime {args:?} hung: still running after {secs} s");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        c.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        c.stderr.take().unwrap().read_to_end(&mut err).unwrap();
        Output { status, stdout: out, stderr: err }
    }

    /// A bundle `name` whose config is `spec`'s example with `edit` applied; its root is a copy
    /// of the busybox rootfs (so a test may write into it).
    pub fn bundle(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let b = self.dir.join(name);
        std::fs::create_dir_all(&b).unwrap();
        let st = Command::new("cp").arg("-a").arg(busybox_rootfs()).arg(b.join("rootfs")).status().unwrap();
        assert!(st.success());
        let o = Command::new(RUNTIME).args(["spec", "--bundle"]).arg(&b).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        c["process"]["terminal"] = false.into();
        c["root"]["readonly"] = false.into();
        c["linux"]["cgroupsPath"] = format!("{}/{name}", self.cgroup_parent).into();
        edit(&mut c);
        std::fs::write(b.join("config.json"), serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        b
    }

    /// `create` (or another command that leaves the container running) with the container's
    /// standard streams in files of the bundle (`out`, `err`): a pipe would be held open by the
    /// container. Returns (success, the runtime's stderr).
    pub fn detached(&self, args: &[&str], bundle: &Path) -> (bool, String) {
        let out = std::fs::File::create(bundle.join("out")).unwrap();
        let err = std::fs::File::create(bundle.join("err")).unwrap();
        let st = Command::new(RUNTIME).arg("--root").arg(&self.root).args(args).stdin(std::process::Stdio::null()).stdout(out).stderr(err).status().expect("run cagette-runtime");
        (st.success(), std::fs::read_to_string(bundle.join("err")).unwrap_or_default())
    }

    /// `create --bundle B ID`.
    pub fn create(&self, id: &str, bundle: &Path) -> (bool, String) {
        self.detached(&["create", "--bundle", bundle.to_str().unwrap(), id], bundle)
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        let o = self.rt(&["state", id]);
        assert!(o.status.success(), "state {id}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("state JSON")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }

    /// Waits (bounded) until the container is stopped.
    pub fn wait_stopped(&self, id: &str) {
        for _ in 0..1000 {
            if self.status(id) == "stopped" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("container {id} did not stop");
    }

    /// The cgroup directories of the test's parent that still exist, in every hierarchy.
    pub fn cgroups_left(&self) -> Vec<PathBuf> {
        let rel = self.cgroup_parent.trim_start_matches('/');
        let mut v = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let p = e.path().join(rel);
            if let Ok(rd) = std::fs::read_dir(&p) {
                v.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
            }
        }
        let v2 = Path::new("/sys/fs/cgroup").join(rel);
        if let Ok(rd) = std::fs::read_dir(&v2) {
            v.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
        // cagette's mark on a parent level it made (it goes with the level) is not a container's.
        v.retain(|d| !d.ends_with("cagette-made-level"));
        v.sort();
        v.dedup();
        v
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let _ = self.rt(&["delete", "--force", &id]);
        }
        let rel = self.cgroup_parent.trim_start_matches('/').to_string();
        for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path().join(&rel));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&rel));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn args(v: &[&str]) -> serde_json::Value {
    serde_json::Value::from(v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}
