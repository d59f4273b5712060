//! The parent side of a spawn: prepare fds and the plan, clone, write the id maps, and wait until
//! the payload and init have exec'd (or a setup step failed).

use crate::limits::cgroup::{JobCgroup, Wanted};
use crate::sandbox::child::Child;
use crate::sandbox::live;
use crate::error::{Error, Result, SetupFailure, Step};
use crate::child::exec;
use crate::fs::hostpath;
use crate::security::idrange::IdRange;
use crate::plan::ops::{self as plan_ops, Fds, HostPaths, RECORD};
use crate::plan;
use crate::sandbox::spec::{CgroupMode, IdMap, Mount, Network, NsMode, SandboxSpec, Stdio, UsernsMode};
use crate::child::sys::{self, CloneArgs, Errno};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// A sealed, close-on-exec memfd holding the init binary, created once per process. Only a
/// success is kept: a failure (say EMFILE, a process short of descriptors for a moment) is
/// reported and tried again at the next start.
fn init_memfd() -> Result<RawFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    static FD: OnceLock<OwnedFd> = OnceLock::new();
    let made = crate::host::once_ok(&FD, || -> std::result::Result<OwnedFd, i32> {
        // MFD_EXEC (Linux 6.3+; older kernels refuse the flag and need none).
        let exec = MFdFlags::from_bits_retain(0x10);
        let base = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = match memfd_create(c"cagette-init", base | exec) {
            Err(nix::errno::Errno::EINVAL) => memfd_create(c"cagette-init", base),
            r => r,
        }
        .map_err(|e| e as i32)?;
        let mut f = File::from(fd);
        use std::io::Write;
        f.write_all(INIT_BINARY).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
        fcntl(&f, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| e as i32)?;
        Ok(OwnedFd::from(f))
    });
    match made {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(SetupFailure::new(Step::Init, Some(e), None, "create the memfd holding the sandbox's init")
            .hint(if e == libc::EMFILE || e == libc::ENFILE { "the process (or the system) is out of file descriptors: close some, or raise RLIMIT_NOFILE" } else { "memfd_create must be allowed (check vm.memfd_noexec and seccomp policies)" })
            .into()),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)
}

/// Whether `fd` is an open descriptor of this process (a number a caller gave us).
fn fd_is_open(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: the borrow lives for this one fcntl(F_GETFD), which only asks whether the number
    // is open and changes nothing.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// The setup child's stack, with a guard page, unmapped when dropped (only once the child has
/// exec'd init or exited: it runs on it).
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

const STACK: usize = 256 << 10;
const GUARD: usize = 4 << 10;

impl Stack {
    fn new() -> io::Result<Stack> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, mprotect};
        let len = STACK + GUARD;
        let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_STACK;
        let size = std::num::NonZeroUsize::new(len).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a new anonymous private mapping: no existing memory is aliased or touched.
        let base = unsafe { mmap_anonymous(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, flags) }.map_err(io::Error::from)?;
        let s = Stack { base: base.as_ptr(), len };
        // SAFETY: the first page of the mapping just made, which nothing uses.
        unsafe { mprotect(base, GUARD, ProtFlags::PROT_NONE) }.map_err(io::Error::from)?;
        Ok(s)
    }
    fn low(&self) -> *mut u8 {
        (self.base as usize + GUARD) as *mut u8
    }
    fn top(&self) -> *mut u8 {
        (self.base as usize + self.len) as *mut u8
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(p) = std::ptr::NonNull::new(self.base) {
            // SAFETY: our own mapping, no longer used by any process (dropped only once the
            // setup child has exec'd init or exited).
            let _ = unsafe { nix::sys::mman::munmap(p, self.len) };
        }
    }
}

