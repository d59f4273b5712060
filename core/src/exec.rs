//! The code that runs between clone and exec: the setup child (future pid 1) and the payload.
//!
//! Rules (DEVELOPERS.md, rule 1): only raw system calls from [`crate::sys`] on data the parent
//! prepared in the [`Plan`]; no allocation, no locks, no formatting, no panics. Failures are
//! reported as one 12-byte record (phase, operation index, errno) on the close-on-exec error
//! pipe, and the process exits.
#![allow(clippy::missing_safety_doc)]

use crate::plan::{Leaf, Op, PATH_BUF, PayloadOp, Plan};
use crate::sys::{self, Errno, OpenHow};
use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering;

/// Record phase of a setup-child failure.
pub(crate) const PHASE_SETUP: u32 = 0;
/// Record phase of a payload failure.
pub(crate) const PHASE_PAYLOAD: u32 = 1;
/// Size of one error record: phase u32, index u32, errno i32.
pub(crate) const RECORD: usize = 12;

const EMPTY: *const libc::c_char = c"".as_ptr();

#[inline(always)]
fn slot(plan: &Plan, i: usize) -> c_int {
    match plan.slots.get(i) {
        Some(c) => unsafe { *c.get() },
        None => -1,
    }
}

#[inline(always)]
fn set_slot(plan: &Plan, i: usize, fd: usize) {
    if let Some(c) = plan.slots.get(i) {
        unsafe { *c.get() = fd as c_int };
    }
}

fn report(fd: c_int, phase: u32, index: usize, errno: Errno) {
    let mut rec = [0u8; RECORD];
    rec[0..4].copy_from_slice(&phase.to_ne_bytes());
    rec[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    rec[8..12].copy_from_slice(&errno.0.to_ne_bytes());
    let mut off = 0;
    while off < RECORD {
        match sys::write(fd, unsafe { rec.as_ptr().add(off) }, RECORD - off) {
            Ok(n) => off += n,
            Err(Errno(libc::EINTR)) => {}
            Err(_) => return,
        }
    }
}

/// Resets every signal handler to the default, so no host handler ever runs in a child.
fn reset_signal_handlers() {
    // struct kernel_sigaction: handler, flags, restorer, mask; all zero is SIG_DFL.
    let dfl = [0u64; 4];
    let mut sig = 1;
    while sig <= 64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            let _ = sys::rt_sigaction(sig, dfl.as_ptr() as *const c_void, core::ptr::null_mut());
        }
        sig += 1;
    }
}

fn open_in_root(root: c_int, path: *const libc::c_char) -> Result<c_int, Errno> {
    // RESOLVE_IN_ROOT: "..", absolute symlinks and "/" all stay inside `root`, so following a
    // symlink leaf (e.g. /etc/resolv.conf -> ../run/resolv.conf) is safe; magic links are refused.
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
    };
    // EAGAIN: a ".." raced with a mount or rename somewhere on the system (the kernel cannot
    // prove it stayed inside); the documented answer is to retry.
    let mut tries = 0;
    loop {
        match sys::openat2(root, path, &how) {
            Err(Errno(libc::EAGAIN)) if tries < 128 => tries += 1,
            r => return Ok(r? as c_int),
        }
    }
}

/// Finds `path` inside the root, creating missing directories (and a file leaf).
unsafe fn resolve(root: c_int, path: *const libc::c_char, prefixes: *const *const libc::c_char, names: *const *const libc::c_char, n: usize, leaf: Leaf) -> Result<c_int, Errno> {
    match open_in_root(root, path) {
        Ok(fd) => return Ok(fd),
        Err(Errno(libc::ENOENT)) if n > 0 => {}
        Err(e) => return Err(e),
    }
    let mut parent = root;
    let mut i = 0;
    while i < n {
        let prefix = unsafe { *prefixes.add(i) };
        let name = unsafe { *names.add(i) };
        let fd = match open_in_root(root, prefix) {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT)) => {
                let created = if i + 1 == n && leaf == Leaf::File {
                    sys::openat(parent, name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644)
                        .map(|fd| { let _ = sys::close(fd as c_int); })
                } else {
                    sys::mkdirat(parent, name, 0o755).map(|_| ())
                };
                match created {
                    Ok(()) | Err(Errno(libc::EEXIST)) => {}
                    Err(e) => {
                        if parent != root {
                            let _ = sys::close(parent);
                        }
                        return Err(e);
                    }
                }
                match open_in_root(root, prefix) {
                    Ok(fd) => fd,
                    Err(e) => {
                        if parent != root {
                            let _ = sys::close(parent);
                        }
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                if parent != root {
                    let _ = sys::close(parent);
                }
                return Err(e);
            }
        };
        if parent != root {
            let _ = sys::close(parent);
        }
        parent = fd;
        i += 1;
    }
    Ok(parent)
}

