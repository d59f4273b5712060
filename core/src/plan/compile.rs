//! The plan compiler: the one place that knows the ORDER of a sandbox's setup steps. It calls
//! each capability's part in turn — namespaces and ids here, then the file system (`fs/`), the
//! rlimits (`limits/`), the payload's privileges and filters (`security/`) — and ends with init.
//! Pure planning: no process or host state is changed.

use crate::child::sys;
use crate::error::{SetupFailure, Step};
use crate::plan::ops::*;
use crate::plan::payload::{Code as PCode, PayloadPlan};
use crate::sandbox::spec::{IdMap, Network, NsMode, SandboxSpec};
use std::cell::UnsafeCell;
use std::os::unix::ffi::OsStrExt;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// The hostname of a sandbox with a UTS namespace of its own, unless one is asked for.
pub const DEFAULT_HOSTNAME: &str = "cagette";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) struct Compiler<'a> {
    pub(crate) spec: &'a SandboxSpec,
    pub(crate) plan: Plan,
    pub(crate) next_slot: usize,
    pub(crate) root_slot: usize,
    /// The host's /dev/null path (for masks).
    pub(crate) devnull: CStr,
    /// The host directory the root is assembled at (in the child's private mount namespace).
    pub(crate) staging: &'static str,
    /// The scratch tmpfs where overlay layers are attached (when there is an overlay).
    pub(crate) scratch: Option<usize>,
    /// Directories made in the scratch tmpfs so far.
    pub(crate) layers: usize,
    /// The pty's slave, when the payload gets a terminal.
    pub(crate) tty_slot: Option<usize>,
    /// The id maps of the sandbox's user namespace.
    pub(crate) uid_map: Vec<IdMap>,
    pub(crate) gid_map: Vec<IdMap>,
    /// Slots holding an O_PATH fd of a bind's host source, cloned when the bind is attached.
    pub(crate) lazy_binds: Vec<usize>,
    /// With `Fds::cgroup_late`: the join (and the cgroup namespace after it) is still to plan.
    pub(crate) late_join: Option<RawFd>,
    /// The host's cgroup v1 hierarchies, read once per plan (see `cgroup_v1`).
    pub(crate) v1_hierarchies: Option<Vec<(String, Vec<String>)>>,
}

