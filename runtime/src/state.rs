//! The state directory: `<root>/<id>/` holds `state.json` (written atomically), `exec.fifo`
//! (until `start`), and is locked (flock) by every command that changes the container.

use crate::error::RtError;
use cagette::{DetachedCgroup, SandboxSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What `create` records of a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    /// The container's init, in the runtime's pid namespace.
    pub pid: i32,
    /// Its start time (clock ticks after boot): a later process with the same pid is not it.
    pub start_ticks: u64,
    pub bundle: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    pub annotations: BTreeMap<String, String>,
    pub cgroup: Option<DetachedCgroup>,
    /// The sandbox's spec (for `exec`: its user, capabilities, filters and environment).
    pub spec: SandboxSpec,
    /// Hooks still to run: poststart and poststop.
    pub hooks: oci_spec::runtime::Hooks,
    /// Whether `start` ran.
    #[serde(default)]
    pub started: bool,
    /// Without a mount namespace of its own: the rootfs, whose mounts above these ids are the
    /// container's (unmounted by `delete`).
    #[serde(default)]
    pub host_root: Option<(PathBuf, Vec<u64>)>,
}

/// A valid container id: what runc accepts (letters, digits, `_+-.`), at most 1024 bytes.
pub fn check_id(id: &str) -> Result<(), RtError> {
    let ok = !id.is_empty() && id.len() <= 1024 && id != "." && id != ".." && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok { Ok(()) } else { Err(RtError::Usage(format!("invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.'"))) }
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// An exclusive lock on a container's directory, released when dropped.
pub struct Lock(#[allow(dead_code)] OwnedFd);

pub fn lock(d: &Path) -> Result<Lock, RtError> {
    let f = std::fs::File::open(d).map_err(RtError::io(format!("open {}", d.display())))?;
    #[allow(deprecated)]
    nix::fcntl::flock(f.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive).map_err(|e| RtError::Io { what: format!("lock {}", d.display()), err: e.into() })?;
    Ok(Lock(f.into()))
}

pub fn load(root: &Path, id: &str) -> Result<State, RtError> {
    check_id(id)?;
    let p = dir(root, id).join("state.json");
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RtError::NotFound(id.to_string())),
        Err(e) => return Err(RtError::Io { what: format!("read {}", p.display()), err: e }),
    };
    serde_json::from_slice(&text).map_err(|e| RtError::State(format!("{}: {e}", p.display())))
}

pub fn save(root: &Path, st: &State) -> Result<(), RtError> {
    let d = dir(root, &st.id);
    let tmp = d.join(".state.json.tmp");
    let text = serde_json::to_vec(st).map_err(|e| RtError::State(e.to_string()))?;
    std::fs::write(&tmp, text).map_err(RtError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, d.join("state.json")).map_err(RtError::io("save the container's state"))
}

/// Writes `text` to `path` atomically (a pid file the engine reads as soon as it exists).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), RtError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(RtError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(RtError::io(format!("write {}", path.display())))
}

/// (clock ticks after boot at which `pid` started, its state letter).
fn stat(pid: i32) -> Option<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let mut it = after.split_whitespace();
    let state = it.next()?.chars().next()?;
    Some((it.nth(18)?.parse().ok()?, state))
}

pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|(t, _)| t)
}

/// Whether the container's init still runs (a zombie has ended: it is stopped).
pub fn alive(st: &State) -> bool {
    st.pid > 0 && matches!(stat(st.pid), Some((t, s)) if t == st.start_ticks && s != 'Z' && s != 'X')
}

/// The OCI status: created, running, paused or stopped.
pub fn status(st: &State) -> &'static str {
    if !alive(st) {
        "stopped"
    } else if !st.started {
        "created"
    } else if st.cgroup.as_ref().is_some_and(|c| c.is_frozen()) {
        "paused"
    } else {
        "running"
    }
}

/// The state as `state` prints it (the runtime spec's fields, plus runc's `created`).
pub fn oci_json(st: &State) -> serde_json::Value {
    let status = status(st);
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": st.id,
        "status": status,
        "pid": if status == "stopped" { 0 } else { st.pid },
        "bundle": st.bundle,
        "rootfs": st.spec.rootfs,
        "created": st.created,
        "annotations": st.annotations,
        "owner": "",
    })
}

/// Every container id under `root`.
pub fn ids(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Now, as RFC 3339 UTC with nanoseconds (as runc writes it).
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_nanos()).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_checked() {
        assert!(super::check_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a\0b"] {
            assert!(super::check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_time_is_rfc3339() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
