//! The code that runs between clone and exec: the setup child (future pid 1) and the payload.
//!
//! Rules (DEVELOPERS.md, rule 1): only raw system calls from [`crate::child::sys`] on data the parent
//! prepared in the [`Plan`]; no allocation, no locks, no formatting, no panics. Failures are
//! reported as one 12-byte record (phase, operation index, errno) on the close-on-exec error
//! pipe, and the process exits.
#![allow(clippy::missing_safety_doc)]

use crate::plan::ops::{FdMove, FdSrc, Leaf, Op, PATH_BUF, PHASE_SETUP, Plan, RECORD};
use crate::child::sys::{self, Errno, OpenHow};
use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering;



const EMPTY: *const libc::c_char = c"".as_ptr();

#[inline(always)]
fn slot(plan: &Plan, i: usize) -> c_int {
    match plan.slots.get(i) {
        // SAFETY: slots are written only by this single-threaded child (and read after it
        // ended by no one): no other reference to the cell exists while we read it.
        Some(c) => unsafe { *c.get() },
        None => -1,
    }
}

#[inline(always)]
fn set_slot(plan: &Plan, i: usize, fd: usize) {
    if let Some(c) = plan.slots.get(i) {
        // SAFETY: as in `slot`: this child is the only one to touch the cell.
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
        // SAFETY: off < RECORD, so the pointer stays inside `rec`.
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
    // Whether the next component is known to be missing: the whole path is (checked above),
    // and so is everything under a directory this child just created.
    let mut missing = n == 1;
    let mut i = 0;
    while i < n {
        // SAFETY: the caller's contract: both arrays have n entries (plan arenas), i < n.
        let (prefix, name) = unsafe { (*prefixes.add(i), *names.add(i)) };
        let found = if missing || i + 1 == n { Err(Errno(libc::ENOENT)) } else { open_in_root(root, prefix) };
        let fd = match found {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT)) => {
                // What this child creates it opens from `parent` by its one name, following no
                // symlink (a swap after the creation fails closed); what already exists (EEXIST:
                // created meanwhile) is opened from the root like the rest.
                let created = if i + 1 == n && leaf == Leaf::File {
                    // O_EXCL: the fd is the file this call created (kept: the mount's target).
                    sys::openat(parent, name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644).map(|fd| fd as c_int)
                } else {
                    sys::mkdirat(parent, name, 0o755).and_then(|_| {
                        let how = OpenHow { flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64, mode: 0, resolve: sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS };
                        sys::openat2(parent, name, &how).map(|fd| fd as c_int)
                    })
                };
                missing = created.is_ok();
                match created.or_else(|e| if e == Errno(libc::EEXIST) { open_in_root(root, prefix) } else { Err(e) }) {
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
    // An access-time mode replaces the current one (MOUNT_ATTR__ATIME must be cleared with it).
    let clr = if set & 0x30 != 0 { 0x70 } else { 0 };
    let attr = sys::MountAttr { attr_set: set, attr_clr: clr, propagation: 0, userns_fd: 0 };
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
    // SAFETY: `suffix` is a NUL-terminated C string of the plan: reading up to its NUL stays in it.
    while unsafe { *s } != 0 {
        len += 1;
        // SAFETY: not past the NUL just checked.
        s = unsafe { s.add(1) };
    }
    if prefix.len() + nd + 1 + len + 1 > PATH_BUF {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let mut o = 0usize;
    for &b in prefix.iter().chain(digits[..nd].iter()) {
        // SAFETY: the length check above keeps every o below PATH_BUF, the buffer's size.
        unsafe { *buf.add(o) = b };
        o += 1;
    }
    // SAFETY: as above (o < PATH_BUF).
    unsafe { *buf.add(o) = b'/' };
    o += 1;
    let mut j = 0usize;
    while j < len {
        // SAFETY: o < PATH_BUF as above; j < len, inside the suffix string.
        unsafe { *buf.add(o) = *(suffix as *const u8).add(j) };
        o += 1;
        j += 1;
    }
    // SAFETY: o < PATH_BUF as above (room for the NUL was counted).
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

/// Adds a `prohibit` route to 169.254.0.0/16 in the current network namespace: one netlink
/// RTM_NEWROUTE request, acknowledged.
fn block_link_local() -> Result<(), Errno> {
    let fd = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)? as c_int;
    // nlmsghdr (16 bytes), rtmsg (12), one rtattr RTA_DST (4 + 4).
    let mut msg = [0u8; 36];
    msg[0..4].copy_from_slice(&36u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[16] = libc::AF_INET as u8; // rtm_family
    msg[17] = 16; // rtm_dst_len
    msg[20] = libc::RT_TABLE_MAIN;
    msg[21] = libc::RTPROT_BOOT;
    msg[22] = libc::RT_SCOPE_UNIVERSE;
    msg[23] = libc::RTN_PROHIBIT;
    msg[28..30].copy_from_slice(&8u16.to_ne_bytes());
    msg[30..32].copy_from_slice(&libc::RTA_DST.to_ne_bytes());
    msg[32..36].copy_from_slice(&[169, 254, 0, 0]);
    let r = sys::write(fd, msg.as_ptr(), msg.len()).and_then(|_| {
        // The acknowledgement: nlmsghdr of type NLMSG_ERROR, then the (negative) errno.
        let mut ack = [0u8; 64];
        let n = sys::read(fd, ack.as_mut_ptr(), ack.len())?;
        if n < 20 {
            return Err(Errno(libc::EPROTO));
        }
        match i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]) {
            0 => Ok(0),
            e => Err(Errno(-e)),
        }
    });
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

/// A message of the one buffer `iov` with the control buffer `control` (for SCM_RIGHTS).
fn byte_msg(iov: &mut libc::iovec, control: &mut [u64]) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is a valid (empty) value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = iov;
    // The field types differ between C libraries (size_t in glibc, int or socklen_t in musl).
    msg.msg_iovlen = 1 as _;
    msg.msg_control = control.as_mut_ptr() as *mut c_void;
    msg.msg_controllen = core::mem::size_of_val(control) as _;
    msg
}

/// The most cgroup `tasks` files the host may send (one per v1 hierarchy; the kernel has 14
/// v1 controllers).
const MAX_CGROUP_FDS: usize = 16;

/// Receives the job's cgroup v1 `tasks` files from the host (one message: a byte and their fds)
/// and joins each by writing "0" (this thread: no global lock; the kernel checks the opener's
/// credentials, the host's, so this works after the id switch and the pivot too).
fn recv_cgroups(sock: c_int) -> Result<(), Errno> {
    let hdr_len = core::mem::size_of::<libc::cmsghdr>();
    // A cmsghdr (16 bytes) and room for MAX_CGROUP_FDS ints, 8-byte aligned.
    let mut cbuf = [0u64; 2 + MAX_CGROUP_FDS / 2];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr() as *mut c_void, iov_len: 1 };
    let mut msg = byte_msg(&mut iov, &mut cbuf);
    loop {
        match sys::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) {
            Ok(0) => sys::exit(0), // the host is gone: nothing to report to
            Ok(_) => break,
            Err(Errno(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
    // The fds the kernel installed (none unless the one control message is SCM_RIGHTS).
    let c = cbuf.as_ptr() as *const libc::cmsghdr;
    // (`as usize`: the two lengths are size_t in glibc, u32 in musl.)
    #[allow(clippy::unnecessary_cast)]
    // SAFETY: `cbuf` is aligned for a cmsghdr and at least one long; the kernel wrote the header
    // if `msg_controllen` says so (else it is all zeros, read as no fds).
    let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize) };
    #[allow(clippy::unnecessary_cast)]
    let n = if msg.msg_controllen as usize >= hdr_len && level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
        (len.saturating_sub(hdr_len) / core::mem::size_of::<c_int>()).min(MAX_CGROUP_FDS)
    } else {
        0
    };
    let mut result = if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        Err(Errno(libc::EMSGSIZE))
    } else if n == 0 || byte[0] != b'C' {
        Err(Errno(libc::EPROTO))
    } else {
        Ok(())
    };
    for i in 0..n {
        // SAFETY: i < n, and n ints follow the header within `cbuf` (n is capped by its room).
        let fd = unsafe { *((c as *const u8).add(hdr_len) as *const c_int).add(i) };
        if result.is_ok() {
            result = sys::write(fd, b"0".as_ptr(), 1).map(|_| ());
        }
        let _ = sys::close(fd);
    }
    result
}

fn mask(plan: &Plan, root: c_int, path: *const libc::c_char, devnull: *const libc::c_char, dirs: usize, files: usize) -> Result<(), Errno> {
    let target = match open_in_root(root, path) {
        Ok(fd) => fd,
        Err(Errno(libc::ENOENT)) => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = (|| {
        sys::fstatat(target, EMPTY, &mut st, sys::AT_EMPTY_PATH)?;
        let dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        let kept = if dir { dirs } else { files };
        let first = slot(plan, kept);
        let m = if first >= 0 {
            // A clone of the first mask of this kind, attached by now: same superblock, same
            // read-only, nosuid, nodev/noexec flags (a clone keeps its source's mount flags).
            sys::open_tree(first, EMPTY, sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | sys::AT_EMPTY_PATH)? as c_int
        } else if dir {
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
        if r.is_ok() && first < 0 {
            // Attached now (older kernels refuse to clone a detached mount): the source of
            // the next masks of this kind.
            set_slot(plan, kept, m as usize);
        } else {
            let _ = sys::close(m);
        }
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

/// Places the descriptors init needs (`moves`) without one clobbering another, closes every
/// other one, and executes init from `memfd` (its fd after the moves).
fn exec_init(plan: &Plan, memfd: c_int, moves: &[FdMove], argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> Result<(), Errno> {
    let mut tmp = [0 as c_int; 80];
    if moves.len() > tmp.len() {
        return Err(Errno(libc::EMFILE));
    }
    // Above every source and every target: dup there first, then onto the targets.
    let mut high: c_int = 0;
    for m in moves {
        let src = match m.src {
            FdSrc::Fd(fd) => fd,
            FdSrc::Slot(s) => slot(plan, s),
        };
        high = high.max(src).max(m.dst);
    }
    high += 1;
    let err = plan.err_fd.load(Ordering::Relaxed);
    let e = sys::fcntl(err, libc::F_DUPFD_CLOEXEC, high as usize)? as c_int;
    plan.err_fd.store(e, Ordering::Relaxed);
    let mut i = 0;
    while i < moves.len() {
        let src = match moves[i].src {
            FdSrc::Fd(fd) => fd,
            FdSrc::Slot(s) => slot(plan, s),
        };
        tmp[i] = sys::fcntl(src, libc::F_DUPFD_CLOEXEC, high as usize)? as c_int;
        i += 1;
    }
    let mut last: c_int = 2;
    i = 0;
    while i < moves.len() {
        sys::dup3(tmp[i], moves[i].dst, if moves[i].cloexec { libc::O_CLOEXEC } else { 0 })?;
        last = last.max(moves[i].dst);
        i += 1;
    }
    // Our own copy of the error pipe stays (close-on-exec) until the exec, for a failure there.
    let _ = sys::close_range(0, 2, 0);
    if e > last + 1 {
        sys::close_range((last + 1) as u32, (e - 1) as u32, 0)?;
    }
    sys::close_range((e + 1) as u32, sys::CLOSE_RANGE_MAX, 0)?;
    sys::execveat(memfd, EMPTY, argv, envp, sys::AT_EMPTY_PATH)?;
    Ok(())
}

/// Opens a pty in the sandbox's own devpts, sets its size, sends the master to the host over
/// `sock` (one byte 'P' carrying the fd), and returns the slave.
fn open_pty(sock: c_int, winsize: &[u16; 4]) -> Result<c_int, Errno> {
    let m = sys::openat(libc::AT_FDCWD, c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC, 0)? as c_int;
    let r = (|| {
        let mut unlock: c_int = 0;
        sys::ioctl(m, libc::TIOCSPTLCK as usize, &mut unlock as *mut c_int as *mut c_void)?;
        if winsize[0] != 0 || winsize[1] != 0 {
            let mut ws = *winsize;
            sys::ioctl(m, libc::TIOCSWINSZ as usize, ws.as_mut_ptr() as *mut c_void)?;
        }
        let slave = sys::ioctl(m, libc::TIOCGPTPEER as usize, (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as usize as *mut c_void)? as c_int;
        // struct cmsghdr (len, level, type) followed by one int, padded to 8 bytes.
        let mut cbuf = [0u64; 3];
        let hdr_len = core::mem::size_of::<libc::cmsghdr>();
        let c = cbuf.as_mut_ptr() as *mut libc::cmsghdr;
        // SAFETY: `cbuf` is 24 aligned bytes, room for a cmsghdr (16) and one int after it.
        unsafe {
            (*c).cmsg_len = (hdr_len + core::mem::size_of::<c_int>()) as _;
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            *((c as *mut u8).add(hdr_len) as *mut c_int) = m;
        }
        let mut byte = [b'P'];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr() as *mut c_void, iov_len: 1 };
        let msg = byte_msg(&mut iov, &mut cbuf);
        loop {
            match sys::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) {
                Err(Errno(libc::EINTR)) => {}
                Err(e) => {
                    let _ = sys::close(slave);
                    return Err(e);
                }
                Ok(_) => return Ok(slave),
            }
        }
    })();
    let _ = sys::close(m);
    r
}

/// Opens a host path without following symlinks and clones its mount tree, after checking that
/// it is still the inode the parent resolved.
fn open_tree_checked(path: *const libc::c_char, flags: u32, dev: u64, ino: u64) -> Result<c_int, Errno> {
    let fd = open_path_checked(path, dev, ino)?;
    let r = sys::open_tree(fd, EMPTY, flags | sys::AT_EMPTY_PATH).map(|t| t as c_int);
    let _ = sys::close(fd);
    r
}

/// An O_PATH fd of a host path opened without following symlinks, checked to be the inode
/// (dev, ino) the parent resolved (ESTALE if not).
fn open_path_checked(path: *const libc::c_char, dev: u64, ino: u64) -> Result<c_int, Errno> {
    let how = OpenHow { flags: (libc::O_PATH | libc::O_CLOEXEC) as u64, mode: 0, resolve: sys::RESOLVE_NO_SYMLINKS };
    let fd = sys::openat2(libc::AT_FDCWD, path, &how)? as c_int;
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = sys::fstatat(fd, EMPTY, &mut st, sys::AT_EMPTY_PATH);
    if r.is_err() || st.st_dev != dev || st.st_ino != ino {
        let _ = sys::close(fd);
        return Err(r.err().unwrap_or(Errno(libc::ESTALE)));
    }
    Ok(fd)
}

/// Entry point of the setup child. `arg` is the `*const Plan`.
pub(crate) unsafe extern "C" fn setup_main(arg: *mut c_void) -> c_int {
    // SAFETY: the spawning thread passes a pointer to a Plan it keeps alive (and does not touch)
    // until this child has exec'd init or exited.
    let plan = unsafe { &*(arg as *const Plan) };
    reset_signal_handlers();
    let mut index = 0usize;
    for op in plan.ops.iter() {
        // SAFETY: every pointer in an op points into the plan's arenas (see plan.rs).
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
        // SAFETY: keep/n describe a boxed slice of the plan.
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
        Op::RecvCgroups { sock } => recv_cgroups(sock),
        Op::SetIds { uid, gid, clear_groups } => {
            if clear_groups {
                sys::setgroups(0, core::ptr::null())?;
            }
            sys::setresgid(gid, gid, gid)?;
            sys::setresuid(uid, uid, uid).map(|_| ())
        }
        Op::SetSid => sys::setsid().map(|_| ()),
        Op::Hostname { name, len } => sys::sethostname(name, len).map(|_| ()),
        Op::LoopbackUp => loopback_up(),
        Op::BlockLinkLocal => block_link_local(),
        Op::Propagate { path, flags } => sys::mount(core::ptr::null(), path, core::ptr::null(), flags, core::ptr::null()).map(|_| ()),
        Op::MakeSlotPrivate { slot: s } => {
            let attr = sys::MountAttr { attr_set: 0, attr_clr: 0, propagation: libc::MS_PRIVATE as u64, userns_fd: 0 };
            sys::mount_setattr(slot(plan, s), EMPTY, sys::AT_EMPTY_PATH, &attr).map(|_| ())
        }
        Op::MakePrivate => sys::mount(core::ptr::null(), c"/".as_ptr(), core::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, core::ptr::null()).map(|_| ()),
        Op::OpenTree { path, flags, slot: s } => sys::open_tree(libc::AT_FDCWD, path, flags).map(|fd| set_slot(plan, s, fd)),
        Op::OpenTreeChecked { path, flags, dev, ino, slot: s } => open_tree_checked(path, flags, dev, ino).map(|fd| set_slot(plan, s, fd as usize)),
        Op::OpenPathChecked { path, dev, ino, slot: s } => open_path_checked(path, dev, ino).map(|fd| set_slot(plan, s, fd as usize)),
        Op::CloneTree { flags, slot: s } => {
            let fd = slot(plan, s);
            let t = sys::open_tree(fd, EMPTY, flags | sys::AT_EMPTY_PATH)?;
            let _ = sys::close(fd);
            set_slot(plan, s, t);
            Ok(())
        }
        Op::UseFd { fd, slot: s } => {
            set_slot(plan, s, fd as usize);
            Ok(())
        }
        Op::Move { from, to } => {
            set_slot(plan, to, slot(plan, from) as usize);
            set_slot(plan, from, usize::MAX);
            Ok(())
        }
        Op::SetAttr { slot: s, set, recursive } => set_attr(slot(plan, s), set, recursive),
        Op::FsOpen { fstype, slot: s } => sys::fsopen(fstype, sys::FSOPEN_CLOEXEC).map(|fd| set_slot(plan, s, fd)),
        Op::FsString { slot: s, key, value } => sys::fsconfig(slot(plan, s), sys::FSCONFIG_SET_STRING, key, value, 0).map(|_| ()),
        Op::FsFlag { slot: s, key } => sys::fsconfig(slot(plan, s), sys::FSCONFIG_SET_FLAG, key, core::ptr::null(), 0).map(|_| ()),
        Op::FsStringFdPath { slot: s, key, dir, suffix, buf } => {
            // SAFETY: buf is a PATH_BUF buffer of the plan, suffix a C string of it.
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
            // SAFETY: prefixes/names are arrays of n C strings of the plan.
            let fd = unsafe { resolve(slot(plan, root), path, prefixes, names, n, leaf)? };
            set_slot(plan, s, fd as usize);
            Ok(())
        }
        Op::MkdirIn { dir, name, mode } => sys::mkdirat(slot(plan, dir), name, mode).map(|_| ()),
        Op::MoveInto { from, dir, name } => {
            let t = sys::openat(slot(plan, dir), name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0)? as c_int;
            let r = move_onto(slot(plan, from), t);
            let _ = sys::close(t);
            r
        }
        Op::OpenBeneath { dir, path, slot: s } => {
            let how = OpenHow { flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64, mode: 0, resolve: sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS };
            sys::openat2(slot(plan, dir), path, &how).map(|fd| set_slot(plan, s, fd))
        }
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
        Op::Mask { root, path, devnull, dirs, files } => mask(plan, slot(plan, root), path, devnull, dirs, files),
        Op::ReadOnly { root, path } => read_only(slot(plan, root), path),
        Op::Pivot { root } | Op::Chroot { root } => {
            if matches!(*op, Op::Chroot { .. }) {
                sys::fchdir(slot(plan, root))?;
                sys::chroot(c".".as_ptr())?;
                sys::chdir(c"/".as_ptr())?;
            } else {
                pivot(slot(plan, root))?;
            }
            // Every remaining slot refers to the old tree: close them all.
            for c in plan.slots.iter() {
                // SAFETY: slots are written only by this (single-threaded) child.
                let fd = unsafe { *c.get() };
                if fd >= 0 {
                    let _ = sys::close(fd);
                    // SAFETY: as in `set_slot`: only this child touches the cells.
                    unsafe { *c.get() = -1 };
                }
            }
            Ok(())
        }
        Op::Rlimit { resource, limit } => sys::prlimit(resource, &limit).map(|_| ()),
        Op::OpenPty { sock, winsize, slot: s } => open_pty(sock, &winsize).map(|fd| set_slot(plan, s, fd as usize)),
        // SAFETY: moves/n describe a boxed slice of the plan.
        Op::ExecInit { memfd, moves, n, argv, envp } => exec_init(plan, memfd, unsafe { core::slice::from_raw_parts(moves, n) }, argv, envp),
    }
}
