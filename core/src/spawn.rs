//! The parent side of a spawn: prepare fds and the plan, clone, write the id maps, and wait until
//! the payload and init have exec'd (or a setup step failed).

use crate::cgroup::{JobCgroup, Wanted};
use crate::child::Child;
use crate::error::{Error, Result, SetupFailure, Step};
use crate::exec::{self, PHASE_PAYLOAD, RECORD};
use crate::plan::{self, Fds};
use crate::spec::{CgroupMode, IdMap, Network, NsMode, SandboxSpec, Stdio};
use crate::sys::{self, CloneArgs, Errno};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The sandbox's init, built by build.rs from src/init/init.c.
static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cagette-init"));

static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);

fn clone3_disabled() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    CLONE3_REFUSED.load(Ordering::Relaxed)
        || *FORCED.get_or_init(|| std::env::var_os("CAGETTE_NO_CLONE3").is_some_and(|v| v != "0"))
}

/// A sealed, close-on-exec memfd holding the init binary, created once per process.
fn init_memfd() -> Result<RawFd> {
    static FD: OnceLock<std::result::Result<OwnedFd, i32>> = OnceLock::new();
    let r = FD.get_or_init(|| {
        const MFD_EXEC: libc::c_uint = 0x10;
        let name = c"cagette-init";
        let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
        if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
        }
        if fd < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
        }
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut f = File::from(owned);
        use std::io::Write;
        f.write_all(INIT_BINARY).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO));
        }
        Ok(OwnedFd::from(f))
    });
    match r {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(SetupFailure::new(Step::Init, Some(*e), None, "create the memfd holding the sandbox's init")
            .hint("memfd_create must be allowed (check vm.memfd_noexec and seccomp policies)")
            .into()),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn fd_is_open(fd: RawFd) -> bool {
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Two child stacks with guard pages, unmapped when dropped. Dropped only once both children have
/// exec'd or exited.
struct Stacks {
    base: *mut libc::c_void,
    len: usize,
}

const STACK: usize = 256 << 10;
const GUARD: usize = 4 << 10;

impl Stacks {
    fn new() -> io::Result<Stacks> {
        let len = 2 * (STACK + GUARD);
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK, -1, 0)
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let s = Stacks { base, len };
        for g in [0, STACK + GUARD] {
            if unsafe { libc::mprotect((base as *mut u8).add(g) as *mut libc::c_void, GUARD, libc::PROT_NONE) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(s)
    }
    fn setup_low(&self) -> *mut u8 {
        unsafe { (self.base as *mut u8).add(GUARD) }
    }
    fn payload_top(&self) -> *mut u8 {
        unsafe { (self.base as *mut u8).add(2 * (STACK + GUARD)) }
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Blocks every signal in the calling thread until dropped, so that no host handler can run in
/// the child before it resets them (the child starts with a copy of the host's handlers).
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

fn ns_type(which: &str) -> i32 {
    match which {
        "user" => libc::CLONE_NEWUSER,
        "mount" => libc::CLONE_NEWNS,
        "uts" => libc::CLONE_NEWUTS,
        "ipc" => libc::CLONE_NEWIPC,
        "pid" => libc::CLONE_NEWPID,
        "net" => libc::CLONE_NEWNET,
        "cgroup" => libc::CLONE_NEWCGROUP,
        _ => sys::CLONE_NEWTIME as i32,
    }
}

/// What the parent holds for the child's side until clone is done.
struct ChildSide {
    keep: Vec<OwnedFd>,
}

/// For `image`: the spec with the image config's defaults applied, and the layers (topmost
/// first) that make its root.
fn resolve_image(spec: &SandboxSpec, name: &str) -> std::result::Result<(SandboxSpec, Vec<PathBuf>), SetupFailure> {
    let dir = spec.image_store.clone().unwrap_or_else(crate::ImageStore::default_dir);
    let fail = |e: crate::ImageError| SetupFailure::new(Step::Image, None, Some(dir.clone()), &format!("image {name:?}: {e}")).hint("import it first: cagette image import DIR --name NAME; `cagette image ls` lists the store");
    if spec.rootfs.is_some() {
        return Err(SetupFailure::new(Step::Image, Some(libc::EINVAL), None, "image and rootfs are exclusive: the image is the root"));
    }
    let store = crate::ImageStore::open(&dir).map_err(fail)?;
    let info = store.get(name).map_err(fail)?;
    let mut layers = Vec::new();
    for d in info.layers.iter().rev() {
        layers.push(store.layer_dir(d).map_err(fail)?);
    }
    let mut out = spec.clone();
    let c = &info.config;
    let ep = c.entrypoint.clone().unwrap_or_default();
    let args = if spec.argv.is_empty() { c.cmd.clone().unwrap_or_default() } else { spec.argv.clone() };
    out.argv = ep.into_iter().chain(args).collect();
    for kv in c.env.iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            out.env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    if out.cwd.is_none() {
        out.cwd = c.working_dir.as_ref().filter(|w| !w.is_empty()).map(PathBuf::from);
    }
    if out.user.is_none() {
        if let Some(u) = c.user.as_ref().filter(|u| !u.is_empty()) {
            // Names were resolved against the image's /etc/passwd and /etc/group at import.
            let (uid, gid) = info.user_ids.ok_or_else(|| {
                SetupFailure::new(Step::Image, Some(libc::ENOENT), None, &format!("the image's USER {u:?} is not in its /etc/passwd (or its group is not in /etc/group)")).hint("pass user (and group) as numbers to override the image's USER")
            })?;
            out.user = Some(uid);
            if out.group.is_none() {
                out.group = Some(gid);
            }
            // As root, the store keeps the image's owners as they are: map the image user's ids
            // to themselves next to root, so that its files are its own inside. (Rootless, the
            // one id there is stays root's; a non-root USER then needs an explicit map.)
            let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let with_identity = |map: &mut Vec<crate::spec::IdMap>, host_root: u32, id: u32| {
                if map.is_empty() && id != 0 {
                    map.push(crate::spec::IdMap { inside: 0, outside: host_root, count: 1 });
                    map.push(crate::spec::IdMap { inside: id, outside: id, count: 1 });
                }
            };
            if euid == 0 {
                with_identity(&mut out.uid_map, euid, uid);
                with_identity(&mut out.gid_map, egid, out.group.unwrap_or(gid));
            }
        }
    }
    Ok((out, layers))
}

pub(crate) fn spawn(spec: &SandboxSpec) -> Result<Child> {
    let resolved;
    let (spec, root_layers) = match &spec.image {
        Some(name) => {
            resolved = resolve_image(spec, name)?;
            (&resolved.0, resolved.1.clone())
        }
        None => (spec, Vec::new()),
    };
    let started = Instant::now();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let io_err = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| Error::io(what, e)
    };

    // The job's cgroup first: a limit that cannot be applied fails before anything runs.
    let wanted = Wanted::from_spec(spec)?;
    let cgroup = if wanted.any() {
        if spec.cgroup == CgroupMode::Never {
            return Err(SetupFailure::new(Step::Cgroup, Some(libc::EINVAL), None, "resource limits were asked for but cgroup = never").hint("drop the limits or allow a cgroup (cgroup = auto)").into());
        }
        Some(JobCgroup::create(&wanted, spec.cgroup_parent.as_deref())?)
    } else {
        None
    };

    let mut side = ChildSide { keep: Vec::new() };
    let (err_r, err_w) = pipe().map_err(io_err("create the setup error pipe"))?;
    let user_new = spec.namespaces.user == NsMode::New;
    let host_attach = cgroup.as_ref().is_some_and(|c| c.needs_host_attach());
    let (sync_r, sync_w) = if user_new || host_attach {
        let (r, w) = pipe().map_err(io_err("create the setup sync pipe"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (status_host, status_child) = socketpair().map_err(io_err("create the status socket"))?;

    // Standard streams.
    let mut host_ends: [Option<File>; 3] = [None, None, None];
    let mut stdio = [0; 3];
    for (i, s) in [spec.stdin, spec.stdout, spec.stderr].into_iter().enumerate() {
        stdio[i] = match s {
            Stdio::Inherit if fd_is_open(i as RawFd) => i as RawFd,
            Stdio::Inherit | Stdio::Null => {
                let f = File::options().read(true).write(true).open("/dev/null").map_err(io_err("open /dev/null"))?;
                let fd = f.as_raw_fd();
                side.keep.push(f.into());
                fd
            }
            Stdio::Piped => {
                let (r, w) = pipe().map_err(io_err("create a pipe for the payload's standard streams"))?;
                let (mine, theirs) = if i == 0 { (w, r) } else { (r, w) };
                host_ends[i] = Some(File::from(mine));
                let fd = theirs.as_raw_fd();
                side.keep.push(theirs);
                fd
            }
            Stdio::Fd(fd) => {
                if !fd_is_open(fd) {
                    return Err(SetupFailure::new(Step::Stdio, Some(libc::EBADF), None, &format!("file descriptor {fd} given for {} is not open", ["stdin", "stdout", "stderr"][i])).into());
                }
                fd
            }
        };
    }
    for p in &spec.pass_fds {
        if !fd_is_open(p.host) {
            return Err(SetupFailure::new(Step::Stdio, Some(libc::EBADF), None, &format!("passed file descriptor {} is not open", p.host)).into());
        }
    }

    // Namespaces to join.
    let mut joins = Vec::new();
    let ns = &spec.namespaces;
    let net_join = match &spec.network {
        Network::Join(p) => NsMode::Join(p.clone()),
        _ => NsMode::Host,
    };
    for (which, mode) in [("user", &ns.user), ("mount", &ns.mount), ("uts", &ns.uts), ("ipc", &ns.ipc), ("pid", &ns.pid), ("net", &net_join), ("cgroup", &ns.cgroup), ("time", &ns.time)] {
        if let NsMode::Join(path) = mode {
            let f = File::open(path).map_err(|e| {
                SetupFailure::new(Step::Namespace, e.raw_os_error(), Some(path.clone()), &format!("open the {which} namespace to join"))
            })?;
            joins.push((f.as_raw_fd(), ns_type(which)));
            side.keep.push(f.into());
        }
    }
    if matches!(ns.pid, NsMode::Join(_)) {
        return Err(SetupFailure::new(Step::Namespace, Some(libc::EINVAL), None, "joining a pid namespace is not supported (the sandbox's init would not be in it)")
            .hint("use namespaces.pid = new or host")
            .into());
    }

    let fds = Fds {
        err_w: err_w.as_raw_fd(),
        sync_r: sync_r.as_ref().map(|f| f.as_raw_fd()),
        status_child: status_child.as_raw_fd(),
        memfd: init_memfd()?,
        stdio,
        passed: spec.pass_fds.iter().map(|p| (p.host, p.sandbox)).collect(),
        joins,
        cgroup_tasks: cgroup.as_ref().map(|c| c.self_join_files()).unwrap_or_default(),
        root_layers,
    };
    let mut plan = plan::compile(spec, &fds, &cwd)?;
    let stacks = Stacks::new().map_err(io_err("allocate the setup stacks"))?;
    plan.payload_stack_top = stacks.payload_top();
    plan.err_fd.store(err_w.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);

    // Clone. The child shares our memory until it execs: the plan and stacks stay put until then.
    let flags = plan.clone_flags | libc::CLONE_VM as u64 | sys::CLONE_PIDFD;
    let plan_ptr = &plan as *const plan::Plan as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;
    let mut born_in_cgroup = false;
    let result = {
        let _blocked = SignalsBlocked::new();
        let mut r = Err(Errno(libc::ENOSYS));
        if !clone3_disabled() {
            let into = cgroup.as_ref().and_then(|c| c.clone_fd());
            let mut args = CloneArgs {
                flags: flags | if into.is_some() { sys::CLONE_INTO_CGROUP } else { 0 },
                cgroup: into.map_or(0, |fd| fd as u64),
                pidfd: &mut pidfd as *mut libc::c_int as u64,
                exit_signal: 0, // not SIGCHLD: a host's waitpid(-1) cannot reap our child
                stack: stacks.setup_low() as u64,
                stack_size: STACK as u64,
                ..Default::default()
            };
            r = unsafe { sys::clone3_run(&mut args, exec::setup_main, plan_ptr) };
            if matches!(r, Err(Errno(libc::ENOSYS))) {
                CLONE3_REFUSED.store(true, Ordering::Relaxed);
            } else {
                born_in_cgroup = into.is_some();
            }
        }
        if matches!(r, Err(Errno(libc::ENOSYS))) {
            let top = unsafe { stacks.setup_low().add(STACK) };
            r = unsafe { sys::clone_run(flags, top, &mut pidfd, exec::setup_main, plan_ptr) };
        }
        r
    };
    // The child's copies are its own now.
    drop(err_w);
    drop(sync_r);
    drop(status_child);
    drop(side);
    let pid = match result {
        Ok(pid) => pid as libc::pid_t,
        Err(Errno(e)) => {
            let f = SetupFailure::new(Step::Clone, Some(e), None, "create the sandbox process with its namespaces");
            let f = match plan::errno_hint(Step::Clone, e, user_new) {
                Some(h) => f.hint(h),
                None => f,
            };
            return Err(f.into());
        }
    };
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let abort = |pidfd: &OwnedFd| {
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, 0, 0) };
        crate::child::reap_raw(pidfd.as_raw_fd());
    };

    if let Some(cg) = cgroup.as_ref().filter(|c| c.needs_host_attach() && !born_in_cgroup) {
        if let Err(f) = cg.attach(pid) {
            abort(&pidfd);
            drop(stacks);
            return Err(f.into());
        }
    }
    if user_new {
        if let Err(f) = write_id_maps(pid, spec) {
            abort(&pidfd);
            drop(stacks);
            return Err(f.into());
        }
    }
    {
        if let Some(w) = sync_w {
            let mut w = File::from(w);
            use std::io::Write;
            if let Err(e) = w.write_all(&[1]) {
                abort(&pidfd);
                drop(stacks);
                return Err(Error::io("release the sandbox process", e));
            }
        }
    }

    // Wait until both children exec'd (EOF) or one reported a failure.
    let mut rec = [0u8; RECORD];
    let mut got = 0;
    let mut err_r = File::from(err_r);
    loop {
        use std::io::Read;
        match err_r.read(&mut rec[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == RECORD {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                abort(&pidfd);
                drop(stacks);
                return Err(Error::io("read the setup error pipe", e));
            }
        }
    }
    if got == RECORD {
        let phase = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let index = u32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]) as usize;
        let errno = i32::from_ne_bytes([rec[8], rec[9], rec[10], rec[11]]);
        // Take the sandbox down (its init may have started if the payload ran on a copy of our
        // memory) and wait until the children are gone before their stacks are unmapped.
        abort(&pidfd);
        drop(stacks);
        return Err(plan.failure(phase == PHASE_PAYLOAD, index, errno).into());
    }
    drop(stacks);
    if got != 0 {
        abort(&pidfd);
        return Err(Error::Usage("the sandbox's setup sent a truncated error record".into()));
    }
    drop(plan);

    let mut child = Child::new(pid, pidfd, status_host, host_ends, started, spec.timeout, spec.namespaces.pid == NsMode::New, cgroup);
    if spec.seccomp_kill {
        child.track_payload();
    }
    Ok(child)
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count)).collect()
}

/// Writes uid_map, setgroups and gid_map of the child's new user namespace.
fn write_id_maps(pid: libc::pid_t, spec: &SandboxSpec) -> std::result::Result<(), SetupFailure> {
    let euid = unsafe { libc::geteuid() };
    let egid = unsafe { libc::getegid() };
    let uid = if spec.uid_map.is_empty() { vec![IdMap { inside: 0, outside: euid, count: 1 }] } else { spec.uid_map.clone() };
    let gid = if spec.gid_map.is_empty() { vec![IdMap { inside: 0, outside: egid, count: 1 }] } else { spec.gid_map.clone() };
    for m in uid.iter().chain(gid.iter()) {
        if m.count == 0 {
            return Err(SetupFailure::new(Step::IdMap, Some(libc::EINVAL), None, &format!("id map {} {} {} has a count of 0", m.inside, m.outside, m.count)));
        }
    }
    let write = |file: &str, text: &str| -> std::result::Result<(), SetupFailure> {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, text).map_err(|e| {
            let errno = e.raw_os_error();
            let f = SetupFailure::new(Step::IdMap, errno, Some(path.clone()), &format!("write {file} {:?}", text.trim_end()));
            match errno.and_then(|e| plan::errno_hint(Step::IdMap, e, true)) {
                Some(h) => f.hint(h),
                None => f,
            }
        })
    };
    write("uid_map", &map_text(&uid))?;
    if euid != 0 {
        write("setgroups", "deny")?;
    }
    write("gid_map", &map_text(&gid))?;
    Ok(())
}