/// Compiles a spec into a plan. Pure planning: no process or host state is changed.
pub(crate) fn compile(spec: &SandboxSpec, fds: &Fds) -> Result<Plan, SetupFailure> {
    let mut c = Compiler { spec, plan: Plan::new(), next_slot: 0, root_slot: 0, devnull: std::ptr::null(), staging: "/tmp", scratch: None, layers: 0, tty_slot: None, uid_map: fds.uid_map.clone(), gid_map: fds.gid_map.clone(), lazy_binds: Vec::new(), late_join: fds.cgroup_late.then_some(fds.status_child), v1_hierarchies: None };
    c.devnull = c.plan.cs("/dev/null")?;
    c.compile(fds)?;
    let mut plan = c.plan;
    plan.slots = (0..c.next_slot).map(|_| UnsafeCell::new(-1)).collect();
    Ok(plan)
}
impl Compiler<'_> {
    pub(crate) fn slot(&mut self) -> usize {
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
                if spec.network.own_namespace() { &NsMode::New } else { &NsMode::Host },
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
        // A cgroup namespace takes the cgroup its maker is in as its root: with a late join, it
        // is made after the join (`join_late`).
        if ns.cgroup == NsMode::New && !fds.cgroup_late {
            unshare_flags |= libc::CLONE_NEWCGROUP;
        }
        if ns.time == NsMode::New {
            unshare_flags |= sys::CLONE_NEWTIME as i32;
        }
        if joining_user && spec.network.routed() {
            // Its namespace would come after the host's go, too late for the network helper.
            return Err(fail(Step::Network, None, format!("network {:?} cannot be combined with joining a user namespace", spec.network)).hint("use network \"none\" or \"host\", or a new user namespace"));
        }
        self.plan.clone_flags = flags;

        // 1. Keep only our fds, and leave the caller's session: no controlling terminal (no
        // TIOCSTI into the caller's shell), a process group of our own (no kill(0) reaching it).
        let mut keep: Vec<i32> = vec![fds.err_w, fds.status_child, fds.memfd, fds.payload_plan];
        keep.extend(fds.oom_event);
        keep.extend(fds.start_fifo);
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
        if joining_user {
            // Become the sandbox's root (or its first id) in the joined user namespace: a
            // process whose uid is not mapped there loses its capabilities when it executes init.
            let first = |m: &[IdMap]| if m.is_empty() || m.iter().any(|m| m.inside == 0) { 0 } else { m[0].inside };
            let (uid, gid) = (first(&fds.uid_map), first(&fds.gid_map));
            let clear_groups = crate::host::euid() == 0;
            self.plan.op(Op::SetIds { uid, gid, clear_groups }, Step::IdMap, format!("become uid {uid}, gid {gid} in the sandbox's user namespace"), None);
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
                let clear_groups = crate::host::euid() == 0;
                self.plan.ops.insert(at + 1, Op::SetIds { uid, gid, clear_groups });
                self.plan.descs.insert(at + 1, Desc { step: Step::IdMap, what: format!("become uid {uid}, gid {gid} in the new user namespace"), path: None, hint: Some("the uid and gid maps must map the ids the sandbox starts with (0, or the first range)") });
            }
        }

        // 3. Hostname (a neutral one unless asked: the host's name is not the sandbox's) and
        // network.
        if let Some(h) = &spec.hostname {
            validate_hostname(h)?;
            if ns.uts == NsMode::Host {
                return Err(fail(Step::Hostname, None, "setting the hostname needs a UTS namespace of the sandbox's own (new or joined), not the host's")
                    .hint("leave namespaces.uts = new"));
            }
        }
        // A joined UTS namespace keeps its name unless one is asked for.
        if ns.uts == NsMode::New || (matches!(ns.uts, NsMode::Join(_)) && spec.hostname.is_some()) {
            let h = spec.hostname.as_deref().unwrap_or(DEFAULT_HOSTNAME);
            let p = self.plan.cs(h)?;
            self.plan.op(Op::Hostname { name: p as *const u8, len: h.len() }, Step::Hostname, format!("set the hostname to {h:?}"), None);
        }
        if spec.network.own_namespace() {
            self.plan.op(Op::LoopbackUp, Step::Network, "bring up the loopback interface", None);
        }
        if spec.network == Network::Private && !spec.allow_host_loopback {
            self.plan.op(Op::BlockLinkLocal, Step::Network, "add a prohibit route to 169.254.0.0/16 (link-local, cloud metadata)", None);
        }

        // 4. File system: in the new mount namespace, or in a joined one when a root is asked
        // for there (the parent refused the host's own; see `spawn`).
        let wants_root = spec.builds_root();
        if ns.mount == NsMode::Host && wants_root && fds.detached {
            // The host's mount namespace: only a rootfs directory (mounted onto itself, then
            // chroot), for a detached sandbox whose runtime unmounts it.
            if spec.rootfs.is_none() || !fds.host.layers.is_empty() || spec.mounts.iter().any(|m| matches!(m, crate::sandbox::spec::Mount::Overlay { .. })) {
                return Err(fail(Step::Mount, None, "without a mount namespace of its own, a sandbox needs a rootfs directory (no image, no overlay)").hint("set namespaces.mount = new"));
            }
            if user_new {
                return Err(fail(Step::Mount, None, "without a mount namespace of its own, a sandbox cannot have a new user namespace (it could not mount in the host's)").hint("set namespaces.mount = new"));
            }
            self.filesystem(fds)?;
        } else if mount_new || (matches!(ns.mount, NsMode::Join(_)) && wants_root) {
            self.filesystem(fds)?;
        } else if wants_root {
            return Err(fail(Step::Mount, None, "mounts, a rootfs and an image need a mount namespace other than the host's")
                .hint("leave namespaces.mount = new"));
        }
        if spec.tty {
            let own_dev = spec.dev || spec.mounts.iter().any(|m| matches!(m, crate::sandbox::spec::Mount::Dev { destination, .. } if destination == "/dev"));
            if !((mount_new && own_dev) || matches!(ns.mount, NsMode::Join(_))) {
                return Err(fail(Step::Stdio, None, "a terminal (tty) needs the sandbox's own /dev (a private devpts)").hint("leave dev = true and namespaces.mount = new"));
            }
            let slot = self.slot();
            let ws = fds.winsize.unwrap_or([0; 4]);
            self.plan.op(Op::OpenPty { sock: fds.status_child, winsize: ws, slot }, Step::Stdio, "open the sandbox's terminal (a pty of its own devpts) and hand its master to the host", Some(Path::new("/dev/ptmx")));
            self.tty_slot = Some(slot);
        }

        // The job's cgroups, made by the host meanwhile (before the rlimits: a low RLIMIT_NOFILE
        // could leave no room for the received descriptors).
        self.join_late();

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
        if fds.detached {
            self.plan.payload.flags |= crate::plan::payload::DETACHED;
        }
        if fds.start_fifo.is_some() {
            self.plan.payload.flags |= crate::plan::payload::WAIT_START;
        }
        let mut moves = vec![
            FdMove { src: FdSrc::Fd(fds.start_fifo.unwrap_or(fds.status_child)), dst: INIT_STATUS_FD, cloexec: false },
            FdMove { src: FdSrc::Fd(fds.memfd), dst: INIT_BINARY_FD, cloexec: true },
            FdMove { src: FdSrc::Fd(fds.err_w), dst: INIT_ERR_FD, cloexec: false },
            FdMove { src: FdSrc::Fd(fds.payload_plan), dst: INIT_PLAN_FD, cloexec: false },
        ];
        if let Some(fd) = fds.oom_event {
            moves.push(FdMove { src: FdSrc::Fd(fd), dst: INIT_OOM_FD, cloexec: false });
            self.plan.payload.flags |= crate::plan::payload::OOM_WATCH;
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

    /// The host's cgroup v1 hierarchies (empty on a v2 host), read from the mount table once
    /// per plan: a cgroup mount's tmpfs and the hierarchies mounted on it come from one reading.
    pub(crate) fn cgroup_v1(&mut self) -> Vec<(String, Vec<String>)> {
        self.v1_hierarchies.get_or_insert_with(crate::limits::cgroup::v1_hierarchies).clone()
    }

    /// With a late cgroup join (cgroup v1): plans it once, here, and then the cgroup namespace,
    /// whose root is the cgroup its maker is in. Called before the first cgroup file system is
    /// made, and at the end of the file system work.
    pub(crate) fn join_late(&mut self) {
        if let Some(sock) = self.late_join.take() {
            self.plan.op(Op::RecvCgroups { sock }, Step::Cgroup, "join the job's cgroups (their tasks files, opened and sent by the host)", None);
            if self.spec.namespaces.cgroup == NsMode::New {
                self.plan.op(Op::Unshare { flags: libc::CLONE_NEWCGROUP }, Step::Namespace, "create the cgroup namespace", None);
            }
        }
    }

    /// Plans the payload's own steps (run by init in the forked payload; see `payload.rs`) and
    /// returns where the payload's descriptors come from, in the order of fds 7, 8, ... of init.
    fn payload(&mut self, fds: &Fds) -> Result<Vec<FdSrc>, SetupFailure> {
        let spec = self.spec;
        let mut p = PayloadPlan::default();
        p.op(PCode::DeathSignal, [0; 4], Step::Init, "set the payload's parent-death signal", None);
        // Without no_new_privs the filter goes in before the privileges are dropped (see
        // `seccomp_early`); the descriptors are arranged before it (close_range may be denied).
        let early = crate::security::seccomp_early(spec)?;
        let mut sources = Vec::new();
        if early {
            sources = self.payload_fds(&mut p, fds)?;
            crate::security::seccomp_op(&mut p, spec)?;
        }

        // A joined user namespace (exec_in) is one to switch ids in, as a new one is.
        let in_user_ns = self.plan.user_ns || matches!(spec.namespaces.user, NsMode::Join(_));
        crate::security::privileges(&mut p, spec, in_user_ns)?;
        // Again: a change of effective ids clears the parent-death signal. (Inside a pid
        // namespace of its own, init's end kills the payload anyway; a command run in a running
        // sandbox, whose init is outside, depends on it.)
        p.op(PCode::DeathSignal, [0; 4], Step::Init, "set the payload's parent-death signal", None);

        // Working directory: inside the sandbox, never a host directory.
        let cwd = spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
        if !cwd.is_absolute() {
            return Err(fail(Step::Cwd, Some(&cwd), format!("working directory {} must be absolute", cwd.display())));
        }
        check_nul(cwd.as_os_str().as_bytes())?;
        let cp = p.string(cwd.as_os_str().as_bytes());
        p.op(PCode::Chdir, [cp, 0, 0, 0], Step::Cwd, format!("change to the working directory {}", cwd.display()), Some(&cwd));

        if !early {
            sources = self.payload_fds(&mut p, fds)?;
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
        crate::security::filters(&mut p, spec, early)?;
        if let Some(m) = spec.umask {
            p.op(PCode::Umask, [u64::from(m & 0o777), 0, 0, 0], Step::Exec, format!("set the umask to {m:03o}"), None);
        }
        p.op(PCode::UnblockSignals, [0; 4], Step::Exec, "unblock signals", None);
        let what = if cmd.contains('/') { format!("execute {cmd}") } else { format!("execute {cmd} (searched in PATH={path_var})") };
        p.op(PCode::Exec, [candidates_p, n, argv_p, envp_p], Step::Exec, what, Some(Path::new(cmd)));
        self.plan.payload = p;
        Ok(sources)
    }

    /// Plans the payload's descriptors (its standard streams, passed fds, terminal); returns
    /// where they come from, in the order of init's fds 8, 9, ...
    fn payload_fds(&mut self, p: &mut PayloadPlan, fds: &Fds) -> Result<Vec<FdSrc>, SetupFailure> {
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

        Ok(sources)
    }
}

fn check_nul(b: &[u8]) -> Result<(), SetupFailure> {
    if b.contains(&0) {
        return Err(fail(Step::Spec, None, format!("{:?} contains a NUL byte", String::from_utf8_lossy(b))));
    }
    Ok(())
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

