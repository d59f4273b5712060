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
use crate::sys::{self, AT_RECURSIVE, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE};
use std::cell::UnsafeCell;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32};

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
    /// Take ids that are mapped in the new user namespace (fsuid/fsgid decide file creation).
    SetIds { uid: u32, gid: u32 },
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
    MoveMount { from: usize, to: usize },
    Symlink { target: CStr, dir: usize, name: CStr },
    Close { slot: usize },
    Mask { root: usize, path: CStr, devnull: CStr },
    ReadOnly { root: usize, path: CStr },
    Pivot { root: usize },
    Rlimit { resource: i32, limit: libc::rlimit64 },
    SpawnPayload,
    ExecInit { memfd: RawFd, status: RawFd, argv: CArr, envp: CArr },
}

/// One step of the payload, between its clone (from the setup child) and exec.
#[derive(Debug)]
pub(crate) enum PayloadOp {
    DeathSignal,
    Chdir { path: CStr },
    DropBounding { keep: u64, last_cap: u32 },
    SetGroups { list: *const u32, n: usize },
    SetGid { gid: u32 },
    SetUid { uid: u32 },
    CapSet { keep: u64, inheritable: u64 },
    KeepCaps,
    Ambient { keep: u64, last_cap: u32 },
    Seccomp { fprog: *const libc::sock_fprog },
    LandlockCreate { handled: u64 },
    LandlockRule { path: CStr, access: u64 },
    LandlockRestrict,
    NoNewPrivs,
    /// Put `moves[i].0` at fd `moves[i].1`, then close everything else but the error pipe.
    Fds { moves: *const (i32, i32), n: usize, high: i32, close: *const (u32, u32), n_close: usize },
    UnblockSignals,
    Exec { candidates: CArr, n: usize, argv: CArr, envp: CArr },
}

/// What an operation does, for error messages.
#[derive(Clone, Debug)]
pub(crate) struct Desc {
    pub step: Step,
    pub what: String,
    pub path: Option<PathBuf>,
    /// A hint that applies whatever the errno.
    pub hint: Option<&'static str>,
}

/// The compiled plan. Owned by the spawning thread until both children have exec'd or exited.
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub descs: Vec<Desc>,
    pub payload_ops: Vec<PayloadOp>,
    pub payload_descs: Vec<Desc>,
    /// fds the setup child opens (detached mounts, resolved paths); written only by the child.
    pub slots: Box<[UnsafeCell<i32>]>,
    /// The error pipe's write end in the child (the payload moves it high first).
    pub err_fd: AtomicI32,
    /// The payload's own copy of the error pipe once moved high (its fd table is a copy).
    pub payload_err_fd: AtomicI32,
    /// Set by the payload when it failed before exec, so the setup child does not start init.
    pub payload_failed: AtomicU32,
    /// Buffer for the payload's pid, as init's argv[1].
    pub pid_arg: Box<UnsafeCell<[u8; 16]>>,
    pub clone_flags: u64,
    pub pid_ns: bool,
    pub user_ns: bool,
    // Arenas: keep the pointers above valid. Never touched after compile.
    strings: Vec<CString>,
    arrays: Vec<Box<[CStr]>>,
    ints: Vec<Box<[i32]>>,
    pairs: Vec<Box<[(i32, i32)]>>,
    ranges: Vec<Box<[(u32, u32)]>>,
    groups: Vec<Box<[u32]>>,
    bufs: Vec<Box<UnsafeCell<[u8; PATH_BUF]>>>,
    filters: Vec<crate::seccomp::Filter>,
    /// The Landlock ruleset fd, created by the payload.
    pub landlock_fd: AtomicI32,
    /// The payload's stack top, set by the spawner before clone.
    pub payload_stack_top: *mut u8,
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
    /// An image's unpacked layers, topmost first: the root is their overlay.
    pub root_layers: Vec<PathBuf>,
    /// cgroup v1 `tasks` files the child joins itself.
    pub cgroup_tasks: Vec<PathBuf>,
}