/// Blocks every signal in the calling thread until dropped, so that no host handler can run in
/// the child before it resets them (the child starts with a copy of the host's handlers).
struct SignalsBlocked(nix::sys::signal::SigSet);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old));
        SignalsBlocked(old)
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Clones the setup child (clone3, into the job's cgroup when `into` is given; plain clone where
/// clone3 is refused), running `setup_main` with the plan at `plan_ptr`: (pid or error, its pidfd,
/// whether it was born in the cgroup).
fn clone_setup(flags: u64, into: Option<RawFd>, stack: (usize, usize), plan_ptr: usize) -> (Result<usize, Errno>, libc::c_int, bool) {
    let plan_ptr = plan_ptr as *mut libc::c_void;
    let (stack_low, stack_top) = stack;
    let mut pidfd: libc::c_int = -1;
    let mut born_in_cgroup = false;
    let _blocked = SignalsBlocked::new();
    let mut r = Err(Errno(libc::ENOSYS));
    if !clone3_disabled() {
        let mut args = CloneArgs {
            flags: flags | if into.is_some() { sys::CLONE_INTO_CGROUP } else { 0 },
            cgroup: into.map_or(0, |fd| fd as u64),
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            exit_signal: 0, // not SIGCHLD: a host's waitpid(-1) cannot reap our child
            stack: stack_low as u64,
            stack_size: STACK as u64,
            ..Default::default()
        };
        // SAFETY: the child runs setup_main on its own stack (the caller's `Stack`, `low()` and
        // `top()` as numbers) with the plan, both kept alive (and untouched by the caller) until it has exec'd or exited; it makes raw syscalls only.
        r = unsafe { sys::clone3_run(&mut args, exec::setup_main, plan_ptr) };
        if matches!(r, Err(Errno(libc::ENOSYS))) {
            CLONE3_REFUSED.store(true, Ordering::Relaxed);
        } else {
            born_in_cgroup = into.is_some();
        }
    }
    if matches!(r, Err(Errno(libc::ENOSYS))) {
        // SAFETY: as above.
        r = unsafe { sys::clone_run(flags, stack_top as *mut u8, &mut pidfd, exec::setup_main, plan_ptr) };
    }
    (r, pidfd, born_in_cgroup)
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

/// For `image`: the spec with the image config's defaults applied, and the layer directories
/// (topmost first) that make its root.
fn resolve_image(spec: &SandboxSpec, name: &str) -> std::result::Result<(SandboxSpec, Vec<PathBuf>), SetupFailure> {
    let dir = spec.image_store.clone().unwrap_or_else(crate::ImageStore::default_dir);
    let fail = |e: crate::ImageError| SetupFailure::new(Step::Image, None, Some(dir.clone()), &format!("image {name:?}: {e}")).hint("pull it (cagette image pull NAME, or `cagette run --pull missing`) or import it (cagette image import DIR --name NAME); `cagette image ls` lists the store");
    if spec.rootfs.is_some() {
        return Err(SetupFailure::new(Step::Image, Some(libc::EINVAL), None, "image and rootfs are exclusive: the image is the root"));
    }
    let store = crate::ImageStore::open(&dir).map_err(fail)?;
    // A persistent upper inside the store would let the job write into the store's layers.
    let store_real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    for d in spec.image_upper.iter().chain(&spec.image_work) {
        if std::fs::canonicalize(d).is_ok_and(|r| r.starts_with(&store_real)) {
            return Err(SetupFailure::new(Step::Image, Some(libc::EINVAL), Some(d.clone()), "image_upper and image_work must be outside the image store (the job would write into its layers)").hint("give directories of your own, outside the store"));
        }
    }
    let info = store.get(name).map_err(fail)?;
    let mut layers = Vec::new();
    for d in info.layers.iter().rev() {
        layers.push(store.layer_dir(d).map_err(fail)?);
    }
    let mut out = spec.clone();
    let c = &info.config;
    let ep = spec.entrypoint.clone().or_else(|| c.entrypoint.clone()).unwrap_or_default();
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
    if out.user.is_none()
        && let Some(u) = c.user.as_ref().filter(|u| !u.is_empty()) {
            // Names were resolved against the image's /etc/passwd and /etc/group at import.
            let (uid, gid) = info.user_ids.ok_or_else(|| {
                SetupFailure::new(Step::Image, Some(libc::ENOENT), None, &format!("the image's USER {u:?} is not in its /etc/passwd (or its group is not in /etc/group)")).hint("pass user (and group) as numbers to override the image's USER")
            })?;
            out.user = Some(uid);
            if out.group.is_none() {
                out.group = Some(gid);
            }
            // With userns = host as root, the store keeps the image's owners as they are: map the
            // image user's ids to themselves next to root, so that its files are its own inside.
            // (The default id range maps 0..65535 already; rootless, the one id there is stays
            // root's, and a non-root USER needs an explicit map.)
            let euid = crate::host::euid();
            let egid = crate::host::egid();
            let with_identity = |map: &mut Vec<IdMap>, host_root: u32, id: u32| {
                if map.is_empty() && id != 0 {
                    map.push(IdMap { inside: 0, outside: host_root, count: 1 });
                    map.push(IdMap { inside: id, outside: id, count: 1 });
                }
            };
            if euid == 0 && out.userns == UsernsMode::Host {
                with_identity(&mut out.uid_map, euid, uid);
                with_identity(&mut out.gid_map, egid, out.group.unwrap_or(gid));
            }
        }
    Ok((out, layers))
}

/// The uid and gid maps of a new user namespace, and the id range they use (held for the job).
fn id_maps(spec: &SandboxSpec) -> std::result::Result<(Vec<IdMap>, Vec<IdMap>, Option<IdRange>), SetupFailure> {
    let euid = crate::host::euid();
    let egid = crate::host::egid();
    if spec.namespaces.user != NsMode::New {
        return Ok((Vec::new(), Vec::new(), None));
    }
    let (mut uid, mut gid, mut range) = (spec.uid_map.clone(), spec.gid_map.clone(), None);
    if uid.is_empty() && gid.is_empty() && euid == 0 && spec.userns == UsernsMode::Auto {
        let r = crate::security::idrange::allocate()?;
        let m = IdMap { inside: 0, outside: r.base(), count: crate::security::idrange::RANGE_SIZE };
        uid.push(m);
        gid.push(m);
        range = Some(r);
    }
    if uid.is_empty() {
        uid.push(IdMap { inside: 0, outside: euid, count: 1 });
    }
    if gid.is_empty() {
        gid.push(IdMap { inside: 0, outside: egid, count: 1 });
    }
    Ok((uid, gid, range))
}

/// Resolves the spec's host paths once (see `hostpath.rs`); with `premount`, also makes their
/// mounts here (they are id-mapped once the sandbox's user namespace exists).
fn host_paths(spec: &SandboxSpec, layers: &[PathBuf], cwd: &std::path::Path, premount: bool) -> std::result::Result<HostPaths, SetupFailure> {
    let follow = spec.follow_symlinks;
    let mut out = HostPaths::default();
    if let Some(r) = &spec.rootfs {
        let mut h = hostpath::resolve(r, cwd, follow, Step::Mount, "the rootfs")?;
        if h.is_host_root() {
            return Err(SetupFailure::new(Step::Mount, Some(libc::EINVAL), Some(h.path.clone()), "the rootfs is the host's root directory")
                .hint("leave rootfs unset for a read-only view of the host's root, or give the directory that holds the sandbox's files"));
        }
        if !h.is_dir {
            return Err(SetupFailure::new(Step::Mount, Some(libc::ENOTDIR), Some(h.path.clone()), "the rootfs is not a directory"));
        }
        if premount {
            h.make_mount(true, Step::Mount, "the rootfs")?;
        }
        out.rootfs = Some(h);
    }
    for m in &spec.mounts {
        let mut v = Vec::new();
        match m {
            Mount::Bind { source, recursive, destination, .. } => {
                let mut h = hostpath::resolve(source, cwd, follow, Step::Mount, &format!("the bind source for {destination}"))?;
                if premount {
                    h.make_mount(*recursive, Step::Mount, &format!("the bind source for {destination}"))?;
                }
                v.push(h);
            }
            Mount::Overlay { lower, upper, work, destination } => {
                for l in lower {
                    let mut h = hostpath::resolve(l, cwd, follow, Step::Mount, &format!("an overlay lower directory for {destination}"))?;
                    if premount {
                        h.make_mount(false, Step::Mount, "an overlay lower directory")?;
                    }
                    v.push(h);
                }
                if let (Some(u), Some(w)) = (upper, work) {
                    v.extend(upper_work(u, w, cwd, follow, premount, destination)?);
                }
            }
            _ => {}
        }
        out.mounts.push(v);
    }
    for l in layers {
        let mut h = hostpath::resolve(l, cwd, false, Step::Image, "an image layer")?;
        if premount {
            h.make_mount(false, Step::Image, "an image layer")?;
        }
        out.layers.push(h);
    }
    if let (Some(u), Some(w), false) = (&spec.image_upper, &spec.image_work, layers.is_empty()) {
        out.image_upper = upper_work(u, w, cwd, follow, premount, "/")?;
    }
    Ok(out)
}

/// An overlay's persistent upper and work directories: their common parent (mounted, or
/// premounted id-mapped), then upper and work, which must not contain each other.
fn upper_work(u: &std::path::Path, w: &std::path::Path, cwd: &std::path::Path, follow: bool, premount: bool, destination: &str) -> std::result::Result<Vec<crate::fs::hostpath::HostPath>, SetupFailure> {
    let hu = hostpath::resolve(u, cwd, follow, Step::Mount, &format!("the overlay upper directory for {destination}"))?;
    let hw = hostpath::resolve(w, cwd, follow, Step::Mount, &format!("the overlay work directory for {destination}"))?;
    // Both must be on one mount: the overlay gets their common parent.
    let mut common = PathBuf::new();
    for (a, b) in hu.path.components().zip(hw.path.components()) {
        if a != b {
            break;
        }
        common.push(a);
    }
    if common == hu.path || common == hw.path {
        return Err(SetupFailure::new(Step::Mount, Some(libc::EINVAL), Some(hu.path.clone()), &format!("overlay at {destination}: the upper and work directories must not contain each other")));
    }
    let mut hp = hostpath::resolve(&common, cwd, false, Step::Mount, &format!("the parent of the overlay's upper and work directories for {destination}"))?;
    if premount {
        hp.make_mount(false, Step::Mount, "the parent of the overlay's upper and work directories")?;
    }
    Ok(vec![hp, hu, hw])
}

/// Device nodes the spec adds to /dev: (host path, name under /dev), checked to be devices.
fn extra_devices(spec: &SandboxSpec) -> std::result::Result<Vec<(PathBuf, String)>, SetupFailure> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    for d in &spec.devices {
        let bad = |why: &str| SetupFailure::new(Step::Mount, Some(libc::EINVAL), Some(d.clone()), &format!("device {}: {why}", d.display())).hint("give a device node under /dev, like /dev/fuse or /dev/kvm");
        let name = d.strip_prefix("/dev/").map_err(|_| bad("not under /dev"))?.to_string_lossy().into_owned();
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(bad("not a plain path under /dev"));
        }
        let md = std::fs::metadata(d).map_err(|e| SetupFailure::new(Step::Mount, e.raw_os_error(), Some(d.clone()), &format!("device {}", d.display())))?;
        if !(md.file_type().is_char_device() || md.file_type().is_block_device()) {
            return Err(bad("not a character or block device"));
        }
        out.push((d.clone(), name));
    }
    Ok(out)
}

