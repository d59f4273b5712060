//! A job's cgroup: created with its limits before clone and entered at birth (cgroup v2,
//! `CLONE_INTO_CGROUP`), or on v1 as root created while the setup child builds the sandbox and
//! joined by it before its init (a caller that is not root: before clone, joined right after
//! it), read for usage and OOM kills when the job ends,
//! killed as a whole, and always removed. Cgroups left by a host that died are swept on the next
//! use, by any process.
//!
//! Layout: v2 `<parent>/job-<hostpid>-<hoststart>-<seq>` (parent by default
//! `/sys/fs/cgroup/cagette` as root); v1 `/sys/fs/cgroup/<controller>/cagette/job-…` for each
//! controller used. Nothing outside cagette's own parent is ever created, moved or removed.

use crate::error::{SetupFailure, Step};
use crate::sandbox::spec::SandboxSpec;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const PARENT_NAME: &str = "cagette";

/// Which cgroup hierarchy a job lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Backend {
    V2,
    V1,
}

fn backend() -> Option<Backend> {
    static B: OnceLock<Option<Backend>> = OnceLock::new();
    B.get_or_init(|| {
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            Some(Backend::V2)
        } else if Path::new(ROOT).join("memory").is_dir() || Path::new(ROOT).join("pids").is_dir() {
            Some(Backend::V1)
        } else {
            None
        }
    })
    .clone()
}

/// Whether this host's jobs get cgroup v1 hierarchies (a v1 or "hybrid" host), where the setup
/// child joins its cgroups by writing to their `tasks` files.
pub(crate) fn host_is_v1() -> bool {
    backend() == Some(Backend::V1)
}

fn setup_err(errno: Option<i32>, path: &Path, what: &str) -> SetupFailure {
    SetupFailure::new(Step::Cgroup, errno, Some(path.to_path_buf()), what)
}

/// Adds the usual fix to a failure to write in a cgroup hierarchy.
fn with_access_hint(f: SetupFailure) -> SetupFailure {
    match f.errno {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => f.hint("cagette needs write access to this cgroup: run as root, or delegate a cgroup subtree (e.g. `systemd-run --user --scope -p Delegate=yes cagette …`) and pass it as cgroup_parent"),
        _ => f,
    }
}

fn write(path: &Path, value: &str, what: &str) -> Result<(), SetupFailure> {
    fs::write(path, value).map_err(|e| write_err(&e, path, value, what))
}

/// The error of writing `value` to the cgroup file `path`, with a hint for the usual causes.
fn write_err(e: &io::Error, path: &Path, value: &str, what: &str) -> SetupFailure {
    let f = setup_err(e.raw_os_error(), path, &format!("{what}: write {value:?} to {}", path.display()));
    match e.raw_os_error() {
        Some(libc::EINVAL) => f.hint("the kernel refused the value: check its unit and range"),
        Some(libc::ENOENT) => f.hint("this controller file does not exist on this kernel (see `cagette probe`)"),
        _ => with_access_hint(f),
    }
}

/// Refuses a directory that is not a cgroup (writing "limits" there would create plain files).
fn require_cgroup_dir(dir: &Path, what: &str) -> Result<(), SetupFailure> {
    if dir.join("cgroup.procs").is_file() {
        Ok(())
    } else {
        Err(setup_err(Some(libc::ENOTDIR), dir, &format!("{what} is not a cgroup directory")).hint("give a directory of a mounted cgroup hierarchy (it holds cgroup.procs)"))
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_kv(path: &Path, key: &str) -> Option<u64> {
    kv(&fs::read_to_string(path).ok()?, key)
}

/// The value of `key` in a flat keyed file's text ("key value" lines, as cpu.stat).
fn kv(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// Our own process's start time (jiffies since boot, /proc/self/stat field 22).
fn start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn job_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    format!("job-{pid}-{}-{}", start_time(pid).unwrap_or(0), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Whether a job cgroup name belongs to a host process that is gone.
fn is_stale(name: &str) -> bool {
    let mut it = name.strip_prefix("job-").unwrap_or("").split('-');
    let (Some(pid), Some(start)) = (it.next().and_then(|p| p.parse::<u32>().ok()), it.next().and_then(|s| s.parse::<u64>().ok())) else {
        return false; // not ours: never touch it
    };
    start_time(pid) != Some(start)
}

/// Creates a job's cgroup directory. A named one (a detached sandbox's, whose path its caller
/// chose, as runc and crun accept) may exist already if no process is in it.
fn make_job_dir(dir: &Path, named: bool) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if named && e.kind() == io::ErrorKind::AlreadyExists => {
            let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
            if procs.trim().is_empty() { Ok(()) } else { Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and has processes", dir.display()))) }
        }
        r => r,
    }
}

/// What the caller asked of cgroups, from the spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Wanted {
    pub memory: Option<u64>,
    pub memory_high: Option<u64>,
    pub memory_swap: Option<u64>,
    pub cpus: Option<f64>,
    /// The quota's period, microseconds (default 100000).
    pub cpu_period: Option<u64>,
    pub cpu_weight: Option<u32>,
    pub pids: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub io_weight: Option<u32>,
    /// (MAJ:MIN, rbps, wbps, riops, wiops)
    pub io_max: Vec<(String, Option<u64>, Option<u64>, Option<u64>, Option<u64>)>,
    pub cpu_time: Option<Duration>,
    pub always: bool,
    /// The job has its own pid namespace: killing its init kills every process, and init's
    /// rusage covers every process (so v1 needs neither freezer nor cpuacct for that).
    pub pid_ns: bool,
    /// An OOM kill of one process kills the whole job (`oom_policy = kill_job`).
    pub oom_kill_job: bool,
    /// Device nodes the job may use besides the standard set, in the order they are allowed
    /// (before the standard ones).
    pub devices: Vec<crate::DeviceRule>,
}

impl Wanted {
    pub fn from_spec(spec: &SandboxSpec) -> Result<Wanted, SetupFailure> {
        let mut io_max = Vec::new();
        for l in &spec.io_max {
            io_max.push((device_number(&l.device)?, l.rbps.map(|s| s.bytes()), l.wbps.map(|s| s.bytes()), l.riops, l.wiops));
        }
        Ok(Wanted {
            io_max,
            memory: spec.memory.map(|s| s.bytes()),
            memory_high: spec.memory_high.map(|s| s.bytes()),
            memory_swap: spec.memory_swap.map(|s| s.bytes()),
            cpus: spec.cpus,
            cpu_weight: spec.cpu_weight,
            cpu_period: spec.cpu_period.map(|d| d.as_micros() as u64),
            pids: spec.pids,
            cpuset_cpus: spec.cpuset_cpus.clone(),
            cpuset_mems: spec.cpuset_mems.clone(),
            io_weight: spec.io_weight,
            cpu_time: spec.cpu_time,
            always: spec.cgroup == crate::sandbox::spec::CgroupMode::Always,
            pid_ns: spec.namespaces.pid == crate::sandbox::spec::NsMode::New,
            oom_kill_job: spec.oom_policy == crate::sandbox::spec::OomPolicy::KillJob,
            devices: spec.devices.iter().filter_map(|d| device_of(d)).map(|(t, a, b)| crate::DeviceRule::rwm(t, a, b)).collect(),
        })
    }

    /// Whether the job needs a cgroup at all: for a limit, for the report, or to find its
    /// processes (without a pid namespace of its own, a process can leave the tree, e.g. with
    /// `setsid`, and only a cgroup still holds it when the job ends).
    pub fn any(&self) -> bool {
        self.always || !self.pid_ns || self.limits()
    }

    fn limits(&self) -> bool {
        *self != Wanted { always: self.always, pid_ns: self.pid_ns, oom_kill_job: self.oom_kill_job, devices: self.devices.clone(), ..Wanted::default() }
    }

    /// Whether the cgroup is wanted only to track the processes of a job without a pid namespace.
    pub fn tracking_only(&self) -> bool {
        !self.pid_ns && !self.always && !self.limits()
    }

    /// The v1 hierarchies a job needs: each mkdir/rmdir costs 20-150 us, so only those that
    /// serve a limit, the kill, or the usage report asked for.
    fn v1_controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.always || !self.pid_ns {
            c.push("freezer"); // kill the whole tree, fork bombs included
        }
        if self.always || self.pids.is_some() {
            c.push("pids");
        }
        if self.always || self.memory.is_some() || self.memory_swap.is_some() {
            c.push("memory");
        }
        // Always: CPU usage must count processes killed at a timeout, which the kernel reaps
        // without accounting them to init.
        c.push("cpuacct");
        if self.cpus.is_some() || self.cpu_weight.is_some() {
            c.push("cpu");
        }
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            c.push("cpuset");
        }
        if self.io_weight.is_some() || !self.io_max.is_empty() {
            c.push("blkio");
        }
        if crate::host::euid() == 0 {
            c.push("devices"); // the device allow-list (setting it needs root)
        }
        c
    }

    fn v2_controllers(&self) -> Vec<&'static str> {
        let mut c = vec!["memory", "pids", "cpu"];
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            c.push("cpuset");
        }
        if self.io_weight.is_some() || !self.io_max.is_empty() {
            c.push("io");
        }
        c
    }
}