/// Size of the buffers the child renders /proc/self/fd paths into.
pub(crate) const PATH_BUF: usize = 64;

const STAGING_CANDIDATES: &[&str] = &["/tmp", "/mnt", "/run", "/var/tmp", "/media", "/opt", "/srv"];
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
            payload_ops: Vec::with_capacity(12),
            payload_descs: Vec::with_capacity(12),
            slots: Box::new([]),
            err_fd: AtomicI32::new(-1),
            payload_err_fd: AtomicI32::new(-1),
            payload_failed: AtomicU32::new(0),
            pid_arg: Box::new(UnsafeCell::new([0; 16])),
            clone_flags: 0,
            pid_ns: false,
            user_ns: false,
            strings: Vec::with_capacity(64),
            arrays: Vec::new(),
            ints: Vec::new(),
            pairs: Vec::new(),
            ranges: Vec::new(),
            groups: Vec::new(),
            bufs: Vec::new(),
            filters: Vec::new(),
            landlock_fd: AtomicI32::new(-1),
            payload_stack_top: std::ptr::null_mut(),
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

    fn pop(&mut self, op: PayloadOp, step: Step, what: impl Into<String>, path: Option<&Path>) {
        self.payload_ops.push(op);
        self.payload_descs.push(Desc { step, what: what.into(), path: path.map(Path::to_path_buf), hint: None });
    }

    /// The failure for an error record (phase, index, errno) from the child.
    pub fn failure(&self, payload: bool, index: usize, errno: i32) -> SetupFailure {
        let desc = if payload { self.payload_descs.get(index) } else { self.descs.get(index) };
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
}

/// Compiles a spec into a plan. Pure planning: no process or host state is changed.
pub(crate) fn compile(spec: &SandboxSpec, fds: &Fds, cwd_host: &Path) -> Result<Plan, SetupFailure> {
    let mut c = Compiler { spec, plan: Plan::new(), next_slot: 0, root_slot: 0, devnull: std::ptr::null() };
    c.devnull = c.plan.cs("/dev/null")?;
    c.compile(fds, cwd_host)?;
    let mut plan = c.plan;
    plan.slots = (0..c.next_slot).map(|_| UnsafeCell::new(-1)).collect();
    Ok(plan)
}