fn move_onto(from: c_int, to: c_int) -> Result<(), Errno> {
    sys::move_mount(from, EMPTY, to, EMPTY, sys::MOVE_MOUNT_F_EMPTY_PATH | sys::MOVE_MOUNT_T_EMPTY_PATH).map(|_| ())
}

fn set_attr(fd: c_int, set: u64, recursive: bool) -> Result<(), Errno> {
    let attr = sys::MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let mut flags = sys::AT_EMPTY_PATH;
    if recursive {
        flags |= sys::AT_RECURSIVE;
    }
    sys::mount_setattr(fd, EMPTY, flags, &attr).map(|_| ())
}

/// Decimal digits of `v` into `out` (most significant first); returns how many.
fn itoa(mut v: u64, out: &mut [u8; 20]) -> usize {
    let mut tmp = [0u8; 20];
    let mut n = 0;
    loop {
        tmp[n % 20] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 || n >= 20 {
            break;
        }
    }
    let mut i = 0;
    while i < n {
        out[i % 20] = tmp[(n - 1 - i) % 20];
        i += 1;
    }
    n
}

/// Writes "/proc/self/fd/<fd>/<suffix>\0" into `buf` (PATH_BUF bytes).
unsafe fn render_fd_path(buf: *mut u8, fd: c_int, suffix: *const libc::c_char) -> Result<(), Errno> {
    let prefix = b"/proc/self/fd/";
    let mut digits = [0u8; 20];
    let nd = itoa(fd as u64, &mut digits);
    let mut len = 0usize;
    let mut s = suffix as *const u8;
    while unsafe { *s } != 0 {
        len += 1;
        s = unsafe { s.add(1) };
    }
    if prefix.len() + nd + 1 + len + 1 > PATH_BUF {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let mut o = 0usize;
    for &b in prefix.iter().chain(digits[..nd].iter()) {
        unsafe { *buf.add(o) = b };
        o += 1;
    }
    unsafe { *buf.add(o) = b'/' };
    o += 1;
    let mut j = 0usize;
    while j < len {
        unsafe { *buf.add(o) = *(suffix as *const u8).add(j) };
        o += 1;
        j += 1;
    }
    unsafe { *buf.add(o) = 0 };
    Ok(())
}

fn close_gaps(keep: &[i32]) -> Result<(), Errno> {
    let mut next: u32 = 0;
    for &fd in keep {
        if fd < 0 {
            continue;
        }
        let fd = fd as u32;
        if fd > next {
            sys::close_range(next, fd - 1, 0)?;
        }
        next = fd.wrapping_add(1);
    }
    sys::close_range(next, sys::CLOSE_RANGE_MAX, 0).map(|_| ())
}

fn loopback_up() -> Result<(), Errno> {
    let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)? as c_int;
    // struct ifreq: 16-byte name, then ifr_flags (short).
    let mut ifr = [0u8; 40];
    ifr[0] = b'l';
    ifr[1] = b'o';
    let flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    let r = sys::ioctl(fd, libc::SIOCSIFFLAGS as usize, ifr.as_mut_ptr() as *mut c_void);
    let _ = sys::close(fd);
    r.map(|_| ())
}

