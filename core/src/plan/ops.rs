//! The flat plan's types: the setup child's operations ([`Op`]), their descriptions, the fds the
//! parent prepared ([`Fds`]), and the plan itself, whose every string, array and fd is ready
//! before clone. The child (`child/exec.rs`) only walks it; `plan/compile.rs` builds it.
//!
//! Each operation has a description (step, path, words) kept beside it, so that a failure that
//! comes back as (phase, operation index, errno) turns into a message that names what failed and
//! where.

use crate::error::{SetupFailure, Step};
use crate::fs::hostpath::HostPath;
use crate::plan::payload::PayloadPlan;
use crate::sandbox::spec::IdMap;
use std::cell::UnsafeCell;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicI32;

pub(crate) type CStr = *const libc::c_char;
pub(crate) type CArr = *const CStr;

/// Record phase of a setup-child failure.
pub(crate) const PHASE_SETUP: u32 = 0;
/// Record phase of a payload failure (reported by init's fork of the payload).
pub(crate) const PHASE_PAYLOAD: u32 = 1;
/// Record phase of a failure of init itself (reading the payload's plan, forking the payload).
pub(crate) const PHASE_INIT: u32 = 2;
/// Not a failure: a detached sandbox that waits for `start` is built (init.c).
pub(crate) const PHASE_READY: u32 = 3;
/// Size of one error record: phase u32, index u32, errno i32.
pub(crate) const RECORD: usize = 12;

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
    /// Receive the job's cgroup v1 `tasks` files (opened by the host, which made the cgroups
    /// while this process built the sandbox) over the status socket, and join each by writing
    /// "0" to it. EOF means the host died.
    RecvCgroups { sock: RawFd },
    /// Take ids that are mapped in the new user namespace (fsuid/fsgid decide file creation);
    /// with `clear_groups`, drop the supplementary groups inherited from the host.
    SetIds { uid: u32, gid: u32, clear_groups: bool },
    Hostname { name: *const u8, len: usize },
    LoopbackUp,
    /// A `prohibit` route to 169.254.0.0/16 (link-local: cloud metadata services) in the
    /// sandbox's network namespace (netlink RTM_NEWROUTE).
    BlockLinkLocal,
    MakePrivate,
    /// mount(NULL, path, NULL, flags, NULL): a mount's propagation (after the pivot).
    Propagate { path: CStr, flags: u64 },
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
    /// Hides `path` (resolved in `root`): a directory under an empty read-only tmpfs, anything
    /// else under the host's /dev/null. The first mask of each kind is kept in its slot (`dirs`,
    /// `files`) once attached, and the next ones are clones of it: one tmpfs per sandbox, not
    /// one per masked directory.
    Mask { root: usize, path: CStr, devnull: CStr, dirs: usize, files: usize },
    ReadOnly { root: usize, path: CStr },
    Pivot { root: usize },
    /// Without a mount namespace of the sandbox's own: chroot into the root attached on the
    /// rootfs itself (pivot_root would move the root of every process in the namespace).
    Chroot { root: usize },
    /// Make the mount open in `slot` private (its later mounts propagate nowhere).
    MakeSlotPrivate { slot: usize },
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
    /// The same check, keeping an O_PATH fd of the host path in `slot` (its mount tree is cloned
    /// later, with `CloneTree`, so that mountinfo lists it in the spec's order).
    OpenPathChecked { path: CStr, dev: u64, ino: u64, slot: usize },
    /// Replace the O_PATH fd in `slot` with a clone of its mount tree (`flags`: open_tree's).
    CloneTree { flags: u32, slot: usize },
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
    pub(crate) ints: Vec<Box<[i32]>>,
    pub(crate) moves: Vec<Box<[FdMove]>>,
    bufs: Vec<Box<UnsafeCell<[u8; PATH_BUF]>>>,
}

// The plan is built and read on one thread; the children read it through a raw pointer while the
// spawning thread waits. Send is needed only to move a plan into a spawning helper.
// SAFETY: the raw pointers in a plan point into its own arenas (boxed, never moved or mutated
// after compile); the slots and atomics are written only by the setup child while the spawning
// thread waits for it. Moving a plan to another thread moves those arenas with it.
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
    /// cgroup v1: the host makes the job's cgroups after the clone and hands their `tasks` files
    /// over the status socket; the child joins them at the end of its file system work.
    pub cgroup_late: bool,
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
    /// A detached sandbox (an OCI runtime's container): init has no host to report to.
    pub detached: bool,
    /// With `detached`: the start FIFO (read-write) init waits on before it forks the payload.
    pub start_fifo: Option<RawFd>,
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
    /// With `image_upper`: the common parent of upper and work, upper, work.
    pub image_upper: Vec<HostPath>,
}

impl HostPaths {
    /// Every detached mount the parent made (kept open in the child, id-mapped after clone).
    pub fn mount_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.rootfs.iter().chain(self.mounts.iter().flatten()).chain(self.layers.iter()).chain(self.image_upper.iter()).filter_map(HostPath::mount_fd)
    }
}

/// Size of the buffers the child renders /proc/self/fd paths into.
pub(crate) const PATH_BUF: usize = 64;


pub(crate) fn fail(step: Step, path: Option<&Path>, what: impl AsRef<str>) -> SetupFailure {
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
    pub(crate) fn new() -> Plan {
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

    pub(crate) fn cs(&mut self, s: impl AsRef<[u8]>) -> Result<CStr, SetupFailure> {
        let c = CString::new(s.as_ref()).map_err(|_| {
            fail(Step::Spec, None, format!("{:?} contains a NUL byte", String::from_utf8_lossy(s.as_ref())))
        })?;
        let p = c.as_ptr();
        self.strings.push(c);
        Ok(p)
    }

    pub(crate) fn buf(&mut self) -> *mut u8 {
        let b = Box::new(UnsafeCell::new([0u8; PATH_BUF]));
        let p = b.get() as *mut u8;
        self.bufs.push(b);
        p
    }

    pub(crate) fn arr(&mut self, items: Vec<CStr>) -> CArr {
        let mut v = items;
        v.push(std::ptr::null());
        let b = v.into_boxed_slice();
        let p = b.as_ptr();
        self.arrays.push(b);
        p
    }

    pub(crate) fn op(&mut self, op: Op, step: Step, what: impl Into<String>, path: Option<&Path>) {
        self.ops.push(op);
        self.descs.push(Desc { step, what: what.into(), path: path.map(Path::to_path_buf), hint: None });
    }

    pub(crate) fn op_hint(&mut self, op: Op, step: Step, what: impl Into<String>, path: Option<&Path>, hint: &'static str) {
        self.op(op, step, what, path);
        if let Some(d) = self.descs.last_mut() {
            d.hint = Some(hint);
        }
    }

    /// The failure for an error record (phase, index, errno) from the child.
    pub fn failure(&self, phase: u32, index: usize, errno: i32) -> SetupFailure {
        if phase == PHASE_INIT {
            let what = if index == 0 { "read the payload's plan" } else { "start the payload process (fork)" };
            return SetupFailure::new(Step::Init, Some(errno), None, &format!("the sandbox's init could not {what}"));
        }
        let desc = if phase == PHASE_PAYLOAD { self.payload.descs.get(index) } else { self.descs.get(index) };
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