impl Compiler<'_> {
    fn slot(&mut self) -> usize {
        self.next_slot += 1;
        self.next_slot - 1
    }

    fn compile(&mut self, fds: &Fds, cwd_host: &Path) -> Result<(), SetupFailure> {
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

        // 1. Keep only our fds.
        let mut keep: Vec<i32> = vec![fds.err_w, fds.status_child, fds.memfd];
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
                let (uid, gid) = (first(&spec.uid_map), first(&spec.gid_map));
                self.plan.ops.insert(at + 1, Op::SetIds { uid, gid });
                self.plan.descs.insert(at + 1, Desc { step: Step::IdMap, what: format!("become uid {uid}, gid {gid} in the new user namespace"), path: None, hint: Some("the uid and gid maps must map the ids the sandbox starts with (0, or the first range)") });
            }
        }

        // 3. Hostname and network.
        if let Some(h) = &spec.hostname {
            validate_hostname(h)?;
            if ns.uts != NsMode::New {
                return Err(fail(Step::Hostname, None, "setting the hostname needs a new UTS namespace")
                    .hint("leave namespaces.uts = new"));
            }
            let p = self.plan.cs(h)?;
            self.plan.op(Op::Hostname { name: p as *const u8, len: h.len() }, Step::Hostname, format!("set the hostname to {h:?}"), None);
        }
        if spec.network == Network::None {
            self.plan.op(Op::LoopbackUp, Step::Network, "bring up the loopback interface", None);
        }

        // 4. File system.
        if mount_new {
            self.filesystem(fds, cwd_host)?;
        } else if spec.rootfs.is_some() || !spec.mounts.is_empty() {
            return Err(fail(Step::Mount, None, "mounts and a rootfs need a new mount namespace")
                .hint("leave namespaces.mount = new"));
        }

        // 5. Limits.
        for r in &spec.rlimits {
            if r.soft > r.hard {
                return Err(fail(Step::Rlimit, None, format!("rlimit {:?}: soft limit {} is above hard limit {}", r.resource, r.soft, r.hard)));
            }
            let limit = libc::rlimit64 { rlim_cur: r.soft, rlim_max: r.hard };
            self.plan.op(Op::Rlimit { resource: r.resource.number(), limit }, Step::Rlimit, format!("set rlimit {:?} to {}/{}", r.resource, r.soft, r.hard), None);
        }

        // 6. The payload, then init.
        self.payload(fds)?;
        self.plan.op(Op::SpawnPayload, Step::Clone, "start the payload process", None);
        let name = self.plan.cs("cagette-init")?;
        let pid_arg = self.plan.pid_arg.get() as *const libc::c_char;
        let argv = self.plan.arr(vec![name, pid_arg]);
        let envp = self.plan.arr(vec![]);
        self.plan.op(
            Op::ExecInit { memfd: fds.memfd, status: fds.status_child, argv, envp },
            Step::Init,
            "execute the sandbox's init",
            None,
        );
        Ok(())
    }

    fn filesystem(&mut self, fds: &Fds, cwd_host: &Path) -> Result<(), SetupFailure> {
        let spec = self.spec;
        self.plan.op(Op::MakePrivate, Step::Mount, "make the mount tree private", None);

        // Sources first, while every host path is still reachable.
        let host_root = spec.rootfs.is_none() && fds.root_layers.is_empty();
        let root = if fds.root_layers.is_empty() {
            self.slot()
        } else {
            // An image: its layers under an ephemeral upper layer (the store never changes).
            let m = Mount::overlay(fds.root_layers.iter().cloned(), "/");
            self.source(&m, cwd_host, false)?
        };
        self.root_slot = root;
        let mut top_level: Vec<(Vec<String>, TopKind, usize)> = Vec::new();
        if !fds.root_layers.is_empty() {
            // The overlay root was planned above.
        } else if let Some(dir) = &spec.rootfs {
            let dir = absolute(dir, cwd_host);
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(SetupFailure::new(Step::Mount, Some(libc::ENOTDIR), Some(dir.clone()), "the rootfs is not a directory")),
                Err(e) => {
                    return Err(SetupFailure::new(Step::Mount, e.raw_os_error(), Some(dir.clone()), "open the rootfs")
                        .hint("the rootfs must be an existing directory holding the sandbox's files"));
                }
            }
            let p = self.plan.cs(dir.as_os_str().as_bytes())?;
            self.plan.op(
                Op::OpenTree { path: p, flags: OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE, slot: root },
                Step::Mount,
                "open the rootfs",
                Some(&dir),
            );
        } else {
            self.fs_new("tmpfs", &[("mode", Some("0755")), ("size", Some("4m"))], 0, root, Step::Mount, "create the root tmpfs", None)?;
            // The host's tree, read-only: each entry of / is bound on its own, so mount points
            // can be created in the tmpfs. A directory on the way to a destination that does not
            // exist on the host is "exploded" the same way (its entries bound one by one).
            let mut explode: Vec<Vec<String>> = Vec::new();
            for m in &spec.mounts {
                let comps = sandbox_components(m.destination(), Step::Mount)?;
                let mut host = PathBuf::from("/");
                for (k, c) in comps.iter().enumerate() {
                    host.push(c);
                    match std::fs::symlink_metadata(&host) {
                        Ok(md) if md.is_dir() => continue,
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
        let mut mounts: Vec<(Mount, Vec<String>, bool)> = Vec::new();
        if spec.proc && !user_has("proc") {
            // A fresh procfs needs a pid namespace of the sandbox's own; with the host's, bind
            // the host's /proc (the same view a fresh one would give).
            let m = if spec.namespaces.pid == NsMode::New { Mount::proc("/proc") } else { Mount::bind("/proc", "/proc") };
            mounts.push((m, vec!["proc".into()], true));
        }
        if spec.sys && !user_has("sys") {
            // A network namespace of our own gets its own sysfs (its /sys/class/net shows only
            // lo); otherwise the host's, read-only.
            let m = if spec.network == Network::None { Mount::Sysfs { destination: "/sys".into() } } else { Mount::bind("/sys", "/sys").read_only() };
            mounts.push((m, vec!["sys".into()], true));
        }
        if spec.dev && !user_has("dev") {
            mounts.push((Mount::dev("/dev"), vec!["dev".into()], true));
        }
        if spec.tmp && !user_has("tmp") {
            mounts.push((Mount::tmpfs("/tmp"), vec!["tmp".into()], true));
        }
        for (m, t) in spec.mounts.iter().zip(user_targets) {
            mounts.push((m.clone(), t, false));
        }

        // Open every source now.
        let mut sources: Vec<usize> = Vec::with_capacity(mounts.len());
        for (m, _, default) in &mounts {
            let s = self.source(m, cwd_host, *default)?;
            sources.push(s);
        }

        // Attach the root at a staging directory of the host (in our private mount namespace).
        let staging = STAGING_CANDIDATES
            .iter()
            .find(|p| std::fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false))
            .ok_or_else(|| fail(Step::Mount, None, "no staging directory for the new root").hint("create /tmp on the host"))?;
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

        for ((m, comps, _), src) in mounts.iter().zip(sources) {
            self.mount(m, comps, src)?;
        }

        // Masked and read-only paths.
        let masked: Vec<String> = match &spec.masked_paths {
            Some(v) => v.clone(),
            None => DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
        };
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

        if host_root || (fds.root_layers.is_empty() && !spec.rootfs_writable) {
            self.plan.op(Op::SetAttr { slot: root, set: sys::MOUNT_ATTR_RDONLY, recursive: false }, Step::Mount, "make the root read-only", None);
        }
        self.plan.op(Op::Pivot { root }, Step::PivotRoot, "switch to the new root (pivot_root)", spec.rootfs.as_deref());
        Ok(())
    }

    /// Plans the read-only binds of the host directory `rel` (components from /), recursing into
    /// directories listed in `explode`.
    fn host_dir(&mut self, rel: &[String], explode: &[Vec<String>], out: &mut Vec<(Vec<String>, TopKind, usize)>) -> Result<(), SetupFailure> {
        let dir = PathBuf::from("/").join(rel.join("/"));
        let skip: &[&str] = if rel.is_empty() { &["proc", "dev", "tmp", "sys"] } else { &[] };
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
                self.plan.op(Op::SetAttr { slot: s, set: sys::MOUNT_ATTR_RDONLY, recursive: true }, Step::Mount, format!("make the host's {} read-only", host_path.display()), Some(&host_path));
                out.push((comps, if ft.is_dir() { TopKind::Dir } else { TopKind::File }, s));
            }
        }
        Ok(())
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

    /// Plans the source of a mount (before the root is attached); returns its slot.
    fn source(&mut self, m: &Mount, cwd_host: &Path, default: bool) -> Result<usize, SetupFailure> {
        let slot = self.slot();
        let dest = m.destination().to_string();
        let dpath = PathBuf::from(&dest);
        match m {
            Mount::Bind { source, read_only, recursive, .. } => {
                let src = absolute(source, cwd_host);
                if let Err(e) = std::fs::metadata(&src) {
                    return Err(SetupFailure::new(Step::Mount, e.raw_os_error(), Some(src.clone()), &format!("bind source {} for {dest}", src.display()))
                        .hint("the source of a bind mount must exist on the host"));
                }
                let p = self.plan.cs(src.as_os_str().as_bytes())?;
                let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
                if *recursive {
                    flags |= AT_RECURSIVE;
                }
                let what = if default { format!("bind the host's {} read-only", src.display()) } else { format!("open bind source {} for {dest}", src.display()) };
                self.plan.op(Op::OpenTree { path: p, flags, slot }, Step::Mount, what, Some(&src));
                if *read_only {
                    self.plan.op(Op::SetAttr { slot, set: sys::MOUNT_ATTR_RDONLY, recursive: *recursive }, Step::Mount, format!("make the bind of {} read-only", src.display()), Some(&src));
                }
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
                let mut opts: Vec<(String, Option<String>)> = Vec::new();
                let mut lowers = Vec::new();
                for l in lower {
                    let l = absolute(l, cwd_host);
                    if let Err(e) = std::fs::metadata(&l) {
                        return Err(SetupFailure::new(Step::Mount, e.raw_os_error(), Some(l.clone()), &format!("overlay lower directory {} for {dest}", l.display())));
                    }
                    lowers.push(l.to_string_lossy().into_owned());
                }
                if kernel_at_least(6, 8) {
                    // One option per layer: any path works.
                    opts.extend(lowers.into_iter().map(|l| ("lowerdir+".to_string(), Some(l))));
                } else if lowers.iter().any(|l| l.contains(':') || l.contains(',')) {
                    return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: a lower directory path contains ':' or ',', which kernels before 6.8 cannot take")));
                } else {
                    opts.push(("lowerdir".into(), Some(lowers.join(":"))));
                }
                match (upper, work) {
                    (Some(u), Some(w)) => {
                        opts.push(("upperdir".into(), Some(absolute(u, cwd_host).to_string_lossy().into_owned())));
                        opts.push(("workdir".into(), Some(absolute(w, cwd_host).to_string_lossy().into_owned())));
                    }
                    (None, None) => {
                        // An ephemeral upper: a tmpfs of its own, reached through /proc/self/fd.
                        let t = self.slot();
                        self.fs_new("tmpfs", &[("mode", Some("0755"))], 0, t, Step::Mount, &format!("create the ephemeral upper tmpfs for {dest}"), Some(&dpath))?;
                        let upper_name = self.plan.cs("upper")?;
                        let work_name = self.plan.cs("work")?;
                        self.plan.op(Op::MkdirIn { dir: t, name: upper_name, mode: 0o755 }, Step::Mount, format!("create the overlay upper directory for {dest}"), Some(&dpath));
                        self.plan.op(Op::MkdirIn { dir: t, name: work_name, mode: 0o755 }, Step::Mount, format!("create the overlay work directory for {dest}"), Some(&dpath));
                        // The fd number is only known in the child: the child writes it into these.
                        opts.push(("upperdir".into(), Some(format!("{SLOT_MARK}{t}/upper"))));
                        opts.push(("workdir".into(), Some(format!("{SLOT_MARK}{t}/work"))));
                    }
                    _ => return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: give both upper and work, or neither"))),
                }
                if self.plan.user_ns {
                    // Mounted in a user namespace: overlayfs can only use user.overlay.* xattrs.
                    opts.push(("userxattr".into(), None));
                }
                self.overlay(&opts, slot, &dest, &dpath)?;
            }
        }
        Ok(slot)
    }

    fn overlay(&mut self, opts: &[(String, Option<String>)], slot: usize, dest: &str, dpath: &Path) -> Result<(), SetupFailure> {
        let ctx = self.slot();
        let t = self.plan.cs("overlay")?;
        self.plan.op_hint(Op::FsOpen { fstype: t, slot: ctx }, Step::Mount, format!("create an overlay for {dest}"), Some(dpath), "overlayfs must be available (modprobe overlay)");
        for (k, v) in opts {
            let kp = self.plan.cs(k)?;
            let v = v.clone().unwrap_or_default();
            if let Some((dir, suffix)) = parse_slot_path(&v) {
                // Ephemeral upper: the child renders /proc/self/fd/<fd of slot>/<suffix>.
                let sp = self.plan.cs(suffix)?;
                let buf = self.plan.buf();
                self.plan.op(Op::FsStringFdPath { slot: ctx, key: kp, dir, suffix: sp, buf }, Step::Mount, format!("set overlay {k} for {dest}"), Some(dpath));
            } else if v.is_empty() && k == "userxattr" {
                self.plan.op(Op::FsFlag { slot: ctx, key: kp }, Step::Mount, format!("set overlay option {k} for {dest}"), Some(dpath));
            } else {
                let vp = self.plan.cs(&v)?;
                self.plan.op(Op::FsString { slot: ctx, key: kp, value: vp }, Step::Mount, format!("set overlay {k}={v} for {dest}"), Some(Path::new(&v)));
            }
        }
        self.plan.op(Op::FsMount { ctx, attrs: 0, slot }, Step::Mount, format!("create the overlay for {dest}"), Some(dpath));
        Ok(())
    }

    /// Plans: resolve (creating) `comps` inside the root, move the mount in `src` onto it.
    fn attach(&mut self, src: usize, comps: &[String], leaf: Leaf, what: &str, dest: &Path) -> Result<usize, SetupFailure> {
        let target = self.resolve(comps, leaf, what, dest)?;
        self.plan.op(Op::MoveMount { from: src, to: target }, Step::Mount, what.to_string(), Some(dest));
        self.plan.op(Op::Close { slot: src }, Step::Mount, what.to_string(), Some(dest));
        Ok(target)
    }

    fn mount(&mut self, m: &Mount, comps: &[String], src: usize) -> Result<(), SetupFailure> {
        let dest = m.destination().to_string();
        let dpath = PathBuf::from(&dest);
        let leaf = match m {
            Mount::Bind { source, .. } if std::fs::metadata(source).map(|md| !md.is_dir()).unwrap_or(false) => Leaf::File,
            _ => Leaf::Dir,
        };
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
            self.populate_dev(comps, &dest)?;
        }
        self.plan.op(Op::Close { slot: target }, Step::Mount, what, Some(&dpath));
        Ok(())
    }

    /// Device nodes (bound from the host: mknod is not allowed in a user namespace), a private
    /// devpts, /dev/shm and the usual links.
    fn populate_dev(&mut self, comps: &[String], dest: &str) -> Result<(), SetupFailure> {
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let host = format!("/dev/{dev}");
            if std::fs::symlink_metadata(&host).is_err() {
                continue;
            }
            let s = self.slot();
            let hp = self.plan.cs(&host)?;
            self.plan.op(Op::OpenTree { path: hp, flags: OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, slot: s }, Step::Mount, format!("open the host's {host}"), Some(Path::new(&host)));
            let mut c = comps.to_vec();
            c.push(dev.to_string());
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

    /// Landlock: everything read-only and executable, the writable paths (and /dev) fully
    /// allowed. The handled rights follow the kernel's ABI version; no Landlock is an error.
    fn landlock(&mut self, ll: &crate::spec::Landlock) -> Result<(), SetupFailure> {
        let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
        if abi < 1 {
            let e = std::io::Error::last_os_error().raw_os_error();
            return Err(SetupFailure::new(Step::Landlock, e, None, "Landlock rules were asked for, but this kernel has no Landlock")
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
        self.plan.pop(PayloadOp::LandlockCreate { handled }, Step::Landlock, format!("create a Landlock ruleset (ABI {abi})"), None);
        let root = self.plan.cs("/")?;
        self.plan.pop(PayloadOp::LandlockRule { path: root, access: READ }, Step::Landlock, "allow reading everywhere", Some(Path::new("/")));
        let mut writable: Vec<String> = vec!["/dev".into()];
        writable.extend(ll.writable.iter().cloned());
        for w in writable {
            sandbox_components(&w, Step::Landlock)?;
            let p = self.plan.cs(&w)?;
            self.plan.pop(PayloadOp::LandlockRule { path: p, access: handled }, Step::Landlock, format!("allow writing under {w}"), Some(Path::new(&w)));
        }
        self.plan.pop(PayloadOp::LandlockRestrict, Step::Landlock, "enforce the Landlock ruleset", None);
        Ok(())
    }

    fn payload(&mut self, fds: &Fds) -> Result<(), SetupFailure> {
        let spec = self.spec;
        self.plan.pop(PayloadOp::DeathSignal, Step::Init, "set the payload's parent-death signal", None);

        // Capabilities: drop the bounding set while we still may, then switch user, then trim
        // the remaining sets.
        let keep_caps = (match &spec.capabilities {
            Some(c) => caps::mask(c),
            None => caps::mask(caps::DEFAULT_CAPABILITIES),
        } | caps::mask(&spec.cap_add))
            & !caps::mask(&spec.cap_drop);
        let ambient = spec.ambient_capabilities && keep_caps != 0;
        let last_cap = last_cap();
        if spec.namespaces.user != NsMode::Host || unsafe { libc::geteuid() } == 0 {
            self.plan.pop(PayloadOp::DropBounding { keep: keep_caps, last_cap }, Step::Capabilities, "drop capabilities from the bounding set", None);
        }
        let setgroups_allowed = !(self.plan.user_ns && unsafe { libc::geteuid() } != 0);
        if !spec.supplementary_groups.is_empty() && !setgroups_allowed {
            return Err(fail(Step::User, None, "supplementary groups cannot be set in an unprivileged user namespace (setgroups is denied)"));
        }
        if setgroups_allowed && (self.plan.user_ns || unsafe { libc::geteuid() } == 0) {
            let g = spec.supplementary_groups.clone().into_boxed_slice();
            let (p, n) = (g.as_ptr(), g.len());
            self.plan.groups.push(g);
            self.plan.pop(PayloadOp::SetGroups { list: p, n }, Step::User, format!("set supplementary groups {:?}", spec.supplementary_groups), None);
        }
        let gid = spec.group.unwrap_or(0);
        let uid = spec.user.unwrap_or(0);
        if self.plan.user_ns || spec.group.is_some() {
            self.plan.pop(PayloadOp::SetGid { gid }, Step::User, format!("switch to gid {gid}"), None);
        }
        if ambient && uid != 0 {
            // Keep the permitted set across the switch to a non-zero uid.
            self.plan.pop(PayloadOp::KeepCaps, Step::Capabilities, "keep capabilities across the uid switch", None);
        }
        if self.plan.user_ns || spec.user.is_some() {
            self.plan.pop(PayloadOp::SetUid { uid }, Step::User, format!("switch to uid {uid}"), None);
        }
        if spec.namespaces.user != NsMode::Host || unsafe { libc::geteuid() } == 0 {
            let keep = if uid == 0 || ambient { keep_caps } else { 0 };
            self.plan.pop(PayloadOp::CapSet { keep, inheritable: if ambient { keep } else { 0 } }, Step::Capabilities, "set the payload's capabilities", None);
            if ambient {
                self.plan.pop(PayloadOp::Ambient { keep, last_cap }, Step::Capabilities, "raise the ambient capabilities", None);
            }
        } else if ambient {
            return Err(fail(Step::Capabilities, None, "ambient capabilities need a user namespace or root"));
        }
        if spec.no_new_privs {
            self.plan.pop(PayloadOp::NoNewPrivs, Step::NoNewPrivs, "set no_new_privs", None);
        }

        // Working directory: inside the sandbox, never a host directory.
        let cwd = spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
        if !cwd.is_absolute() {
            return Err(fail(Step::Cwd, Some(&cwd), format!("working directory {} must be absolute", cwd.display())));
        }
        let cp = self.plan.cs(cwd.as_os_str().as_bytes())?;
        self.plan.pop(PayloadOp::Chdir { path: cp }, Step::Cwd, format!("change to the working directory {}", cwd.display()), Some(&cwd));

        // File descriptors.
        let mut moves: Vec<(i32, i32)> = fds.stdio.iter().enumerate().map(|(i, &fd)| (fd, i as i32)).collect();
        let mut targets = vec![0, 1, 2];
        for &(host, inside) in &fds.passed {
            if inside < 3 {
                return Err(fail(Step::Stdio, None, format!("passed fd {host} must get a number of 3 or more inside (got {inside})")));
            }
            if targets.contains(&inside) {
                return Err(fail(Step::Stdio, None, format!("two passed fds target fd {inside}")));
            }
            targets.push(inside);
            moves.push((host, inside));
        }
        targets.sort_unstable();
        let max_target = *targets.last().unwrap_or(&2);
        let mut close: Vec<(u32, u32)> = Vec::new();
        for w in targets.windows(2) {
            if w[1] > w[0] + 1 {
                close.push(((w[0] + 1) as u32, (w[1] - 1) as u32));
            }
        }
        let moves = moves.into_boxed_slice();
        let close = close.into_boxed_slice();
        let (mp, mn, cp2, cn) = (moves.as_ptr(), moves.len(), close.as_ptr(), close.len());
        self.plan.pairs.push(moves);
        self.plan.ranges.push(close);
        self.plan.pop(PayloadOp::Fds { moves: mp, n: mn, high: max_target + 1, close: cp2, n_close: cn }, Step::Stdio, "set up the standard streams and passed fds", None);

        // The command: argv, envp, and the PATH candidates.
        let env = payload_env(spec);
        let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_else(|| DEFAULT_PATH.to_string());
        let mut argv = Vec::with_capacity(spec.argv.len());
        for a in &spec.argv {
            argv.push(self.plan.cs(a)?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') {
                return Err(fail(Step::Spec, None, format!("environment variable name {k:?} is empty or contains '='")));
            }
            envp.push(self.plan.cs(format!("{k}={v}"))?);
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
        let mut cands = Vec::with_capacity(candidates.len());
        for c in &candidates {
            cands.push(self.plan.cs(c)?);
        }
        let n = cands.len();
        let candidates_p = self.plan.arr(cands);
        let argv_p = self.plan.arr(argv);
        let envp_p = self.plan.arr(envp);
        // Landlock, then seccomp, as late as possible (a profile could deny what setup needs).
        if let Some(ll) = &spec.landlock {
            self.landlock(ll)?;
        }
        if let Some(filter) = seccomp::compile(spec)? {
            if !spec.no_new_privs {
                return Err(fail(Step::Seccomp, None, "a seccomp filter needs no_new_privs (the payload has no CAP_SYS_ADMIN to load one without it)")
                    .hint("keep no_new_privs = true, or set seccomp = \"none\""));
            }
            let fprog: *const libc::sock_fprog = &*filter.fprog;
            self.plan.filters.push(filter);
            self.plan.pop(PayloadOp::Seccomp { fprog }, Step::Seccomp, "load the seccomp filter", None);
        }
        self.plan.pop(PayloadOp::UnblockSignals, Step::Exec, "unblock signals", None);
        let what = if cmd.contains('/') { format!("execute {cmd}") } else { format!("execute {cmd} (searched in PATH={path_var})") };
        self.plan.pop(PayloadOp::Exec { candidates: candidates_p, n, argv: argv_p, envp: envp_p }, Step::Exec, what, Some(Path::new(cmd)));
        Ok(())
    }
}

/// Marks an overlay option whose value lives in a slot's fd (only built by this module).
const SLOT_MARK: &str = "\0slot:";

fn parse_slot_path(v: &str) -> Option<(usize, &str)> {
    let rest = v.strip_prefix(SLOT_MARK)?;
    let (num, suffix) = rest.split_once('/')?;
    Some((num.parse().ok()?, suffix))
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

fn absolute(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) }
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

