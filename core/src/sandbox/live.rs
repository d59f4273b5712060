//! Named sandboxes while they run: one small JSON file each in a runtime directory of the
//! caller's (`/run/cagette/sandboxes` as root, `$XDG_RUNTIME_DIR/cagette/sandboxes` or
//! `/tmp/cagette-UID/sandboxes` otherwise), written when the sandbox has started and removed
//! when it is reaped. A host that died leaves its files behind: they are recognized (the
//! sandbox's init is gone, or its pid now belongs to another process) and pruned by the next
//! listing.

use crate::error::{SetupFailure, Step};
use crate::sandbox::spec::SandboxSpec;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Checks a sandbox name: letters, digits, `_`, `.`, `-`, starting with a letter or digit, at
/// most 64 bytes.
pub(crate) fn check_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty() && n.len() <= 64 && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("a sandbox name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit".into())
    }
}

/// A running named sandbox, as [`list_sandboxes`] reports it.
///
/// ```no_run
/// for s in cagette::list_sandboxes()? {
///     println!("{} pid {} {:?} {:?} bytes", s.name, s.pid, s.argv, s.memory_bytes);
/// }
/// # Ok::<(), cagette::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxEntry {
    /// Its name.
    pub name: String,
    /// The host pid of its init (the sandbox's pid 1).
    pub pid: i32,
    /// The host pid of the process that started it (a library caller, or `cagette run`).
    pub host_pid: i32,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
    /// The command it runs.
    pub argv: Vec<String>,
    /// Memory its cgroup uses now, in bytes (`None` without a cgroup).
    pub memory_bytes: Option<u64>,
    /// CPU time its cgroup used so far, in seconds (`None` without a cgroup).
    pub cpu_s: Option<f64>,
}

/// What a file records (crate-internal: the spec and cgroups are for `exec_in`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub name: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells the init from a later process that got its pid.
    pub start_ticks: u64,
    pub host_pid: i32,
    pub started: u64,
    pub argv: Vec<String>,
    /// cgroup v2: the job's directory; v1: (controller, directory) of every hierarchy it joined.
    pub cgroup_v2: bool,
    pub cgroups: Vec<(String, PathBuf)>,
    /// The sandbox's own spec (its user, capabilities, filters, environment).
    pub spec: SandboxSpec,
}

/// The runtime directory of the caller's named sandboxes, created (0700) if need be.
fn dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let euid = crate::host::euid();
    let d = if euid == 0 {
        PathBuf::from("/run/cagette/sandboxes")
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty() && fs::metadata(x).is_ok_and(|m| m.is_dir() && m.uid() == euid)) {
        Path::new(&x).join("cagette/sandboxes")
    } else {
        PathBuf::from(format!("/tmp/cagette-{euid}/sandboxes"))
    };
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&d)?;
    // Never a directory someone else planted (or a symlink to one): ours, and private.
    let md = fs::symlink_metadata(&d)?;
    let parent_ok = d.parent().and_then(|p| fs::symlink_metadata(p).ok()).is_some_and(|m| m.is_dir() && (m.uid() == euid || m.uid() == 0));
    if !md.is_dir() || md.uid() != euid || md.mode() & 0o022 != 0 || !parent_ok {
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("{} is not a private directory of uid {euid}", d.display())));
    }
    Ok(d)
}

/// Field 22 (starttime) of /proc/PID/stat, if the process exists.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

fn alive(r: &Record) -> bool {
    r.pid > 0 && start_ticks(r.pid) == Some(r.start_ticks)
}

