//! The flat plan: a sandbox description compiled, in the parent, into a list of operations whose
//! every string, array and fd is ready before clone. The child ([`crate::exec`]) only walks it.
//!
//! Each operation has a description (step, path, words) kept beside it, so that a failure that
//! comes back as (operation index, errno) turns into a message that names what failed and where.

use crate::caps;
use crate::seccomp;
use crate::error::{SetupFailure, Step};
use crate::spec::{
    DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, IdMap, Mount, Network, NsMode, SandboxSpec,
};
use crate::hostpath::HostPath;
use crate::payload::{Code as PCode, PayloadPlan};
use crate::sys::{self, AT_RECURSIVE, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE};
use std::cell::UnsafeCell;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicI32;

type CStr = *const libc::c_char;
type CArr = *const CStr;

/// What the leaf of a resolved path must be, when it has to be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leaf {
    Dir,
    File,
}

/// One step of the setup child. Pointers point into [`Plan`]'s arenas.
#[derive(Debug)]
pub(crate) enum Op {
    /// Close every fd not in `keep` (sorted).
    CloseGaps { keep: *const i32, n: usize },
    SetNs { fd: RawFd, nstype: i32 },
    /// Wait for the host's go-ahead byte (after it wrote the id maps); EOF means the host died.
    WaitHost { fd: RawFd },
    Unshare { flags: i32 },
    /// Move this (single-threaded) process into a cgroup by writing "0" to its `tasks` file.
    JoinCgroup { path: CStr },
    /// Take ids that are mapped in the new user namespace (fsuid/fsgid decide file creation);
    /// with `clear_groups`, drop the supplementary groups inherited from the host.
    SetIds { uid: u32, gid: u32, clear_groups: bool },
    Hostname { name: *const u8, len: usize },
    LoopbackUp,
    MakePrivate,
    OpenTree { path: CStr, flags: u32, slot: usize },
    SetAttr { slot: usize, set: u64, recursive: bool },
    FsOpen { fstype: CStr, slot: usize },
    FsString { slot: usize, key: CStr, value: CStr },
    FsFlag { slot: usize, key: CStr },
    /// fsconfig `key` = "/proc/self/fd/<fd in slot `dir`>/<suffix>", rendered into `buf`.
    FsStringFdPath { slot: usize, key: CStr, dir: usize, suffix: CStr, buf: *mut u8 },
    FsMount { ctx: usize, attrs: u64, slot: usize },
    /// move_mount the detached mount in `slot` onto a host path (the staging directory).
    AttachAt { slot: usize, path: CStr },
    /// Resolve `path` inside the root in `root` (RESOLVE_IN_ROOT), creating missing directories
    /// (and a file leaf) from `prefixes`/`names`; the O_PATH fd goes to `slot`.
    Resolve { root: usize, path: CStr, prefixes: CArr, names: CArr, n: usize, leaf: Leaf, slot: usize },
    MkdirIn { dir: usize, name: CStr, mode: u32 },
    /// Move the detached mount in `from` onto the directory `name` of the directory in `dir`.
    MoveInto { from: usize, dir: usize, name: CStr },
    /// Open `path` below the directory in `dir` (RESOLVE_BENEATH, no symlinks) into `slot`.
    OpenBeneath { dir: usize, path: CStr, slot: usize },
    MoveMount { from: usize, to: usize },
    Symlink { target: CStr, dir: usize, name: CStr },
    Close { slot: usize },
    Mask { root: usize, path: CStr, devnull: CStr },
    ReadOnly { root: usize, path: CStr },
    Pivot { root: usize },
    Rlimit { resource: i32, limit: libc::rlimit64 },
    /// A new session: the sandbox has no controlling terminal and its own process group, so
    /// neither TIOCSTI on an inherited terminal nor kill(0) reaches the caller.
    SetSid,
    /// Put an fd the parent prepared (a detached mount) in `slot`.
    UseFd { fd: RawFd, slot: usize },
    /// Hand the fd of slot `from` over to slot `to`.
    Move { from: usize, to: usize },
    /// Open a host path without following any symlink (openat2 RESOLVE_NO_SYMLINKS), check it is
    /// the inode the parent saw (dev, ino), and clone its mount tree into `slot`.
    OpenTreeChecked { path: CStr, flags: u32, dev: u64, ino: u64, slot: usize },
    /// Open a pty in the sandbox's devpts (after pivot), send the master to the host over `sock`
    /// (SCM_RIGHTS), keep the slave in `slot`.
    OpenPty { sock: RawFd, winsize: [u16; 4], slot: usize },
    /// Arrange the fds init and the payload need (`moves`), then execute init from `memfd`.
    ExecInit { memfd: RawFd, moves: *const FdMove, n: usize, argv: CArr, envp: CArr },
}

/// Where a descriptor handed to init comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FdSrc {
    /// An fd of the parent's table (kept open in the setup child).
    Fd(RawFd),
    /// An fd the setup child opened (a plan slot).
    Slot(usize),
}

/// One descriptor placed for init: `src` at `dst`, close-on-exec or not.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FdMove {
    pub src: FdSrc,
    pub dst: i32,
    pub cloexec: bool,
}

/// Init's fixed descriptors (init.c): status socket, init binary, error pipe, payload plan, the
/// job's OOM eventfd (cgroup v1), then the payload's own descriptors from 8 on.
pub(crate) const INIT_STATUS_FD: i32 = 3;
pub(crate) const INIT_BINARY_FD: i32 = 4;
pub(crate) const INIT_ERR_FD: i32 = 5;
pub(crate) const INIT_PLAN_FD: i32 = 6;
pub(crate) const INIT_OOM_FD: i32 = 7;
pub(crate) const INIT_FIRST_SOURCE: i32 = 8;

/// What an operation does, for error messages.
#[derive(Clone, Debug)]
pub(crate) struct Desc {
    pub step: Step,
    pub what: String,
    pub path: Option<PathBuf>,
    /// A hint that applies whatever the errno.
    pub hint: Option<&'static str>,
}

/// The compiled plan. Owned by the spawning thread until the setup child has exec'd init or exited.
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub descs: Vec<Desc>,
    /// What the payload does before its exec, run by init (see `payload.rs`).
    pub payload: PayloadPlan,
    /// fds the setup child opens (detached mounts, resolved paths); written only by the child.
    pub slots: Box<[UnsafeCell<i32>]>,
    /// The error pipe's write end in the child (moved to init's fd 5 right before its exec).
    pub err_fd: AtomicI32,
    pub clone_flags: u64,
    pub pid_ns: bool,
    pub user_ns: bool,
    // Arenas: keep the pointers above valid. Never touched after compile.
    strings: Vec<CString>,
    arrays: Vec<Box<[CStr]>>,
    ints: Vec<Box<[i32]>>,
    moves: Vec<Box<[FdMove]>>,
    bufs: Vec<Box<UnsafeCell<[u8; PATH_BUF]>>>,
}

// The plan is built and read on one thread; the children read it through a raw pointer while the
// spawning thread waits. Send is needed only to move a plan into a spawning helper.
unsafe impl Send for Plan {}

/// File descriptors the parent prepared for this spawn.
pub(crate) struct Fds {
    pub err_w: RawFd,
    pub sync_r: Option<RawFd>,
    pub status_child: RawFd,
    pub memfd: RawFd,
    /// Where the payload's stdin, stdout, stderr come from, in the parent's fd table.
    pub stdio: [RawFd; 3],
    /// (host fd, sandbox fd) for passed fds.
    pub passed: Vec<(RawFd, i32)>,
    /// (fd, CLONE_NEW* type) of namespaces to join.
    pub joins: Vec<(RawFd, i32)>,
    /// cgroup v1 `tasks` files the child joins itself.
    pub cgroup_tasks: Vec<PathBuf>,
    /// The uid and gid maps the parent writes (the spec's, or an allocated id range).
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
    /// The memfd the payload's plan is written to (init reads it).
    pub payload_plan: RawFd,
    /// Host paths of the spec, resolved by the parent.
    pub host: HostPaths,
    /// Host directories hidden from the default root (cagette's image store).
    pub hidden_store: Vec<PathBuf>,
    /// Extra device nodes for /dev: (host path, name under /dev).
    pub devices: Vec<(PathBuf, String)>,
    /// The terminal's size, when the payload gets a pty: rows, columns, x and y pixels.
    pub winsize: Option<[u16; 4]>,
    /// The job's OOM eventfd (cgroup v1, oom_policy = kill_job), watched by init.
    pub oom_event: Option<RawFd>,
}

/// The host paths of a spec, resolved once by the parent (see `hostpath.rs`).
#[derive(Debug, Default)]
pub(crate) struct HostPaths {
    pub rootfs: Option<HostPath>,
    /// For each of the spec's mounts (same index): a bind's source; an overlay's lowers (topmost
    /// first), then, with a persistent upper, the common parent of upper and work, upper, work.
    pub mounts: Vec<Vec<HostPath>>,
    /// An image's layers, topmost first: the root is their overlay.
    pub layers: Vec<HostPath>,
}

