//! Raw Linux system calls, for the code that runs between clone and exec.
//!
//! The setup child shares the host's address space (`CLONE_VM`) and its thread pointer, so it must
//! not call into libc: libc wrappers write `errno` (a thread-local of the *host's* thread) and some
//! take locks. Everything here is a direct `syscall` instruction that returns `-errno`; nothing
//! allocates, locks, formats or panics.
#![allow(clippy::too_many_arguments, clippy::missing_safety_doc)]

use core::arch::asm;
use core::ffi::{c_char, c_int, c_void};

/// An `errno` value as returned by a raw system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type SysResult = Result<usize, Errno>;

#[inline(always)]
fn check(ret: isize) -> SysResult {
    if (-4095..0).contains(&ret) { Err(Errno((-ret) as i32)) } else { Ok(ret as usize) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall6(n: usize, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize, a6: usize) -> isize {
    let ret: isize;
    // SAFETY: one `syscall` instruction; the registers it clobbers are declared, and no stack
    // is used (nostack). What the kernel does with the arguments is the caller's contract.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a1, in("rsi") a2, in("rdx") a3,
             in("r10") a4, in("r8") a5, in("r9") a6, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall6(n: usize, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize, a6: usize) -> isize {
    let ret: isize;
    // SAFETY: as on x86_64: one `svc`, registers declared, no stack.
    unsafe {
        asm!("svc #0", in("x8") n, inlateout("x0") a1 as isize => ret, in("x1") a2, in("x2") a3,
             in("x3") a4, in("x4") a5, in("x5") a6, options(nostack));
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("cagette supports x86_64 and aarch64 Linux");

/// One raw system call. The wrappers below hand their arguments to the kernel unchanged; they are
/// used only by the setup child (`exec.rs`), which passes pointers into the plan's arenas or its
/// own stack, valid for the call (see its module docs).
macro_rules! sc {
    ($n:expr $(, $a:expr)*) => {{
        let a: [usize; 6] = {
            let v = [$($a as usize),*];
            let mut a = [0usize; 6];
            let mut i = 0;
            while i < v.len() {
                a[i] = v[i];
                i += 1;
            }
            a
        };
        // SAFETY: the `syscall` instruction itself touches no Rust-visible state but its
        // clobbered registers (declared in syscall6); what the kernel reads or writes through
        // pointer arguments is the caller's contract (live buffers of the stated sizes).
        check(unsafe { syscall6($n as usize, a[0], a[1], a[2], a[3], a[4], a[5]) })
    }};
}

use libc::{
    SYS_chdir, SYS_close, SYS_close_range, SYS_dup3,
    SYS_execveat, SYS_exit, SYS_chroot, SYS_fchdir, SYS_fcntl, SYS_fsconfig, SYS_fsmount, SYS_fsopen,
    SYS_ioctl, SYS_mkdirat, SYS_mount, SYS_mount_setattr, SYS_move_mount, SYS_newfstatat,
    SYS_open_tree, SYS_openat, SYS_openat2, SYS_pivot_root, SYS_prlimit64, SYS_read,
    SYS_rt_sigaction, SYS_sethostname, SYS_setgroups, SYS_setns,
    SYS_setresgid, SYS_setresuid, SYS_socket, SYS_symlinkat, SYS_umount2, SYS_unshare,
    SYS_write,
};

// Constants of the new mount API and openat2 (uapi/linux/mount.h, openat2.h), spelled out so the
// crate does not depend on a libc version that has them.
pub const OPEN_TREE_CLONE: u32 = 1;
pub const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub const AT_RECURSIVE: u32 = 0x8000;
pub const AT_EMPTY_PATH: u32 = 0x1000;
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
pub const FSOPEN_CLOEXEC: u32 = 1;
pub const FSMOUNT_CLOEXEC: u32 = 1;
pub const FSCONFIG_SET_FLAG: u32 = 0;
pub const FSCONFIG_SET_STRING: u32 = 1;
pub const FSCONFIG_CMD_CREATE: u32 = 6;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;
pub const CLONE_PIDFD: u64 = 0x1000;
pub const CLONE_NEWTIME: u64 = 0x80;
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
pub const CLOSE_RANGE_MAX: u32 = u32::MAX;

#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

#[repr(C)]
pub struct OpenHow {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// Entry point of a child created by [`clone3_run`] or [`clone_run`]; its return value becomes the
/// child's exit status.
pub type ChildFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// `clone3(args)`, running `f(arg)` on the child's stack (`args.stack`) and exiting with its
/// result. Returns the child's pid in the parent.
///
/// # Safety
/// `args` must describe a valid, suitably aligned stack that outlives the child's use of it, and
/// `f` must be safe to run there (no unwinding, no libc).
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone3_run(args: *mut CloneArgs, f: ChildFn, arg: *mut c_void) -> SysResult {
    let ret: isize;
    // SAFETY: the caller's contract (see `# Safety`): the child runs `f` on its own stack and
    // exits without returning here; the parent gets the pid in rax.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args, in("rsi") core::mem::size_of::<CloneArgs>(),
            in("r12") f, in("r13") arg,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    check(ret)
}

/// Legacy `clone(flags, stack_top, parent_tid)`, the fallback where `clone3` is refused (some
/// seccomp filters answer ENOSYS). With `CLONE_PIDFD` the pidfd is stored at `parent_tid`.
///
/// # Safety
/// As for [`clone3_run`]; `stack_top` must be 16-byte aligned.
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone_run(flags: u64, stack_top: *mut u8, parent_tid: *mut c_int, f: ChildFn, arg: *mut c_void) -> SysResult {
    let ret: isize;
    // SAFETY: the caller's contract (see `# Safety`): the child runs `f` on its own stack and
    // exits without returning here; the parent gets the pid in rax.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone as isize => ret,
            in("rdi") flags, in("rsi") stack_top, in("rdx") parent_tid, in("r10") 0usize, in("r8") 0usize,
            in("r12") f, in("r13") arg,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    check(ret)
}

#[cfg(target_arch = "aarch64")]
pub unsafe fn clone3_run(args: *mut CloneArgs, f: ChildFn, arg: *mut c_void) -> SysResult {
    let ret: isize;
    // SAFETY: as on x86_64 (see `# Safety`).
    unsafe {
        asm!(
            "svc #0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x21",
            "blr x20",
            "mov x8, #93",
            "svc #0",
            "brk #0",
            "2:",
            in("x8") libc::SYS_clone3 as usize,
            inlateout("x0") args as isize => ret, in("x1") core::mem::size_of::<CloneArgs>(),
            in("x20") f, in("x21") arg,
            options(nostack),
        );
    }
    check(ret)
}

#[cfg(target_arch = "aarch64")]
pub unsafe fn clone_run(flags: u64, stack_top: *mut u8, parent_tid: *mut c_int, f: ChildFn, arg: *mut c_void) -> SysResult {
    let ret: isize;
    // SAFETY: as on x86_64 (see `# Safety`).
    unsafe {
        asm!(
            "svc #0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x21",
            "blr x20",
            "mov x8, #93",
            "svc #0",
            "brk #0",
            "2:",
            in("x8") libc::SYS_clone as usize,
            inlateout("x0") flags as isize => ret, in("x1") stack_top, in("x2") parent_tid,
            in("x3") 0usize, in("x4") 0usize,
            in("x20") f, in("x21") arg,
            options(nostack),
        );
    }
    check(ret)
}

pub fn read(fd: c_int, buf: *mut u8, len: usize) -> SysResult { sc!(SYS_read, fd, buf, len) }
pub fn write(fd: c_int, buf: *const u8, len: usize) -> SysResult { sc!(SYS_write, fd, buf, len) }
pub fn close(fd: c_int) -> SysResult { sc!(SYS_close, fd) }
pub fn dup3(old: c_int, new: c_int, flags: c_int) -> SysResult { sc!(SYS_dup3, old, new, flags) }
pub fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> SysResult { sc!(SYS_fcntl, fd, cmd, arg) }
pub fn close_range(first: u32, last: u32, flags: u32) -> SysResult { sc!(SYS_close_range, first, last, flags) }
pub fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: u32) -> SysResult {
    sc!(SYS_openat, dirfd, path, flags, mode)
}
pub fn openat2(dirfd: c_int, path: *const c_char, how: *const OpenHow) -> SysResult {
    sc!(SYS_openat2, dirfd, path, how, core::mem::size_of::<OpenHow>())
}
pub fn open_tree(dirfd: c_int, path: *const c_char, flags: u32) -> SysResult { sc!(SYS_open_tree, dirfd, path, flags) }
pub fn move_mount(from_dfd: c_int, from: *const c_char, to_dfd: c_int, to: *const c_char, flags: u32) -> SysResult {
    sc!(SYS_move_mount, from_dfd, from, to_dfd, to, flags)
}
pub fn mount_setattr(dirfd: c_int, path: *const c_char, flags: u32, attr: *const MountAttr) -> SysResult {
    sc!(SYS_mount_setattr, dirfd, path, flags, attr, core::mem::size_of::<MountAttr>())
}
pub fn fsopen(fstype: *const c_char, flags: u32) -> SysResult { sc!(SYS_fsopen, fstype, flags) }
pub fn fsconfig(fd: c_int, cmd: u32, key: *const c_char, value: *const c_char, aux: c_int) -> SysResult {
    sc!(SYS_fsconfig, fd, cmd, key, value, aux)
}
pub fn fsmount(fd: c_int, flags: u32, attrs: u64) -> SysResult { sc!(SYS_fsmount, fd, flags, attrs) }
pub fn mount(src: *const c_char, target: *const c_char, fstype: *const c_char, flags: u64, data: *const c_void) -> SysResult {
    sc!(SYS_mount, src, target, fstype, flags, data)
}
pub fn umount2(target: *const c_char, flags: c_int) -> SysResult { sc!(SYS_umount2, target, flags) }
pub fn pivot_root(new_root: *const c_char, put_old: *const c_char) -> SysResult { sc!(SYS_pivot_root, new_root, put_old) }
pub fn chdir(path: *const c_char) -> SysResult { sc!(SYS_chdir, path) }
pub fn fchdir(fd: c_int) -> SysResult { sc!(SYS_fchdir, fd) }
pub fn chroot(path: *const c_char) -> SysResult { sc!(SYS_chroot, path) }
pub fn mkdirat(dirfd: c_int, path: *const c_char, mode: u32) -> SysResult { sc!(SYS_mkdirat, dirfd, path, mode) }
pub fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> SysResult { sc!(SYS_symlinkat, target, dirfd, path) }
pub fn fstatat(dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: u32) -> SysResult {
    sc!(SYS_newfstatat, dirfd, path, st, flags)
}
pub fn sethostname(name: *const u8, len: usize) -> SysResult { sc!(SYS_sethostname, name, len) }
pub fn socket(domain: c_int, ty: c_int, proto: c_int) -> SysResult { sc!(SYS_socket, domain, ty, proto) }
pub fn ioctl(fd: c_int, req: usize, arg: *mut c_void) -> SysResult { sc!(SYS_ioctl, fd, req, arg) }
pub fn setns(fd: c_int, nstype: c_int) -> SysResult { sc!(SYS_setns, fd, nstype) }
pub fn unshare(flags: c_int) -> SysResult { sc!(SYS_unshare, flags) }
pub fn setresuid(r: u32, e: u32, s: u32) -> SysResult { sc!(SYS_setresuid, r, e, s) }
pub fn setresgid(r: u32, e: u32, s: u32) -> SysResult { sc!(SYS_setresgid, r, e, s) }
pub fn setgroups(n: usize, list: *const u32) -> SysResult { sc!(SYS_setgroups, n, list) }
pub fn prlimit(resource: c_int, new: *const libc::rlimit64) -> SysResult {
    sc!(SYS_prlimit64, 0, resource, new, 0)
}
pub fn execveat(fd: c_int, path: *const c_char, argv: *const *const c_char, envp: *const *const c_char, flags: u32) -> SysResult {
    sc!(SYS_execveat, fd, path, argv, envp, flags)
}
pub fn rt_sigaction(sig: c_int, act: *const c_void, old: *mut c_void) -> SysResult {
    sc!(SYS_rt_sigaction, sig, act, old, 8)
}

pub fn setsid() -> SysResult { sc!(libc::SYS_setsid) }
pub fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> SysResult { sc!(libc::SYS_sendmsg, fd, msg, flags) }
pub fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> SysResult { sc!(libc::SYS_recvmsg, fd, msg, flags) }

/// Ends the calling task (not the thread group: the setup child is its own process).
pub fn exit(code: c_int) -> ! {
    loop {
        // SAFETY: exit takes no pointer; it does not return.
        unsafe { syscall6(SYS_exit as usize, code as usize, 0, 0, 0, 0, 0) };
    }
}