/// Usage read from a job's cgroup when it ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupUsage {
    pub memory_peak: Option<u64>,
    pub pids_peak: Option<u64>,
    pub cpu_user: Option<Duration>,
    pub cpu_system: Option<Duration>,
    pub io_read: Option<u64>,
    pub io_write: Option<u64>,
    pub oom_kills: u64,
    pub psi: Option<crate::sandbox::verdict::Pressure>,
}

/// A job's cgroup (one directory on v2, one per controller on v1). Dropping it kills whatever is
/// left in it and removes it.
#[derive(Debug)]
pub(crate) struct JobCgroup {
    backend: Backend,
    /// (controller, directory); on v2 one entry with controller "".
    dirs: Vec<(&'static str, PathBuf)>,
    /// v2: an O_PATH|O_DIRECTORY fd of the job's cgroup, for CLONE_INTO_CGROUP.
    dirfd: Option<OwnedFd>,
    cpu_time: Option<Duration>,
    removed: bool,
    /// v1 with `oom_policy = kill_job`: an eventfd signalled when the job's memory cgroup hits
    /// an OOM (v2 has memory.oom.group instead); the waiter then kills the whole job.
    oom_event: Option<OwnedFd>,
    /// v1 cgroups the job joins but does not own (the shared standard device allow-list).
    join_only: Vec<SharedDevices>,
    /// (hierarchy root, parent) of a caller's `cgroup_parent`: the levels cagette made there
    /// go with the last job that leaves them empty (`remove_made_levels`).
    levels: Vec<(PathBuf, PathBuf)>,
    /// Parents to sweep for the job cgroups of dead hosts ([`sweep_stale`](Self::sweep_stale)):
    /// (parent, the v1 cgroup path under every hierarchy's root).
    sweeps: Vec<(PathBuf, Option<PathBuf>)>,
}

/// v1: deny every device to the cgroup `d`, then allow `extra` in its order (`devices.list`
/// keeps it, as OCI asks), then the standard ones.
fn restrict_devices(d: &Path, extra: &[crate::DeviceRule]) -> Result<(), SetupFailure> {
    write(&d.join("devices.deny"), "a", "deny every device to the job")?;
    let extra = extra.iter().map(|r| (r.kind, r.major, r.minor.to_string(), r.access()));
    let standard = STANDARD_DEVICES.iter().map(|&(t, a, b)| (t, a, b.map_or("*".to_string(), |m| m.to_string()), "rwm".to_string()));
    // One open of devices.allow, one write per rule (the kernel reads one rule per write).
    let allow = d.join("devices.allow");
    let mut f = fs::File::options().write(true).open(&allow).map_err(|e| with_access_hint(setup_err(e.raw_os_error(), &allow, "open the job's device allow-list")))?;
    for (t, maj, min, access) in extra.chain(standard) {
        let rule = format!("{t} {maj}:{min} {access}");
        let r = std::io::Write::write(&mut f, rule.as_bytes()).and_then(|n| if n == rule.len() { Ok(()) } else { Err(io::Error::from_raw_os_error(libc::EIO)) });
        r.map_err(|e| write_err(&e, &allow, &rule, "allow a device to the job"))?;
    }
    Ok(())
}

/// v1: the shared cgroup `<parent>/standard-devices` of the devices hierarchy, holding the
/// standard allow-list, that jobs join instead of making and configuring one each. A job holds a
/// shared flock on the parent directory while it lives ([`SharedDevices`]); the last one to end
/// removes the shared cgroup, so no cgroup of cagette's outlives its jobs (and a parent of the
/// caller's can be removed once they are done).
fn shared_standard_devices(base: &Path) -> Result<SharedDevices, SetupFailure> {
    use nix::fcntl::{FlockArg, OFlag, open};
    let lock = open(base, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(|e| setup_err(Some(e as i32), base, "open the devices cgroup parent"))?;
    // Released by closing the fd (nix's `Flock` guard would add a LOCK_UN, and a panic if it
    // failed, on drop). Shared: every living job; exclusive: the last one removing the cgroup.
    #[allow(deprecated)]
    nix::fcntl::flock(lock.as_raw_fd(), FlockArg::LockShared).map_err(|e| setup_err(Some(e as i32), base, "lock the devices cgroup parent (flock)"))?;
    let dir = base.join("standard-devices");
    if let Err(e) = fs::create_dir(&dir)
        && !dir.is_dir() {
            return Err(with_access_hint(setup_err(e.raw_os_error(), &dir, "create the cgroup of the standard device allow-list")));
        }
    // Already set up by another job: one read instead of nine writes.
    let want: String = STANDARD_DEVICES.iter().map(|&(t, a, b)| format!("{t} {a}:{} rwm\n", b.map_or("*".to_string(), |m| m.to_string()))).collect();
    if fs::read_to_string(dir.join("devices.list")).ok().as_deref() != Some(want.as_str()) {
        restrict_devices(&dir, &[])?;
    }
    Ok(SharedDevices { dir, lock })
}

/// A job's membership of the shared standard-devices cgroup: the cgroup and the shared lock
/// that keeps it from being removed while the job lives.
#[derive(Debug)]
struct SharedDevices {
    dir: PathBuf,
    lock: OwnedFd,
}

impl SharedDevices {
    /// After the job ended: if no other job holds the lock, remove the shared cgroup (the
    /// kernel refuses while any process is still in it, e.g. the orphans of a dead host's job:
    /// then a later job removes it).
    fn release(self) {
        use nix::fcntl::FlockArg;
        #[allow(deprecated)]
        let last = nix::fcntl::flock(self.lock.as_raw_fd(), FlockArg::LockExclusiveNonblock).is_ok();
        if last {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// The standard device allow-list (as runc and crun): rwm on null, zero, full, random, urandom,
/// tty, ptmx and the ptys: (type 'c'/'b', major, minor or any). v2's device program
/// (devfilter.rs) allows the same list.
pub(super) const STANDARD_DEVICES: &[(char, u32, Option<u32>)] = &[('c', 1, Some(3)), ('c', 1, Some(5)), ('c', 1, Some(7)), ('c', 1, Some(8)), ('c', 1, Some(9)), ('c', 5, Some(0)), ('c', 5, Some(2)), ('c', 136, None)];

/// (type, major, minor) of a device node.
fn device_of(p: &Path) -> Option<(char, u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::metadata(p).ok()?;
    let t = if md.file_type().is_char_device() {
        'c'
    } else if md.file_type().is_block_device() {
        'b'
    } else {
        return None;
    };
    Some((t, libc::major(md.rdev()), libc::minor(md.rdev())))
}

/// The cgroup path of the job's parent, relative to a hierarchy's root: the spec's
/// `cgroup_parent` (a path like `/ci/jobs`, as Docker's `--cgroup-parent` and runc's
/// `cgroupsPath`; on v2 it may also be written as the directory under /sys/fs/cgroup), or
/// `cagette`.
fn parent_rel(spec_parent: Option<&Path>, backend: &Backend, named: bool) -> Result<PathBuf, SetupFailure> {
    let Some(p) = spec_parent else { return Ok(PathBuf::from(PARENT_NAME)) };
    let bad = |why: &str| setup_err(Some(libc::EINVAL), p, &format!("cgroup parent {}: {why}", p.display())).hint("give a cgroup path such as /ci/jobs (created as needed under each hierarchy's root)");
    let rel = match p.strip_prefix(ROOT) {
        Ok(r) if *backend == Backend::V2 => r.to_path_buf(),
        Ok(_) => return Err(bad("on cgroup v1 give the cgroup's path (it applies in every controller's hierarchy), not a directory of /sys/fs/cgroup")),
        Err(_) if p.is_absolute() => p.strip_prefix("/").unwrap_or(p).to_path_buf(),
        Err(_) => return Err(bad("not an absolute cgroup path")),
    };
    if rel.as_os_str().is_empty() && !named {
        return Err(bad("the root cgroup cannot hold jobs"));
    }
    if !rel.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(bad("only plain names, no '.' or '..'"));
    }
    Ok(rel)
}

/// Creates `base` and its missing ancestors below `top` (a hierarchy's root); with `cpuset`,
/// each new level gets its parent's CPUs and memory nodes (new cpuset cgroups start empty).
/// With `mark`, each level cagette creates is marked as cagette's (made for a caller's
/// `cgroup_parent`) and is removed by the job that leaves it empty (`remove_made_levels`). A
/// level that existed before is never marked, so a caller's own cgroups are never removed.
///
/// The mark is an extended attribute on the level (`MADE_XATTR`, kernel 5.7 or later for
/// cgroup file systems): it goes with the level's rmdir, so no window opens between removing the
/// mark and the level. Where the kernel refuses it, the mark is an empty child cgroup named
/// `MADE_MARK` (what cagette made before; still recognised), which costs a cgroup's creation and
/// removal per level.
const MADE_MARK: &str = "cagette-made-level";
const MADE_XATTR: &std::ffi::CStr = c"user.cagette.made-level";

/// Marks `dir` (a level cagette just made) as cagette's.
fn mark_made(dir: &Path) -> Result<(), SetupFailure> {
    match rustix::fs::setxattr(dir, MADE_XATTR, b"1", rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(_) => {
            let m = dir.join(MADE_MARK);
            match fs::create_dir(&m) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(with_access_hint(setup_err(e.raw_os_error(), &m, "mark the parent cgroup as cagette's"))),
                _ => Ok(()),
            }
        }
    }
}

/// Whether `dir` carries cagette's mark: (marked by the attribute, marked by a child cgroup).
fn made_mark(dir: &Path) -> (bool, bool) {
    let mut v = [0u8; 1];
    (rustix::fs::getxattr(dir, MADE_XATTR, &mut v[..]).is_ok(), dir.join(MADE_MARK).is_dir())
}

fn create_levels(top: &Path, base: &Path, cpuset: bool, mark: bool) -> Result<(), SetupFailure> {
    let rel = base.strip_prefix(top).unwrap_or(base);
    let mut cur = top.to_path_buf();
    for c in rel.components() {
        let parent = cur.clone();
        cur.push(c);
        if cur.is_dir() {
            continue;
        }
        match fs::create_dir(&cur) {
            Ok(()) if mark => mark_made(&cur)?,
            Ok(()) => {}
            Err(e) if !cur.is_dir() => return Err(with_access_hint(setup_err(e.raw_os_error(), &cur, "create the parent cgroup"))),
            Err(_) => {}
        }
        if cpuset {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                write(&cur.join(f), v.trim(), "initialize the parent cgroup's cpuset")?;
            }
        }
    }
    Ok(())
}

/// Removes the levels of `base` (up to `top`, deepest first) that cagette made and that hold
/// nothing but their mark: the last job under a parent it made takes the parent with it.
fn remove_made_levels(top: &Path, base: &Path) {
    let mut cur = base.to_path_buf();
    while cur != top && cur.starts_with(top) {
        match made_mark(&cur) {
            (true, false) => {
                // The attribute goes with the level: an rmdir that fails (a job below it) leaves
                // both in place.
                if fs::remove_dir(&cur).is_err() {
                    return;
                }
                if !cur.pop() {
                    return;
                }
                continue;
            }
            (false, false) => return,
            _ => {}
        }
        let mark = cur.join(MADE_MARK);
        let busy = fs::read_dir(&cur).map(|d| d.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != MADE_MARK)).unwrap_or(true);
        if busy || fs::remove_dir(&mark).is_err() {
            return;
        }
        if fs::remove_dir(&cur).is_err() {
            // A job came in meanwhile: the level stays, marked again for its last job.
            let _ = fs::create_dir(&mark);
            return;
        }
        if !cur.pop() {
            return;
        }
    }
}

/// Sweeps each parent directory once per process: job cgroups whose host died are killed and
/// removed (a host killed by SIGKILL cannot remove its own).
fn sweep_once(parent: &Path, v1_rel: Option<&Path>) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut done = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if done.iter().any(|d| d == parent) {
            return;
        }
        done.push(parent.to_path_buf());
    }
    match v1_rel {
        // Every controller's hierarchy: a dead host's job may have used others than this one.
        Some(rel) => {
            for c in V1_CONTROLLERS {
                sweep_v1(&Path::new(ROOT).join(c).join(rel), rel);
            }
        }
        None => sweep(parent),
    }
}

