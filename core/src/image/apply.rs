//! Applying one layer (a tar stream) to a directory, safely.
//!
//! - Every entry's parent is resolved inside the root with `openat2(RESOLVE_IN_ROOT)`: `..`,
//!   absolute symlinks (Debian's `/var/run -> /run`) and `/` stay inside the root; missing parents
//!   are created the same way. No cache of resolved parents: each entry resolves afresh, so an
//!   entry that swaps a directory for a symlink cannot stale anything (containerd
//!   CVE-2025-47290).
//! - The leaf is never followed: files are created with `O_EXCL|O_NOFOLLOW` after removing
//!   whatever was there (never written through an existing inode); metadata calls use
//!   `AT_SYMLINK_NOFOLLOW` or fds.
//! - Names with `..` components are refused; absolute names are taken relative to the root.
//! - Whiteouts and opaque directories apply only to lower layers, whatever the entry order: in
//!   `Flatten` mode they delete lower content not written by this layer; in `Overlay` mode they
//!   become overlayfs whiteouts (char 0:0) and `trusted.overlay.opaque`.
//! - Ownership as is (root), modes after ownership (setuid survives), mtimes; directories'
//!   metadata last, deepest first.
//! - Bounded: entries, path length, total bytes (checked by the caller's counting reader too).

use super::{ImageError, Limits};
use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How whiteouts are represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One layer per directory, stacked later with overlayfs.
    Overlay,
    /// Layers applied one after the other into one directory, reading layers the store
    /// unpacked in `Overlay` form: whiteouts delete (a char device 0:0 is a whiteout).
    Flatten,
}

/// What applying a layer did that the caller may want to know.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub entries: u64,
    /// Device nodes skipped (not root).
    pub skipped_devices: Vec<PathBuf>,
}

fn cstr(p: &Path) -> Result<CString, ImageError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| ImageError::unsafe_entry(p, "a NUL byte in the name"))
}