/// The terminal size of the first of our standard streams that is a terminal.
fn host_winsize() -> Option<[u16; 4]> {
    use std::os::fd::AsFd;
    let ws = rustix::termios::tcgetwinsize(io::stdin().as_fd())
        .or_else(|_| rustix::termios::tcgetwinsize(io::stdout().as_fd()))
        .or_else(|_| rustix::termios::tcgetwinsize(io::stderr().as_fd()))
        .ok()?;
    Some([ws.ws_row, ws.ws_col, ws.ws_xpixel, ws.ws_ypixel])
}

/// A memfd holding the payload's plan, for init.
fn payload_plan_memfd() -> io::Result<OwnedFd> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    memfd_create(c"cagette-payload", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)
}

/// Receives the pty master the setup child sends over the status socket.
fn receive_pty(sock: &OwnedFd) -> io::Result<File> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table (SCM_RIGHTS): it is
                // open and nothing else owns it.
                return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "the sandbox did not send its terminal"))
}

/// Opens the job's cgroup v1 `tasks` files and sends them to the setup child over the status
/// socket (the byte `C` and their fds), for it to join them (see `Op::RecvCgroups`). On error,
/// whether it is because the child is gone (its end of the socket closed).
fn send_cgroups(sock: &OwnedFd, cg: &JobCgroup) -> std::result::Result<(), (Error, bool)> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let mut files = Vec::new();
    for p in cg.self_join_files() {
        let f = File::options().write(true).open(&p).map_err(|e| (SetupFailure::new(Step::Cgroup, e.raw_os_error(), Some(p.clone()), "open the job's cgroup to hand it to the sandbox process").into(), false))?;
        files.push(f);
    }
    let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(b"C")];
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                let gone = matches!(e, nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET);
                return Err((SetupFailure::new(Step::Cgroup, Some(e as i32), None, "hand the job's cgroups to the sandbox process").into(), gone));
            }
        }
    }
}

/// For `cwd_host`: the spec with the host working directory bound (read-write, same path).
fn bind_host_cwd(spec: &SandboxSpec, cwd: &std::path::Path) -> Option<SandboxSpec> {
    let dir = spec.cwd.as_ref().filter(|_| spec.cwd_host)?;
    let dir = if dir.is_absolute() { dir.clone() } else { cwd.join(dir) };
    if !std::fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    let dest = dir.to_str()?.to_string();
    let mut out = spec.clone();
    out.cwd = Some(dir.clone());
    if !out.mounts.iter().any(|m| m.destination() == dest) {
        out.mounts.push(Mount::bind(dir, dest));
    }
    Some(out)
}