const V1_CONTROLLERS: &[&str] = &["freezer", "pids", "memory", "cpuacct", "cpu", "cpuset", "blkio", "devices"];

fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("job-") && is_stale(&name) {
            let _ = kill_and_remove_dir(&e.path());
        }
    }
}

/// Kills every process of a cgroup directory and removes it (retrying while it drains).
fn kill_and_remove_dir(dir: &Path) -> io::Result<()> {
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        let _ = fs::write(&kill, "1");
    } else {
        kill_procs(dir);
    }
    remove_dir_retry(dir)
}

fn kill_procs(dir: &Path) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn remove_dir_retry(dir: &Path) -> io::Result<()> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < end => {
                kill_procs(dir);
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn parent_v2(spec_parent: Option<&Path>, wanted: &Wanted, named: bool) -> Result<PathBuf, SetupFailure> {
    // Levels made for a caller's parent are marked (and go with its last job); cagette's own
    // default parent stays.
    let mark = spec_parent.is_some();
    let root = crate::host::euid() == 0;
    if root || spec_parent.is_some() {
        let rel = parent_rel(spec_parent, &Backend::V2, named)?;
        let p = Path::new(ROOT).join(&rel);
        if root {
            create_levels(Path::new(ROOT), &p, false, mark)?;
            // Enable the controllers the jobs need at every level from the root down to it.
            let mut dir = PathBuf::from(ROOT);
            for level in std::iter::once(None).chain(rel.components().map(Some)) {
                if let Some(c) = level {
                    dir.push(c);
                }
                let have = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
                let missing: Vec<String> = wanted.v2_controllers().into_iter().filter(|c| !have.split_whitespace().any(|h| h == *c)).map(|c| format!("+{c}")).collect();
                if !missing.is_empty() {
                    write(&dir.join("cgroup.subtree_control"), &missing.join(" "), "enable cgroup controllers")?;
                }
            }
        } else {
            require_cgroup_dir(&p, "the cgroup parent")?;
            let sub = fs::read_to_string(p.join("cgroup.subtree_control")).unwrap_or_default();
            if let Some(c) = wanted.v2_controllers().into_iter().find(|c| !sub.split_whitespace().any(|h| h == *c)) {
                return Err(setup_err(Some(libc::ENOENT), &p, &format!("the {c} controller is not enabled for the children of the cgroup parent"))
                    .hint(format!("enable it with `echo +{c} > {}/cgroup.subtree_control` (the parent must hold no processes itself)", p.display())));
            }
        }
        return Ok(p);
    }
    // Not root: a delegated cgroup that already offers the controllers to its children.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").trim_start_matches('/').to_string();
    let mine = Path::new(ROOT).join(rel);
    let sub = fs::read_to_string(mine.join("cgroup.subtree_control")).unwrap_or_default();
    let writable = nix::unistd::access(&mine, nix::unistd::AccessFlags::W_OK).is_ok();
    if writable && wanted.v2_controllers().iter().all(|c| sub.split_whitespace().any(|h| h == *c)) {
        return Ok(mine);
    }
    Err(setup_err(Some(libc::EACCES), &mine, "no writable cgroup with the needed controllers was delegated to this user")
        .hint("run cagette in a delegated scope, e.g. `systemd-run --user --scope -p Delegate=yes cagette run …`, or pass cgroup_parent"))
}

/// An eventfd for a job's OOM events on cgroup v1 (see [`JobCgroup::create_named`]).
pub(crate) fn oom_eventfd() -> nix::Result<OwnedFd> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map(OwnedFd::from)
}