fn wait_host(fd: c_int) -> Result<(), Errno> {
    let mut b = [0u8; 1];
    loop {
        match sys::read(fd, b.as_mut_ptr(), 1) {
            Ok(1) => {
                let _ = sys::close(fd);
                return Ok(());
            }
            Ok(_) => sys::exit(0), // the host is gone: nothing to report to
            Err(Errno(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
}

fn mask(root: c_int, path: *const libc::c_char, devnull: *const libc::c_char) -> Result<(), Errno> {
    let target = match open_in_root(root, path) {
        Ok(fd) => fd,
        Err(Errno(libc::ENOENT)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = (|| {
        sys::fstatat(target, EMPTY, &mut st, sys::AT_EMPTY_PATH)?;
        let m = if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR {
            let ctx = sys::fsopen(c"tmpfs".as_ptr(), sys::FSOPEN_CLOEXEC)? as c_int;
            let r = sys::fsconfig(ctx, sys::FSCONFIG_SET_STRING, c"size".as_ptr(), c"0".as_ptr(), 0)
                .and_then(|_| sys::fsconfig(ctx, sys::FSCONFIG_CMD_CREATE, core::ptr::null(), core::ptr::null(), 0))
                .and_then(|_| sys::fsmount(ctx, sys::FSMOUNT_CLOEXEC, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC));
            let _ = sys::close(ctx);
            r? as c_int
        } else {
            let m = sys::open_tree(libc::AT_FDCWD, devnull, sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC)? as c_int;
            if let Err(e) = set_attr(m, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC, false) {
                let _ = sys::close(m);
                return Err(e);
            }
            m
        };
        let r = move_onto(m, target);
        let _ = sys::close(m);
        r
    })();
    let _ = sys::close(target);
    r
}

fn read_only(root: c_int, path: *const libc::c_char) -> Result<(), Errno> {
    let target = match open_in_root(root, path) {
        Ok(fd) => fd,
        Err(Errno(libc::ENOENT)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let r = (|| {
        let m = sys::open_tree(target, EMPTY, sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | sys::AT_EMPTY_PATH | sys::AT_RECURSIVE)? as c_int;
        let r = set_attr(m, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, true).and_then(|_| move_onto(m, target));
        let _ = sys::close(m);
        r
    })();
    let _ = sys::close(target);
    r
}

fn pivot(root: c_int) -> Result<(), Errno> {
    let dot = c".".as_ptr();
    sys::fchdir(root)?;
    sys::pivot_root(dot, dot)?;
    sys::umount2(dot, libc::MNT_DETACH)?;
    sys::chdir(c"/".as_ptr()).map(|_| ())
}

/// Writes `pid` as a NUL-terminated decimal into `buf` (16 bytes).
fn write_pid(buf: *mut u8, pid: usize) {
    let mut digits = [0u8; 20];
    let n = itoa(pid as u64, &mut digits).min(15);
    let mut o = 0;
    while o < n {
        unsafe { *buf.add(o) = digits[o] };
        o += 1;
    }
    unsafe { *buf.add(o) = 0 };
}

fn exec_init(plan: &Plan, memfd: c_int, status: c_int, argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> Result<(), Errno> {
    let err = plan.err_fd.load(Ordering::Relaxed);
    let s = sys::fcntl(status, libc::F_DUPFD_CLOEXEC, 10)? as c_int;
    let m = sys::fcntl(memfd, libc::F_DUPFD_CLOEXEC, 10)? as c_int;
    let e = sys::fcntl(err, libc::F_DUPFD_CLOEXEC, 10)? as c_int;
    sys::dup3(s, 3, 0)?;
    sys::dup3(m, 4, libc::O_CLOEXEC)?;
    sys::dup3(e, 5, libc::O_CLOEXEC)?;
    plan.err_fd.store(5, Ordering::Relaxed);
    sys::close_range(0, 2, 0)?;
    sys::close_range(6, sys::CLOSE_RANGE_MAX, 0)?;
    sys::execveat(4, EMPTY, argv, envp, sys::AT_EMPTY_PATH)?;
    Ok(())
}

/// Entry point of the setup child. `arg` is the `*const Plan`.
pub(crate) unsafe extern "C" fn setup_main(arg: *mut c_void) -> c_int {
    let plan = unsafe { &*(arg as *const Plan) };
    reset_signal_handlers();
    let mut index = 0usize;
    for op in plan.ops.iter() {
        if let Err(e) = unsafe { run_op(plan, op) } {
            report(plan.err_fd.load(Ordering::Relaxed), PHASE_SETUP, index, e);
            sys::exit(125);
        }
        index += 1;
    }
    sys::exit(125)
}

unsafe fn run_op(plan: &Plan, op: &Op) -> Result<(), Errno> {
    match *op {
        Op::CloseGaps { keep, n } => close_gaps(unsafe { core::slice::from_raw_parts(keep, n) }),
        Op::SetNs { fd, nstype } => sys::setns(fd, nstype).map(|_| ()),
        Op::WaitHost { fd } => wait_host(fd),
        Op::Unshare { flags } => sys::unshare(flags).map(|_| ()),
        Op::JoinCgroup { path } => {
            let fd = sys::openat(libc::AT_FDCWD, path, libc::O_WRONLY | libc::O_CLOEXEC, 0)? as c_int;
            let r = sys::write(fd, b"0".as_ptr(), 1);
            let _ = sys::close(fd);
            r.map(|_| ())
        }
        Op::SetIds { uid, gid } => {
            sys::setresgid(gid, gid, gid)?;
            sys::setresuid(uid, uid, uid).map(|_| ())
        }
        Op::Hostname { name, len } => sys::sethostname(name, len).map(|_| ()),
        Op::LoopbackUp => loopback_up(),
        Op::MakePrivate => sys::mount(core::ptr::null(), c"/".as_ptr(), core::ptr::null(), (libc::MS_REC | libc::MS_PRIVATE) as u64, core::ptr::null()).map(|_| ()),
        Op::OpenTree { path, flags, slot: s } => sys::open_tree(libc::AT_FDCWD, path, flags).map(|fd| set_slot(plan, s, fd)),
        Op::SetAttr { slot: s, set, recursive } => set_attr(slot(plan, s), set, recursive),
        Op::FsOpen { fstype, slot: s } => sys::fsopen(fstype, sys::FSOPEN_CLOEXEC).map(|fd| set_slot(plan, s, fd)),
        Op::FsString { slot: s, key, value } => sys::fsconfig(slot(plan, s), sys::FSCONFIG_SET_STRING, key, value, 0).map(|_| ()),
        Op::FsFlag { slot: s, key } => sys::fsconfig(slot(plan, s), sys::FSCONFIG_SET_FLAG, key, core::ptr::null(), 0).map(|_| ()),
        Op::FsStringFdPath { slot: s, key, dir, suffix, buf } => {
            unsafe { render_fd_path(buf, slot(plan, dir), suffix)? };
            sys::fsconfig(slot(plan, s), sys::FSCONFIG_SET_STRING, key, buf as *const libc::c_char, 0).map(|_| ())
        }
        Op::FsMount { ctx, attrs, slot: s } => {
            let c = slot(plan, ctx);
            sys::fsconfig(c, sys::FSCONFIG_CMD_CREATE, core::ptr::null(), core::ptr::null(), 0)?;
            let fd = sys::fsmount(c, sys::FSMOUNT_CLOEXEC, attrs)?;
            let _ = sys::close(c);
            set_slot(plan, ctx, usize::MAX);
            set_slot(plan, s, fd);
            Ok(())
        }
        Op::AttachAt { slot: s, path } => sys::move_mount(slot(plan, s), EMPTY, libc::AT_FDCWD, path, sys::MOVE_MOUNT_F_EMPTY_PATH).map(|_| ()),
        Op::Resolve { root, path, prefixes, names, n, leaf, slot: s } => {
            let fd = unsafe { resolve(slot(plan, root), path, prefixes, names, n, leaf)? };
            set_slot(plan, s, fd as usize);
            Ok(())
        }
        Op::MkdirIn { dir, name, mode } => sys::mkdirat(slot(plan, dir), name, mode).map(|_| ()),
        Op::MoveMount { from, to } => move_onto(slot(plan, from), slot(plan, to)),
        Op::Symlink { target, dir, name } => match sys::symlinkat(target, slot(plan, dir), name) {
            Ok(_) | Err(Errno(libc::EEXIST)) => Ok(()),
            Err(e) => Err(e),
        },
        Op::Close { slot: s } => {
            let fd = slot(plan, s);
            if fd >= 0 {
                let _ = sys::close(fd);
                set_slot(plan, s, usize::MAX);
            }
            Ok(())
        }
        Op::Mask { root, path, devnull } => mask(slot(plan, root), path, devnull),
        Op::ReadOnly { root, path } => read_only(slot(plan, root), path),
        Op::Pivot { root } => {
            pivot(slot(plan, root))?;
            // Every remaining slot refers to the old tree: close them all.
            for c in plan.slots.iter() {
                let fd = unsafe { *c.get() };
                if fd >= 0 {
                    let _ = sys::close(fd);
                    unsafe { *c.get() = -1 };
                }
            }
            Ok(())
        }
        Op::Rlimit { resource, limit } => sys::prlimit(resource, &limit).map(|_| ()),
        Op::SpawnPayload => spawn_payload(plan),
        Op::ExecInit { memfd, status, argv, envp } => exec_init(plan, memfd, status, argv, envp),
    }
}

fn spawn_payload(plan: &Plan) -> Result<(), Errno> {
    let arg = plan as *const Plan as *mut c_void;
    let flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
    let pid = match unsafe { sys::clone_run(flags, plan.payload_stack_top, core::ptr::null_mut(), payload_main, arg) } {
        // Kernels before ~6.x refuse CLONE_VM while the time namespace for children differs
        // from our own (we unshared it): copy the address space instead. The payload's failure
        // flag then stays in its copy, but its error record still reaches the host, which kills
        // init on seeing it.
        Err(Errno(libc::EINVAL)) => unsafe {
            sys::clone_run((libc::CLONE_VFORK | libc::SIGCHLD) as u64, plan.payload_stack_top, core::ptr::null_mut(), payload_main, arg)?
        },
        r => r?,
    };
    // vfork semantics: the payload has exec'd or exited by now.
    if plan.payload_failed.load(Ordering::Acquire) != 0 {
        let mut st = 0;
        let _ = sys::wait4(pid as c_int, &mut st, 0);
        sys::exit(125); // the payload already reported
    }
    write_pid(plan.pid_arg.get() as *mut u8, pid);
    Ok(())
}

/// Entry point of the payload (cloned with CLONE_VM|CLONE_VFORK by the setup child).
unsafe extern "C" fn payload_main(arg: *mut c_void) -> c_int {
    let plan = unsafe { &*(arg as *const Plan) };
    let mut index = 0usize;
    for op in plan.payload_ops.iter() {
        if let Err(e) = unsafe { run_payload_op(plan, op) } {
            plan.payload_failed.store(1, Ordering::Release);
            let fd = match plan.payload_err_fd.load(Ordering::Relaxed) {
                -1 => plan.err_fd.load(Ordering::Relaxed),
                fd => fd,
            };
            report(fd, PHASE_PAYLOAD, index, e);
            sys::exit(127);
        }
        index += 1;
    }
    sys::exit(127)
}

/// struct landlock_path_beneath_attr (packed).
#[repr(C, packed)]
struct LandlockPathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

unsafe fn run_payload_op(plan: &Plan, op: &PayloadOp) -> Result<(), Errno> {
    match *op {
        PayloadOp::DeathSignal => sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize, 0, 0, 0).map(|_| ()),
        PayloadOp::Chdir { path } => sys::chdir(path).map(|_| ()),
        PayloadOp::DropBounding { keep, last_cap } => {
            let mut cap = 0u32;
            while cap <= last_cap && cap < 64 {
                if keep & (1u64 << cap) == 0 {
                    match sys::prctl(libc::PR_CAPBSET_DROP, cap as usize, 0, 0, 0) {
                        Ok(_) | Err(Errno(libc::EINVAL)) => {}
                        Err(e) => return Err(e),
                    }
                }
                cap += 1;
            }
            Ok(())
        }
        PayloadOp::SetGroups { list, n } => sys::setgroups(n, list).map(|_| ()),
        PayloadOp::SetGid { gid } => sys::setresgid(gid, gid, gid).map(|_| ()),
        PayloadOp::SetUid { uid } => sys::setresuid(uid, uid, uid).map(|_| ()),
        PayloadOp::CapSet { keep, inheritable } => {
            let mut hdr = CapHeader { version: 0x2008_0522, pid: 0 };
            let mut cur = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
            sys::capget(&mut hdr as *mut CapHeader as *mut c_void, cur.as_mut_ptr() as *mut c_void)?;
            let lo = keep as u32;
            let hi = (keep >> 32) as u32;
            let data = [
                CapData { effective: cur[0].permitted & lo, permitted: cur[0].permitted & lo, inheritable: cur[0].permitted & lo & inheritable as u32 },
                CapData { effective: cur[1].permitted & hi, permitted: cur[1].permitted & hi, inheritable: cur[1].permitted & hi & (inheritable >> 32) as u32 },
            ];
            let mut hdr = CapHeader { version: 0x2008_0522, pid: 0 };
            sys::capset(&mut hdr as *mut CapHeader as *mut c_void, data.as_ptr() as *const c_void)?;
            match sys::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as usize, 0, 0, 0) {
                Ok(_) | Err(Errno(libc::EINVAL)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        PayloadOp::KeepCaps => sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).map(|_| ()),
        PayloadOp::Ambient { keep, last_cap } => {
            let mut cap = 0u32;
            while cap <= last_cap && cap < 64 {
                if keep & (1u64 << cap) != 0 {
                    sys::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as usize, cap as usize, 0, 0)?;
                }
                cap += 1;
            }
            Ok(())
        }
        PayloadOp::Seccomp { fprog } => sys::seccomp_filter(fprog).map(|_| ()),
        PayloadOp::LandlockCreate { handled } => {
            let attr = handled; // struct landlock_ruleset_attr { u64 handled_access_fs }
            let fd = sys::landlock_create_ruleset(&attr as *const u64 as *const c_void, 8, 0)? as c_int;
            plan.landlock_fd.store(fd, Ordering::Relaxed);
            Ok(())
        }
        PayloadOp::LandlockRule { path, access } => {
            let fd = sys::openat(libc::AT_FDCWD, path, libc::O_PATH | libc::O_CLOEXEC, 0)? as c_int;
            let attr = LandlockPathBeneath { allowed_access: access, parent_fd: fd };
            let r = sys::landlock_add_rule(plan.landlock_fd.load(Ordering::Relaxed), 1, &attr as *const LandlockPathBeneath as *const c_void);
            let _ = sys::close(fd);
            r.map(|_| ())
        }
        PayloadOp::LandlockRestrict => {
            let fd = plan.landlock_fd.load(Ordering::Relaxed);
            let r = sys::landlock_restrict_self(fd);
            let _ = sys::close(fd);
            r.map(|_| ())
        }
        PayloadOp::NoNewPrivs => sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).map(|_| ()),
        PayloadOp::Fds { moves, n, high, close, n_close } => unsafe { shuffle_fds(plan, moves, n, high, close, n_close) },
        PayloadOp::UnblockSignals => {
            let empty: u64 = 0;
            sys::rt_sigprocmask(libc::SIG_SETMASK, &empty, core::ptr::null_mut()).map(|_| ())
        }
        PayloadOp::Exec { candidates, n, argv, envp } => {
            let mut first_err = Errno(libc::ENOENT);
            let mut seen_eacces = false;
            let mut i = 0;
            while i < n {
                let path = unsafe { *candidates.add(i) };
                match sys::execve(path, argv, envp) {
                    Ok(_) => {}
                    Err(Errno(libc::EACCES)) => {
                        seen_eacces = true;
                        first_err = Errno(libc::EACCES);
                    }
                    Err(Errno(libc::ENOENT)) | Err(Errno(libc::ENOTDIR)) => {}
                    Err(e) => return Err(e),
                }
                i += 1;
            }
            Err(if seen_eacces { Errno(libc::EACCES) } else { first_err })
        }
    }
}

/// Puts every (source, target) pair in place without one clobbering another, then closes every
/// fd that is neither a target nor the error pipe.
unsafe fn shuffle_fds(plan: &Plan, moves: *const (i32, i32), n: usize, high: i32, close: *const (u32, u32), n_close: usize) -> Result<(), Errno> {
    let err = plan.err_fd.load(Ordering::Relaxed);
    let err_high = sys::fcntl(err, libc::F_DUPFD_CLOEXEC, high as usize)? as c_int;
    plan.payload_err_fd.store(err_high, Ordering::Relaxed);
    // First move every source above all targets, then dup onto the targets.
    let mut tmp = [0i32; 64];
    if n > tmp.len() {
        return Err(Errno(libc::EMFILE));
    }
    let mut i = 0;
    while i < n {
        let (src, _) = unsafe { *moves.add(i) };
        tmp[i] = sys::fcntl(src, libc::F_DUPFD_CLOEXEC, high as usize)? as c_int;
        i += 1;
    }
    i = 0;
    while i < n {
        let (_, target) = unsafe { *moves.add(i) };
        sys::dup3(tmp[i], target, 0)?;
        i += 1;
    }
    i = 0;
    while i < n_close {
        let (a, b) = unsafe { *close.add(i) };
        sys::close_range(a, b, 0)?;
        i += 1;
    }
    let high = high as u32;
    let e = err_high as u32;
    if e > high {
        sys::close_range(high, e - 1, 0)?;
    }
    sys::close_range(e + 1, sys::CLOSE_RANGE_MAX, 0)?;
    Ok(())
}