fn read_record(p: &Path) -> Option<Record> {
    let bytes = crate::fs::hostfile::read_host_file(p, 1 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn err(message: String, hint: &str) -> SetupFailure {
    SetupFailure::new(Step::Spec, Some(libc::EINVAL), None, &message).hint(hint)
}

/// A name held for a sandbox that is starting, then running; its file is removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Holds `name` for a sandbox about to start: refused when a live sandbox has it.
    pub fn reserve(name: &str) -> Result<Registration, SetupFailure> {
        check_name(name).map_err(|why| err(format!("name {name:?}: {why}"), "choose another name"))?;
        let d = dir().map_err(|e| SetupFailure::new(Step::Spec, e.raw_os_error(), None, &format!("the directory of named sandboxes: {e}")))?;
        let path = d.join(format!("{name}.json"));
        for _ in 0..3 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Registration { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match read_record(&path) {
                        Some(r) if alive(&r) => {
                            return Err(err(format!("a sandbox named {name:?} is running (pid {})", r.pid), "choose another name, or end that one first (`cagette ps` lists them)"));
                        }
                        // An empty file: another start holds the name; a dead one's: stale.
                        None if fs::metadata(&path).is_ok_and(|m| m.len() == 0 && m.modified().is_ok_and(|t| t.elapsed().map_or(true, |a| a.as_secs() < 60))) => {
                            return Err(err(format!("a sandbox named {name:?} is starting"), "choose another name"));
                        }
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(SetupFailure::new(Step::Spec, e.raw_os_error(), Some(path.clone()), &format!("register the sandbox name {name:?}: {e}"))),
            }
        }
        Err(err(format!("the name {name:?} could not be registered"), "try again"))
    }

    /// Records the started sandbox.
    pub fn commit(&self, r: &Record) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        crate::fs::hostfile::write_host_file_mode(&self.path, &bytes, 0o600)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The record of the running sandbox `name`.
pub(crate) fn find(name: &str) -> Result<Record, SetupFailure> {
    check_name(name).map_err(|why| err(format!("exec_in {name:?}: {why}"), "give the name of a running sandbox"))?;
    let d = dir().map_err(|e| SetupFailure::new(Step::Spec, e.raw_os_error(), None, &format!("the directory of named sandboxes: {e}")))?;
    match read_record(&d.join(format!("{name}.json"))) {
        Some(r) if alive(&r) => Ok(r),
        _ => Err(SetupFailure::new(Step::Spec, Some(libc::ESRCH), None, &format!("no running sandbox named {name:?}")).hint("`cagette ps` (or cagette.list_sandboxes()) lists the running ones; a sandbox gets a name with `name` (`cagette run --name`)")),
    }
}

/// The caller's running named sandboxes, oldest first (files of dead ones are removed).
pub fn list_sandboxes() -> crate::Result<Vec<SandboxEntry>> {
    let d = dir().map_err(|e| crate::Error::io("open the directory of named sandboxes", e))?;
    let mut out = Vec::new();
    for e in fs::read_dir(&d).map_err(|e| crate::Error::io("list the named sandboxes", e))?.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(r) = read_record(&p) else {
            // Empty (a start in progress) or unreadable: left alone unless old.
            if fs::metadata(&p).is_ok_and(|m| m.modified().is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 60))) {
                let _ = fs::remove_file(&p);
            }
            continue;
        };
        if !alive(&r) {
            let _ = fs::remove_file(&p);
            continue;
        }
        let (memory_bytes, cpu_s) = cgroup_figures(&r);
        out.push(SandboxEntry { name: r.name, pid: r.pid, host_pid: r.host_pid, started: r.started, argv: r.argv, memory_bytes, cpu_s });
    }
    out.sort_by(|a, b| (a.started, &a.name).cmp(&(b.started, &b.name)));
    Ok(out)
}

/// Memory in use and CPU used, from the job's cgroup.
fn cgroup_figures(r: &Record) -> (Option<u64>, Option<f64>) {
    let num = |p: PathBuf| fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    if r.cgroup_v2 {
        let Some((_, d)) = r.cgroups.first() else { return (None, None) };
        let cpu = fs::read_to_string(d.join("cpu.stat")).ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse::<u64>().ok())));
        return (num(d.join("memory.current")), cpu.map(|u| u as f64 / 1e6));
    }
    let dir_of = |c: &str| r.cgroups.iter().find(|(k, _)| k == c).map(|(_, d)| d.clone());
    let mem = dir_of("memory").and_then(|d| num(d.join("memory.usage_in_bytes")));
    let cpu = dir_of("cpuacct").or_else(|| dir_of("cpu")).and_then(|d| num(d.join("cpuacct.usage"))).map(|ns| ns as f64 / 1e9);
    (mem, cpu)
}