impl JobCgroup {
    /// Creates the job's cgroup with its limits, or fails naming the controller, path and fix.
    /// Nothing is left behind on failure.
    /// With `own_name`, the cgroup's name (a detached sandbox's: not a `job-…` name, which a
    /// later start would sweep once this process is gone); it then gets its own device cgroup on
    /// v1, not the shared one.
    /// With `oom_efd` (v1, `oom_policy = kill_job` with a memory limit), the eventfd to register
    /// for the job's OOM events, made before the sandbox process was (it already holds a copy).
    pub fn create_named(wanted: &Wanted, spec_parent: Option<&Path>, own_name: Option<&str>, oom_efd: Option<OwnedFd>) -> Result<JobCgroup, SetupFailure> {
        let backend = backend().ok_or_else(|| setup_err(Some(libc::ENOENT), Path::new(ROOT), "no cgroup file system is mounted").hint("mount cgroup2 at /sys/fs/cgroup"))?;
        if let Some(n) = own_name
            && (n.is_empty() || n.contains('/') || n == "." || n == ".." || n.starts_with("job-")) {
                return Err(setup_err(Some(libc::EINVAL), Path::new(ROOT), &format!("cgroup name {n:?}: give one plain name, not starting with job-")));
            }
        let name = own_name.map_or_else(job_name, str::to_string);
        let mut job = JobCgroup { backend: backend.clone(), dirs: Vec::new(), dirfd: None, cpu_time: wanted.cpu_time, removed: false, oom_event: None, join_only: Vec::new(), levels: Vec::new(), sweeps: Vec::new() };
        let mark = spec_parent.is_some();
        match backend {
            Backend::V2 => {
                let mut parent = parent_v2(spec_parent, wanted, own_name.is_some())?;
                if mark {
                    job.levels.push((PathBuf::from(ROOT), parent.clone()));
                }
                job.sweeps.push((parent.clone(), None));
                let mut dir = parent.join(&name);
                // A level made by cagette goes with the last job under it: one ending right now
                // may take it away between its making and ours (then it is made again).
                let mut tries = 0;
                while let Err(e) = make_job_dir(&dir, own_name.is_some()) {
                    if e.kind() != ErrorKind::NotFound || tries == 3 {
                        return Err(with_access_hint(setup_err(e.raw_os_error(), &dir, "create the job's cgroup")));
                    }
                    tries += 1;
                    parent = parent_v2(spec_parent, wanted, own_name.is_some())?;
                    dir = parent.join(&name);
                }
                job.dirs.push(("", dir.clone()));
                job.limits_v2(&dir, wanted)?;
                let fd = fs::File::open(&dir).map_err(|e| setup_err(e.raw_os_error(), &dir, "open the job's cgroup"))?;
                if crate::host::euid() == 0 {
                    crate::limits::devfilter::attach(&fd, &wanted.devices).map_err(|e| {
                        setup_err(e.raw_os_error(), &dir, "attach the device allow-list (an eBPF program) to the job's cgroup").hint("the kernel must allow BPF_PROG_TYPE_CGROUP_DEVICE programs (CONFIG_CGROUP_BPF)")
                    })?;
                }
                job.dirfd = Some(fd.into());
            }
            Backend::V1 => {
                if wanted.memory_high.is_some() {
                    return Err(setup_err(Some(libc::EOPNOTSUPP), Path::new(ROOT), "memory_high needs cgroup v2 (this host has cgroup v1)").hint("use memory (a hard limit) instead"));
                }
                let rel = parent_rel(spec_parent, &backend, own_name.is_some())?;
                if mark {
                    // Every hierarchy, not only this job's: a job of a host that died (swept by
                    // now) may have used others under the same parent.
                    for c in V1_CONTROLLERS {
                        let m = Path::new(ROOT).join(c);
                        if m.join("cgroup.procs").exists() {
                            job.levels.push((m.clone(), m.join(&rel)));
                        }
                    }
                }
                job.sweeps.push((Path::new(ROOT).join("*").join(&rel), Some(rel.clone())));
                for ctrl in wanted.v1_controllers() {
                    let mount = Path::new(ROOT).join(ctrl);
                    let base = mount.join(&rel);
                    if !mount.join("cgroup.procs").exists() {
                        return Err(setup_err(Some(libc::ENOENT), &mount, &format!("the cgroup v1 controller {ctrl} is not mounted")).hint("see `cagette probe` for the usable controllers, or drop this limit"));
                    }
                    create_levels(&mount, &base, ctrl == "cpuset", mark)?;
                    if ctrl == "devices" && wanted.devices.is_empty() && own_name.is_none() {
                        // The standard allow-list lives in one shared cgroup below the parent:
                        // jobs join it (no cgroup and no writes of their own). The last job to
                        // end removes it (`SharedDevices::release`).
                        job.join_only.push(shared_standard_devices(&base)?);
                        continue;
                    }
                    let dir = base.join(&name);
                    let mut tries = 0;
                    while let Err(e) = make_job_dir(&dir, own_name.is_some()) {
                        // As on v2: a made level taken away by a job ending meanwhile is made again.
                        if e.kind() != ErrorKind::NotFound || tries == 3 {
                            return Err(with_access_hint(setup_err(e.raw_os_error(), &dir, &format!("create the job's {ctrl} cgroup"))));
                        }
                        tries += 1;
                        create_levels(&mount, &base, ctrl == "cpuset", mark)?;
                    }
                    job.dirs.push((ctrl, dir.clone()));
                    if ctrl == "cpuset" {
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            let v = fs::read_to_string(base.join(f)).unwrap_or_default();
                            write(&dir.join(f), v.trim(), "initialize the job's cpuset")?;
                        }
                    }
                }
                job.limits_v1(wanted)?;
                if let Some(d) = job.dirs.iter().find(|(c, _)| *c == "devices").map(|(_, d)| d.clone()) {
                    restrict_devices(&d, &wanted.devices)?;
                }
                if wanted.oom_kill_job && wanted.memory.is_some() {
                    job.oom_event = Some(job.watch_oom_v1(oom_efd)?);
                }
            }
        }
        Ok(job)
    }

    /// Removes, once per process and parent, the job cgroups whose host died (and kills what is
    /// left in them). Called by the spawn once the sandbox process is on its way, so that it is
    /// off the start's critical path; no job's own cgroup is ever stale.
    pub fn sweep_stale(&mut self) {
        for (parent, v1_rel) in std::mem::take(&mut self.sweeps) {
            sweep_once(&parent, v1_rel.as_deref());
        }
    }

    /// v1: an eventfd signalled when the job's memory cgroup hits an OOM (cgroup.event_control
    /// on memory.oom_control).
    fn watch_oom_v1(&self, made: Option<OwnedFd>) -> Result<OwnedFd, SetupFailure> {
        let d = self.dir("memory").map(Path::to_path_buf).unwrap_or_default();
        let efd = match made {
            Some(f) => f,
            None => oom_eventfd().map_err(|e| setup_err(Some(e as i32), &d, "create an eventfd for the job's OOM events"))?,
        };
        let ctl = fs::File::open(d.join("memory.oom_control")).map_err(|e| setup_err(e.raw_os_error(), &d.join("memory.oom_control"), "open the job's memory.oom_control"))?;
        write(&d.join("cgroup.event_control"), &format!("{} {}", efd.as_fd().as_raw_fd(), ctl.as_raw_fd()), "watch the job's OOM events")?;
        Ok(efd)
    }

    /// The eventfd to poll for the job's OOM events (v1 with `oom_policy = kill_job`).
    pub fn oom_event(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.oom_event.as_ref().map(|f| f.as_fd())
    }

    fn limits_v2(&self, dir: &Path, w: &Wanted) -> Result<(), SetupFailure> {
        if let Some(m) = w.memory {
            write(&dir.join("memory.max"), &m.to_string(), "set the memory limit")?;
        }
        if w.oom_kill_job {
            // An OOM kill of any process of the job (its limit, or the host's) kills all of it.
            write(&dir.join("memory.oom.group"), "1", "make an OOM kill end the whole job")?;
        }
        if let Some(m) = w.memory_high {
            write(&dir.join("memory.high"), &m.to_string(), "set the memory high mark")?;
        }
        if let Some(s) = w.memory_swap {
            write(&dir.join("memory.swap.max"), &s.to_string(), "set the swap limit")?;
        }
        if let Some(c) = w.cpus {
            let period = w.cpu_period.unwrap_or(100_000);
            write(&dir.join("cpu.max"), &format!("{} {period}", cpu_quota(c, period)?), "set the CPU quota")?;
        }
        if let Some(wt) = w.cpu_weight {
            write(&dir.join("cpu.weight"), &wt.to_string(), "set the CPU weight")?;
        }
        if let Some(p) = w.pids {
            write(&dir.join("pids.max"), &p.to_string(), "set the pids limit")?;
        }
        if let Some(c) = &w.cpuset_cpus {
            write(&dir.join("cpuset.cpus"), c, "set the cpuset")?;
        }
        if let Some(m) = &w.cpuset_mems {
            write(&dir.join("cpuset.mems"), m, "set the memory nodes")?;
        }
        if let Some(wt) = w.io_weight {
            write(&dir.join("io.weight"), &format!("default {wt}"), "set the io weight")?;
        }
        for (dev, rbps, wbps, riops, wiops) in &w.io_max {
            let mut line = dev.clone();
            for (k, v) in [("rbps", rbps), ("wbps", wbps), ("riops", riops), ("wiops", wiops)] {
                if let Some(v) = v {
                    line.push_str(&format!(" {k}={v}"));
                }
            }
            write(&dir.join("io.max"), &line, &format!("set I/O limits on device {dev}"))?;
        }
        Ok(())
    }

    fn dir(&self, ctrl: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| *c == ctrl || c.is_empty()).map(|(_, d)| d.as_path())
    }

    fn limits_v1(&self, w: &Wanted) -> Result<(), SetupFailure> {
        let d = |c: &str| self.dir(c).map(Path::to_path_buf).unwrap_or_default();
        if let Some(m) = w.memory {
            write(&d("memory").join("memory.limit_in_bytes"), &m.to_string(), "set the memory limit")?;
            if let Some(s) = w.memory_swap {
                let f = d("memory").join("memory.memsw.limit_in_bytes");
                if !f.exists() {
                    return Err(setup_err(Some(libc::ENOENT), &f, "a swap limit needs swap accounting (memory.memsw.*)").hint("boot with swapaccount=1, or drop memory_swap"));
                }
                write(&f, &(m.saturating_add(s)).to_string(), "set the memory+swap limit")?;
            }
        } else if w.memory_swap.is_some() {
            return Err(setup_err(Some(libc::EINVAL), &d("memory"), "memory_swap needs a memory limit too"));
        }
        if let Some(c) = w.cpus {
            let period = w.cpu_period.unwrap_or(100_000);
            write(&d("cpu").join("cpu.cfs_period_us"), &period.to_string(), "set the CPU period")?;
            write(&d("cpu").join("cpu.cfs_quota_us"), &cpu_quota(c, period)?.to_string(), "set the CPU quota")?;
        }
        if let Some(wt) = w.cpu_weight {
            // v2 weight 100 is v1 shares 1024.
            write(&d("cpu").join("cpu.shares"), &((wt as u64 * 1024 / 100).max(2)).to_string(), "set the CPU shares")?;
        }
        if let Some(p) = w.pids {
            write(&d("pids").join("pids.max"), &p.to_string(), "set the pids limit")?;
        }
        if let Some(c) = &w.cpuset_cpus {
            write(&d("cpuset").join("cpuset.cpus"), c, "set the cpuset")?;
        }
        if let Some(m) = &w.cpuset_mems {
            write(&d("cpuset").join("cpuset.mems"), m, "set the memory nodes")?;
        }
        for (dev, rbps, wbps, riops, wiops) in &w.io_max {
            for (file, v) in [("read_bps_device", rbps), ("write_bps_device", wbps), ("read_iops_device", riops), ("write_iops_device", wiops)] {
                if let Some(v) = v {
                    write(&d("blkio").join(format!("blkio.throttle.{file}")), &format!("{dev} {v}"), &format!("set I/O limits on device {dev}"))?;
                }
            }
        }
        if let Some(wt) = w.io_weight {
            let f = d("blkio").join("blkio.weight");
            if !f.exists() {
                let f2 = d("blkio").join("blkio.bfq.weight");
                if !f2.exists() {
                    return Err(setup_err(Some(libc::ENOENT), &f, "io_weight needs blkio.weight or blkio.bfq.weight (the BFQ scheduler) on cgroup v1").hint("use cgroup v2, select the bfq I/O scheduler, or drop io_weight"));
                }
                write(&f2, &wt.to_string(), "set the io weight")?;
            } else {
                write(&f, &wt.to_string(), "set the io weight")?;
            }
        }
        Ok(())
    }

    /// The fd for CLONE_INTO_CGROUP (v2 only).
    pub fn clone_fd(&self) -> Option<RawFd> {
        self.dirfd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Files the setup child writes "0" to, to move itself into the job's cgroups (v1). A thread
    /// migrating itself skips the kernel's global threadgroup lock, whose cold acquisition
    /// waits for an RCU grace period (several ms after idle); the host's `cgroup.procs` write
    /// would pay it. v2 uses CLONE_INTO_CGROUP instead.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        match self.backend {
            Backend::V1 => self.dirs.iter().map(|(_, d)| d.as_path()).chain(self.join_only.iter().map(|s| s.dir.as_path())).map(|d| d.join("tasks")).collect(),
            Backend::V2 => Vec::new(),
        }
    }

    /// (v2?, every (controller, directory) the job is in — those it owns and the shared ones it
    /// joins), for a command run later in the same job (`exec_in`).
    pub fn members(&self) -> (bool, Vec<(String, PathBuf)>) {
        let mut v: Vec<(String, PathBuf)> = self.dirs.iter().map(|(c, d)| (c.to_string(), d.clone())).collect();
        v.extend(self.join_only.iter().map(|s| ("devices".to_string(), s.dir.clone())));
        (self.backend == Backend::V2, v)
    }

    /// The cgroup of a job made earlier (by a process that may be gone), from its
    /// [`members`](Self::members): to kill, freeze or remove it. Unknown controllers are skipped.
    pub fn from_members(v2: bool, members: &[(String, PathBuf)], levels: &[(PathBuf, PathBuf)]) -> JobCgroup {
        let dirs = members
            .iter()
            .filter_map(|(c, d)| {
                let c: &'static str = if v2 { "" } else { V1_CONTROLLERS.iter().find(|k| **k == c.as_str())? };
                Some((c, d.clone()))
            })
            .collect();
        JobCgroup { backend: if v2 { Backend::V2 } else { Backend::V1 }, dirs, dirfd: None, cpu_time: None, removed: false, oom_event: None, join_only: Vec::new(), levels: levels.to_vec(), sweeps: Vec::new() }
    }

    /// Changes the limits of a running job (an OCI runtime's `update`): the ones `w` sets, in
    /// controllers the job's cgroup has (on v1, a controller it was made without is an error).
    pub fn update_limits(&self, w: &Wanted) -> Result<(), SetupFailure> {
        match self.backend {
            Backend::V2 => {
                let d = self.dir("").ok_or_else(|| setup_err(Some(libc::ENOENT), Path::new(ROOT), "the job has no cgroup"))?.to_path_buf();
                self.limits_v2(&d, w)
            }
            Backend::V1 => {
                let needs = [
                    ("memory", w.memory.is_some() || w.memory_swap.is_some()),
                    ("pids", w.pids.is_some()),
                    ("cpu", w.cpus.is_some() || w.cpu_weight.is_some()),
                    ("cpuset", w.cpuset_cpus.is_some() || w.cpuset_mems.is_some()),
                    ("blkio", w.io_weight.is_some() || !w.io_max.is_empty()),
                ];
                for (c, needed) in needs {
                    if needed && self.dir(c).is_none() {
                        return Err(setup_err(Some(libc::ENOENT), Path::new(ROOT), &format!("the job's cgroup has no {c} controller (it was made without such a limit)")).hint("set the limit when the job starts"));
                    }
                }
                self.limits_v1(w)
            }
        }
    }

    /// (hierarchy root, parent) pairs whose cagette-made levels go with the job.
    pub fn made_levels(&self) -> &[(PathBuf, PathBuf)] {
        &self.levels
    }

    /// Lets the cgroup outlive this value (a detached sandbox's: its runtime removes it later).
    pub fn leak(mut self) {
        self.removed = true;
    }

    /// The pids of every process in the job's cgroup (v1: of its freezer, pids or first cgroup).
    pub fn procs(&self) -> Vec<i32> {
        let d = match self.backend {
            Backend::V2 => self.dir(""),
            Backend::V1 => self.dir("freezer").or_else(|| self.dir("pids")).or_else(|| self.dirs.first().map(|(_, d)| d.as_path())),
        };
        let Some(d) = d else { return Vec::new() };
        fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Freezes (or thaws) every process of the job. Fails without a freezer (v1 without one).
    pub fn freeze(&self, frozen: bool) -> io::Result<()> {
        match self.backend {
            Backend::V2 => {
                let d = self.dir("").ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                fs::write(d.join("cgroup.freeze"), if frozen { "1" } else { "0" })
            }
            Backend::V1 => {
                let d = self.dir("freezer").ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "the job has no freezer cgroup"))?;
                let want = if frozen { "FROZEN" } else { "THAWED" };
                fs::write(d.join("freezer.state"), want)?;
                // FREEZING until every task stopped: wait (bounded) for the state asked for.
                let end = Instant::now() + Duration::from_secs(2);
                loop {
                    let now = fs::read_to_string(d.join("freezer.state"))?;
                    if now.trim() == want {
                        return Ok(());
                    }
                    if Instant::now() > end {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("the freezer stayed {} (asked {want})", now.trim())));
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
    }

    /// Whether the job's processes are frozen.
    pub fn is_frozen(&self) -> bool {
        match self.backend {
            Backend::V2 => self.dir("").and_then(|d| fs::read_to_string(d.join("cgroup.freeze")).ok()).is_some_and(|s| s.trim() == "1"),
            Backend::V1 => self.dir("freezer").and_then(|d| fs::read_to_string(d.join("freezer.state")).ok()).is_some_and(|s| s.trim() == "FROZEN"),
        }
    }

    /// Whether the host must attach the child itself when CLONE_INTO_CGROUP is unavailable.
    pub fn needs_host_attach(&self) -> bool {
        self.backend == Backend::V2
    }

    /// Moves `pid` into the job's cgroup(s) (v2 when clone3 was unavailable).
    pub fn attach(&self, pid: i32) -> Result<(), SetupFailure> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string(), "move the sandbox into its cgroup")?;
        }
        Ok(())
    }

    /// CPU time used so far (user + system), for the CPU-time limit.
    pub fn cpu_used(&self) -> Option<Duration> {
        match self.backend {
            Backend::V2 => read_kv(&self.dir("")?.join("cpu.stat"), "usage_usec").map(Duration::from_micros),
            Backend::V1 => read_u64(&self.dir("cpuacct")?.join("cpuacct.usage")).map(Duration::from_nanos),
        }
    }

    /// The CPU-time limit, if any.
    pub fn cpu_time_limit(&self) -> Option<Duration> {
        self.cpu_time
    }

    /// Reads the job's usage (call after the job ended, before `remove`).
    pub fn usage(&self) -> CgroupUsage {
        let mut u = CgroupUsage::default();
        match self.backend {
            Backend::V2 => {
                let Some(d) = self.dir("") else { return u };
                u.memory_peak = read_u64(&d.join("memory.peak"));
                u.pids_peak = read_u64(&d.join("pids.peak"));
                if let Ok(s) = fs::read_to_string(d.join("cpu.stat")) {
                    u.cpu_user = kv(&s, "user_usec").map(Duration::from_micros);
                    u.cpu_system = kv(&s, "system_usec").map(Duration::from_micros);
                }
                u.oom_kills = read_kv(&d.join("memory.events"), "oom_kill").unwrap_or(0);
                if let Ok(s) = fs::read_to_string(d.join("io.stat")) {
                    let sum = |k: &str| s.split_whitespace().filter_map(|f| f.strip_prefix(k)?.parse::<u64>().ok()).sum::<u64>();
                    u.io_read = Some(sum("rbytes="));
                    u.io_write = Some(sum("wbytes="));
                }
                let total = |file: &str, line: &str| -> Option<u64> {
                    let s = fs::read_to_string(d.join(file)).ok()?;
                    let l = s.lines().find(|l| l.starts_with(line))?;
                    l.split_whitespace().find_map(|f| f.strip_prefix("total=")?.parse().ok())
                };
                if d.join("memory.pressure").exists() {
                    u.psi = Some(crate::sandbox::verdict::Pressure {
                        cpu_some: Duration::from_micros(total("cpu.pressure", "some").unwrap_or(0)),
                        memory_some: Duration::from_micros(total("memory.pressure", "some").unwrap_or(0)),
                        memory_full: Duration::from_micros(total("memory.pressure", "full").unwrap_or(0)),
                        io_some: Duration::from_micros(total("io.pressure", "some").unwrap_or(0)),
                        io_full: Duration::from_micros(total("io.pressure", "full").unwrap_or(0)),
                    });
                }
            }
            Backend::V1 => {
                if let Some(d) = self.dir("memory") {
                    u.memory_peak = read_u64(&d.join("memory.max_usage_in_bytes"));
                    u.oom_kills = read_kv(&d.join("memory.oom_control"), "oom_kill").unwrap_or(0);
                }
                if let Some(d) = self.dir("pids") {
                    u.pids_peak = read_u64(&d.join("pids.peak"));
                }
                if let Some(d) = self.dir("cpuacct") {
                    // usage_user and usage_sys are tick-based (the kernel's cpustat), usage is
                    // exact and is what cpu_time is enforced against: split the exact total in
                    // the ticks' proportion, so the report never shows less than the limit that
                    // killed the job.
                    let (user, sys) = (read_u64(&d.join("cpuacct.usage_user")), read_u64(&d.join("cpuacct.usage_sys")));
                    match (read_u64(&d.join("cpuacct.usage")), user, sys) {
                        (Some(total), Some(us), Some(sy)) if us + sy > 0 => {
                            let user_share = (total as u128 * us as u128 / (us + sy) as u128) as u64;
                            u.cpu_user = Some(Duration::from_nanos(user_share));
                            u.cpu_system = Some(Duration::from_nanos(total - user_share));
                        }
                        (Some(total), _, _) => {
                            u.cpu_user = Some(Duration::from_nanos(total));
                            u.cpu_system = Some(Duration::ZERO);
                        }
                        _ => {
                            u.cpu_user = user.map(Duration::from_nanos);
                            u.cpu_system = sys.map(Duration::from_nanos);
                        }
                    }
                }
                if let Some(d) = self.dir("blkio")
                    && let Ok(s) = fs::read_to_string(d.join("blkio.throttle.io_service_bytes_recursive")) {
                        let sum = |op: &str| s.lines().filter(|l| l.split_whitespace().nth(1) == Some(op)).filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()).sum::<u64>();
                        u.io_read = Some(sum("Read"));
                        u.io_write = Some(sum("Write"));
                    }
            }
        }
        u
    }

    /// Kills every process in the job's cgroup. v2: cgroup.kill. v1: freeze, kill, thaw, so a
    /// fork bomb cannot outrun the kill.
    pub fn kill(&self) {
        match self.backend {
            Backend::V2 => {
                if let Some(d) = self.dir("")
                    && fs::write(d.join("cgroup.kill"), "1").is_err() {
                        kill_procs(d);
                    }
            }
            Backend::V1 => {
                let Some(fz) = self.dirs.iter().find(|(c, _)| *c == "freezer").map(|(_, d)| d.as_path()) else {
                    // No freezer (the job has a pid namespace; killing its init kills the rest).
                    for (_, d) in &self.dirs {
                        kill_procs(d);
                    }
                    return;
                };
                let state = fz.join("freezer.state");
                let _ = fs::write(&state, "FROZEN");
                let end = Instant::now() + Duration::from_secs(2);
                while Instant::now() < end && fs::read_to_string(&state).map(|s| s.trim() != "FROZEN").unwrap_or(false) {
                    std::thread::sleep(Duration::from_micros(200));
                }
                kill_procs(fz);
                let _ = fs::write(&state, "THAWED");
            }
        }
    }

    /// Kills what is left and removes the cgroup(s). Idempotent.
    pub fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        self.dirfd = None;
        let mut first_err = None;
        // Usually empty by now: try the rmdir first, kill and retry only what is still busy.
        let busy: Vec<usize> = (0..self.dirs.len()).filter(|&i| fs::remove_dir(&self.dirs[i].1).is_err() && self.dirs[i].1.exists()).collect();
        if !busy.is_empty() {
            self.kill();
            for i in busy {
                if let Err(e) = remove_dir_retry(&self.dirs[i].1) {
                    first_err.get_or_insert(e);
                }
            }
        }
        for shared in self.join_only.drain(..) {
            shared.release();
        }
        for (top, base) in &self.levels {
            remove_made_levels(top, base);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn sweep_v1(parent: &Path, rel: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("job-") && is_stale(&name) {
            // Freeze through the job's freezer cgroup, if any, then kill and remove.
            let fz = Path::new(ROOT).join("freezer").join(rel).join(&name);
            if fz.is_dir() {
                let _ = fs::write(fz.join("freezer.state"), "FROZEN");
                kill_procs(&fz);
                let _ = fs::write(fz.join("freezer.state"), "THAWED");
            }
            let _ = kill_and_remove_dir(&e.path());
        }
    }
}