fn os_err(what: String, path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |e| ImageError::Io { context: format!("{what} {}", path.display()), source: e }
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2 inside `root`, retrying the EAGAIN the kernel answers when a ".." raced with a rename.
fn open_in_root(root: RawFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(if rel.as_os_str().is_empty() { ".".as_bytes() } else { rel.as_os_str().as_bytes() }).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    for _ in 0..128 {
        let r = unsafe { libc::syscall(libc::SYS_openat2, root, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
        if r >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = last_err();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// The entry's path as normal components (absolute names are relative to the root); `..` is
/// refused.
pub(crate) fn clean(path: &Path, limits: &Limits) -> Result<PathBuf, ImageError> {
    // (also used for paths inside a docker archive's manifest.json)
    if path.as_os_str().len() > limits.max_path {
        return Err(ImageError::limit(format!("a path of {} bytes (limit {})", path.as_os_str().len(), limits.max_path)));
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                if n.len() > 255 {
                    return Err(ImageError::unsafe_entry(path, "a name longer than 255 bytes"));
                }
                out.push(n)
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(ImageError::unsafe_entry(path, "a '..' component")),
            Component::Prefix(_) => return Err(ImageError::unsafe_entry(path, "a path prefix")),
        }
    }
    Ok(out)
}

/// Opens (creating missing directories, 0755) the directory `rel` inside `root`.
fn parent_dir(root: RawFd, rel: &Path) -> Result<OwnedFd, ImageError> {
    match open_in_root(root, rel, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(ImageError::Io { context: format!("resolve {} inside the root", rel.display()), source: e }),
    }
    let mut cur = PathBuf::new();
    for c in rel.components() {
        let parent = open_in_root(root, &cur, libc::O_PATH | libc::O_DIRECTORY).map_err(os_err("resolve".into(), &cur))?;
        cur.push(c);
        let name = cstr(Path::new(c.as_os_str()))?;
        if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
            let e = last_err();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(ImageError::Io { context: format!("create directory {}", cur.display()), source: e });
            }
        }
    }
    open_in_root(root, rel, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| ImageError::Io { context: format!("resolve {} inside the root", rel.display()), source: e })
}

fn lstat_at(dir: RawFd, name: &CString) -> Option<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0).then_some(st)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dir` (recursively for a directory), never following symlinks.
fn remove_at(dir: RawFd, name: &CString) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name) else { return Ok(()) };
    if !is_dir(&st) {
        return if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } == 0 { Ok(()) } else { Err(last_err()) };
    }
    let fd = unsafe { libc::openat(dir, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_err());
    }
    let sub = unsafe { OwnedFd::from_raw_fd(fd) };
    for child in list_dir(sub.as_raw_fd())? {
        remove_at(sub.as_raw_fd(), &child)?;
    }
    if unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) } == 0 { Ok(()) } else { Err(last_err()) }
}

/// The names in a directory fd (not . and ..).
fn list_dir(fd: RawFd) -> io::Result<Vec<CString>> {
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(last_err());
    }
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        unsafe { libc::close(dup) };
        return Err(last_err());
    }
    let mut out = Vec::new();
    loop {
        let e = unsafe { libc::readdir64(d) };
        if e.is_null() {
            break;
        }
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    unsafe { libc::closedir(d) };
    Ok(out)
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn set_owner_mode_time(dir: RawFd, name: &CString, uid: u32, gid: u32, mode: Option<u32>, mtime: i64, as_root: bool, path: &Path) -> Result<(), ImageError> {
    if as_root && unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(ImageError::Io { context: format!("chown {}", path.display()), source: last_err() });
    }
    // Mode after ownership, so that setuid/setgid bits survive.
    if let Some(m) = mode {
        if unsafe { libc::fchmodat(dir, name.as_ptr(), m & 0o7777, 0) } != 0 {
            return Err(ImageError::Io { context: format!("chmod {}", path.display()), source: last_err() });
        }
    }
    let ts = [libc::timespec { tv_sec: mtime, tv_nsec: 0 }, libc::timespec { tv_sec: mtime, tv_nsec: 0 }];
    unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    Ok(())
}

/// Applies one layer's tar stream to `root` (an open directory).
pub(crate) fn apply<R: Read>(root: &Path, reader: R, mode: Mode, limits: &Limits) -> Result<Applied, ImageError> {
    let root_fd: OwnedFd = std::fs::File::open(root).map_err(os_err("open the unpack directory".into(), root))?.into();
    let root_fd = root_fd.as_raw_fd();
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut archive = tar::Archive::new(reader);
    let mut applied = Applied::default();
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut dirs: Vec<DirMeta> = Vec::new();
    let entries = archive.entries().map_err(|e| ImageError::Tar(format!("read the layer: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::Tar(format!("read a tar entry: {e}")))?;
        applied.entries += 1;
        if applied.entries > limits.max_entries {
            return Err(ImageError::limit(format!("more than {} entries in a layer", limits.max_entries)));
        }
        let raw_path = entry.path().map_err(|e| ImageError::Tar(format!("read an entry's name: {e}")))?.into_owned();
        let path = clean(&raw_path, limits)?;
        let Some(name_os) = path.file_name() else {
            continue; // the root itself: its metadata is the store's
        };
        let parent_rel = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_bytes = name_os.as_bytes();
        let header = entry.header().clone();
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let hmode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0) as i64;

        // Whiteouts.
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            let parent = parent_dir(root_fd, &parent_rel)?;
            if target == b".wh..opq" {
                opaque(&parent_rel, &written, mode, root_fd)?;
                continue;
            }
            if target.is_empty() || target == b"." || target == b".." || target.starts_with(b".wh.") {
                return Err(ImageError::unsafe_entry(&raw_path, "a malformed whiteout"));
            }
            let tpath = parent_rel.join(std::ffi::OsStr::from_bytes(target));
            let tname = cstr(Path::new(std::ffi::OsStr::from_bytes(target)))?;
            if written.contains(&tpath) {
                continue; // only against lower layers
            }
            match mode {
                Mode::Flatten => remove_at(parent.as_raw_fd(), &tname).map_err(os_err("apply a whiteout to".into(), &tpath))?,
                Mode::Overlay => {
                    remove_at(parent.as_raw_fd(), &tname).map_err(os_err("replace".into(), &tpath))?;
                    if unsafe { libc::mknodat(parent.as_raw_fd(), tname.as_ptr(), libc::S_IFCHR, 0) } != 0 {
                        return Err(ImageError::Io { context: format!("create the whiteout for {} (needs root)", tpath.display()), source: last_err() });
                    }
                }
            }
            continue;
        }

        let parent = parent_dir(root_fd, &parent_rel)?;
        let pfd = parent.as_raw_fd();
        let name = cstr(Path::new(name_os))?;
        let etype = header.entry_type();
        // Replace what is there (never write through it), except a directory onto a directory.
        if let Some(st) = lstat_at(pfd, &name) {
            if !(etype.is_dir() && is_dir(&st)) {
                remove_at(pfd, &name).map_err(os_err("replace".into(), &path))?;
            }
        }
        match etype {
            t if t.is_dir() => {
                if unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o700) } != 0 && last_err().raw_os_error() != Some(libc::EEXIST) {
                    return Err(ImageError::Io { context: format!("create directory {}", path.display()), source: last_err() });
                }
                dirs.push(DirMeta { path: path.clone(), mode: hmode, uid, gid, mtime });
            }
            t if t.is_file() || t == tar::EntryType::Continuous => {
                let fd = unsafe { libc::openat(pfd, name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600) };
                if fd < 0 {
                    return Err(ImageError::Io { context: format!("create {}", path.display()), source: last_err() });
                }
                let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
                io::copy(&mut entry, &mut f).map_err(|e| ImageError::Tar(format!("write {}: {e}", path.display())))?;
                drop(f);
                set_owner_mode_time(pfd, &name, uid, gid, Some(hmode), mtime, as_root, &path)?;
            }
            t if t.is_symlink() => {
                let target = entry.link_name().map_err(|e| ImageError::Tar(format!("read a link target: {e}")))?.ok_or_else(|| ImageError::unsafe_entry(&raw_path, "a symlink without a target"))?;
                let ct = CString::new(target.as_os_str().as_bytes()).map_err(|_| ImageError::unsafe_entry(&raw_path, "a NUL byte in a link target"))?;
                if unsafe { libc::symlinkat(ct.as_ptr(), pfd, name.as_ptr()) } != 0 {
                    return Err(ImageError::Io { context: format!("create symlink {}", path.display()), source: last_err() });
                }
                set_owner_mode_time(pfd, &name, uid, gid, None, mtime, as_root, &path)?;
            }
            t if t.is_hard_link() => {
                let target = entry.link_name().map_err(|e| ImageError::Tar(format!("read a link target: {e}")))?.ok_or_else(|| ImageError::unsafe_entry(&raw_path, "a hardlink without a target"))?;
                let tpath = clean(&target, limits)?;
                let (Some(tname_os), tparent_rel) = (tpath.file_name(), tpath.parent().unwrap_or(Path::new(""))) else {
                    return Err(ImageError::unsafe_entry(&raw_path, "a hardlink to the root"));
                };
                let tparent = open_in_root(root_fd, tparent_rel, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| ImageError::Io { context: format!("find the hardlink target {}", tpath.display()), source: e })?;
                let tname = cstr(Path::new(tname_os))?;
                match lstat_at(tparent.as_raw_fd(), &tname) {
                    None => return Err(ImageError::unsafe_entry(&raw_path, &format!("a hardlink to {} which does not exist (in this layer)", tpath.display()))),
                    Some(st) if is_dir(&st) => return Err(ImageError::unsafe_entry(&raw_path, "a hardlink to a directory")),
                    Some(_) => {}
                }
                if unsafe { libc::linkat(tparent.as_raw_fd(), tname.as_ptr(), pfd, name.as_ptr(), 0) } != 0 {
                    return Err(ImageError::Io { context: format!("create hardlink {}", path.display()), source: last_err() });
                }
            }
            t if t == tar::EntryType::Char && mode == Mode::Flatten && header.device_major().ok().flatten() == Some(0) && header.device_minor().ok().flatten() == Some(0) => {
                continue; // an overlay whiteout: what it hides is already removed above
            }
            t if t == tar::EntryType::Char || t == tar::EntryType::Block || t == tar::EntryType::Fifo => {
                let kind = if t == tar::EntryType::Char { libc::S_IFCHR } else if t == tar::EntryType::Block { libc::S_IFBLK } else { libc::S_IFIFO };
                if kind != libc::S_IFIFO && !as_root {
                    applied.skipped_devices.push(path.clone());
                    continue;
                }
                let dev = libc::makedev(header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
                if unsafe { libc::mknodat(pfd, name.as_ptr(), kind | 0o600, dev) } != 0 {
                    return Err(ImageError::Io { context: format!("create device {}", path.display()), source: last_err() });
                }
                set_owner_mode_time(pfd, &name, uid, gid, Some(hmode), mtime, as_root, &path)?;
            }
            t if t == tar::EntryType::XGlobalHeader || t == tar::EntryType::XHeader || t == tar::EntryType::GNULongName || t == tar::EntryType::GNULongLink => continue,
            other => return Err(ImageError::unsafe_entry(&raw_path, &format!("an unsupported entry type {other:?}"))),
        }
        written.insert(path);
    }
    // Directories' metadata last, deepest first (creating entries in them changed their mtime).
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        let parent = open_in_root(root_fd, d.path.parent().unwrap_or(Path::new("")), libc::O_PATH | libc::O_DIRECTORY).map_err(os_err("reopen".into(), &d.path))?;
        let name = cstr(Path::new(d.path.file_name().unwrap_or_default()))?;
        match lstat_at(parent.as_raw_fd(), &name) {
            Some(st) if is_dir(&st) => set_owner_mode_time(parent.as_raw_fd(), &name, d.uid, d.gid, Some(d.mode), d.mtime, as_root, &d.path)?,
            _ => {} // replaced later in the layer
        }
    }
    Ok(applied)
}

/// An opaque directory: hide everything lower layers put in it.
fn opaque(rel: &Path, written: &HashSet<PathBuf>, mode: Mode, root: RawFd) -> Result<(), ImageError> {
    match mode {
        Mode::Flatten => {
            let d = open_in_root(root, rel, libc::O_RDONLY | libc::O_DIRECTORY).map_err(os_err("open".into(), rel))?;
            for child in list_dir(d.as_raw_fd()).map_err(os_err("list".into(), rel))? {
                let cpath = rel.join(std::ffi::OsStr::from_bytes(child.as_bytes()));
                if !written.contains(&cpath) {
                    remove_at(d.as_raw_fd(), &child).map_err(os_err("apply an opaque whiteout to".into(), &cpath))?;
                }
            }
            Ok(())
        }
        Mode::Overlay => {
            let d = open_in_root(root, rel, libc::O_RDONLY | libc::O_DIRECTORY).map_err(os_err("open".into(), rel))?;
            // trusted.* for overlays mounted by the host's root, user.* for those mounted in a
            // user namespace (the `userxattr` option, which cagette's sandboxes use).
            for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
                if unsafe { libc::fsetxattr(d.as_raw_fd(), name.as_ptr(), b"y".as_ptr() as *const libc::c_void, 1, 0) } != 0 {
                    return Err(ImageError::Io { context: format!("mark {} opaque (needs root)", rel.display()), source: last_err() });
                }
            }
            Ok(())
        }
    }
}

/// Clears, in `dest`, the directories that a stored layer marks opaque (what lower layers put
/// there), before the layer itself is applied.
pub(crate) fn clear_opaque_dirs(layer: &Path, dest: &Path) -> Result<(), ImageError> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                let p = e.path();
                let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                let mut v = [0u8; 2];
                let n = unsafe { libc::lgetxattr(c.as_ptr(), c"user.overlay.opaque".as_ptr(), v.as_mut_ptr() as *mut libc::c_void, 2) };
                let r = rel.join(e.file_name());
                if n == 1 && v[0] == b'y' {
                    out.push(r.clone());
                }
                walk(&p, &r, out)?;
            }
        }
        Ok(())
    }
    let mut opaque = Vec::new();
    walk(layer, Path::new(""), &mut opaque).map_err(os_err("read the layer".into(), layer))?;
    let root: OwnedFd = std::fs::File::open(dest).map_err(os_err("open".into(), dest))?.into();
    for rel in opaque {
        if let Ok(d) = open_in_root(root.as_raw_fd(), &rel, libc::O_RDONLY | libc::O_DIRECTORY) {
            for child in list_dir(d.as_raw_fd()).map_err(os_err("list".into(), &rel))? {
                remove_at(d.as_raw_fd(), &child).map_err(os_err("clear".into(), &rel))?;
            }
        }
    }
    Ok(())
}