/// The spec of a command run in the running sandbox `r` (`exec_in`): the sandbox's user,
/// capabilities, filters, environment and working directory, with the command's on top; every
/// namespace the sandbox has of its own joined through its init.
fn exec_spec(exec: &SandboxSpec, r: &live::Record) -> std::result::Result<SandboxSpec, SetupFailure> {
    let mut s = exec_into(exec, &r.spec, r.pid, &r.name)?;
    s.exec_in = exec.exec_in.clone();
    Ok(s)
}

/// The spec of a command `exec` run in a running sandbox made from `base`, whose init is `pid`
/// (for an OCI runtime's `exec`; the library's named sandboxes use `exec_in`): the sandbox's
/// user, capabilities, filters, environment and working directory with the command's on top,
/// every namespace the sandbox has of its own joined through its init. The caller checks that
/// `pid` is still the sandbox's init once the spawn is done, and puts the command in its cgroup.
///
/// ```no_run
/// # fn main() -> Result<(), cagette::SetupFailure> {
/// let base = cagette::SandboxSpec::default();
/// let mut cmd = cagette::SandboxSpec::default();
/// cmd.argv = vec!["ps".into()];
/// let spec = cagette::exec_into(&cmd, &base, 4242, "web")?;
/// # Ok(()) }
/// ```
pub fn exec_into(exec: &SandboxSpec, base: &SandboxSpec, pid: i32, name: &str) -> std::result::Result<SandboxSpec, SetupFailure> {
    let ns_path = |which: &str| PathBuf::from(format!("/proc/{pid}/ns/{which}"));
    let differs = |which: &str| -> std::result::Result<bool, SetupFailure> {
        let theirs = std::fs::metadata(ns_path(which)).map_err(|e| SetupFailure::new(Step::Namespace, e.raw_os_error(), Some(ns_path(which)), &format!("find the {which} namespace of sandbox {name:?}")))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{which}")).ok();
        use std::os::unix::fs::MetadataExt;
        Ok(ours.is_none_or(|o| (o.dev(), o.ino()) != (theirs.dev(), theirs.ino())))
    };
    let mode = |which: &str| -> std::result::Result<NsMode, SetupFailure> { Ok(if differs(which)? { NsMode::Join(ns_path(which)) } else { NsMode::Host }) };
    let mut s = SandboxSpec::default();
    s.argv = exec.argv.clone();
    s.inherit_env = exec.inherit_env;
    s.env = base.env.clone();
    s.env.extend(exec.env.clone());
    s.user = exec.user.or(base.user);
    s.group = exec.group.or(base.group);
    s.supplementary_groups = if exec.user.is_some() || exec.group.is_some() { exec.supplementary_groups.clone() } else { base.supplementary_groups.clone() };
    s.cwd = exec.cwd.clone().or_else(|| base.cwd.clone());
    s.capabilities = base.capabilities.clone();
    s.cap_add = base.cap_add.clone();
    s.cap_drop = base.cap_drop.clone();
    s.ambient_capabilities = base.ambient_capabilities;
    s.no_new_privs = base.no_new_privs;
    s.seccomp = base.seccomp.clone();
    s.seccomp_allow = base.seccomp_allow.clone();
    s.seccomp_deny = base.seccomp_deny.clone();
    s.seccomp_kill = base.seccomp_kill;
    s.allow_user_namespaces = base.allow_user_namespaces;
    s.landlock = base.landlock.clone();
    s.rlimits = base.rlimits.clone();
    s.dev = base.dev;
    s.tty = exec.tty;
    s.stdin = exec.stdin;
    s.stdout = exec.stdout;
    s.stderr = exec.stderr;
    s.pass_fds = exec.pass_fds.clone();
    s.timeout = exec.timeout;
    s.namespaces.user = mode("user")?;
    s.namespaces.mount = mode("mnt")?;
    if s.namespaces.mount == NsMode::Host {
        // A sandbox in our mount namespace confined by chroot (an OCI container without a mount
        // namespace): a command joining its namespaces would keep our root, the host's. Refused.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let theirs = std::fs::metadata(&root).map_err(|e| SetupFailure::new(Step::Namespace, e.raw_os_error(), Some(root.clone()), &format!("find the root of sandbox {name:?}")))?;
        let ours = std::fs::metadata("/").map_err(|e| SetupFailure::new(Step::Namespace, e.raw_os_error(), None, "find our own root"))?;
        use std::os::unix::fs::MetadataExt;
        if (ours.dev(), ours.ino()) != (theirs.dev(), theirs.ino()) {
            return Err(SetupFailure::new(Step::Namespace, Some(libc::EINVAL), Some(root), &format!("sandbox {name:?} has no mount namespace of its own (its root is a chroot): a command run in it would see the host's root"))
                .hint("give the sandbox a mount namespace of its own to run commands in it"));
        }
    }
    s.namespaces.uts = mode("uts")?;
    s.namespaces.ipc = mode("ipc")?;
    s.namespaces.pid = mode("pid_for_children").or_else(|_| mode("pid"))?;
    s.namespaces.cgroup = mode("cgroup")?;
    s.namespaces.time = mode("time").unwrap_or(NsMode::Host);
    s.network = if differs("net")? { Network::Join(ns_path("net")) } else { Network::Host };
    s.hostname = None;
    s.userns = UsernsMode::Host;
    s.cgroup = CgroupMode::Never;
    Ok(s)
}

pub(crate) fn spawn(spec: &SandboxSpec) -> Result<Child> {
    spawn_with(spec, None)
}