/// "MAJ:MIN" of a block device given as a path or as "MAJ:MIN".
fn device_number(dev: &str) -> Result<String, SetupFailure> {
    if let Some((a, b)) = dev.split_once(':')
        && a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok() {
            return Ok(dev.to_string());
        }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::metadata(dev).map_err(|e| setup_err(e.raw_os_error(), Path::new(dev), "find the block device for an I/O limit").hint("give a block device path such as /dev/sda, or MAJOR:MINOR"))?;
    if !md.file_type().is_block_device() {
        return Err(setup_err(Some(libc::ENOTBLK), Path::new(dev), "an I/O limit needs a block device").hint("give a block device path such as /dev/sda, or MAJOR:MINOR"));
    }
    let rdev = md.rdev();
    Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

fn cpu_quota(cpus: f64, period: u64) -> Result<u64, SetupFailure> {
    if !(cpus.is_finite() && cpus > 0.0) {
        return Err(setup_err(Some(libc::EINVAL), Path::new(ROOT), &format!("cpus must be a positive number of CPUs, got {cpus}")));
    }
    Ok(((cpus * period as f64).round() as u64).max(1000))
}

/// The host's cgroup v1 hierarchies that hold controllers: (directory name under
/// /sys/fs/cgroup, its controllers), e.g. ("cpu,cpuacct", ["cpu", "cpuacct"]); empty on a v2
/// host. Named hierarchies (name=systemd) and the hybrid cgroup2 are left out.
pub(crate) fn v1_hierarchies() -> Vec<(String, Vec<String>)> {
    if backend() != Some(Backend::V1) {
        return Vec::new();
    }
    let known = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc"];
    let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut v = Vec::new();
    for l in mi.lines() {
        // ... mount point (field 5) ... " - " fstype source super-options
        let Some((pre, post)) = l.split_once(" - ") else { continue };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let Some(mp) = pre.split_whitespace().nth(4) else { continue };
        let Some(name) = mp.strip_prefix("/sys/fs/cgroup/") else { continue };
        let opts = post.nth(1).unwrap_or("");
        let ctrls: Vec<String> = opts.split(',').filter(|o| known.contains(o)).map(str::to_string).collect();
        if !ctrls.is_empty() && !name.contains('/') && !v.iter().any(|(n, _): &(String, Vec<String>)| n == name) {
            v.push((name.to_string(), ctrls));
        }
    }
    v
}

/// Controllers usable for jobs on this host (for `probe()`).
pub(crate) fn usable_controllers() -> Vec<String> {
    match backend() {
        Some(Backend::V2) => fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default().split_whitespace().map(str::to_string).collect(),
        Some(Backend::V1) => ["memory", "cpu", "cpuacct", "pids", "cpuset", "freezer", "blkio"]
            .iter()
            .filter(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists())
            .map(|c| c.to_string())
            .collect(),
        None => Vec::new(),
    }
}