impl HostPaths {
    /// Every detached mount the parent made (kept open in the child, id-mapped after clone).
    pub fn mount_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.rootfs.iter().chain(self.mounts.iter().flatten()).chain(self.layers.iter()).filter_map(HostPath::mount_fd)
    }
}

/// Size of the buffers the child renders /proc/self/fd paths into.
pub(crate) const PATH_BUF: usize = 64;

const STAGING_CANDIDATES: &[&str] = &["/tmp", "/mnt", "/run", "/var/tmp", "/media", "/opt", "/srv"];
/// The hostname of a sandbox with a UTS namespace of its own, unless one is asked for.
pub const DEFAULT_HOSTNAME: &str = "cagette";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn fail(step: Step, path: Option<&Path>, what: impl AsRef<str>) -> SetupFailure {
    SetupFailure::new(step, Some(libc::EINVAL), path.map(Path::to_path_buf), what.as_ref())
}

/// Splits an absolute sandbox path into normal components; refuses `..` and relative paths.
pub(crate) fn sandbox_components(p: &str, step: Step) -> Result<Vec<String>, SetupFailure> {
    if !p.starts_with('/') {
        return Err(fail(step, Some(Path::new(p)), format!("sandbox path {p:?} must be absolute"))
            .hint("write destinations as absolute paths inside the sandbox, like /src"));
    }
    if p.contains('\0') {
        return Err(fail(step, None, format!("sandbox path {p:?} contains a NUL byte")));
    }
    let mut out = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(fail(step, Some(Path::new(p)), format!("sandbox path {p:?} must not contain '..'")));
            }
            Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

impl Plan {
    fn new() -> Plan {
        Plan {
            ops: Vec::with_capacity(64),
            descs: Vec::with_capacity(64),
            payload: PayloadPlan::default(),
            slots: Box::new([]),
            err_fd: AtomicI32::new(-1),
            clone_flags: 0,
            pid_ns: false,
            user_ns: false,
            strings: Vec::with_capacity(64),
            arrays: Vec::new(),
            ints: Vec::new(),
            moves: Vec::new(),
            bufs: Vec::new(),
        }
    }

    fn cs(&mut self, s: impl AsRef<[u8]>) -> Result<CStr, SetupFailure> {
        let c = CString::new(s.as_ref()).map_err(|_| {
            fail(Step::Spec, None, format!("{:?} contains a NUL byte", String::from_utf8_lossy(s.as_ref())))
        })?;
        let p = c.as_ptr();
        self.strings.push(c);
        Ok(p)
    }

    fn buf(&mut self) -> *mut u8 {
        let b = Box::new(UnsafeCell::new([0u8; PATH_BUF]));
        let p = b.get() as *mut u8;
        self.bufs.push(b);
        p
    }

    fn arr(&mut self, items: Vec<CStr>) -> CArr {
        let mut v = items;
        v.push(std::ptr::null());
        let b = v.into_boxed_slice();
        let p = b.as_ptr();
        self.arrays.push(b);
        p
    }

    fn op(&mut self, op: Op, step: Step, what: impl Into<String>, path: Option<&Path>) {
        self.ops.push(op);
        self.descs.push(Desc { step, what: what.into(), path: path.map(Path::to_path_buf), hint: None });
    }

    fn op_hint(&mut self, op: Op, step: Step, what: impl Into<String>, path: Option<&Path>, hint: &'static str) {
        self.op(op, step, what, path);
        if let Some(d) = self.descs.last_mut() {
            d.hint = Some(hint);
        }
    }

    /// The failure for an error record (phase, index, errno) from the child.
    pub fn failure(&self, phase: u32, index: usize, errno: i32) -> SetupFailure {
        if phase == crate::exec::PHASE_INIT {
            let what = if index == 0 { "read the payload's plan" } else { "start the payload process (fork)" };
            return SetupFailure::new(Step::Init, Some(errno), None, &format!("the sandbox's init could not {what}"));
        }
        let desc = if phase == crate::exec::PHASE_PAYLOAD { self.payload.descs.get(index) } else { self.descs.get(index) };
        match desc {
            Some(d) => {
                let mut f = SetupFailure::new(d.step, Some(errno), d.path.clone(), &d.what);
                f.hint = d.hint.map(str::to_string).or_else(|| errno_hint(d.step, errno, self.user_ns));
                f
            }
            None => SetupFailure::new(Step::Init, Some(errno), None, "sandbox setup reported an unknown step"),
        }
    }
}

/// A hint for a step/errno pair, when a likely fix is known.
pub(crate) fn errno_hint(step: Step, errno: i32, user_ns: bool) -> Option<String> {
    let h = match (step, errno) {
        (Step::Exec, libc::ENOENT) => "the command was not found inside the sandbox: check its path, the sandbox's PATH, and that its root contains it",
        (Step::Exec, libc::EACCES) => "the command is not executable inside the sandbox (permissions, or a noexec mount)",
        (Step::Exec, libc::ENOEXEC) => "the file is not an executable this kernel can run (missing #! line, or wrong architecture)",
        (Step::Mount, libc::EROFS) => "the mount point's parent is read-only: mount a tmpfs at a parent directory, make the rootfs writable, or create the directory in the root beforehand",
        (Step::Mount, libc::ENOENT) => "a path on the way does not exist (or is a dangling symlink inside the sandbox's root)",
        (Step::Mount, libc::ENOTDIR) => "the source and destination must both be directories or both files",
        (Step::Mount, libc::EPERM) if user_ns => "this mount is not allowed inside an unprivileged user namespace",
        (Step::Clone, libc::EPERM) | (Step::Clone, libc::ENOSPC) | (Step::Clone, libc::EUSERS) => "creating namespaces was refused: unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, or an AppArmor/seccomp policy); `cagette probe` shows what this host allows",
        (Step::IdMap, libc::EPERM) => "an unprivileged caller can map only its own uid and gid (a single id, count 1); more ranges need root or newuidmap",
        (Step::IdMap, libc::EINVAL) => "id map ranges must not overlap and counts must be positive",
        (Step::Namespace, libc::EPERM) => "joining this namespace needs privileges over it: use the host user namespace (namespaces.user = host) as root",
        (Step::Cwd, libc::ENOENT) => "the working directory must exist inside the sandbox",
        (Step::User, libc::EINVAL) => "the uid/gid must be mapped in the sandbox's user namespace (see uid_map/gid_map)",
        (Step::User, libc::EPERM) => "supplementary groups cannot be set where setgroups is denied (unprivileged user namespaces)",
        (Step::PivotRoot, _) => "the root must be a directory on a file system that can be mounted privately",
        _ => return None,
    };
    Some(h.to_string())
}

struct Compiler<'a> {
    spec: &'a SandboxSpec,
    plan: Plan,
    next_slot: usize,
    root_slot: usize,
    /// The host's /dev/null path (for masks).
    devnull: CStr,
    /// The host directory the root is assembled at (in the child's private mount namespace).
    staging: &'static str,
    /// The scratch tmpfs where overlay layers are attached (when there is an overlay).
    scratch: Option<usize>,
    /// Directories made in the scratch tmpfs so far.
    layers: usize,
    /// The pty's slave, when the payload gets a terminal.
    tty_slot: Option<usize>,
    /// The id maps of the sandbox's user namespace.
    uid_map: Vec<IdMap>,
    gid_map: Vec<IdMap>,
}

/// The slots of the spec's host paths (same shape as [`HostPaths`]).
#[derive(Default)]
struct HostSlots {
    rootfs: Option<usize>,
    mounts: Vec<Vec<usize>>,
    layers: Vec<usize>,
}

/// An overlay option's value.
enum OptValue {
    Str(String),
    Flag,
    /// "/proc/self/fd/<fd of this slot>/<suffix>", rendered by the child.
    Fd(usize, String),
}

/// Compiles a spec into a plan. Pure planning: no process or host state is changed.
pub(crate) fn compile(spec: &SandboxSpec, fds: &Fds) -> Result<Plan, SetupFailure> {
    let mut c = Compiler { spec, plan: Plan::new(), next_slot: 0, root_slot: 0, devnull: std::ptr::null(), staging: "/tmp", scratch: None, layers: 0, tty_slot: None, uid_map: fds.uid_map.clone(), gid_map: fds.gid_map.clone() };
    c.devnull = c.plan.cs("/dev/null")?;
    c.compile(fds)?;
    let mut plan = c.plan;
    plan.slots = (0..c.next_slot).map(|_| UnsafeCell::new(-1)).collect();
    Ok(plan)
}