/// A sandbox that outlives this process (see `detach.rs`).
pub(crate) fn spawn_detached(spec: &SandboxSpec, opts: crate::DetachOptions) -> Result<crate::Detached> {
    let refuse = |what: &str| -> Error { SetupFailure::new(Step::Spec, Some(libc::EINVAL), None, &format!("a detached sandbox cannot have {what}: nothing of this process may be needed once it is gone")).into() };
    if spec.timeout.is_some() || spec.cpu_time.is_some() {
        return Err(refuse("a timeout or CPU-time limit (this process enforces them)"));
    }
    if spec.network.routed() {
        return Err(refuse("a private or bridge network (this process sets it up, and runs private's helper)"));
    }
    if spec.name.is_some() || spec.exec_in.is_some() {
        return Err(refuse("a name or exec_in (named sandboxes belong to the library's registry)"));
    }
    if spec.namespaces.user == NsMode::New && spec.uid_map.is_empty() && spec.gid_map.is_empty() && crate::host::euid() == 0 && spec.userns == UsernsMode::Auto {
        return Err(refuse("an allocated id range (give uid_map and gid_map, or userns = host)"));
    }
    if [spec.stdin, spec.stdout, spec.stderr].contains(&Stdio::Piped) {
        return Err(refuse("piped standard streams"));
    }
    // Device rules: what both cgroup versions can express the same way (v1 would refuse an odd
    // kind with EINVAL, the v2 program would read it as a character device).
    for r in &opts.allow_devices {
        let why = if !matches!(r.kind, 'c' | 'b') {
            Some(format!("its kind is {:?}, not 'c' (character) or 'b' (block)", r.kind))
        } else if r.major > 4095 || r.minor > 0xf_ffff {
            Some("the kernel's device numbers have majors up to 4095 and minors up to 1048575".to_string())
        } else if !(r.read || r.write || r.mknod) {
            Some("it allows nothing (none of read, write, mknod)".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SetupFailure::new(Step::Spec, Some(libc::EINVAL), None, &format!("allow_devices: the rule {} {}:{} {}: {why}", r.kind, r.major, r.minor, r.access())).into());
        }
    }
    let child = spawn_with(spec, Some(opts))?;
    Ok(child.detach())
}

