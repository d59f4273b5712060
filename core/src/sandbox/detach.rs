//! Detached sandboxes: for OCI runtimes (`cagette-runtime`), whose containers outlive the
//! process that makes them. The sandbox is built as any other; then its init needs no host: it
//! waits for `start` on a FIFO (if given), runs the payload, and exits with its exit code. The
//! caller records the pid and the cgroup, and later kills, freezes and removes them through
//! [`DetachedCgroup`].

use crate::limits::cgroup::JobCgroup;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Options of [`Sandbox::spawn_detached`](crate::Sandbox::spawn_detached).
///
/// ```no_run
/// # fn main() -> cagette::Result<()> {
/// let d = cagette::Sandbox::new().command("sleep").arg("1").spawn_detached(cagette::DetachOptions::default())?;
/// println!("container pid {}", d.pid);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct DetachOptions {
    /// A FIFO opened read-write: the sandbox is built, then waits for one byte written to it
    /// before its payload starts (an OCI runtime's `create`, then `start`). Without it the
    /// payload starts at once.
    pub start_fifo: Option<OwnedFd>,
    /// The name of the job's cgroup below `cgroup_parent` (one plain name; default: a `job-…`
    /// name, which a later start sweeps once this process is gone, so give one).
    pub cgroup_name: Option<String>,
    /// Devices the job may use beyond the standard ones and the spec's, in this order before
    /// the standard ones in its device cgroup (an OCI config's `linux.resources.devices` and
    /// device nodes).
    pub allow_devices: Vec<DeviceRule>,
}

/// One device a job may use, and how: an allow rule of its device cgroup (v1 `devices.allow`,
/// or the eBPF device program on v2).
///
/// ```
/// let r = cagette::DeviceRule { kind: 'b', major: 8, minor: 20, read: true, write: true, mknod: false };
/// assert_eq!(r.access(), "rw");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    /// 'c' (character) or 'b' (block).
    pub kind: char,
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// Reading is allowed.
    pub read: bool,
    /// Writing is allowed.
    pub write: bool,
    /// Making its node (mknod) is allowed.
    pub mknod: bool,
}

impl DeviceRule {
    /// Read, write and mknod on one device.
    ///
    /// ```
    /// assert_eq!(cagette::DeviceRule::rwm('c', 10, 229).access(), "rwm");
    /// ```
    pub fn rwm(kind: char, major: u32, minor: u32) -> DeviceRule {
        DeviceRule { kind, major, minor, read: true, write: true, mknod: true }
    }

    /// The access as the v1 device cgroup writes it ("r", "rw", "rwm", …).
    pub fn access(&self) -> String {
        [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')].iter().filter(|(on, _)| *on).map(|(_, c)| *c).collect()
    }
}

/// A sandbox that runs on without this process: its init's pid (its exit status is the
/// payload's: the code, or 128 + the signal), its terminal's master side (with `tty`), and its
/// cgroup.
#[derive(Debug)]
pub struct Detached {
    /// The sandbox's init, as this process's pid namespace sees it.
    pub pid: i32,
    /// The pty master, when the spec asked for a terminal.
    pub pty: Option<File>,
    /// The job's cgroup, if it has one.
    pub cgroup: Option<DetachedCgroup>,
}

/// The cgroup of a detached sandbox, as recorded by whoever made it (serializable, so a later
/// process can act on it).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// # let d = cagette::Sandbox::new().command("true").spawn_detached(Default::default()).unwrap();
/// if let Some(cg) = d.cgroup {
///     cg.kill();
///     cg.remove()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DetachedCgroup {
    /// cgroup v2 (one directory) or v1 (one per controller).
    pub v2: bool,
    /// (controller, directory); on v2 one entry with controller "".
    pub dirs: Vec<(String, PathBuf)>,
    /// (hierarchy root, parent): the parent levels cagette made for this cgroup, removed with it
    /// when nothing else is left in them.
    #[serde(default)]
    pub levels: Vec<(PathBuf, PathBuf)>,
}

impl DetachedCgroup {
    pub(crate) fn from_job(job: JobCgroup) -> DetachedCgroup {
        let (v2, dirs) = job.members();
        let levels = job.made_levels().to_vec();
        job.leak();
        DetachedCgroup { v2, dirs, levels }
    }

    fn job(&self) -> JobCgroup {
        JobCgroup::from_members(self.v2, &self.dirs, &self.levels)
    }

    /// Kills every process in the cgroup (v2 cgroup.kill; v1 freeze, kill, thaw).
    pub fn kill(&self) {
        let j = self.job();
        j.kill();
        j.leak();
    }

    /// Kills what is left and removes the cgroup's directories.
    pub fn remove(&self) -> std::io::Result<()> {
        self.job().remove()
    }

    /// Freezes or thaws every process in the cgroup.
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        let j = self.job();
        let r = j.freeze(frozen);
        j.leak();
        r
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        let j = self.job();
        let r = j.is_frozen();
        j.leak();
        r
    }

    /// The pids of the processes in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let j = self.job();
        let r = j.procs();
        j.leak();
        r
    }

    /// Changes the running job's limits: those `limits` sets (memory, memory_swap, cpus,
    /// cpu_period, cpu_weight, pids, cpuset_cpus, cpuset_mems, io_weight); the rest of the spec
    /// is not looked at.
    pub fn update(&self, limits: &crate::SandboxSpec) -> crate::Result<()> {
        // The same bounds as at the start (a command is not needed for them).
        let mut check = limits.clone();
        if check.argv.is_empty() {
            check.argv = vec!["update".into()];
        }
        crate::sandbox::validate::spec(&check)?;
        let w = crate::limits::cgroup::Wanted::from_spec(limits)?;
        let j = self.job();
        let r = j.update_limits(&w);
        j.leak();
        r.map_err(Into::into)
    }

    /// Whether the cgroup's directories still exist.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.is_dir())
    }

    /// The cgroup's usage (memory, CPU, pids) as a JSON object, for an OCI runtime's `events --stats`.
    pub fn stats(&self) -> serde_json::Value {
        let j = self.job();
        let u = j.usage();
        j.leak();
        let us = |d: Option<std::time::Duration>| d.map(|d| d.as_micros() as u64);
        serde_json::json!({
            "memory_peak": u.memory_peak,
            "pids_peak": u.pids_peak,
            "pids": self.procs().len(),
            "cpu_user_us": us(u.cpu_user),
            "cpu_system_us": us(u.cpu_system),
            "io_read": u.io_read,
            "io_write": u.io_write,
            "oom_kills": u.oom_kills,
        })
    }
}
