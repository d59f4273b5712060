//! Applying one layer (a tar stream) to a directory, safely; and flattening stored layers.
//!
//! - The tar is read in raw mode: PAX records and GNU long names are handled here, bounded
//!   (`Limits::max_header`); a PAX `size` must equal the header's (TARmageddon-style parser
//!   differentials are refused, not resolved); sparse files are refused.
//! - Every entry's parent is resolved inside the root with `openat2(RESOLVE_IN_ROOT)`: `..`,
//!   absolute symlinks (Debian's `/var/run -> /run`) and `/` stay inside the root; missing parents
//!   are created the same way. The last resolved parent is reused only while regular files and
//!   hardlinks are created in it; any other entry (a directory, a symlink, a whiteout, a removal)
//!   drops it, so an entry that swaps a directory for a symlink cannot stale anything (containerd
//!   CVE-2025-47290).
//! - The leaf is never followed: files are created with `O_EXCL|O_NOFOLLOW` after removing
//!   whatever was there (never written through an existing inode); metadata calls use
//!   `AT_SYMLINK_NOFOLLOW` or fds.
//! - Names with `..` components are refused; absolute names are taken relative to the root.
//! - Whiteouts and opaque directories apply only to lower layers, whatever the entry order: in
//!   `Flatten` mode they delete lower content not written by this layer; in `Overlay` mode they
//!   become overlayfs whiteouts (char 0:0, which Linux >= 5.8 lets anyone create) and
//!   `user.overlay.opaque` (plus `trusted.overlay.opaque` as root).
//! - Hardlinks to a lower layer's file (overlay mode) are resolved after the lower layers are
//!   in the store, by copying the target up.
//! - xattrs from an allow-list (`map_xattr`), overlay ones escaped.
//! - Ownership as is (root; without root the importer owns everything and the count is
//!   reported), modes after ownership (setuid survives), file capabilities after chown, mtimes;
//!   directories' metadata last, deepest first.
//! - Bounded: entries, path length, header sizes, xattr sizes, total bytes (the caller's
//!   counting reader).

use super::{ImageError, Limits};
use std::collections::HashSet;
use nix::dir::Dir;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode as Perm, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use nix::fcntl::AtFlags;
use std::ffi::{CStr, CString, OsStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How whiteouts are represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One layer per directory, stacked later with overlayfs.
    Overlay,
    /// Applied into one plain directory (a `docker save` archive extracted, a flat rootfs):
    /// whiteouts delete, opaque directories are emptied, overlay xattrs are not kept.
    Flatten,
}

/// What applying a layer did that the caller may want to know.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub entries: u64,
    /// What was not kept, and why (device nodes and xattrs a non-root importer cannot create,
    /// xattrs off the allow-list); at most 20 lines, then a count.
    pub notes: Vec<String>,
    notes_dropped: usize,
    /// Entries whose owner was not root but which a non-root importer had to keep as its own.
    pub not_owned: u64,
    /// Hardlinks to files of lower layers: (link, target, name in the tar).
    pub lower_links: Vec<(PathBuf, PathBuf, PathBuf)>,
}

impl Applied {
    fn note(&mut self, s: String) {
        if self.notes.len() < 20 {
            self.notes.push(s);
        } else {
            self.notes_dropped += 1;
        }
    }
    /// The notes, with a count of those left out.
    pub fn summary(&self) -> Vec<String> {
        let mut v = self.notes.clone();
        if self.notes_dropped > 0 {
            v.push(format!("... and {} more", self.notes_dropped));
        }
        if self.not_owned > 0 {
            v.push(format!("{} entries owned by other users than root belong to the importing user (ownership needs root)", self.not_owned));
        }
        v
    }
}

fn cstr(p: &Path) -> Result<CString, ImageError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| ImageError::unsafe_entry(p, "a NUL byte in the name"))
}

fn os_err(what: String, path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |e| ImageError::Io { context: format!("{what} {}", path.display()), source: e }
}

