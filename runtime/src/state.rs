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

/// The most a state file may hold: the container's spec and annotations (config.json is at most
/// 4 MiB), with room to spare.
const MAX_STATE: u64 = 4 * crate::config::MAX_CONFIG;

/// Checks the state root before any command uses it (and, for `create`, makes it, 0700): a real
/// directory, not a symlink, owned by this user and writable by no one else. Everything in it is
/// trusted (a state file names the cgroups to remove and the hooks to run), so a root another
/// user could write to, such as one made in advance in a shared /tmp, is refused. A missing root
/// is fine for the commands that only read: they find no container.
pub fn check_root(root: &Path, create: bool) -> Result<(), RtError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if create {
        match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RtError::Io { what: format!("create the state directory {}", root.display()), err: e }),
        }
    }
    let md = match std::fs::symlink_metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(()),
        Err(e) => return Err(RtError::Io { what: format!("check the state directory {}", root.display()), err: e }),
    };
    let euid = nix::unistd::geteuid().as_raw();
    let why = if md.file_type().is_symlink() {
        Some("is a symlink".to_string())
    } else if !md.is_dir() {
        Some("is not a directory".to_string())
    } else if md.uid() != euid {
        Some(format!("belongs to uid {}, not to this user (uid {euid})", md.uid()))
    } else if md.mode() & 0o022 != 0 {
        Some(format!("is writable by others (mode {:o})", md.mode() & 0o7777))
    } else {
        None
    };
    match why {
        Some(why) => Err(RtError::State(format!(
            "the state directory {} {why}: refusing to use it (another user could plant containers there); give --root a directory of your own, or remove it",
            root.display()
        ))),
        None => Ok(()),
    }
}

pub fn load(root: &Path, id: &str) -> Result<State, RtError> {
    check_id(id)?;
    let p = dir(root, id).join("state.json");
    let text = match crate::config::read_bounded(&p, MAX_STATE) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RtError::NotFound(id.to_string())),
        Err(e) => return Err(RtError::Io { what: format!("read {}", p.display()), err: e }),
    };
    serde_json::from_slice(&text).map_err(|e| RtError::State(format!("{}: {e}", p.display())))
}

pub fn save(root: &Path, st: &State) -> Result<(), RtError> {
    let text = serde_json::to_vec(st).map_err(|e| RtError::State(e.to_string()))?;
    replace_file(&dir(root, &st.id).join("state.json"), &text).map_err(RtError::io("save the container's state"))
}

/// Writes `text` to `path` atomically (a pid file the engine reads as soon as it exists).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), RtError> {
    replace_file(path, text.as_bytes()).map_err(RtError::io(format!("write {}", path.display())))
}

/// Replaces `path` with a file holding `bytes`: written to a new file beside it (created, never
/// opened through anything already there), then renamed over it, which replaces a symlink at
/// `path` rather than following it. The new file is removed if the write or the rename fails
/// (what was already at the temporary name, if anything, is left alone).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let tmp = path.with_file_name(format!(".{name}.{}.{nanos:09}.tmp", std::process::id()));
    let mut f = std::fs::File::options().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
    let r = f.write_all(bytes).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
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
        // Real directories only, with a state file that is no symlink.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| std::fs::symlink_metadata(e.path().join("state.json")).is_ok_and(|m| m.is_file()))
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