impl Compiler<'_> {
    fn slot(&mut self) -> usize {
        self.next_slot += 1;
        self.next_slot - 1
    }

    fn compile(&mut self, fds: &Fds) -> Result<(), SetupFailure> {
        let spec = self.spec;
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err(fail(Step::Exec, None, "no command given").hint("pass the command and its arguments (argv)"));
        }
        let ns = &spec.namespaces;
        let user_new = ns.user == NsMode::New;
        let mount_new = ns.mount == NsMode::New;
        self.plan.user_ns = user_new;
        self.plan.pid_ns = ns.pid == NsMode::New;

        let mut flags: u64 = 0;
        let mut unshare_flags: i32 = 0;
        let joining_user = matches!(ns.user, NsMode::Join(_));
        let pairs: [(&NsMode, u64); 5] = [
            (&ns.mount, libc::CLONE_NEWNS as u64),
            (&ns.uts, libc::CLONE_NEWUTS as u64),
            (&ns.ipc, libc::CLONE_NEWIPC as u64),
            (&ns.pid, libc::CLONE_NEWPID as u64),
            (
                match &spec.network {
                    Network::None => &NsMode::New,
                    _ => &NsMode::Host,
                },
                libc::CLONE_NEWNET as u64,
            ),
        ];
        if user_new {
            flags |= libc::CLONE_NEWUSER as u64;
        }
        for (mode, f) in pairs {
            if *mode == NsMode::New {
                if joining_user && f != libc::CLONE_NEWPID as u64 {
                    unshare_flags |= f as i32;
                } else if joining_user {
                    return Err(fail(Step::Namespace, None, "a new pid namespace cannot be combined with joining a user namespace")
                        .hint("join the pid namespace too, or set namespaces.pid = host"));
                } else {
                    flags |= f;
                }
            }
        }
        if ns.cgroup == NsMode::New {
            unshare_flags |= libc::CLONE_NEWCGROUP;
        }
        if ns.time == NsMode::New {
            unshare_flags |= sys::CLONE_NEWTIME as i32;
        }
        self.plan.clone_flags = flags;

        // 1. Keep only our fds, and leave the caller's session: no controlling terminal (no
        // TIOCSTI into the caller's shell), a process group of our own (no kill(0) reaching it).
        let mut keep: Vec<i32> = vec![fds.err_w, fds.status_child, fds.memfd, fds.payload_plan];
        keep.extend(fds.oom_event);
        keep.extend(fds.host.mount_fds());
        keep.extend(fds.sync_r);
        keep.extend(fds.stdio);
        keep.extend(fds.passed.iter().map(|p| p.0));
        keep.extend(fds.joins.iter().map(|j| j.0));
        keep.sort_unstable();
        keep.dedup();
        let keep = keep.into_boxed_slice();
        let (kp, kn) = (keep.as_ptr(), keep.len());
        self.plan.ints.push(keep);
        self.plan.op(Op::CloseGaps { keep: kp, n: kn }, Step::Stdio, "close the host's file descriptors", None);
        self.plan.op(Op::SetSid, Step::Init, "start a new session (no controlling terminal)", None);

        // 2. Join the job's cgroups (v1), before the cgroup namespace and the id switch.
        for t in &fds.cgroup_tasks {
            let p = self.plan.cs(t.as_os_str().as_bytes())?;
            self.plan.op(Op::JoinCgroup { path: p }, Step::Cgroup, format!("join the job's cgroup ({})", t.display()), Some(t));
        }

        // 3. Join namespaces (user first, so the others are judged against it).
        for &(fd, nstype) in &fds.joins {
            let what = format!("join the {} namespace", ns_name(nstype));
            self.plan.op(Op::SetNs { fd, nstype }, Step::Namespace, what, None);
        }
        if unshare_flags != 0 {
            // cgroup and time namespaces are created after the host placed us (cgroups later).
            self.plan.op(Op::Unshare { flags: unshare_flags }, Step::Namespace, "create the cgroup/time namespaces", None);
        }
        if let Some(fd) = fds.sync_r {
            // Before the unshare above has any effect on ids: the maps are written by now.
            let wait = Op::WaitHost { fd };
            let at = self.plan.ops.len() - usize::from(unshare_flags != 0);
            self.plan.ops.insert(at, wait);
            self.plan.descs.insert(at, Desc { step: Step::IdMap, what: "wait for the host (id maps, cgroup)".into(), path: None, hint: None });
            if user_new {
                let first = |m: &[IdMap]| if m.is_empty() || m.iter().any(|m| m.inside == 0) { 0 } else { m[0].inside };
                let (uid, gid) = (first(&fds.uid_map), first(&fds.gid_map));
                // As root, also drop the host's supplementary groups (group 0 would still open
                // root:root 0640 files); a user's own cannot be changed (setgroups is denied).
                let clear_groups = crate::sys::euid() == 0;
                self.plan.ops.insert(at + 1, Op::SetIds { uid, gid, clear_groups });
                self.plan.descs.insert(at + 1, Desc { step: Step::IdMap, what: format!("become uid {uid}, gid {gid} in the new user namespace"), path: None, hint: Some("the uid and gid maps must map the ids the sandbox starts with (0, or the first range)") });
            }
        }

        // 3. Hostname (a neutral one unless asked: the host's name is not the sandbox's) and
        // network.
        if let Some(h) = &spec.hostname {
            validate_hostname(h)?;
            if ns.uts != NsMode::New {
                return Err(fail(Step::Hostname, None, "setting the hostname needs a new UTS namespace")
                    .hint("leave namespaces.uts = new"));
            }
        }
        if ns.uts == NsMode::New {
            let h = spec.hostname.as_deref().unwrap_or(DEFAULT_HOSTNAME);
            let p = self.plan.cs(h)?;
            self.plan.op(Op::Hostname { name: p as *const u8, len: h.len() }, Step::Hostname, format!("set the hostname to {h:?}"), None);
        }
        if spec.network == Network::None {
            self.plan.op(Op::LoopbackUp, Step::Network, "bring up the loopback interface", None);
        }

        // 4. File system.
        if mount_new {
            self.filesystem(fds)?;
        } else if spec.rootfs.is_some() || !spec.mounts.is_empty() || spec.image.is_some() {
            return Err(fail(Step::Mount, None, "mounts, a rootfs and an image need a new mount namespace")
                .hint("leave namespaces.mount = new"));
        }
        if spec.tty {
            if !(mount_new && spec.dev) {
                return Err(fail(Step::Stdio, None, "a terminal (tty) needs the sandbox's own /dev (a private devpts)").hint("leave dev = true and namespaces.mount = new"));
            }
            let slot = self.slot();
            let ws = fds.winsize.unwrap_or([0; 4]);
            self.plan.op(Op::OpenPty { sock: fds.status_child, winsize: ws, slot }, Step::Stdio, "open the sandbox's terminal (a pty of its own devpts) and hand its master to the host", Some(Path::new("/dev/ptmx")));
            self.tty_slot = Some(slot);
        }

        // 5. Limits.
        for r in &spec.rlimits {
            if r.soft > r.hard {
                return Err(fail(Step::Rlimit, None, format!("rlimit {:?}: soft limit {} is above hard limit {}", r.resource, r.soft, r.hard)));
            }
            let limit = libc::rlimit64 { rlim_cur: r.soft, rlim_max: r.hard };
            self.plan.op(Op::Rlimit { resource: r.resource.number(), limit }, Step::Rlimit, format!("set rlimit {:?} to {}/{}", r.resource, r.soft, r.hard), None);
        }

        // 6. The payload's plan (init runs it in the payload it forks), then init.
        let sources = self.payload(fds)?;
        let mut moves = vec![
            FdMove { src: FdSrc::Fd(fds.status_child), dst: INIT_STATUS_FD, cloexec: false },
            FdMove { src: FdSrc::Fd(fds.memfd), dst: INIT_BINARY_FD, cloexec: true },
            FdMove { src: FdSrc::Fd(fds.err_w), dst: INIT_ERR_FD, cloexec: false },
            FdMove { src: FdSrc::Fd(fds.payload_plan), dst: INIT_PLAN_FD, cloexec: false },
        ];
        if let Some(fd) = fds.oom_event {
            moves.push(FdMove { src: FdSrc::Fd(fd), dst: INIT_OOM_FD, cloexec: false });
            self.plan.payload.flags |= crate::payload::OOM_WATCH;
        }
        for (i, src) in sources.into_iter().enumerate() {
            moves.push(FdMove { src, dst: INIT_FIRST_SOURCE + i as i32, cloexec: false });
        }
        let moves = moves.into_boxed_slice();
        let (mp, mn) = (moves.as_ptr(), moves.len());
        self.plan.moves.push(moves);
        let name = self.plan.cs("cagette-init")?;
        let argv = self.plan.arr(vec![name]);
        let envp = self.plan.arr(vec![]);
        self.plan.op(Op::ExecInit { memfd: INIT_BINARY_FD, moves: mp, n: mn, argv, envp }, Step::Init, "execute the sandbox's init", None);
        Ok(())
    }

    fn filesystem(&mut self, fds: &Fds) -> Result<(), SetupFailure> {
        let spec = self.spec;
        self.plan.op(Op::MakePrivate, Step::Mount, "make the mount tree private", None);

        // The host directory where the new root is assembled, in our private mount namespace.
        let staging = STAGING_CANDIDATES
            .iter()
            .find(|p| std::fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false))
            .ok_or_else(|| fail(Step::Mount, None, "no staging directory for the new root").hint("create /tmp on the host"))?;
        self.staging = staging;
        // Every host path of the spec is opened first, before anything is mounted over the
        // staging directory (a bind source may well be under /tmp).
        let hs = self.open_host_paths(fds)?;
        // Overlay layers are attached under a scratch tmpfs there first: overlayfs takes layers
        // by path, and a layer the parent mounted (id-mapped) must be attached to be used.
        let overlays = !fds.host.layers.is_empty() || spec.mounts.iter().any(|m| matches!(m, Mount::Overlay { .. }));
        if overlays {
            let scratch = self.slot();
            self.fs_new("tmpfs", &[("mode", Some("0700")), ("size", Some("64k"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, scratch, Step::Mount, "create the scratch tmpfs for overlay layers", None)?;
            let sp = self.plan.cs(staging)?;
            self.plan.op(Op::AttachAt { slot: scratch, path: sp }, Step::Mount, format!("attach the scratch tmpfs at {staging} (private to the sandbox)"), Some(Path::new(staging)));
            self.scratch = Some(scratch);
        }

        // Sources first, while every host path is still reachable.
        let host_root = spec.rootfs.is_none() && fds.host.layers.is_empty();
        let root = if fds.host.layers.is_empty() {
            self.slot()
        } else {
            // An image: its layers under an ephemeral upper layer (the store never changes).
            let slot = self.slot();
            let lowers: Vec<(usize, &HostPath)> = hs.layers.iter().copied().zip(fds.host.layers.iter()).collect();
            self.overlay_mount(&lowers, None, slot, "/", Path::new("/"))?;
            slot
        };
        self.root_slot = root;
        let mut top_level: Vec<(Vec<String>, TopKind, usize)> = Vec::new();
        if !fds.host.layers.is_empty() {
            // The overlay root was planned above.
        } else if let Some(s) = hs.rootfs {
            self.plan.op(Op::Move { from: s, to: root }, Step::Mount, "use the rootfs as the root", None);
        } else {
            self.fs_new("tmpfs", &[("mode", Some("0755")), ("size", Some("4m"))], sys::MOUNT_ATTR_NODEV, root, Step::Mount, "create the root tmpfs", None)?;
            // The host's tree, read-only: each entry of / is bound on its own, so mount points
            // can be created in the tmpfs. A directory on the way to a destination that does not
            // exist on the host is "exploded" the same way (its entries bound one by one).
            let mut explode: Vec<Vec<String>> = Vec::new();
            let mut wanted: Vec<String> = spec.mounts.iter().map(|m| m.destination().to_string()).collect();
            wanted.extend(self.hidden_ipc_dirs());
            // Every directory on the way to a mount point is exploded too, so the path to it is
            // a tmpfs directory the sandbox can search even where the host's is not (a bind
            // below /root, which the sandbox's root, not the host's, may not enter).
            for dest in &wanted {
                let comps = sandbox_components(dest, Step::Mount)?;
                let mut host = PathBuf::from("/");
                for (k, c) in comps.iter().enumerate() {
                    host.push(c);
                    match std::fs::symlink_metadata(&host) {
                        Ok(md) if md.is_dir() => {
                            if k + 1 < comps.len() {
                                explode.push(comps[..=k].to_vec());
                            }
                        }
                        Ok(_) => break, // a symlink or file: resolved inside the root as it is
                        Err(_) => {
                            for j in 1..=k {
                                explode.push(comps[..j].to_vec());
                            }
                            break;
                        }
                    }
                }
            }
            explode.sort();
            explode.dedup();
            self.host_dir(&[], &explode, &mut top_level)?;
        }

        // Mounts to make, in order: the defaults, then the user's.
        let user_targets: Vec<Vec<String>> = spec
            .mounts
            .iter()
            .map(|m| sandbox_components(m.destination(), Step::Mount))
            .collect::<Result<_, _>>()?;
        let user_has = |p: &str| user_targets.iter().any(|t| t.len() == 1 && t[0] == p);
        let mut mounts: Vec<(Mount, Vec<String>, Option<usize>)> = Vec::new();
        if spec.proc && !user_has("proc") {
            // A fresh procfs needs a pid namespace of the sandbox's own; with the host's, bind
            // the host's /proc (the same view a fresh one would give).
            let m = if spec.namespaces.pid == NsMode::New { Mount::proc("/proc") } else { Mount::bind("/proc", "/proc") };
            mounts.push((m, vec!["proc".into()], None));
        }
        if spec.sys && !user_has("sys") {
            // A network namespace of our own gets its own sysfs (its /sys/class/net shows only
            // lo); otherwise the host's, read-only.
            let m = if spec.network == Network::None { Mount::Sysfs { destination: "/sys".into() } } else { Mount::bind("/sys", "/sys").read_only() };
            mounts.push((m, vec!["sys".into()], None));
        }
        if spec.dev && !user_has("dev") {
            mounts.push((Mount::dev("/dev"), vec!["dev".into()], None));
        }
        if spec.tmp && !user_has("tmp") {
            mounts.push((Mount::tmpfs("/tmp"), vec!["tmp".into()], None));
        }
        if host_root {
            // The host's IPC endpoints (sockets, FIFOs, lock files under /run) stay out of reach.
            for d in self.hidden_ipc_dirs() {
                let comps = sandbox_components(&d, Step::Mount)?;
                if !user_targets.iter().any(|t| *t == comps) {
                    mounts.push((Mount::Tmpfs { destination: d.clone(), size: Some(crate::Size(1 << 20)), mode: Some(0o755) }, comps, None));
                }
            }
            // With the host's network, its resolver configuration, where /etc/resolv.conf points
            // into /run (systemd-resolved, NetworkManager), is bound back read-only.
            if spec.network != Network::None {
                if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
                    if target.starts_with("/run/") && target.is_file() {
                        if let Some(dest) = target.to_str() {
                            let comps = sandbox_components(dest, Step::Mount)?;
                            mounts.push((Mount::bind(&target, dest).read_only(), comps, None));
                        }
                    }
                }
            }
        }
        for (i, (m, t)) in spec.mounts.iter().zip(user_targets).enumerate() {
            mounts.push((m.clone(), t, Some(i)));
        }

        // Open every source now.
        let mut sources: Vec<usize> = Vec::with_capacity(mounts.len());
        for (m, _, index) in &mounts {
            let s = self.source(m, *index, fds, &hs)?;
            sources.push(s);
        }

        // Attach the root at the staging directory (in our private mount namespace).
        let sp = self.plan.cs(staging)?;
        self.plan.op(Op::AttachAt { slot: root, path: sp }, Step::Mount, format!("attach the new root at {staging} (private to the sandbox)"), Some(Path::new(staging)));

        if host_root {
            for (comps, kind, s) in top_level {
                let dest = format!("/{}", comps.join("/"));
                let dpath = PathBuf::from(&dest);
                match kind {
                    TopKind::Link(target) => {
                        let (name, parent) = comps.split_last().expect("a path has a name");
                        let t = self.plan.cs(target.as_os_str().as_bytes())?;
                        let n = self.plan.cs(name)?;
                        let dir = if parent.is_empty() { root } else { self.resolve_dir(parent, &dpath)? };
                        self.plan.op(Op::Symlink { target: t, dir, name: n }, Step::Mount, format!("link {dest} -> {}", target.display()), Some(&dpath));
                        if dir != root {
                            self.plan.op(Op::Close { slot: dir }, Step::Mount, "close", None);
                        }
                    }
                    TopKind::Exploded => {
                        let d = self.resolve_dir(&comps, &dpath)?;
                        self.plan.op(Op::Close { slot: d }, Step::Mount, "close", None);
                    }
                    TopKind::Dir | TopKind::File => {
                        let leaf = if matches!(kind, TopKind::Dir) { Leaf::Dir } else { Leaf::File };
                        let t = self.attach(s, &comps, leaf, &format!("bind the host's {dest} read-only"), &dpath)?;
                        self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
                    }
                }
            }
        }

        for ((m, comps, index), src) in mounts.iter().zip(sources) {
            let leaf = match (m, index) {
                (Mount::Bind { .. }, Some(i)) if fds.host.mounts.get(*i).and_then(|v| v.first()).is_some_and(|h| !h.is_dir) => Leaf::File,
                (Mount::Bind { source, .. }, None) if std::fs::metadata(source).map(|md| !md.is_dir()).unwrap_or(false) => Leaf::File,
                _ => Leaf::Dir,
            };
            self.mount(m, comps, src, leaf, fds)?;
        }

        // Masked and read-only paths.
        let mut masked: Vec<String> = match &spec.masked_paths {
            Some(v) => v.clone(),
            None => DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
        };
        if host_root {
            // cagette's own image store (its layers hold setuid files and, as root, device nodes).
            masked.extend(fds.hidden_store.iter().filter_map(|p| p.to_str().map(str::to_string)));
        }
        for p in masked {
            let rel = sandbox_components(&p, Step::Mask)?.join("/");
            let rp = self.plan.cs(&rel)?;
            let devnull = self.devnull;
            self.plan.op(Op::Mask { root, path: rp, devnull }, Step::Mask, format!("mask {p}"), Some(Path::new(&p)));
        }
        let readonly: Vec<String> = match &spec.readonly_paths {
            Some(v) => v.clone(),
            None => DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        };
        for p in readonly {
            let rel = sandbox_components(&p, Step::ReadonlyPath)?.join("/");
            let rp = self.plan.cs(&rel)?;
            self.plan.op(Op::ReadOnly { root, path: rp }, Step::ReadonlyPath, format!("make {p} read-only"), Some(Path::new(&p)));
        }

        // The root: never a device node reachable through it; read-only unless asked.
        let mut attrs = sys::MOUNT_ATTR_NODEV;
        if host_root || (fds.host.layers.is_empty() && !spec.rootfs_writable) {
            attrs |= sys::MOUNT_ATTR_RDONLY;
        }
        self.plan.op(Op::SetAttr { slot: root, set: attrs, recursive: false }, Step::Mount, if attrs & sys::MOUNT_ATTR_RDONLY != 0 { "make the root read-only and nodev" } else { "make the root nodev" }, None);
        self.plan.op(Op::Pivot { root }, Step::PivotRoot, "switch to the new root (pivot_root)", spec.rootfs.as_deref());
        Ok(())
    }

    /// Directories of the host root that hold IPC endpoints: replaced by empty tmpfs mounts.
    fn hidden_ipc_dirs(&self) -> Vec<String> {
        let mut v = vec!["/run".to_string()];
        // Where /var/run is a directory of its own (not the usual symlink to /run).
        if std::fs::symlink_metadata("/var/run").map(|m| m.is_dir()).unwrap_or(false) {
            v.push("/var/run".into());
        }
        v
    }

    /// Plans the mounts of every host path of the spec (see `host_source`), each in a slot.
    fn open_host_paths(&mut self, fds: &Fds) -> Result<HostSlots, SetupFailure> {
        let mut hs = HostSlots::default();
        if let Some(r) = &fds.host.rootfs {
            let s = self.slot();
            self.host_source(r, true, s, "open the rootfs")?;
            hs.rootfs = Some(s);
        }
        for (m, paths) in self.spec.mounts.iter().zip(&fds.host.mounts) {
            let mut v = Vec::new();
            for (j, h) in paths.iter().enumerate() {
                let s = self.slot();
                match m {
                    Mount::Bind { recursive, destination, .. } => self.host_source(h, *recursive, s, &format!("open the bind source for {destination}:"))?,
                    Mount::Overlay { lower, destination, .. } if j < lower.len() => self.host_source(h, false, s, &format!("open an overlay layer for {destination}:"))?,
                    Mount::Overlay { lower, destination, .. } if j == lower.len() => self.host_source(h, false, s, &format!("open the parent of the overlay's upper and work directories for {destination}:"))?,
                    // The upper and work directories themselves are opened below that parent.
                    _ => {}
                }
                v.push(s);
            }
            hs.mounts.push(v);
        }
        for l in &fds.host.layers {
            let s = self.slot();
            self.host_source(l, false, s, "open an image layer")?;
            hs.layers.push(s);
        }
        Ok(hs)
    }

    /// Plans: the mount of a host path the parent resolved, into `slot` (the parent's detached
    /// mount when it made one, else a clone made here after checking it is the same inode).
    fn host_source(&mut self, h: &HostPath, recursive: bool, slot: usize, what: &str) -> Result<(), SetupFailure> {
        match h.mount_fd() {
            Some(fd) => self.plan.op(Op::UseFd { fd, slot }, Step::Mount, format!("{what} {} (mounted by the host, id-mapped)", h.path.display()), Some(&h.path)),
            None => {
                let p = self.plan.cs(h.path.as_os_str().as_bytes())?;
                let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
                if recursive {
                    flags |= AT_RECURSIVE;
                }
                self.plan.op_hint(
                    Op::OpenTreeChecked { path: p, flags, dev: h.dev, ino: h.ino, slot },
                    Step::Mount,
                    format!("{what} {}", h.path.display()),
                    Some(&h.path),
                    "host paths are opened without following symlinks, and must still be the file the host resolved (ESTALE: it was replaced meanwhile)",
                );
            }
        }
        Ok(())
    }

    /// Plans the read-only binds of the host directory `rel` (components from /), recursing into
    /// directories listed in `explode`.
    fn host_dir(&mut self, rel: &[String], explode: &[Vec<String>], out: &mut Vec<(Vec<String>, TopKind, usize)>) -> Result<(), SetupFailure> {
        let dir = PathBuf::from("/").join(rel.join("/"));
        let skip: &[&str] = if rel.is_empty() { &["proc", "dev", "tmp", "sys"] } else { &[] };
        // A directory the sandbox's ids could not enter on the host (like /root, for a private id
        // range) shows none of its entries: only the mount points the spec puts below it.
        if !rel.is_empty() && !self.sandbox_can_search(&dir) {
            for e in explode.iter().filter(|e| e.len() == rel.len() + 1 && e.starts_with(rel)) {
                out.push((e.clone(), TopKind::Exploded, 0));
                self.host_dir(e, explode, out)?;
            }
            return Ok(());
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| SetupFailure::new(Step::Mount, e.raw_os_error(), Some(dir.clone()), "list a directory of the host's root"))?;
        let mut names: Vec<(String, std::fs::FileType)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.file_type().ok()?)))
            .filter(|(n, _)| !skip.contains(&n.as_str()))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in names {
            let host_path = dir.join(&name);
            let mut comps = rel.to_vec();
            comps.push(name);
            if ft.is_dir() && explode.contains(&comps) {
                out.push((comps.clone(), TopKind::Exploded, 0));
                self.host_dir(&comps, explode, out)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host_path).map_err(|e| SetupFailure::new(Step::Mount, e.raw_os_error(), Some(host_path.clone()), "read a symlink of the host's root"))?;
                out.push((comps, TopKind::Link(target), 0));
            } else if ft.is_dir() || ft.is_file() {
                let s = self.slot();
                let p = self.plan.cs(host_path.as_os_str().as_bytes())?;
                self.plan.op(Op::OpenTree { path: p, flags: OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE, slot: s }, Step::Mount, format!("open the host's {}", host_path.display()), Some(&host_path));
                let attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
                self.plan.op(Op::SetAttr { slot: s, set: attrs, recursive: true }, Step::Mount, format!("make the host's {} read-only, nosuid and nodev", host_path.display()), Some(&host_path));
                out.push((comps, if ft.is_dir() { TopKind::Dir } else { TopKind::File }, s));
            }
        }
        Ok(())
    }

    /// Whether the sandbox's root (the host ids its uid and gid 0 map to) may search a host
    /// directory and those above it, by their owners and modes (host root may search all).
    fn sandbox_can_search(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let outside = |maps: &[IdMap], fallback: u32| maps.iter().find(|m| m.inside == 0).map_or(fallback, |m| m.outside);
        let (uid, gid) = if self.plan.user_ns { (outside(&self.uid_map, 0), outside(&self.gid_map, 0)) } else { (crate::sys::euid(), nix::unistd::getegid().as_raw()) };
        if uid == 0 {
            return true;
        }
        // The directory and every one above it (the child reaches entries by their path).
        dir.ancestors().all(|d| {
            std::fs::metadata(d).is_ok_and(|md| (md.uid() == uid && md.mode() & 0o100 != 0) || (md.gid() == gid && md.mode() & 0o010 != 0) || md.mode() & 0o001 != 0)
        })
    }

    /// Plans: find or create `comps` inside the root (RESOLVE_IN_ROOT; missing directories and a
    /// `Leaf::File` leaf are created); returns the slot of its O_PATH fd.
    fn resolve(&mut self, comps: &[String], leaf: Leaf, what: &str, dest: &Path) -> Result<usize, SetupFailure> {
        let slot = self.slot();
        let fullp = self.plan.cs(comps.join("/"))?;
        let mut prefixes = Vec::with_capacity(comps.len());
        let mut names = Vec::with_capacity(comps.len());
        for i in 0..comps.len() {
            prefixes.push(self.plan.cs(comps[..=i].join("/"))?);
            names.push(self.plan.cs(&comps[i])?);
        }
        let n = comps.len();
        let prefixes = self.plan.arr(prefixes);
        let names = self.plan.arr(names);
        let root = self.root_slot;
        self.plan.op(Op::Resolve { root, path: fullp, prefixes, names, n, leaf, slot }, Step::Mount, format!("{what}: find or create {}", dest.display()), Some(dest));
        Ok(slot)
    }

    fn resolve_dir(&mut self, comps: &[String], dest: &Path) -> Result<usize, SetupFailure> {
        self.resolve(comps, Leaf::Dir, "create a directory", dest)
    }

    /// Plans a new file system (fsopen/fsconfig/fsmount) into `slot`.
    #[allow(clippy::too_many_arguments)]
    fn fs_new(&mut self, fstype: &str, opts: &[(&str, Option<&str>)], attrs: u64, slot: usize, step: Step, what: &str, path: Option<&Path>) -> Result<(), SetupFailure> {
        let ctx = self.slot();
        let t = self.plan.cs(fstype)?;
        self.plan.op(Op::FsOpen { fstype: t, slot: ctx }, step, format!("{what} (fsopen {fstype})"), path);
        for (k, v) in opts {
            let kp = self.plan.cs(k)?;
            match v {
                Some(v) => {
                    let vp = self.plan.cs(v)?;
                    self.plan.op(Op::FsString { slot: ctx, key: kp, value: vp }, step, format!("{what} (option {k}={v})"), path);
                }
                None => self.plan.op(Op::FsFlag { slot: ctx, key: kp }, step, format!("{what} (option {k})"), path),
            }
        }
        self.plan.op(Op::FsMount { ctx, attrs, slot }, step, what.to_string(), path);
        Ok(())
    }

    /// Plans the source of a mount (before the root is attached); returns its slot. `index` is
    /// the mount's place in the spec (None for cagette's own default mounts).
    fn source(&mut self, m: &Mount, index: Option<usize>, fds: &Fds, hs: &HostSlots) -> Result<usize, SetupFailure> {
        let mut slot = self.slot();
        let dest = m.destination().to_string();
        let dpath = PathBuf::from(&dest);
        let host = index.and_then(|i| fds.host.mounts.get(i));
        let host_slots = index.and_then(|i| hs.mounts.get(i));
        match m {
            Mount::Bind { source, read_only, recursive, .. } => {
                match host_slots.and_then(|v| v.first()) {
                    Some(&s) => slot = s,
                    None => {
                        // cagette's own binds of the host's /proc and /sys.
                        let p = self.plan.cs(source.as_os_str().as_bytes())?;
                        let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
                        if *recursive {
                            flags |= AT_RECURSIVE;
                        }
                        self.plan.op(Op::OpenTree { path: p, flags, slot }, Step::Mount, format!("bind the host's {}", source.display()), Some(source));
                    }
                }
                let mut attrs = sys::MOUNT_ATTR_NODEV;
                if *read_only {
                    attrs |= sys::MOUNT_ATTR_RDONLY;
                }
                self.plan.op(Op::SetAttr { slot, set: attrs, recursive: *recursive }, Step::Mount, format!("make the bind at {dest} nodev{}", if *read_only { " and read-only" } else { "" }), Some(&dpath));
            }
            Mount::Tmpfs { size, mode, .. } => {
                let mode = format!("{:o}", mode.unwrap_or(0o1777));
                let size = size.map(|s| s.bytes().to_string());
                let mut opts: Vec<(&str, Option<&str>)> = vec![("mode", Some(&mode))];
                if let Some(s) = &size {
                    opts.push(("size", Some(s)));
                }
                self.fs_new("tmpfs", &opts, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, slot, Step::Mount, &format!("create a tmpfs for {dest}"), Some(&dpath))?;
            }
            Mount::Sysfs { .. } => {
                self.fs_new("sysfs", &[], sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, slot, Step::Mount, &format!("create a sysfs for {dest}"), Some(&dpath))?;
            }
            Mount::Proc { .. } => {
                self.fs_new("proc", &[], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, slot, Step::Mount, &format!("create a procfs for {dest}"), Some(&dpath))?;
            }
            Mount::Dev { .. } => {
                self.fs_new("tmpfs", &[("mode", Some("0755")), ("size", Some("64k"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC, slot, Step::Mount, &format!("create the tmpfs for {dest}"), Some(&dpath))?;
            }
            Mount::Overlay { lower, upper, work, .. } => {
                if lower.is_empty() {
                    return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest} has no lower directory")));
                }
                let (Some(h), Some(hsl)) = (host, host_slots) else {
                    return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: its host directories were not resolved")));
                };
                let n = lower.len();
                let lowers: Vec<(usize, &HostPath)> = hsl.iter().copied().zip(h.iter()).take(n).collect();
                let upper_work = match (upper, work) {
                    (Some(_), Some(_)) => {
                        let (Some(parent), Some(&ps)) = (h.get(n), hsl.get(n)) else {
                            return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: upper and work were not resolved")));
                        };
                        let rel = |p: &HostPath| p.path.strip_prefix(&parent.path).map(Path::to_path_buf).unwrap_or_default();
                        let (u, w) = (h.get(n + 1).map(rel).unwrap_or_default(), h.get(n + 2).map(rel).unwrap_or_default());
                        Some((ps, parent, u, w))
                    }
                    (None, None) => None,
                    _ => return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: give both upper and work, or neither"))),
                };
                self.overlay_mount(&lowers, upper_work, slot, &dest, &dpath)?;
            }
        }
        Ok(slot)
    }

    /// Plans an overlay of `lowers` (topmost first) into `slot`: each layer is attached under
    /// the scratch tmpfs and named by that path; the upper layer is a persistent host directory
    /// (`upper_work`: their common parent, and upper and work relative to it) or an ephemeral tmpfs.
    fn overlay_mount(&mut self, lowers: &[(usize, &HostPath)], upper_work: Option<(usize, &HostPath, PathBuf, PathBuf)>, slot: usize, dest: &str, dpath: &Path) -> Result<(), SetupFailure> {
        let scratch = self.scratch.ok_or_else(|| fail(Step::Mount, Some(dpath), "overlay without a scratch tmpfs"))?;
        let mut opts: Vec<(String, OptValue)> = Vec::new();
        let mut layer_paths = Vec::new();
        for &(s, l) in lowers {
            let name = self.layer_name();
            let np = self.plan.cs(&name)?;
            self.plan.op(Op::MkdirIn { dir: scratch, name: np, mode: 0o700 }, Step::Mount, format!("create the scratch directory for layer {}", l.path.display()), Some(&l.path));
            self.plan.op(Op::MoveInto { from: s, dir: scratch, name: np }, Step::Mount, format!("attach overlay layer {} for {dest}", l.path.display()), Some(&l.path));
            self.plan.op(Op::Close { slot: s }, Step::Mount, "close", None);
            layer_paths.push(format!("{}/{name}", self.staging));
        }
        if kernel_at_least(6, 8) {
            // One option per layer: any path works.
            opts.extend(layer_paths.into_iter().map(|l| ("lowerdir+".to_string(), OptValue::Str(l))));
        } else {
            opts.push(("lowerdir".into(), OptValue::Str(layer_paths.join(":"))));
        }
        match upper_work {
            Some((s, parent, u, w)) => {
                let name = self.layer_name();
                let np = self.plan.cs(&name)?;
                self.plan.op(Op::MkdirIn { dir: scratch, name: np, mode: 0o700 }, Step::Mount, format!("create the scratch directory for {}", parent.path.display()), Some(&parent.path));
                self.plan.op(Op::MoveInto { from: s, dir: scratch, name: np }, Step::Mount, format!("attach {} for the overlay at {dest}", parent.path.display()), Some(&parent.path));
                // upper and work, opened below it without following symlinks, named by fd.
                for (key, rel) in [("upperdir", u), ("workdir", w)] {
                    let rs = self.slot();
                    let relp = self.plan.cs(rel.as_os_str().as_bytes())?;
                    self.plan.op(Op::OpenBeneath { dir: s, path: relp, slot: rs }, Step::Mount, format!("open the overlay's {key} {} for {dest}", parent.path.join(&rel).display()), Some(&parent.path.join(&rel)));
                    opts.push((key.to_string(), OptValue::Fd(rs, String::new())));
                }
            }
            None => {
                // An ephemeral upper: a tmpfs of its own, reached through /proc/self/fd.
                let t = self.slot();
                self.fs_new("tmpfs", &[("mode", Some("0755"))], 0, t, Step::Mount, &format!("create the ephemeral upper tmpfs for {dest}"), Some(dpath))?;
                let upper_name = self.plan.cs("upper")?;
                let work_name = self.plan.cs("work")?;
                self.plan.op(Op::MkdirIn { dir: t, name: upper_name, mode: 0o755 }, Step::Mount, format!("create the overlay upper directory for {dest}"), Some(dpath));
                self.plan.op(Op::MkdirIn { dir: t, name: work_name, mode: 0o755 }, Step::Mount, format!("create the overlay work directory for {dest}"), Some(dpath));
                opts.push(("upperdir".into(), OptValue::Fd(t, "upper".into())));
                opts.push(("workdir".into(), OptValue::Fd(t, "work".into())));
            }
        }
        if self.plan.user_ns {
            // Mounted in a user namespace: overlayfs can only use user.overlay.* xattrs.
            opts.push(("userxattr".into(), OptValue::Flag));
        }
        let ctx = self.slot();
        let t = self.plan.cs("overlay")?;
        self.plan.op_hint(Op::FsOpen { fstype: t, slot: ctx }, Step::Mount, format!("create an overlay for {dest}"), Some(dpath), "overlayfs must be available (modprobe overlay)");
        for (k, v) in &opts {
            let kp = self.plan.cs(k)?;
            match v {
                OptValue::Fd(dir, suffix) => {
                    // The child renders /proc/self/fd/<fd of slot>/<suffix>.
                    let sp = self.plan.cs(suffix)?;
                    let buf = self.plan.buf();
                    self.plan.op(Op::FsStringFdPath { slot: ctx, key: kp, dir: *dir, suffix: sp, buf }, Step::Mount, format!("set overlay {k} for {dest}"), Some(dpath));
                }
                OptValue::Flag => self.plan.op(Op::FsFlag { slot: ctx, key: kp }, Step::Mount, format!("set overlay option {k} for {dest}"), Some(dpath)),
                OptValue::Str(v) => {
                    let vp = self.plan.cs(v)?;
                    self.plan.op(Op::FsString { slot: ctx, key: kp, value: vp }, Step::Mount, format!("set overlay {k}={v} for {dest}"), Some(Path::new(v)));
                }
            }
        }
        self.plan.op(Op::FsMount { ctx, attrs: sys::MOUNT_ATTR_NODEV, slot }, Step::Mount, format!("create the overlay for {dest}"), Some(dpath));
        Ok(())
    }

    /// A fresh name for a directory of the scratch tmpfs.
    fn layer_name(&mut self) -> String {
        self.layers += 1;
        format!("{}", self.layers - 1)
    }

    /// Plans: resolve (creating) `comps` inside the root, move the mount in `src` onto it.
    fn attach(&mut self, src: usize, comps: &[String], leaf: Leaf, what: &str, dest: &Path) -> Result<usize, SetupFailure> {
        let target = self.resolve(comps, leaf, what, dest)?;
        self.plan.op(Op::MoveMount { from: src, to: target }, Step::Mount, what.to_string(), Some(dest));
        self.plan.op(Op::Close { slot: src }, Step::Mount, what.to_string(), Some(dest));
        Ok(target)
    }

    fn mount(&mut self, m: &Mount, comps: &[String], src: usize, leaf: Leaf, fds: &Fds) -> Result<(), SetupFailure> {
        let dest = m.destination().to_string();
        let dpath = PathBuf::from(&dest);
        let what = match m {
            Mount::Bind { source, read_only, .. } => format!("bind {} at {dest}{}", source.display(), if *read_only { " (read-only)" } else { "" }),
            Mount::Tmpfs { .. } => format!("mount a tmpfs at {dest}"),
            Mount::Proc { .. } => format!("mount proc at {dest}"),
            Mount::Sysfs { .. } => format!("mount sysfs at {dest}"),
            Mount::Dev { .. } => format!("mount a minimal /dev at {dest}"),
            Mount::Overlay { .. } => format!("mount an overlay at {dest}"),
        };
        let target = self.attach(src, comps, leaf, &what, &dpath)?;
        if let Mount::Dev { .. } = m {
            self.populate_dev(comps, &dest, fds)?;
        }
        self.plan.op(Op::Close { slot: target }, Step::Mount, what, Some(&dpath));
        Ok(())
    }

    /// Device nodes (bound from the host: mknod is not allowed in a user namespace), a private
    /// devpts, /dev/shm and the usual links.
    fn populate_dev(&mut self, comps: &[String], dest: &str, fds: &Fds) -> Result<(), SetupFailure> {
        let mut nodes: Vec<(String, String)> = ["null", "zero", "full", "random", "urandom", "tty"].iter().map(|d| (format!("/dev/{d}"), d.to_string())).collect();
        // Devices the spec adds (checked by the parent: character or block devices under /dev).
        nodes.extend(fds.devices.iter().map(|(host, name)| (host.display().to_string(), name.clone())));
        for (host, dev) in nodes {
            if std::fs::symlink_metadata(&host).is_err() {
                continue;
            }
            let s = self.slot();
            let hp = self.plan.cs(&host)?;
            self.plan.op(Op::OpenTree { path: hp, flags: OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, slot: s }, Step::Mount, format!("open the host's {host}"), Some(Path::new(&host)));
            let mut c = comps.to_vec();
            c.extend(dev.split('/').map(str::to_string));
            let t = self.attach(s, &c, Leaf::File, &format!("bind {host} at {dest}/{dev}"), Path::new(&format!("{dest}/{dev}")))?;
            self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
        }
        let pts = self.slot();
        let pts_path = PathBuf::from(format!("{dest}/pts"));
        self.fs_new("devpts", &[("newinstance", None), ("ptmxmode", Some("0666")), ("mode", Some("0620"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC, pts, Step::Mount, &format!("create a devpts for {dest}/pts"), Some(&pts_path))?;
        let mut c = comps.to_vec();
        c.push("pts".into());
        let t = self.attach(pts, &c, Leaf::Dir, &format!("mount devpts at {dest}/pts"), &pts_path)?;
        self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
        let shm = self.slot();
        let shm_path = PathBuf::from(format!("{dest}/shm"));
        self.fs_new("tmpfs", &[("mode", Some("1777"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, shm, Step::Mount, &format!("create a tmpfs for {dest}/shm"), Some(&shm_path))?;
        let mut c = comps.to_vec();
        c.push("shm".into());
        let t = self.attach(shm, &c, Leaf::Dir, &format!("mount a tmpfs at {dest}/shm"), &shm_path)?;
        self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);

        // Links, created in the /dev tmpfs (resolved again: the target slot was closed).
        let devdir = self.resolve_dir(comps, Path::new(dest))?;
        for (name, target) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("core", "/proc/kcore"),
        ] {
            let tp = self.plan.cs(target)?;
            let np = self.plan.cs(name)?;
            self.plan.op(Op::Symlink { target: tp, dir: devdir, name: np }, Step::Mount, format!("link {dest}/{name} -> {target}"), Some(Path::new(&format!("{dest}/{name}"))));
        }
        self.plan.op(Op::Close { slot: devdir }, Step::Mount, "close", None);
        Ok(())
    }

    /// Plans the payload's own steps (run by init in the forked payload; see `payload.rs`) and
    /// returns where the payload's descriptors come from, in the order of fds 7, 8, ... of init.
    fn payload(&mut self, fds: &Fds) -> Result<Vec<FdSrc>, SetupFailure> {
        let spec = self.spec;
        let euid = crate::sys::euid();
        let mut p = PayloadPlan::default();
        p.op(PCode::DeathSignal, [0; 4], Step::Init, "set the payload's parent-death signal", None);

        // Capabilities: drop the bounding set while we still may, then switch user, then trim
        // the remaining sets.
        let keep_caps = (match &spec.capabilities {
            Some(c) => caps::mask(c),
            None => caps::mask(caps::DEFAULT_CAPABILITIES),
        } | caps::mask(&spec.cap_add))
            & !caps::mask(&spec.cap_drop);
        let ambient = spec.ambient_capabilities && keep_caps != 0;
        let last_cap = u64::from(last_cap());
        if spec.namespaces.user != NsMode::Host || euid == 0 {
            p.op(PCode::DropBounding, [keep_caps, last_cap, 0, 0], Step::Capabilities, "drop capabilities from the bounding set", None);
        }
        let setgroups_allowed = !(self.plan.user_ns && euid != 0);
        if !spec.supplementary_groups.is_empty() && !setgroups_allowed {
            return Err(fail(Step::User, None, "supplementary groups cannot be set in an unprivileged user namespace (setgroups is denied)"));
        }
        if setgroups_allowed && (self.plan.user_ns || euid == 0) {
            let bytes: Vec<u8> = spec.supplementary_groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
            let off = p.bytes(&bytes);
            p.op(PCode::SetGroups, [off, spec.supplementary_groups.len() as u64, 0, 0], Step::User, format!("set supplementary groups {:?}", spec.supplementary_groups), None);
        }
        let gid = spec.group.unwrap_or(0);
        let uid = spec.user.unwrap_or(0);
        if self.plan.user_ns || spec.group.is_some() {
            p.op(PCode::SetGid, [u64::from(gid), 0, 0, 0], Step::User, format!("switch to gid {gid}"), None);
        }
        if ambient && uid != 0 {
            // Keep the permitted set across the switch to a non-zero uid.
            p.op(PCode::KeepCaps, [0; 4], Step::Capabilities, "keep capabilities across the uid switch", None);
        }
        if self.plan.user_ns || spec.user.is_some() {
            p.op(PCode::SetUid, [u64::from(uid), 0, 0, 0], Step::User, format!("switch to uid {uid}"), None);
        }
        if spec.namespaces.user != NsMode::Host || euid == 0 {
            let keep = if uid == 0 || ambient { keep_caps } else { 0 };
            p.op(PCode::CapSet, [keep, if ambient { keep } else { 0 }, 0, 0], Step::Capabilities, "set the payload's capabilities", None);
            if ambient {
                p.op(PCode::Ambient, [keep, last_cap, 0, 0], Step::Capabilities, "raise the ambient capabilities", None);
            }
        } else if ambient {
            return Err(fail(Step::Capabilities, None, "ambient capabilities need a user namespace or root"));
        }
        if spec.no_new_privs {
            p.op(PCode::NoNewPrivs, [0; 4], Step::NoNewPrivs, "set no_new_privs", None);
        }

        // Working directory: inside the sandbox, never a host directory.
        let cwd = spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
        if !cwd.is_absolute() {
            return Err(fail(Step::Cwd, Some(&cwd), format!("working directory {} must be absolute", cwd.display())));
        }
        check_nul(cwd.as_os_str().as_bytes())?;
        let cp = p.string(cwd.as_os_str().as_bytes());
        p.op(PCode::Chdir, [cp, 0, 0, 0], Step::Cwd, format!("change to the working directory {}", cwd.display()), Some(&cwd));

        // File descriptors: init holds the payload's at 7, 8, ...; the payload puts each at its
        // number. With a terminal, the pty's slave is all three standard streams.
        let mut sources: Vec<FdSrc> = Vec::new();
        let mut moves: Vec<(i32, i32)> = Vec::new();
        match self.tty_slot {
            Some(slot) => {
                sources.push(FdSrc::Slot(slot));
                moves.extend([(INIT_FIRST_SOURCE, 0), (INIT_FIRST_SOURCE, 1), (INIT_FIRST_SOURCE, 2)]);
            }
            None => {
                for (i, &fd) in fds.stdio.iter().enumerate() {
                    moves.push((INIT_FIRST_SOURCE + sources.len() as i32, i as i32));
                    sources.push(FdSrc::Fd(fd));
                }
            }
        }
        let mut targets = vec![0, 1, 2];
        for &(host, inside) in &fds.passed {
            if inside < 3 {
                return Err(fail(Step::Stdio, None, format!("passed fd {host} must get a number of 3 or more inside (got {inside})")));
            }
            if targets.contains(&inside) {
                return Err(fail(Step::Stdio, None, format!("two passed fds target fd {inside}")));
            }
            targets.push(inside);
            moves.push((INIT_FIRST_SOURCE + sources.len() as i32, inside));
            sources.push(FdSrc::Fd(host));
        }
        if moves.len() > 64 {
            return Err(fail(Step::Stdio, None, format!("{} file descriptors to pass: at most 61 can be passed", fds.passed.len())));
        }
        let mbytes: Vec<u8> = moves.iter().flat_map(|(a, b)| a.to_ne_bytes().into_iter().chain(b.to_ne_bytes())).collect();
        let moff = p.bytes(&mbytes);
        p.op(PCode::Fds, [moff, moves.len() as u64, 0, 0], Step::Stdio, "set up the standard streams and passed fds", None);
        if self.tty_slot.is_some() {
            p.op(PCode::ControllingTty, [0; 4], Step::Stdio, "make the sandbox's terminal the payload's controlling terminal", None);
        }

        // The command: argv, envp, and the PATH candidates.
        let env = payload_env(spec);
        let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_else(|| DEFAULT_PATH.to_string());
        let mut argv = Vec::with_capacity(spec.argv.len());
        for a in &spec.argv {
            check_nul(a.as_bytes())?;
            argv.push(p.string(a.as_bytes()));
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') {
                return Err(fail(Step::Spec, None, format!("environment variable name {k:?} is empty or contains '='")));
            }
            let kv = format!("{k}={v}");
            check_nul(kv.as_bytes())?;
            envp.push(p.string(kv.as_bytes()));
        }
        let cmd = &spec.argv[0];
        let candidates: Vec<String> = if cmd.contains('/') {
            vec![cmd.clone()]
        } else {
            path_var.split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{cmd}", d.trim_end_matches('/'))).collect()
        };
        if candidates.is_empty() {
            return Err(fail(Step::Exec, None, format!("{cmd} has no '/' and PATH is empty")));
        }
        let cands: Vec<u64> = candidates.iter().map(|c| p.string(c.as_bytes())).collect();
        let n = cands.len() as u64;
        let candidates_p = p.words(&cands, false);
        let argv_p = p.words(&argv, true);
        let envp_p = p.words(&envp, true);
        // Landlock, then seccomp, as late as possible (a profile could deny what setup needs).
        if let Some(ll) = &spec.landlock {
            landlock(&mut p, ll)?;
        }
        if let Some(filter) = seccomp::compile(spec)? {
            if !spec.no_new_privs {
                return Err(fail(Step::Seccomp, None, "a seccomp filter needs no_new_privs (the payload has no CAP_SYS_ADMIN to load one without it)")
                    .hint("keep no_new_privs = true, or set seccomp = \"none\""));
            }
            let bytes: Vec<u8> = filter.prog.iter().flat_map(|i| i.code.to_ne_bytes().into_iter().chain([i.jt, i.jf]).chain(i.k.to_ne_bytes())).collect();
            let off = p.bytes(&bytes);
            p.op(PCode::Seccomp, [off, filter.prog.len() as u64, 0, 0], Step::Seccomp, "load the seccomp filter", None);
        }
        p.op(PCode::UnblockSignals, [0; 4], Step::Exec, "unblock signals", None);
        let what = if cmd.contains('/') { format!("execute {cmd}") } else { format!("execute {cmd} (searched in PATH={path_var})") };
        p.op(PCode::Exec, [candidates_p, n, argv_p, envp_p], Step::Exec, what, Some(Path::new(cmd)));
        self.plan.payload = p;
        Ok(sources)
    }
}

/// Landlock: everything read-only and executable, the writable paths (and /dev) fully allowed.
/// The handled rights follow the kernel's ABI version; no Landlock is an error.
fn landlock(p: &mut PayloadPlan, ll: &crate::spec::Landlock) -> Result<(), SetupFailure> {
    let abi = crate::sys::landlock_abi();
    if abi < 1 {
        return Err(SetupFailure::new(Step::Landlock, Some(libc::EOPNOTSUPP), None, "Landlock rules were asked for, but this kernel has no Landlock")
            .hint("boot a kernel with CONFIG_SECURITY_LANDLOCK and lsm=...,landlock, or drop the landlock option (`cagette probe` tells)"));
    }
    const READ: u64 = 1 | (1 << 2) | (1 << 3); // execute, read file, read dir
    let mut handled: u64 = (1 << 13) - 1; // ABI 1: bits 0-12
    if abi >= 2 {
        handled |= 1 << 13; // refer
    }
    if abi >= 3 {
        handled |= 1 << 14; // truncate
    }
    p.op(PCode::LandlockCreate, [handled, 0, 0, 0], Step::Landlock, format!("create a Landlock ruleset (ABI {abi})"), None);
    let root = p.string(b"/");
    p.op(PCode::LandlockRule, [root, READ, 0, 0], Step::Landlock, "allow reading everywhere", Some(Path::new("/")));
    let mut writable: Vec<String> = vec!["/dev".into()];
    writable.extend(ll.writable.iter().cloned());
    for w in writable {
        sandbox_components(&w, Step::Landlock)?;
        let off = p.string(w.as_bytes());
        p.op(PCode::LandlockRule, [off, handled, 0, 0], Step::Landlock, format!("allow writing under {w}"), Some(Path::new(&w)));
    }
    p.op(PCode::LandlockRestrict, [0; 4], Step::Landlock, "enforce the Landlock ruleset", None);
    Ok(())
}

fn check_nul(b: &[u8]) -> Result<(), SetupFailure> {
    if b.contains(&0) {
        return Err(fail(Step::Spec, None, format!("{:?} contains a NUL byte", String::from_utf8_lossy(b))));
    }
    Ok(())
}

enum TopKind {
    Exploded,
    Dir,
    File,
    Link(PathBuf),
}

fn ns_name(nstype: i32) -> &'static str {
    match nstype {
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "network",
        libc::CLONE_NEWCGROUP => "cgroup",
        _ => "time",
    }
}

fn validate_hostname(h: &str) -> Result<(), SetupFailure> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && !h.starts_with('-')
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(fail(Step::Hostname, None, format!("invalid hostname {h:?}"))
            .hint("a hostname has 1 to 64 characters: letters, digits, '-' and '.', not starting with '-'"))
    }
}

/// The payload's environment: defaults (or the host's), then the spec's variables.
pub(crate) fn payload_env(spec: &SandboxSpec) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    if spec.inherit_env {
        for (k, v) in std::env::vars_os() {
            if let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) {
                env.insert(k, v);
            }
        }
    } else {
        env.insert("PATH".into(), DEFAULT_PATH.into());
        let home = if spec.user.unwrap_or(0) == 0 { "/root" } else { "/" };
        env.insert("HOME".into(), home.into());
        let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".into());
        env.insert("TERM".into(), term);
    }
    for (k, v) in &spec.env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    static V: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let v = *V.get_or_init(|| {
        let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut it = r.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse::<u32>().ok());
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    });
    v >= (major, minor)
}

fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40))
}