/// openat2 inside `root`, retrying the EAGAIN the kernel answers when a ".." raced with a rename.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let c = CString::new(if rel.as_os_str().is_empty() { ".".as_bytes() } else { rel.as_os_str().as_bytes() }).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    for _ in 0..128 {
        match nix::fcntl::openat2(root, c.as_c_str(), how) {
            Ok(fd) => return Ok(fd),
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
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
fn parent_dir(root: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, ImageError> {
    match open_in_root(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(ImageError::Io { context: format!("resolve {} inside the root", rel.display()), source: e }),
    }
    let mut cur = PathBuf::new();
    for c in rel.components() {
        let parent = open_in_root(root, &cur, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(os_err("resolve".into(), &cur))?;
        cur.push(c);
        let name = cstr(Path::new(c.as_os_str()))?;
        match nix::sys::stat::mkdirat(&parent, name.as_c_str(), Perm::from_bits_retain(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(ImageError::Io { context: format!("create directory {}", cur.display()), source: e.into() }),
        }
    }
    open_in_root(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(|e| ImageError::Io { context: format!("resolve {} inside the root", rel.display()), source: e })
}

pub(super) fn lstat_at(dir: impl AsFd, name: &CStr) -> Option<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dir` (recursively for a directory), never following symlinks.
fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name) else { return Ok(()) };
    if !is_dir(&st) {
        return Ok(nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?);
    }
    let sub = nix::fcntl::openat(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::empty())?;
    for child in list_dir(sub.as_fd())? {
        remove_at(sub.as_fd(), &child)?;
    }
    Ok(nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
}

/// The names in a directory fd (not . and ..).
pub(super) fn list_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // A duplicate (F_DUPFD_CLOEXEC) for the directory stream, which owns and closes it; `fd`
    // stays open for the caller.
    let d = Dir::from_fd(fd.try_clone_to_owned()?)?;
    let mut out = Vec::new();
    // Consumed (not `Dir::iter`, which rewinds on drop); a read error ends the listing, as
    // the end of the directory does.
    for e in d.into_iter().map_while(Result::ok) {
        let name = e.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

struct DirMeta {
    path: PathBuf,
    meta: Meta,
}

/// xattrs as (name, value).
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The extension headers (PAX, GNU long name and link) read before the entry they describe.
#[derive(Default)]
struct ExtHeaders {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// One entry's metadata, after GNU long names and PAX records are applied.
#[derive(Default)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    /// As they are set on disk: already filtered and escaped by `map_xattr`.
    xattrs: Xattrs,
}

/// What an image xattr's name becomes on disk, or why it is dropped (for the notes).
///
/// Overlay mode escapes overlayfs's own namespaces (`trusted.overlay.X` ->
/// `trusted.overlay.overlay.X`, same for `user.overlay.`), so that an image cannot plant
/// overlay metadata (redirects, opaque marks, metacopy) in a layer; the kernel (>= 6.7) shows
/// the escaped name unescaped through the mount. A flat rootfs may itself become a lower layer
/// later, so there overlay xattrs are dropped.
pub(crate) fn map_xattr(name: &[u8], mode: Mode, as_root: bool) -> Result<Vec<u8>, &'static str> {
    for ns in [&b"trusted.overlay."[..], b"user.overlay."] {
        if let Some(rest) = name.strip_prefix(ns) {
            return match mode {
                Mode::Overlay if ns.starts_with(b"trusted") && !as_root => Err("trusted.* xattrs need root"),
                Mode::Overlay => Ok([ns, b"overlay.", rest].concat()),
                Mode::Flatten => Err("overlayfs xattrs are not kept in a flat rootfs"),
            };
        }
    }
    if name == b"security.selinux" {
        return Err("SELinux labels are the host's business");
    }
    if name.starts_with(b"user.") || name == b"system.posix_acl_access" || name == b"system.posix_acl_default" {
        return Ok(name.to_vec());
    }
    if name == b"security.capability" || name.starts_with(b"trusted.") {
        return if as_root { Ok(name.to_vec()) } else { Err("needs root") };
    }
    Err("not on the allow-list (user.*, trusted.*, security.capability, POSIX ACLs)")
}

/// Sets ownership, mode, xattrs and mtime on an open file or directory, in that order: mode
/// after ownership (chown clears setuid), file capabilities after chown (chown clears them too).
fn finish_fd(fd: BorrowedFd<'_>, m: &Meta, st: &mut State, path: &Path) -> Result<(), ImageError> {
    // Created by this process in a directory tree without setgid: already owned so.
    if st.born_ours.is_none_or(|ids| ids != (m.uid, m.gid)) {
        set_owner(st, m, path, || nix::unistd::fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid))))?;
    }
    if let Err(e) = nix::sys::stat::fchmod(fd, Perm::from_bits_retain(m.mode & 0o7777)) {
        return Err(ImageError::Io { context: format!("chmod {}", path.display()), source: e.into() });
    }
    for (name, value) in &m.xattrs {
        let c = CString::new(name.as_slice()).map_err(|_| ImageError::unsafe_entry(path, "a NUL byte in an xattr name"))?;
        if let Err(e) = rustix::fs::fsetxattr(fd, c.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
            return Err(ImageError::Io { context: format!("set xattr {} on {}", String::from_utf8_lossy(name), path.display()), source: e.into() });
        }
    }
    let ts = TimeSpec::new(m.mtime, 0);
    let _ = nix::sys::stat::futimens(fd, &ts, &ts);
    Ok(())
}

/// Ownership as the image says, as root; without root, the importer keeps it (and counts it).
fn set_owner(st: &mut State, m: &Meta, path: &Path, chown: impl FnOnce() -> nix::Result<()>) -> Result<(), ImageError> {
    if st.as_root {
        if let Err(e) = chown() {
            return Err(ImageError::Io { context: format!("chown {}", path.display()), source: e.into() });
        }
    } else if m.uid != 0 || m.gid != 0 {
        st.applied.not_owned += 1;
    }
    Ok(())
}

/// Ownership and mtime of what cannot be opened (symlinks, device nodes), by name; devices also
/// get their mode.
fn finish_at(dir: BorrowedFd<'_>, name: &CStr, m: &Meta, chmod: bool, st: &mut State, path: &Path) -> Result<(), ImageError> {
    set_owner(st, m, path, || nix::unistd::fchownat(dir, name, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)), AtFlags::AT_SYMLINK_NOFOLLOW))?;
    if chmod {
        nix::sys::stat::fchmodat(dir, name, Perm::from_bits_retain(m.mode & 0o7777), FchmodatFlags::FollowSymlink).map_err(|e| ImageError::Io { context: format!("chmod {}", path.display()), source: e.into() })?;
    }
    if !m.xattrs.is_empty() {
        st.applied.note(format!("xattrs on /{} dropped: only files and directories carry them here", path.display()));
    }
    let ts = TimeSpec::new(m.mtime, 0);
    let _ = nix::sys::stat::utimensat(dir, name, &ts, &ts, UtimensatFlags::NoFollowSymlink);
    Ok(())
}

/// Per-layer state shared by the helpers.
struct State {
    mode: Mode,
    as_root: bool,
    applied: Applied,
    /// As root: the (uid, gid) new files get, when no directory on the way can be setgid (overlay
    /// mode: every directory is created by this layer with mode 0700; its own mode comes last).
    born_ours: Option<(u32, u32)>,
}

fn tar_err(what: &str) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |e| ImageError::Tar(format!("{what}: {e}"))
}

fn parse_num(v: &[u8], key: &str, path: &Path) -> Result<u64, ImageError> {
    std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| ImageError::unsafe_entry(path, &format!("a malformed PAX {key} record")))
}

/// Writes all of `r` to `to` through `buf` (a large buffer: the reader hands out 1 MiB chunks).
fn copy_to<R: Read>(r: &mut R, to: &std::fs::File, buf: &mut [u8], path: &Path) -> Result<(), ImageError> {
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::Tar(format!("read {}: {e}", path.display()))),
        };
        (&mut &*to).write_all(&buf[..n]).map_err(os_err("write".into(), path))?;
    }
}

/// An entry's name, link target and metadata, from its header and the GNU and PAX extension
/// headers before it; refuses what readers would disagree on.
fn entry_meta(header: &tar::Header, size: u64, ext: ExtHeaders, st: &mut State) -> Result<(Vec<u8>, Option<Vec<u8>>, Meta), ImageError> {
    let ExtHeaders { pax, long_name, long_link } = ext;
    let strip = |mut v: Vec<u8>| {
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    let (had_long_name, had_long_link) = (long_name.is_some(), long_link.is_some());
    let mut raw_name = long_name.map(strip).unwrap_or_else(|| header.path_bytes().into_owned());
    let mut link = long_link.map(strip).or_else(|| header.link_name_bytes().map(|c| c.into_owned()));
    let mut meta = Meta {
        uid: header.uid().unwrap_or(0) as u32,
        gid: header.gid().unwrap_or(0) as u32,
        mode: header.mode().unwrap_or(0o644),
        mtime: header.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Some(p) = pax {
        for ext in tar::PaxExtensions::new(&p) {
            let ext = ext.map_err(tar_err("read a PAX record"))?;
            let key = ext.key().map_err(|_| ImageError::Tar("a PAX key that is not UTF-8".into()))?;
            let v = ext.value_bytes();
            let here = Path::new(OsStr::from_bytes(&raw_name));
            match key {
                // Readers disagree on which wins (Go and tar-rs take the GNU one): refused.
                "path" if had_long_name => return Err(ImageError::unsafe_entry(here, "both a GNU long name and a PAX path")),
                "linkpath" if had_long_link => return Err(ImageError::unsafe_entry(here, "both a GNU long link and a PAX linkpath")),
                "path" => raw_name = v.to_vec(),
                "linkpath" => link = Some(v.to_vec()),
                "uid" => meta.uid = u32::try_from(parse_num(v, key, here)?).map_err(|_| ImageError::unsafe_entry(here, "a uid beyond 32 bits"))?,
                "gid" => meta.gid = u32::try_from(parse_num(v, key, here)?).map_err(|_| ImageError::unsafe_entry(here, "a gid beyond 32 bits"))?,
                "mtime" => {
                    let whole = v.split(|&b| b == b'.').next().unwrap_or(b"0");
                    meta.mtime = std::str::from_utf8(whole).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                }
                "size" => {
                    let pax_size = parse_num(v, key, here)?;
                    if pax_size != size {
                        return Err(ImageError::unsafe_entry(here, &format!("a PAX size ({pax_size}) that differs from the header's size ({size}): readers would disagree on where the next entry starts")));
                    }
                }
                k if k.starts_with("GNU.sparse.") => return Err(ImageError::unsafe_entry(here, "a sparse file (not supported)")),
                k if k.starts_with("SCHILY.xattr.") => {
                    if v.len() > 65536 {
                        return Err(ImageError::limit(format!("an xattr value of {} bytes on {}", v.len(), here.display())));
                    }
                    let xname = &k["SCHILY.xattr.".len()..];
                    // Filtered here, so that only what will be set is kept in memory.
                    match map_xattr(xname.as_bytes(), st.mode, st.as_root) {
                        Ok(on_disk) => meta.xattrs.push((on_disk, v.to_vec())),
                        Err(why) => st.applied.note(format!("xattr {xname} on /{} dropped: {why}", here.display())),
                    }
                }
                _ => {}
            }
        }
    }
    Ok((raw_name, link, meta))
}

/// Applies one layer's tar stream to `root` (an open directory).
///
/// The tar is read in raw mode: GNU long names and PAX records are handled here, so that each
/// is bounded (`Limits::max_header`), a PAX `size` that disagrees with the header's is refused
/// (two readers must never see two different archives), and PAX xattrs are available.
pub(crate) fn apply<R: Read>(root: &Path, reader: R, mode: Mode, limits: &Limits, cancel: &AtomicBool) -> Result<Applied, ImageError> {
    let root_fd: OwnedFd = std::fs::File::open(root).map_err(os_err("open the unpack directory".into(), root))?.into();
    let root_fd = root_fd.as_fd();
    let root_setgid = lstat_at(root_fd, c".").is_none_or(|s| s.st_mode & libc::S_ISGID != 0);
    let born_ours = (mode == Mode::Overlay && !root_setgid && nix::unistd::geteuid().is_root()).then(|| (0, nix::unistd::getegid().as_raw()));
    let mut st = State { mode, as_root: nix::unistd::geteuid().is_root(), applied: Applied::default(), born_ours };
    let mut archive = tar::Archive::new(reader);
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut dirs: Vec<DirMeta> = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut cached: Option<(PathBuf, OwnedFd)> = None;
    // Hardlinks to lower layers' files, by link path: (target, name in the tar).
    let mut lower_links: std::collections::HashMap<PathBuf, (PathBuf, PathBuf)> = std::collections::HashMap::new();
    // Memory kept until the end of the layer (paths written, directories' metadata): bounded.
    let mut kept: u64 = 0;
    let mut ext = ExtHeaders::default();
    let entries = archive.entries().map_err(tar_err("read the layer"))?.raw(true);
    for entry in entries {
        if cancel.load(Ordering::Relaxed) {
            return Err(ImageError::Cancelled);
        }
        let mut entry = entry.map_err(tar_err("read a tar entry"))?;
        st.applied.entries += 1;
        if st.applied.entries > limits.max_entries {
            return Err(ImageError::limit(format!("more than {} entries in a layer", limits.max_entries)));
        }
        let etype = entry.header().entry_type();
        let size = entry.header().size().map_err(tar_err("read an entry's size"))?;
        let is_ext = [tar::EntryType::XHeader, tar::EntryType::XGlobalHeader, tar::EntryType::GNULongName, tar::EntryType::GNULongLink].contains(&etype);
        if is_ext {
            if size > limits.max_header as u64 {
                return Err(ImageError::limit(format!("a {etype:?} header of {size} bytes (limit {})", limits.max_header)));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(tar_err("read an extension header"))?;
            let slot = match etype {
                tar::EntryType::XHeader => &mut ext.pax,
                tar::EntryType::GNULongName => &mut ext.long_name,
                tar::EntryType::GNULongLink => &mut ext.long_link,
                _ => continue, // global PAX records: nothing in them applies to a layer
            };
            if slot.replace(data).is_some() {
                return Err(ImageError::Tar(format!("two {etype:?} headers for one entry")));
            }
            continue;
        }
        let (raw_name, link, meta) = entry_meta(entry.header(), size, std::mem::take(&mut ext), &mut st)?;
        let raw_path = PathBuf::from(OsStr::from_bytes(&raw_name));
        // Entries other readers would read differently: data after a header that has none
        // (Go skips nothing there, tar-rs skips `size` bytes, which could hide headers), and a
        // regular file named like a directory (a directory to Go).
        let is_file = etype.is_file() || etype == tar::EntryType::Continuous;
        if !is_file && size != 0 {
            return Err(ImageError::unsafe_entry(&raw_path, &format!("a {etype:?} entry with {size} bytes of data")));
        }
        if is_file && raw_name.ends_with(b"/") {
            return Err(ImageError::unsafe_entry(&raw_path, "a regular file whose name ends with '/'"));
        }
        let path = clean(&raw_path, limits)?;
        let Some(name_os) = path.file_name() else {
            continue; // the root itself: its metadata is the store's
        };
        let parent_rel = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_bytes = name_os.as_bytes();

        // A later entry of this layer at (or under) the path of a pending link to a lower layer
        // wins, as tar order says.
        if !lower_links.is_empty() {
            for up in path.ancestors() {
                lower_links.remove(up);
            }
        }
        // Whiteouts.
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            cached = None;
            let parent = parent_dir(root_fd, &parent_rel)?;
            if target == b".wh..opq" {
                opaque(&parent_rel, &written, &st, root_fd)?;
                continue;
            }
            if target.is_empty() || target == b"." || target == b".." || target.starts_with(b".wh.") {
                return Err(ImageError::unsafe_entry(&raw_path, "a malformed whiteout"));
            }
            let tpath = parent_rel.join(OsStr::from_bytes(target));
            let tname = cstr(Path::new(OsStr::from_bytes(target)))?;
            if written.contains(&tpath) {
                continue; // only against lower layers
            }
            remove_at(parent.as_fd(), &tname).map_err(os_err("apply a whiteout to".into(), &tpath))?;
            if mode == Mode::Overlay {
                nix::sys::stat::mknodat(&parent, tname.as_c_str(), SFlag::S_IFCHR, Perm::empty(), 0).map_err(|e| {
                    let hint = if st.as_root { "" } else { " (without root, creating a whiteout needs Linux 5.8 or later; import as root on older kernels)" };
                    ImageError::Io { context: format!("create the whiteout for {}{hint}", tpath.display()), source: e.into() }
                })?;
            }
            continue;
        }

        // The parent, resolved inside the root. It is kept for the next entry only after a
        // regular file or a hardlink was created in it without removing anything: creating a
        // file cannot change what a directory path resolves to. Anything else (a directory, a
        // symlink, a removal) drops it, so the next entry resolves afresh.
        let parent = match cached.take() {
            Some((p, fd)) if p == parent_rel => fd,
            _ => parent_dir(root_fd, &parent_rel)?,
        };
        let pfd = parent.as_fd();
        let name = cstr(Path::new(name_os))?;
        let is_link = etype.is_hard_link();
        // Replace what is there (never write through it), except a directory onto a directory.
        // Regular files and directories try to create first (one system call less for the
        // usual case, nothing there yet).
        let create_file = || -> io::Result<std::fs::File> {
            let fd = nix::fcntl::openat(pfd, name.as_c_str(), OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::from_bits_retain(0o600))?;
            Ok(std::fs::File::from(fd))
        };
        let mut removed = false;
        let mut file = None;
        if is_file {
            file = Some(match create_file() {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    remove_at(pfd, &name).map_err(os_err("replace".into(), &path))?;
                    removed = true;
                    create_file()
                }
                r => r,
            });
        } else if etype.is_dir() {
            if let Err(e) = nix::sys::stat::mkdirat(pfd, name.as_c_str(), Perm::from_bits_retain(0o700)) {
                let e = io::Error::from(e);
                match lstat_at(pfd, &name) {
                    Some(old) if e.raw_os_error() == Some(libc::EEXIST) && is_dir(&old) => {}
                    Some(_) if e.raw_os_error() == Some(libc::EEXIST) => {
                        remove_at(pfd, &name).map_err(os_err("replace".into(), &path))?;
                        if let Err(e) = nix::sys::stat::mkdirat(pfd, name.as_c_str(), Perm::from_bits_retain(0o700)) {
                            return Err(ImageError::Io { context: format!("create directory {}", path.display()), source: e.into() });
                        }
                    }
                    _ => return Err(ImageError::Io { context: format!("create directory {}", path.display()), source: e }),
                }
            }
        } else if lstat_at(pfd, &name).is_some() {
            remove_at(pfd, &name).map_err(os_err("replace".into(), &path))?;
            removed = true;
        }
        match etype {
            t if t.is_dir() => {
                kept += (path.as_os_str().len() + 64 + meta.xattrs.iter().map(|(n, v)| n.len() + v.len() + 48).sum::<usize>()) as u64;
                dirs.push(DirMeta { path: path.clone(), meta });
            }
            _ if is_file => {
                let f = file.take().unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::EINVAL))).map_err(os_err("create".into(), &path))?;
                copy_to(&mut entry, &f, &mut buf, &path)?;
                finish_fd(f.as_fd(), &meta, &mut st, &path)?;
            }
            t if t.is_symlink() => {
                let target = link.ok_or_else(|| ImageError::unsafe_entry(&raw_path, "a symlink without a target"))?;
                let ct = CString::new(target).map_err(|_| ImageError::unsafe_entry(&raw_path, "a NUL byte in a link target"))?;
                if let Err(e) = nix::unistd::symlinkat(ct.as_c_str(), pfd, name.as_c_str()) {
                    return Err(ImageError::Io { context: format!("create symlink {}", path.display()), source: e.into() });
                }
                finish_at(pfd, &name, &meta, false, &mut st, &path)?;
            }
            _ if is_link => {
                let target = link.ok_or_else(|| ImageError::unsafe_entry(&raw_path, "a hardlink without a target"))?;
                let tpath = clean(Path::new(OsStr::from_bytes(&target)), limits)?;
                let (Some(tname_os), tparent_rel) = (tpath.file_name(), tpath.parent().unwrap_or(Path::new(""))) else {
                    return Err(ImageError::unsafe_entry(&raw_path, "a hardlink to the root"));
                };
                let tname = cstr(Path::new(tname_os))?;
                let tparent = match open_in_root(root_fd, tparent_rel, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                    Ok(fd) => Some(fd),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
                    Err(e) => return Err(ImageError::Io { context: format!("find the hardlink target {}", tpath.display()), source: e }),
                };
                match tparent.as_ref().and_then(|p| lstat_at(p, &tname)) {
                    Some(s) if is_dir(&s) => return Err(ImageError::unsafe_entry(&raw_path, "a hardlink to a directory")),
                    Some(s) if is_whiteout(&s) => return Err(ImageError::unsafe_entry(&raw_path, &format!("a hardlink to {}, which this layer deletes", tpath.display()))),
                    Some(_) => {
                        let tp = tparent.as_ref().map(|p| p.as_fd()).unwrap_or(root_fd);
                        if let Err(e) = nix::unistd::linkat(tp, tname.as_c_str(), pfd, name.as_c_str(), AtFlags::empty()) {
                            return Err(ImageError::Io { context: format!("create hardlink {}", path.display()), source: e.into() });
                        }
                    }
                    // A link to a lower layer's file: resolved once the lower layers are there.
                    None if mode == Mode::Overlay => {
                        lower_links.insert(path.clone(), (tpath, raw_path.clone()));
                    }
                    None => return Err(ImageError::unsafe_entry(&raw_path, &format!("a hardlink to {}, which does not exist", tpath.display()))),
                }
            }
            t if t == tar::EntryType::Char || t == tar::EntryType::Block || t == tar::EntryType::Fifo => {
                let kind = if t == tar::EntryType::Char { SFlag::S_IFCHR } else if t == tar::EntryType::Block { SFlag::S_IFBLK } else { SFlag::S_IFIFO };
                if kind != SFlag::S_IFIFO && !st.as_root {
                    st.applied.note(format!("device node /{} skipped: creating devices needs root", path.display()));
                    continue;
                }
                let h = entry.header();
                let dev = libc::makedev(h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0));
                if let Err(e) = nix::sys::stat::mknodat(pfd, name.as_c_str(), kind, Perm::from_bits_retain(0o600), dev) {
                    return Err(ImageError::Io { context: format!("create device {}", path.display()), source: e.into() });
                }
                finish_at(pfd, &name, &meta, true, &mut st, &path)?;
            }
            other => return Err(ImageError::unsafe_entry(&raw_path, &format!("an unsupported entry type {other:?}"))),
        }
        if (is_file || is_link) && !removed {
            cached = Some((parent_rel, parent));
        }
        kept += (path.as_os_str().len() + 64) as u64;
        if kept > limits.max_kept_bytes {
            return Err(ImageError::limit(format!("a layer whose entries' metadata needs more than {} bytes of memory to apply", limits.max_kept_bytes)));
        }
        written.insert(path);
    }
    if ext.pax.is_some() || ext.long_name.is_some() || ext.long_link.is_some() {
        return Err(ImageError::Tar("an extension header at the end, describing no entry".into()));
    }
    // Directories' metadata last, deepest first (creating entries in them changed their mtime).
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        match open_in_root(root_fd, &d.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW) {
            Ok(fd) => finish_fd(fd.as_fd(), &d.meta, &mut st, &d.path)?,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => {} // replaced later in the layer
            Err(e) => return Err(ImageError::Io { context: format!("reopen {}", d.path.display()), source: e }),
        }
    }
    st.applied.lower_links = lower_links.into_iter().map(|(link, (target, raw))| (link, target, raw)).collect();
    Ok(st.applied)
}

pub(super) fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Resolves the hardlinks of a layer (unpacked in overlay form at `layer`) whose targets are in
/// lower layers (`lowers`, nearest first): the target's nearest version is copied into the
/// layer under the link's name (an overlay cannot share an inode across layers).
pub(crate) fn resolve_lower_links(layer: &Path, lowers: &[PathBuf], links: &[(PathBuf, PathBuf, PathBuf)], limits: &Limits) -> Result<(), ImageError> {
    let root: OwnedFd = std::fs::File::open(layer).map_err(os_err("open".into(), layer))?.into();
    let lower_fds: Vec<OwnedFd> = lowers.iter().map(|l| std::fs::File::open(l).map(OwnedFd::from).map_err(os_err("open".into(), l))).collect::<Result<_, _>>()?;
    let mut st = State { mode: Mode::Overlay, as_root: nix::unistd::geteuid().is_root(), applied: Applied::default(), born_ours: None };
    // Each target is copied once; further links to it link to that copy. The bytes copied
    // count against the layer limit (a million links to one big lower file must not fill the
    // disk).
    let mut copies: std::collections::HashMap<&Path, &Path> = std::collections::HashMap::new();
    let mut copied_total: u64 = 0;
    'links: for (path, target, raw) in links {
        let parent = parent_dir(root.as_fd(), path.parent().unwrap_or(Path::new("")))?;
        let name = cstr(Path::new(path.file_name().unwrap_or_default()))?;
        remove_at(parent.as_fd(), &name).map_err(os_err("replace".into(), path))?;
        if let Some(first) = copies.get(target.as_path()) {
            let fparent = open_in_root(root.as_fd(), first.parent().unwrap_or(Path::new("")), OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(os_err("find".into(), first))?;
            let fname = cstr(Path::new(first.file_name().unwrap_or_default()))?;
            if let Err(e) = nix::unistd::linkat(&fparent, fname.as_c_str(), &parent, name.as_c_str(), AtFlags::empty()) {
                return Err(ImageError::Io { context: format!("create hardlink {}", path.display()), source: e.into() });
            }
            continue;
        }
        let tname = cstr(Path::new(target.file_name().unwrap_or_default()))?;
        for lower in &lower_fds {
            let Ok(tparent) = open_in_root(lower.as_fd(), target.parent().unwrap_or(Path::new("")), OFlag::O_PATH | OFlag::O_DIRECTORY) else { continue };
            let Some(s) = lstat_at(&tparent, &tname) else { continue };
            if s.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(ImageError::unsafe_entry(raw, &format!("a hardlink to {}, which is not a regular file in the lower layers", target.display())));
            }
            copied_total += s.st_size as u64;
            if copied_total > limits.max_layer_bytes {
                return Err(ImageError::limit(format!("hardlinks to lower layers' files copy more than {} bytes", limits.max_layer_bytes)));
            }
            let src = match nix::fcntl::openat(&tparent, tname.as_c_str(), OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::empty()) {
                Ok(fd) => std::fs::File::from(fd),
                Err(e) => return Err(ImageError::Io { context: format!("open the hardlink target {}", target.display()), source: e.into() }),
            };
            // The store's xattrs as they are (already filtered and escaped).
            let xattrs = stored_xattrs(src.as_fd()).map_err(os_err("read the xattrs of the hardlink target".into(), target))?;
            copy_file(&src, &s, parent.as_fd(), &name, xattrs, &mut st, path)?;
            copies.insert(target, path);
            continue 'links;
        }
        return Err(ImageError::unsafe_entry(raw, &format!("a hardlink to {}, which does not exist", target.display())));
    }
    Ok(())
}

/// The names of the xattrs on an open file.
fn list_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let n = rustix::fs::flistxattr_query(fd)?;
    let mut names = vec![0u8; n];
    let n = rustix::fs::flistxattr(fd, &mut names[..])?;
    names.truncate(n);
    Ok(names.split(|&b| b == 0).filter(|s| !s.is_empty()).filter_map(|s| CString::new(s).ok()).collect())
}

fn get_xattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; 65536];
    let n = rustix::fs::fgetxattr(fd, name, &mut v[..])?;
    v.truncate(n);
    Ok(v)
}

/// Every xattr of an open file, by name.
pub(super) fn stored_xattrs(fd: BorrowedFd<'_>) -> io::Result<Xattrs> {
    list_xattrs(fd)?.into_iter().map(|name| Ok((name.as_bytes().to_vec(), get_xattr(fd, &name)?))).collect()
}

/// An opaque directory: hide everything lower layers put in it.
fn opaque(rel: &Path, written: &HashSet<PathBuf>, st: &State, root: BorrowedFd<'_>) -> Result<(), ImageError> {
    match st.mode {
        Mode::Flatten => {
            let d = open_in_root(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(os_err("open".into(), rel))?;
            for child in list_dir(d.as_fd()).map_err(os_err("list".into(), rel))? {
                let cpath = rel.join(std::ffi::OsStr::from_bytes(child.as_bytes()));
                if !written.contains(&cpath) {
                    remove_at(d.as_fd(), &child).map_err(os_err("apply an opaque whiteout to".into(), &cpath))?;
                }
            }
            Ok(())
        }
        Mode::Overlay => {
            let d = open_in_root(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(os_err("open".into(), rel))?;
            // trusted.* for overlays mounted by the host's root, user.* for those mounted in a
            // user namespace (the `userxattr` option, which cagette's sandboxes use).
            // (A non-root importer cannot set trusted.*: its layers serve user-namespace mounts.)
            let names: &[&CStr] = if st.as_root { &[c"trusted.overlay.opaque", c"user.overlay.opaque"] } else { &[c"user.overlay.opaque"] };
            for name in names {
                if let Err(e) = rustix::fs::fsetxattr(&d, *name, b"y", rustix::fs::XattrFlags::empty()) {
                    return Err(ImageError::Io { context: format!("mark {} opaque", rel.display()), source: e.into() });
                }
            }
            Ok(())
        }
    }
}

/// The xattrs of an open file as the image had them, without overlayfs's (the store's opaque
/// marks, and image overlay xattrs, which a flat rootfs does not keep).
fn image_xattrs(fd: BorrowedFd<'_>, st: &mut State, path: &Path) -> Result<Xattrs, ImageError> {
    let mut out = Vec::new();
    for (name, value) in stored_xattrs(fd).map_err(os_err("read the xattrs of".into(), path))? {
        if name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.") {
            continue; // the store's opaque marks, or image ones the import reported already
        }
        match map_xattr(&name, st.mode, st.as_root) {
            Ok(on_disk) => out.push((on_disk, value)),
            Err(why) => st.applied.note(format!("xattr {} on /{} dropped: {why}", String::from_utf8_lossy(&name), path.display())),
        }
    }
    Ok(out)
}

/// Writes a copy of `from` (whose stat is `s`) as `name` in `dir` (nothing there: created
/// `O_EXCL`), with its owner, mode and mtime and the given xattrs (as they go on disk).
fn copy_file(from: &std::fs::File, s: &FileStat, dir: BorrowedFd<'_>, name: &CStr, xattrs: Xattrs, st: &mut State, path: &Path) -> Result<(), ImageError> {
    let to = match nix::fcntl::openat(dir, name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::from_bits_retain(0o600)) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => return Err(ImageError::Io { context: format!("create {}", path.display()), source: e.into() }),
    };
    let mut left = s.st_size as usize;
    while left > 0 {
        match nix::fcntl::copy_file_range(from, None, &to, None, left) {
            Ok(n) if n > 0 => left -= n,
            _ => {
                // Across file systems on old kernels: a plain copy of the rest.
                copy_to(&mut &*from, &to, &mut vec![0u8; 1 << 16], path)?;
                break;
            }
        }
    }
    finish_fd(to.as_fd(), &meta_of(s, xattrs), st, path)
}

fn meta_of(st: &FileStat, xattrs: Xattrs) -> Meta {
    Meta { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode & 0o7777, mtime: st.st_mtime, xattrs }
}

/// Applies a stored layer (overlay form, at `layer`) onto the flat rootfs `dest`: whiteouts
/// delete, opaque directories are emptied first, everything else replaces what is there
/// (never written through). Files linked together inside the layer stay linked. Every path in
/// `dest` is resolved inside it. Returns what could not be kept.
pub(crate) fn flatten_layer(layer: &Path, dest: &Path) -> Result<Vec<String>, ImageError> {
    let src: OwnedFd = std::fs::File::open(layer).map_err(os_err("open the layer".into(), layer))?.into();
    let dst: OwnedFd = std::fs::File::open(dest).map_err(os_err("open".into(), dest))?.into();
    let mut st = State { mode: Mode::Flatten, as_root: nix::unistd::geteuid().is_root(), applied: Applied::default(), born_ours: None };
    let mut links = std::collections::HashMap::new();
    let mut dirs = Vec::new();
    flatten_dir(src.as_fd(), Path::new(""), dst.as_fd(), &mut st, &mut links, &mut dirs)?;
    dirs.sort_by_key(|d: &DirMeta| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        let fd = open_in_root(dst.as_fd(), &d.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).map_err(os_err("reopen".into(), &d.path))?;
        finish_fd(fd.as_fd(), &d.meta, &mut st, &d.path)?;
    }
    // (Without root, the store's files are the importer's own: the import already said so.)
    st.applied.not_owned = 0;
    Ok(st.applied.summary())
}

fn flatten_dir(src: BorrowedFd<'_>, rel: &Path, dst_root: BorrowedFd<'_>, st: &mut State, links: &mut std::collections::HashMap<(u64, u64), PathBuf>, dirs: &mut Vec<DirMeta>) -> Result<(), ImageError> {
    let dparent = parent_dir(dst_root, rel)?;
    let dp = dparent.as_fd();
    let mut names = list_dir(src).map_err(os_err("list the layer at".into(), rel))?;
    names.sort();
    for name in names {
        let path = rel.join(OsStr::from_bytes(name.as_bytes()));
        let Some(s) = lstat_at(src, &name) else { continue };
        if is_whiteout(&s) {
            remove_at(dp, &name).map_err(os_err("apply a whiteout to".into(), &path))?;
            continue;
        }
        let kind = s.st_mode & libc::S_IFMT;
        if let Some(old) = lstat_at(dp, &name)
            && !(kind == libc::S_IFDIR && is_dir(&old)) {
                remove_at(dp, &name).map_err(os_err("replace".into(), &path))?;
            }
        let open_src = |flags: OFlag| {
            nix::fcntl::openat(src, name.as_c_str(), flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::empty()).map_err(|e| ImageError::Io { context: format!("open the layer's {}", path.display()), source: e.into() })
        };
        match kind {
            libc::S_IFDIR => {
                match nix::sys::stat::mkdirat(dp, name.as_c_str(), Perm::from_bits_retain(0o700)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(ImageError::Io { context: format!("create directory {}", path.display()), source: e.into() }),
                }
                let sub = open_src(OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
                let mut v = [0u8; 2];
                let n = rustix::fs::fgetxattr(&sub, c"user.overlay.opaque", &mut v[..]);
                if matches!(n, Ok(1)) && v[0] == b'y' {
                    let d = open_in_root(dst_root, &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(os_err("open".into(), &path))?;
                    for child in list_dir(d.as_fd()).map_err(os_err("list".into(), &path))? {
                        remove_at(d.as_fd(), &child).map_err(os_err("clear the opaque directory".into(), &path))?;
                    }
                }
                let xattrs = image_xattrs(sub.as_fd(), st, &path)?;
                flatten_dir(sub.as_fd(), &path, dst_root, st, links, dirs)?;
                dirs.push(DirMeta { path, meta: meta_of(&s, xattrs) });
            }
            libc::S_IFREG => {
                if s.st_nlink > 1 {
                    if let Some(first) = links.get(&(s.st_dev, s.st_ino)) {
                        let fparent = open_in_root(dst_root, first.parent().unwrap_or(Path::new("")), OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(os_err("find".into(), first))?;
                        let fname = cstr(Path::new(first.file_name().unwrap_or_default()))?;
                        if let Err(e) = nix::unistd::linkat(&fparent, fname.as_c_str(), dp, name.as_c_str(), AtFlags::empty()) {
                            return Err(ImageError::Io { context: format!("create hardlink {}", path.display()), source: e.into() });
                        }
                        continue;
                    }
                    links.insert((s.st_dev, s.st_ino), path.clone());
                }
                let from = std::fs::File::from(open_src(OFlag::O_RDONLY)?);
                let xattrs = image_xattrs(from.as_fd(), st, &path)?;
                copy_file(&from, &s, dp, &name, xattrs, st, &path)?;
            }
            libc::S_IFLNK => {
                let mut target = vec![0u8; 4097];
                // One readlinkat(2) into this buffer: nix's readlinkat adds an fstatat to size its
                // own (hence rustix here).
                let n = match rustix::fs::readlinkat_raw(src, name.as_c_str(), &mut target[..]) {
                    Ok(n) if n < 4097 => n,
                    Ok(_) => return Err(ImageError::Io { context: format!("read the link {}", path.display()), source: io::Error::last_os_error() }),
                    Err(e) => return Err(ImageError::Io { context: format!("read the link {}", path.display()), source: e.into() }),
                };
                target.truncate(n);
                let ct = CString::new(target).map_err(|_| ImageError::unsafe_entry(&path, "a NUL byte in a link target"))?;
                if let Err(e) = nix::unistd::symlinkat(ct.as_c_str(), dp, name.as_c_str()) {
                    return Err(ImageError::Io { context: format!("create symlink {}", path.display()), source: e.into() });
                }
                finish_at(dp, &name, &meta_of(&s, Vec::new()), false, st, &path)?;
            }
            _ => {
                if kind != libc::S_IFIFO && !st.as_root {
                    st.applied.note(format!("device node /{} skipped: creating devices needs root", path.display()));
                    continue;
                }
                if let Err(e) = nix::sys::stat::mknodat(dp, name.as_c_str(), SFlag::from_bits_retain(kind), Perm::from_bits_retain(0o600), s.st_rdev) {
                    return Err(ImageError::Io { context: format!("create device {}", path.display()), source: e.into() });
                }
                finish_at(dp, &name, &meta_of(&s, Vec::new()), true, st, &path)?;
            }
        }
    }
    Ok(())
}