fn spawn_with(spec: &SandboxSpec, mut detach: Option<crate::DetachOptions>) -> Result<Child> {
    crate::sandbox::validate::spec(spec)?;
    // A command for a running sandbox: its spec is made from the sandbox's.
    let exec_rec = spec.exec_in.as_deref().map(live::find).transpose()?;
    let exec_made;
    let spec = match &exec_rec {
        Some(r) => {
            exec_made = exec_spec(spec, r)?;
            &exec_made
        }
        None => spec,
    };
    // A name is held before anything starts (a second sandbox of that name fails here).
    let registration = spec.name.as_deref().map(live::Registration::reserve).transpose()?;
    let with_cwd = if exec_rec.is_some() { None } else { bind_host_cwd(spec, &std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))) };
    let spec = with_cwd.as_ref().unwrap_or(spec);
    let resolved;
    let (spec, layers) = match &spec.image {
        Some(name) => {
            resolved = resolve_image(spec, name)?;
            (&resolved.0, resolved.1.clone())
        }
        None => (spec, Vec::new()),
    };
    // A private network: the helper's files, bound over /etc/resolv.conf and /etc/hosts.
    let net_made;
    let (spec, mut net) = if spec.network.routed() {
        let hostname = spec.hostname.as_deref().unwrap_or(crate::plan::compile::DEFAULT_HOSTNAME);
        let (helper, mounts) = crate::net::NetHelper::prepare(spec, hostname)?;
        let mut s = spec.clone();
        s.mounts.extend(mounts);
        net_made = s;
        (&net_made, Some(helper))
    } else {
        (spec, None)
    };
    let started = Instant::now();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let io_err = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| Error::io(what, e)
    };

    // The job's cgroup: a limit that cannot be applied fails before anything of the job runs.
    let mut wanted = Wanted::from_spec(spec)?;
    if let Some(d) = &detach {
        // The runtime's rules first, in their order (OCI asks that `devices.list` keeps it).
        wanted.devices.splice(0..0, d.allow_devices.iter().copied());
    }
    let need_cgroup = if exec_rec.is_some() {
        false // the command joins the sandbox's (below)
    } else if detach.is_some() && spec.cgroup == CgroupMode::Never && wanted.tracking_only() {
        false // a command run in a detached sandbox: its runtime puts it in the sandbox's cgroup
    } else if wanted.any() {
        if spec.cgroup == CgroupMode::Never {
            let why = if wanted.tracking_only() {
                "the job shares the host's pid namespace, so only a cgroup can find (and kill) all its processes at the end, but cgroup = never"
            } else {
                "resource limits were asked for but cgroup = never"
            };
            return Err(SetupFailure::new(Step::Cgroup, Some(libc::EINVAL), None, why).hint("drop the limits (or keep a pid namespace of its own), or allow a cgroup (cgroup = auto)").into());
        }
        true
    } else {
        false
    };
    let own_name = detach.as_ref().and_then(|d| d.cgroup_name.clone());
    let make_cgroup = |oom_efd: Option<OwnedFd>| -> Result<JobCgroup> {
        JobCgroup::create_named(&wanted, spec.cgroup_parent.as_deref(), own_name.as_deref(), oom_efd).map_err(|f| {
            if wanted.tracking_only() {
                let mut f = f;
                f.message = format!("the job shares the host's pid namespace, so it needs a cgroup to find (and kill) all its processes at the end: {}", f.message);
                let h = f.hint.clone().unwrap_or_else(|| "run as root or in a delegated cgroup".into());
                f.hint(format!("{h}; or keep a pid namespace of its own (namespaces.pid = new)")).into()
            } else {
                f.into()
            }
        })
    };
    // cgroup v2: the cgroup first, so that the setup child is born in it (CLONE_INTO_CGROUP).
    // cgroup v1, as root: made after the clone, while the setup child builds the sandbox (a
    // directory per controller used, their limits and device rules, ~1 ms, are then off the
    // critical path); the child joins them at the end of its file system work (before a cgroup
    // mount, if any), through their `tasks` files handed over the status socket. The kernel
    // checks the opener's credentials there: a caller that is not root keeps the join at the
    // child's start, before its id switch. Either way nothing of the job runs before the limits
    // are in place.
    let late_cgroup = need_cgroup && crate::limits::cgroup::host_is_v1() && crate::host::euid() == 0;
    let mut cgroup = if need_cgroup && !late_cgroup { Some(make_cgroup(None)?) } else { None };
    // The OOM eventfd init watches (v1, kill_job) is made now, for the child to take with it.
    let mut late_oom = if late_cgroup && wanted.oom_kill_job && wanted.memory.is_some() {
        Some(crate::limits::cgroup::oom_eventfd().map_err(|e| SetupFailure::new(Step::Cgroup, Some(e as i32), None, "create an eventfd for the job's OOM events"))?)
    } else {
        None
    };

    // Ids: as root, a private id range; then the host paths, resolved once (and, when the
    // sandbox's root is not the caller, mounted here to be id-mapped onto the sandbox's ids).
    let (mut uid_map, mut gid_map, id_range) = id_maps(spec)?;
    if let Some(r) = exec_rec.as_ref().filter(|_| matches!(spec.namespaces.user, NsMode::Join(_))) {
        // The sandbox's maps: the command becomes the sandbox's root (or first id) in its user
        // namespace before it executes init, so that it keeps its capabilities there.
        let read = |f: &str| -> Vec<IdMap> {
            std::fs::read_to_string(format!("/proc/{}/{f}", r.pid))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let v: Vec<u32> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                    (v.len() == 3).then(|| IdMap { inside: v[0], outside: v[1], count: v[2] })
                })
                .collect()
        };
        uid_map = read("uid_map");
        gid_map = read("gid_map");
    }
    let user_new = spec.namespaces.user == NsMode::New;
    let premount = user_new && crate::host::euid() == 0 && !uid_map.iter().any(|m| m.inside == 0 && m.outside == 0);
    let host = host_paths(spec, &layers, &cwd, premount)?;
    let devices = extra_devices(spec)?;
    let hidden_store = if spec.rootfs.is_none() && spec.image.is_none() {
        let mut v = vec![crate::ImageStore::default_dir()];
        v.extend(spec.image_store.clone());
        v.into_iter().filter(|p| p.is_absolute() && p.exists()).collect()
    } else {
        Vec::new()
    };

    let mut side = ChildSide { keep: Vec::new() };
    let (err_r, err_w) = pipe().map_err(io_err("create the setup error pipe"))?;
    // A command run in a running sandbox joins its cgroup: v1 by moving itself (tasks), v2 by
    // being born there (CLONE_INTO_CGROUP), else the host moves it.
    let (exec_tasks, exec_cgroup_dir) = match &exec_rec {
        Some(r) if r.cgroup_v2 => (Vec::new(), r.cgroups.first().map(|(_, d)| d.clone())),
        Some(r) => (r.cgroups.iter().map(|(_, d)| d.join("tasks")).collect(), None),
        None => (Vec::new(), None),
    };
    let exec_cgroup_fd = match &exec_cgroup_dir {
        Some(d) => Some(nix::fcntl::open(d.as_path(), nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).map_err(|e| Error::from(SetupFailure::new(Step::Cgroup, Some(e as i32), Some(d.clone()), "open the sandbox's cgroup to join it")))?),
        None => None,
    };
    let host_attach = cgroup.as_ref().is_some_and(|c| c.needs_host_attach()) || exec_cgroup_dir.is_some();
    let (sync_r, sync_w) = if user_new || host_attach || net.is_some() {
        let (r, w) = pipe().map_err(io_err("create the setup sync pipe"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (status_host, status_child) = socketpair().map_err(io_err("create the status socket"))?;
    let plan_fd = payload_plan_memfd().map_err(io_err("create the memfd for the payload's plan"))?;

    // Standard streams.
    let mut host_ends: [Option<File>; 3] = [None, None, None];
    let mut stdio = [0; 3];
    for (i, s) in [spec.stdin, spec.stdout, spec.stderr].into_iter().enumerate() {
        stdio[i] = match s {
            _ if spec.tty => -1,
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

    // Namespaces to join (the setup child joins them; a pid namespace, which only a process's
    // later children enter, is joined by the thread that clones it, unless it is a command for
    // a running sandbox: its payload, init's child, enters it then).
    let mut joins = Vec::new();
    let mut pid_join: Option<File> = None;
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
            if which == "mount" && spec.builds_root() {
                // The root is assembled and pivoted in the joined namespace, which changes it
                // for every process in it: never the host's own.
                let ours = ["/proc/self/ns/mnt", "/proc/1/ns/mnt"].iter().filter_map(|p| nix::sys::stat::stat(*p).ok()).map(|st| (st.st_dev, st.st_ino)).collect::<Vec<_>>();
                let target = nix::sys::stat::fstat(&f).map_err(|e| SetupFailure::new(Step::Namespace, Some(e as i32), Some(path.clone()), "inspect the mount namespace to join"))?;
                if ours.contains(&(target.st_dev, target.st_ino)) {
                    return Err(SetupFailure::new(Step::Namespace, Some(libc::EINVAL), Some(path.clone()), "the mount namespace to join is the host's own: the sandbox's root would be pivoted there")
                        .hint("give the sandbox a new mount namespace (namespaces.mount = new)")
                        .into());
                }
            }
            if which == "pid" && exec_rec.is_none() {
                pid_join = Some(f);
                continue;
            }
            joins.push((f.as_raw_fd(), ns_type(which)));
            side.keep.push(f.into());
        }
    }
    if let Some(r) = &exec_rec {
        // The namespaces were opened through the init's pid: still the same process (its start
        // time) now that they are open, so they are the sandbox's, not a later process's.
        if live::start_ticks(r.pid) != Some(r.start_ticks) {
            return Err(SetupFailure::new(Step::Namespace, Some(libc::ESRCH), None, &format!("sandbox {:?} ended while the command was starting", r.name)).into());
        }
    }

    let fds = Fds {
        err_w: err_w.as_raw_fd(),
        sync_r: sync_r.as_ref().map(|f| f.as_raw_fd()),
        status_child: status_child.as_raw_fd(),
        memfd: init_memfd()?,
        stdio,
        passed: spec.pass_fds.iter().map(|p| (p.host, p.sandbox)).collect(),
        joins,
        cgroup_tasks: if exec_rec.is_some() { exec_tasks } else { cgroup.as_ref().map(|c| c.self_join_files()).unwrap_or_default() },
        uid_map,
        gid_map,
        payload_plan: plan_fd.as_raw_fd(),
        host,
        hidden_store,
        devices,
        winsize: if spec.tty { host_winsize() } else { None },
        oom_event: cgroup.as_ref().and_then(|c| c.oom_event()).or(late_oom.as_ref().map(|f| f.as_fd())).map(|f| f.as_raw_fd()),
        cgroup_late: late_cgroup,
        detached: detach.is_some(),
        start_fifo: detach.as_ref().and_then(|d| d.start_fifo.as_ref()).map(|f| f.as_raw_fd()),
    };
    let plan = plan::compile::compile(spec, &fds)?;
    {
        use std::io::Write;
        let bytes = plan.payload.finish();
        File::from(plan_fd.try_clone().map_err(io_err("duplicate the payload plan's memfd"))?).write_all(&bytes).map_err(io_err("write the payload's plan"))?;
    }
    let stack = Stack::new().map_err(io_err("allocate the setup stack"))?;
    plan.err_fd.store(err_w.as_raw_fd(), Ordering::Relaxed);

    // Clone. The child shares our memory until it execs: the plan and stack stay put until then.
    // A command for a running sandbox joins its user namespace, which a process sharing our
    // memory may not (the kernel refuses setns(CLONE_NEWUSER) with mm_users > 1): that child
    // gets a copy of our memory instead (it still only runs raw system calls from the plan).
    let vm = if exec_rec.is_some() { 0 } else { libc::CLONE_VM as u64 };
    let flags = plan.clone_flags | vm | sys::CLONE_PIDFD;
    let plan_ptr = &plan as *const plan_ops::Plan as usize;
    let stack_at = (stack.low() as usize, stack.top() as usize);
    let into = cgroup.as_ref().and_then(|c| c.clone_fd()).or(exec_cgroup_fd.as_ref().map(|f| f.as_raw_fd()));
    let (result, pidfd, born_in_cgroup) = match &pid_join {
        // Joining a pid namespace: setns(CLONE_NEWPID) changes the namespace of the calling
        // thread's later children only, so a thread of ours joins it and clones there, and the
        // sandbox's init is born in it (the caller's own threads are left as they are).
        Some(ns) => {
            let joined = std::thread::scope(|sc| {
                sc.spawn(|| nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID).map(|()| clone_setup(flags, into, stack_at, plan_ptr)))
                    .join()
                    .unwrap_or(Err(nix::errno::Errno::EIO))
            });
            match joined {
                Ok(r) => r,
                Err(e) => {
                    let path = match &spec.namespaces.pid {
                        NsMode::Join(p) => Some(p.clone()),
                        _ => None,
                    };
                    let what = format!("join the pid namespace {} (setns)", path.as_deref().unwrap_or(std::path::Path::new("")).display());
                    return Err(SetupFailure::new(Step::Namespace, Some(e as i32), path, &what)
                        .hint("the namespace must be a pid namespace below this process's, and joining it needs CAP_SYS_ADMIN over its user namespace")
                        .into());
                }
            }
        }
        None => clone_setup(flags, into, stack_at, plan_ptr),
    };
    // The child's copies are its own now.
    drop(err_w);
    drop(sync_r);
    drop(status_child);
    drop(side);
    drop(plan_fd);
    // The start FIFO is init's alone now (a second reader here would keep `start` from
    // failing once init is gone).
    if let Some(d) = detach.as_mut() {
        d.start_fifo = None;
    }
    let pid = match result {
        Ok(pid) => pid as libc::pid_t,
        Err(Errno(e)) => {
            let f = SetupFailure::new(Step::Clone, Some(e), None, "create the sandbox process with its namespaces");
            let f = match plan_ops::errno_hint(Step::Clone, e, user_new) {
                Some(h) => f.hint(h),
                None => f,
            };
            return Err(f.into());
        }
    };
    // SAFETY: clone stored the new pidfd there: open, and ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let abort = |pidfd: &OwnedFd| {
        let _ = crate::sandbox::child::send_signal(pidfd.as_fd(), libc::SIGKILL);
        crate::sandbox::child::reap_raw(pidfd.as_fd());
    };

    if let Some(cg) = cgroup.as_ref().filter(|c| c.needs_host_attach() && !born_in_cgroup)
        && let Err(f) = cg.attach(pid) {
            abort(&pidfd);
            drop(stack);
            return Err(f.into());
        }
    if let Some(d) = exec_cgroup_dir.as_ref().filter(|_| !born_in_cgroup)
        && let Err(e) = std::fs::write(d.join("cgroup.procs"), pid.to_string()) {
            abort(&pidfd);
            drop(stack);
            return Err(SetupFailure::new(Step::Cgroup, e.raw_os_error(), Some(d.clone()), "move the command into the sandbox's cgroup").into());
        }
    if user_new {
        let r = write_id_maps(pid, &fds.uid_map, &fds.gid_map).and_then(|()| idmap_mounts(pid, &fds.host));
        if let Err(f) = r {
            abort(&pidfd);
            drop(stack);
            return Err(f.into());
        }
    }
    if let Some(n) = net.as_mut()
        && let Err(f) = n.start(pid, user_new, spec) {
            abort(&pidfd);
            drop(stack);
            return Err(f.into());
        }
    if let Some(w) = sync_w {
        let mut w = File::from(w);
        use std::io::Write;
        if let Err(e) = w.write_all(&[1]) {
            abort(&pidfd);
            drop(stack);
            return Err(Error::io("release the sandbox process", e));
        }
    }

    // cgroup v1: the job's cgroups, made while the child builds the sandbox, then handed to it.
    // A hand-over refused because the child is gone (its setup failed meanwhile) is reported
    // after the child's own error; any other failure ends the child now (it waits for them).
    let mut late_err = None;
    if late_cgroup {
        let sent = make_cgroup(late_oom.take()).and_then(|cg| match send_cgroups(&status_host, &cg) {
            Ok(()) => Ok(cg),
            Err((e, true)) => {
                late_err = Some(e);
                Ok(cg)
            }
            Err((e, false)) => Err(e),
        });
        match sent {
            Ok(cg) => cgroup = Some(cg),
            Err(e) => {
                // The cgroups (if made) are removed once the child is gone.
                abort(&pidfd);
                drop(stack);
                return Err(e);
            }
        }
    }

    // Meanwhile, the dead hosts' job cgroups (once per process).
    if let Some(cg) = cgroup.as_mut() {
        cg.sweep_stale();
    }

    // Wait until the payload exec'd (EOF: init and the payload closed their ends) or a step failed.
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
                drop(stack);
                return Err(Error::io("read the setup error pipe", e));
            }
        }
    }
    let ready = got == RECORD && u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) == plan_ops::PHASE_READY;
    if got == RECORD && !ready {
        let phase = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let index = u32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]) as usize;
        let errno = i32::from_ne_bytes([rec[8], rec[9], rec[10], rec[11]]);
        // Take the sandbox down and wait until it is gone before its stack is unmapped.
        abort(&pidfd);
        drop(stack);
        return Err(plan.failure(phase, index, errno).into());
    }
    drop(stack);
    if got != 0 && !ready {
        abort(&pidfd);
        return Err(Error::Usage("the sandbox's setup sent a truncated error record".into()));
    }
    if let Some(e) = late_err {
        abort(&pidfd);
        return Err(e);
    }
    drop(plan);
    let pty = if spec.tty {
        match receive_pty(&status_host) {
            Ok(f) => Some(f),
            Err(e) => {
                abort(&pidfd);
                return Err(Error::io("receive the sandbox's terminal", e));
            }
        }
    } else {
        None
    };

    // A named sandbox is registered once it runs (its init's pid and start time tell it from a
    // later process with the same pid); the file goes when the child is reaped.
    if let Some(reg) = &registration {
        let (cgroup_v2, cgroups) = cgroup.as_ref().map(|c| c.members()).unwrap_or_default();
        let started_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut own = spec.clone();
        own.name = None;
        let record = live::Record {
            name: spec.name.clone().unwrap_or_default(),
            pid,
            start_ticks: live::start_ticks(pid).unwrap_or(0),
            host_pid: std::process::id() as i32,
            started: started_unix,
            argv: spec.argv.clone(),
            cgroup_v2,
            cgroups,
            spec: own,
        };
        if let Err(e) = reg.commit(&record) {
            abort(&pidfd);
            return Err(Error::io("register the sandbox's name", e));
        }
    }
    let mut child = Child::new(pid, pidfd, status_host, host_ends, started, spec.timeout, spec.namespaces.pid == NsMode::New, cgroup);
    child.live = registration;
    child.pty = pty;
    child.id_range = id_range;
    child.oom_policy = spec.oom_policy;
    child.net = net;
    if spec.seccomp_kill {
        child.track_payload();
    }
    Ok(child)
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count)).collect()
}

