//! Host paths a spec names (the rootfs, bind sources, overlay directories, an image's layers),
//! resolved once, in the parent, before the sandbox exists.
//!
//! The rule: a host path is never followed through a symlink (openat2 `RESOLVE_NO_SYMLINKS`),
//! unless the spec says `follow_symlinks`, in which case it is canonicalized once here. A sandbox
//! that can write into a directory (a writable bind) could otherwise plant a symlink there and
//! redirect a later job's bind of a path below it to anywhere on the host. The parent records the
//! inode it resolved (device, inode number); the setup child resolves the same path again without
//! following symlinks and refuses a different inode (a swap in between).
//!
//! As root with an unprivileged id range, the parent also makes the mount itself (a detached
//! `open_tree` clone: the setup child, as the range's uid 0, may not be allowed to reach the path)
//! and, once the sandbox's user namespace exists, maps its ids onto the sandbox's
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`): files of host uid 0 are the sandbox's root's, files the
//! sandbox creates there belong to the host's uid 0, i.e. the caller.

use crate::error::{SetupFailure, Step};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::fstat;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// A host path resolved by the parent.
#[derive(Debug)]
pub(crate) struct HostPath {
    /// Absolute, with no symlink on the way (canonical when symlinks were followed).
    pub path: PathBuf,
    /// The inode the parent resolved, for the child's check.
    pub dev: u64,
    pub ino: u64,
    pub is_dir: bool,
    /// An O_PATH fd of it.
    opath: OwnedFd,
    /// A detached mount of it, made by the parent (id-mapped jobs of a root caller).
    pub mount: Option<OwnedFd>,
}

fn absolute(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) }
}

/// The first component of `p` that is a symlink, with its target.
fn first_symlink(p: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut cur = PathBuf::new();
    for c in p.components() {
        cur.push(c);
        if let Ok(md) = std::fs::symlink_metadata(&cur)
            && md.file_type().is_symlink() {
                return Some((cur.clone(), std::fs::read_link(&cur).unwrap_or_default()));
            }
    }
    None
}

/// Resolves `p` (relative to `cwd`) once. `what` names it in errors ("bind source for /src").
pub(crate) fn resolve(p: &Path, cwd: &Path, follow: bool, step: Step, what: &str) -> Result<HostPath, SetupFailure> {
    if p.as_os_str().is_empty() {
        return Err(SetupFailure::new(step, Some(libc::EINVAL), None, &format!("{what} is empty")).hint("give a host path (relative paths start from the current directory)"));
    }
    let mut abs = absolute(p, cwd);
    if follow {
        abs = std::fs::canonicalize(&abs).map_err(|e| {
            SetupFailure::new(step, e.raw_os_error(), Some(abs.clone()), &format!("{what} {}", abs.display())).hint("the path must exist on the host")
        })?;
    }
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let opath = openat2(nix::fcntl::AT_FDCWD, &abs, how).map_err(|e| {
        let errno = e as i32;
        if errno == libc::ELOOP
            && let Some((link, target)) = first_symlink(&abs) {
                let real = std::fs::canonicalize(&abs).map(|r| format!("give the real path {}, or ", r.display())).unwrap_or_default();
                return SetupFailure::new(step, Some(errno), Some(abs.clone()), &format!("{what} {}: {} is a symlink (to {}), and host paths are not followed through symlinks", abs.display(), link.display(), target.display()))
                    .hint(format!("a sandbox that can write there could have planted it: {real}set follow_symlinks (--follow-symlinks) if the link is yours"));
            }
        SetupFailure::new(step, Some(errno), Some(abs.clone()), &format!("{what} {}", abs.display())).hint("the path must exist on the host")
    })?;
    let st = fstat(&opath).map_err(|e| SetupFailure::new(step, Some(e as i32), Some(abs.clone()), &format!("{what} {}: stat", abs.display())))?;
    // No symlink was crossed, so ".." means the parent directory: the path can be normalized
    // by its text alone, into the one the child resolves again.
    let mut norm = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                norm.pop();
            }
            std::path::Component::CurDir => {}
            c => norm.push(c),
        }
    }
    Ok(HostPath {
        path: norm,
        dev: st.st_dev,
        ino: st.st_ino,
        is_dir: (st.st_mode & libc::S_IFMT) == libc::S_IFDIR,
        opath,
        mount: None,
    })
}

impl HostPath {
    /// Whether this is the host's root directory (by inode, whatever the path says).
    pub fn is_host_root(&self) -> bool {
        std::fs::metadata("/").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.dev() == self.dev && m.ino() == self.ino
        })
    }

    /// Makes the parent's detached mount of this path (a clone of its mount, and of those below
    /// it when `recursive`).
    pub fn make_mount(&mut self, recursive: bool, step: Step, what: &str) -> Result<(), SetupFailure> {
        use rustix::mount::OpenTreeFlags;
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        let fd = rustix::mount::open_tree(self.opath.as_fd(), "", flags)
            .map_err(|e| SetupFailure::new(step, Some(e.raw_os_error()), Some(self.path.clone()), &format!("{what} {}: clone its mount", self.path.display())))?;
        self.mount = Some(fd);
        Ok(())
    }

    /// The raw fd of the parent's detached mount, if it made one.
    pub fn mount_fd(&self) -> Option<RawFd> {
        self.mount.as_ref().map(AsRawFd::as_raw_fd)
    }
}

/// Maps the ids of a detached mount through the user namespace `userns` (the sandbox's): files
/// owned by host uid N appear as uid N of the sandbox. Returns false (and leaves the mount as it
/// is) when its file system cannot be id-mapped: the sandbox then sees the host's ids, which it
/// has no rights over (more restrictive, never less). A recursive mapping that fails on one
/// submount (procfs and sysfs cannot be mapped) maps the top mount only.
pub(crate) fn idmap(mount: &OwnedFd, userns: &OwnedFd, recursive: bool) -> Result<bool, std::io::Error> {
    let attempt = |rec: bool| mount_setattr_idmap(mount, userns, rec);
    match attempt(recursive) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            if recursive && attempt(false).is_ok() {
                return Ok(true);
            }
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], {MOUNT_ATTR_IDMAP, userns_fd})`, which
/// neither nix 0.32 nor rustix 1.1 wraps.
fn mount_setattr_idmap(mount: &OwnedFd, userns: &OwnedFd, recursive: bool) -> std::io::Result<()> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is an empty C string and `attr` a struct mount_attr of the size passed,
    // both live for the call; the kernel only reads them. The fds are open (borrowed).
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, mount.as_raw_fd(), c"".as_ptr(), flags, &attr as *const MountAttr, std::mem::size_of::<MountAttr>()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