/// Writes uid_map, setgroups and gid_map of the child's new user namespace.
fn write_id_maps(pid: libc::pid_t, uid: &[IdMap], gid: &[IdMap]) -> std::result::Result<(), SetupFailure> {
    let euid = crate::host::euid();
    let write = |file: &str, text: &str| -> std::result::Result<(), SetupFailure> {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, text).map_err(|e| {
            let errno = e.raw_os_error();
            let f = SetupFailure::new(Step::IdMap, errno, Some(path.clone()), &format!("write {file} {:?}", text.trim_end()));
            match errno.and_then(|e| plan_ops::errno_hint(Step::IdMap, e, true)) {
                Some(h) => f.hint(h),
                None => f,
            }
        })
    };
    write("uid_map", &map_text(uid))?;
    if euid != 0 {
        write("setgroups", "deny")?;
    }
    write("gid_map", &map_text(gid))?;
    Ok(())
}

/// Maps the ids of the mounts the parent made through the sandbox's user namespace.
fn idmap_mounts(pid: libc::pid_t, host: &HostPaths) -> std::result::Result<(), SetupFailure> {
    let mut mounts = host.rootfs.iter().map(|h| (h, true)).chain(host.layers.iter().map(|h| (h, false))).collect::<Vec<_>>();
    mounts.extend(host.mounts.iter().flatten().map(|h| (h, true)));
    mounts.extend(host.image_upper.iter().map(|h| (h, false)));
    if !mounts.iter().any(|(h, _)| h.mount.is_some()) {
        return Ok(());
    }
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/user"));
    let userns: OwnedFd = File::open(&ns_path).map_err(|e| SetupFailure::new(Step::IdMap, e.raw_os_error(), Some(ns_path.clone()), "open the sandbox's user namespace"))?.into();
    for (h, recursive) in mounts {
        if let Some(m) = &h.mount {
            hostpath::idmap(m, &userns, recursive).map_err(|e| {
                SetupFailure::new(Step::IdMap, e.raw_os_error(), Some(h.path.clone()), &format!("map the ids of the mount of {} onto the sandbox's", h.path.display()))
                    .hint("id-mapped mounts need Linux 5.12+ and a file system that supports them; or run with userns = host")
            })?;
        }
    }
    Ok(())
}
