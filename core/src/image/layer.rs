//! Layers written from a directory: the way back from `apply.rs`, for image builds (issue 18).
//!
//! A directory in the store's overlay form (an overlayfs upper directory, or a stored layer)
//! becomes one OCI layer tar, the same bytes every time for the same tree:
//!
//! - entries in a fixed order (each directory's names sorted bytewise, a directory before what
//!   it holds), with numeric owners only (no user or group names), and every mtime clamped to
//!   an epoch (`SOURCE_DATE_EPOCH` in a build, else 0);
//! - overlayfs whiteouts (character devices 0:0) become `.wh.NAME` entries, opaque directories
//!   (`trusted.overlay.opaque` or `user.overlay.opaque` = `y`) a `.wh..wh..opq` entry; overlay
//!   metadata that no layer can carry (redirects, metacopy) is refused;
//! - files linked together inside the tree stay linked (a hardlink entry to the first name);
//! - xattrs other than overlayfs's are kept as PAX `SCHILY.xattr.` records; sockets, which a
//!   layer cannot hold, are left out and reported;
//! - nothing is followed: every name is opened relative to its directory's fd with
//!   `O_NOFOLLOW`, and a file must still be the one that was listed (same inode, same size)
//!   while it is read.
//!
//! The tar is hashed (the diff_id), gzip-compressed with fixed settings (level 6, no name, mtime
//! 0) and hashed again (the blob's digest) in one pass.

use super::apply::{is_whiteout, list_dir, lstat_at, stored_xattrs};
use super::{hex, ImageError};
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode as Perm};
use sha2::{Digest, Sha256};
use std::ffi::{CStr, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What [`write_layer`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// sha256 of the gzip blob.
    pub digest: String,
    /// Bytes of the gzip blob.
    pub size: u64,
    /// What the tree held that a layer cannot (sockets), one line each.
    pub notes: Vec<String>,
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let context = format!("{what} /{}", path.display());
    move |source| ImageError::Io { context, source }
}

/// Writes the tree at `dir` as a gzip OCI layer blob into `out`, the same bytes every time for
/// the same tree: entries sorted, numeric owners, mtimes clamped to `epoch` (seconds; a build
/// uses `SOURCE_DATE_EPOCH`, else 0), overlayfs whiteouts and opaque directories written as OCI
/// whiteouts (so an overlay upper directory becomes the layer of what changed), nothing
/// followed. Returns its diff_id, digest and size.
///
/// ```no_run
/// let mut blob = Vec::new();
/// let l = cagette::write_layer("/tmp/upper".as_ref(), 0, &mut blob)?;
/// assert_eq!(l.size, blob.len() as u64);
/// println!("{} (diff_id {})", l.digest, l.diff_id);
/// # Ok::<(), cagette::ImageError>(())
/// ```
pub fn write_layer(dir: &Path, epoch: u64, out: impl Write + Send) -> Result<WrittenLayer, ImageError> {
    write_layer_mapped(dir, epoch, out, None)
}

/// [`write_layer`], with the files of one host owner (`(uid, gid)`: a rootless build's, whose
/// sandbox root is that user) written as root's (0:0).
pub(super) fn write_layer_mapped(dir: &Path, epoch: u64, out: impl Write + Send, owner: Option<(u32, u32)>) -> Result<WrittenLayer, ImageError> {
    // The directory itself is not followed either (a symlink there is refused).
    let root = nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::empty()).map_err(|e| ImageError::Io { context: format!("open the directory {}", dir.display()), source: e.into() })?;
    let mut w = Walk { epoch, owner, links: std::collections::HashMap::new(), notes: Vec::new() };
    let (diff_id, digest, size) = compressed(out, |b| w.dir(b, root.as_fd(), Path::new("")))?;
    Ok(WrittenLayer { diff_id, digest, size, notes: w.notes })
}

/// Runs `tar` (which writes a layer's entries) and returns the tar's sha256 (the diff_id) and
/// the gzip blob's sha256 and size. The tar is made and hashed on this thread while another
/// compresses it (level 6, no name, mtime 0) and hashes the result: the two costs overlap. The
/// bytes are the same as from one thread.
fn compressed<W: Write + Send>(out: W, tar: impl FnOnce(&mut tar::Builder<Chunks>) -> Result<(), ImageError>) -> Result<(String, String, u64), ImageError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let gzip = scope.spawn(move || -> io::Result<(String, u64)> {
            let gz_out = Hashing { inner: out, hash: Sha256::new(), n: 0 };
            let mut gz = flate2::GzBuilder::new().mtime(0).write(gz_out, flate2::Compression::new(6));
            for chunk in rx {
                gz.write_all(&chunk)?;
            }
            let mut gz_out = gz.finish()?;
            gz_out.flush()?;
            Ok((format!("sha256:{}", hex(&gz_out.hash.finalize())), gz_out.n))
        });
        let mut b = tar::Builder::new(Chunks { tx: Some(tx), buf: Vec::with_capacity(CHUNK), hash: Sha256::new() });
        let made = tar(&mut b).and_then(|()| b.into_inner().map_err(|e| ImageError::Io { context: "finish the layer tar".into(), source: e }));
        let diff_id = made.and_then(|mut c| {
            c.send().map_err(|e| ImageError::Io { context: "compress the layer".into(), source: e })?;
            Ok(format!("sha256:{}", hex(&std::mem::take(&mut c.hash).finalize())))
        });
        // The compressor's own error first: a producer that failed on a closed channel only
        // saw its effect.
        let (digest, size) = gzip.join().unwrap_or_else(|_| Err(io::Error::other("the compressing thread panicked"))).map_err(|e| ImageError::Io { context: "compress the layer".into(), source: e })?;
        Ok((diff_id?, digest, size))
    })
}

const CHUNK: usize = 1 << 20;

/// What the tar writer writes to: hashed here, handed to the compressing thread in chunks.
struct Chunks {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    hash: Sha256,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx.as_ref().ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?.send(full).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the compressing thread stopped"))?;
        }
        Ok(())
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hash.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // Closing the channel ends the compressing thread.
        self.tx.take();
    }
}

struct Walk {
    epoch: u64,
    /// A host owner written as root's.
    owner: Option<(u32, u32)>,
    /// (dev, ino) of files with more than one link → the first path written.
    links: std::collections::HashMap<(u64, u64), PathBuf>,
    notes: Vec<String>,
}

const OVERLAY_REFUSED: [&[u8]; 4] = [b"trusted.overlay.redirect", b"user.overlay.redirect", b"trusted.overlay.metacopy", b"user.overlay.metacopy"];

impl Walk {
    fn header(&self, s: &FileStat, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(s.st_mode & 0o7777);
        let (uid, gid) = match self.owner {
            Some((u, g)) => (if s.st_uid == u { 0 } else { s.st_uid }, if s.st_gid == g { 0 } else { s.st_gid }),
            None => (s.st_uid, s.st_gid),
        };
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime((s.st_mtime.max(0) as u64).min(self.epoch));
        h.set_size(size);
        h
    }

    /// The xattrs a layer keeps (not overlayfs's own), as one PAX header before the entry;
    /// overlay metadata no layer can carry is refused.
    fn xattrs<W: Write>(&self, b: &mut tar::Builder<W>, fd: BorrowedFd<'_>, path: &Path) -> Result<(), ImageError> {
        let mut all = stored_xattrs(fd).map_err(io_err("read the xattrs of", path))?;
        if let Some((name, _)) = all.iter().find(|(n, _)| OVERLAY_REFUSED.contains(&n.as_slice())) {
            return Err(ImageError::Invalid(format!("/{} has the overlay attribute {}: a layer cannot carry a redirect or metacopy (mount the overlay without redirect_dir and metacopy)", path.display(), String::from_utf8_lossy(name))));
        }
        all.retain(|(n, _)| !n.starts_with(b"trusted.overlay.") && !n.starts_with(b"user.overlay."));
        if all.is_empty() {
            return Ok(());
        }
        all.sort();
        let mut data = Vec::new();
        for (name, value) in all {
            let mut rec = b"SCHILY.xattr.".to_vec();
            rec.extend_from_slice(&name);
            rec.push(b'=');
            rec.extend_from_slice(&value);
            rec.push(b'\n');
            // "LEN KEY=VALUE\n", LEN counting itself.
            let mut len = rec.len() + 2;
            while format!("{len} ").len() + rec.len() != len {
                len = format!("{len} ").len() + rec.len();
            }
            data.extend_from_slice(format!("{len} ").as_bytes());
            data.extend_from_slice(&rec);
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, "PaxHeader", &data[..]).map_err(io_err("write the xattrs of", path))
    }

    fn dir<W: Write>(&mut self, b: &mut tar::Builder<W>, fd: BorrowedFd<'_>, rel: &Path) -> Result<(), ImageError> {
        let mut names = list_dir(fd).map_err(io_err("list", rel))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = rel.join(OsStr::from_bytes(name.as_bytes()));
            let Some(s) = lstat_at(fd, &name) else { continue }; // gone since the listing
            self.entry(b, fd, &name, &path, &s)?;
        }
        Ok(())
    }

    fn open(fd: BorrowedFd<'_>, name: &CStr, flags: OFlag, path: &Path) -> Result<OwnedFd, ImageError> {
        nix::fcntl::openat(fd, name, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Perm::empty()).map_err(|e| ImageError::Io { context: format!("open /{}", path.display()), source: e.into() })
    }

    fn entry<W: Write>(&mut self, b: &mut tar::Builder<W>, fd: BorrowedFd<'_>, name: &CStr, path: &Path, s: &FileStat) -> Result<(), ImageError> {
        let same = |now: &FileStat| now.st_ino == s.st_ino && now.st_dev == s.st_dev && (now.st_mode & libc::S_IFMT) == (s.st_mode & libc::S_IFMT);
        let changed = || ImageError::Invalid(format!("/{} changed while the layer was written", path.display()));
        if is_whiteout(s) {
            let wh = path.with_file_name(format!(".wh.{}", String::from_utf8_lossy(name.to_bytes())));
            let mut h = self.header(s, tar::EntryType::Regular, 0);
            h.set_mode(0);
            return b.append_data(&mut h, &wh, io::empty()).map_err(io_err("write the whiteout of", path));
        }
        match s.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = Self::open(fd, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, path)?;
                if !nix::sys::stat::fstat(&sub).is_ok_and(|now| same(&now)) {
                    return Err(changed());
                }
                self.xattrs(b, sub.as_fd(), path)?;
                let mut h = self.header(s, tar::EntryType::Directory, 0);
                b.append_data(&mut h, path, io::empty()).map_err(io_err("write", path))?;
                let mut v = [0u8; 2];
                let opaque = [c"trusted.overlay.opaque", c"user.overlay.opaque"].iter().any(|n| matches!(rustix::fs::fgetxattr(&sub, *n, &mut v[..]), Ok(1)) && v[0] == b'y');
                if opaque {
                    let mut h = self.header(s, tar::EntryType::Regular, 0);
                    h.set_mode(0);
                    b.append_data(&mut h, path.join(".wh..wh..opq"), io::empty()).map_err(io_err("write the opaque mark of", path))?;
                }
                self.dir(b, sub.as_fd(), path)
            }
            libc::S_IFREG => {
                if s.st_nlink > 1 {
                    if let Some(first) = self.links.get(&(s.st_dev, s.st_ino)) {
                        let mut h = self.header(s, tar::EntryType::Link, 0);
                        return b.append_link(&mut h, path, first).map_err(io_err("write the hardlink", path));
                    }
                    self.links.insert((s.st_dev, s.st_ino), path.to_path_buf());
                }
                let f = std::fs::File::from(Self::open(fd, name, OFlag::O_RDONLY, path)?);
                if !nix::sys::stat::fstat(&f).is_ok_and(|now| same(&now) && now.st_size == s.st_size) {
                    return Err(changed());
                }
                self.xattrs(b, f.as_fd(), path)?;
                let mut h = self.header(s, tar::EntryType::Regular, s.st_size as u64);
                // Exactly the size listed: a file that shrinks meanwhile fails the copy.
                let mut r = (&f).take(s.st_size as u64);
                b.append_data(&mut h, path, &mut r).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { changed() } else { ImageError::Io { context: format!("write /{}", path.display()), source: e } })
            }
            libc::S_IFLNK => {
                let mut target = vec![0u8; 4097];
                let n = rustix::fs::readlinkat_raw(fd, name, &mut target[..]).map_err(|e| ImageError::Io { context: format!("read the link /{}", path.display()), source: e.into() })?;
                if n >= target.len() {
                    return Err(ImageError::Invalid(format!("/{}: a link target longer than 4096 bytes", path.display())));
                }
                target.truncate(n);
                let mut h = self.header(s, tar::EntryType::Symlink, 0);
                b.append_link(&mut h, path, Path::new(OsStr::from_bytes(&target))).map_err(io_err("write the link", path))
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = match s.st_mode & libc::S_IFMT {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(s, kind, 0);
                if kind != tar::EntryType::Fifo {
                    h.set_device_major(nix::sys::stat::major(s.st_rdev) as u32).map_err(io_err("write the device", path))?;
                    h.set_device_minor(nix::sys::stat::minor(s.st_rdev) as u32).map_err(io_err("write the device", path))?;
                }
                b.append_data(&mut h, path, io::empty()).map_err(io_err("write", path))
            }
            _ => {
                self.notes.push(format!("/{}: a socket, which a layer cannot hold, left out", path.display()));
                Ok(())
            }
        }
    }
}

/// What one entry of a planned layer is (see [`write_planned`]).
pub(super) enum Planned {
    Dir,
    /// A host file, read without following a link; it must still have this size.
    File(FileSource, u64),
    Symlink(PathBuf),
}

/// Where the bytes of a planned file come from.
pub(super) enum FileSource {
    /// A file of cagette's own making (a temporary file), opened without following a link.
    Path(PathBuf),
    /// A file of a tree (a build context, a stage's root), named by its path below the tree's
    /// root with no symlink on the way. It is opened again below that root when the layer is
    /// written, still without any symlink: a directory swapped for a link since the plan was made
    /// is an error, never a read outside the tree.
    Beneath(std::sync::Arc<OwnedFd>, String),
}

impl std::fmt::Display for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Path(p) => write!(f, "{}", p.display()),
            FileSource::Beneath(_, rel) => f.write_str(rel),
        }
    }
}

impl FileSource {
    /// The file, opened for reading without following a link or blocking on a FIFO.
    fn open(&self) -> io::Result<std::fs::File> {
        match self {
            FileSource::Path(p) => open_nofollow(p),
            FileSource::Beneath(root, rel) => open_beneath(root.as_fd(), rel, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK).map(std::fs::File::from),
        }
    }
}

/// `p` opened for reading without following a link at its end or blocking on a FIFO.
pub(super) fn open_nofollow(p: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p)
}

/// `rel` opened below `root` with no symlink followed anywhere on the way (the last component
/// included: with `O_PATH` a symlink there is opened itself) and no `..` above the root
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). An empty `rel` is the root.
pub(super) fn open_beneath(root: BorrowedFd<'_>, rel: &str, flags: rustix::fs::OFlags) -> io::Result<OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(root, rel, flags | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty(), ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS).map_err(io::Error::from)
}

/// One entry of a planned layer: its path in the image (relative), what it is, its mode (the
/// permission bits), owner and mtime (clamped to the epoch).
pub(super) struct PlannedEntry {
    pub path: String,
    pub kind: Planned,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

/// Writes a layer from a list of entries (a COPY step's: files of the build context under new
/// names and owners) without staging them in a directory first: the same tar rules as
/// [`write_layer`] (a directory before what it holds, names sorted bytewise, numeric owners,
/// mtimes clamped to `epoch`, fixed gzip settings). A later entry for the same path replaces an
/// earlier one.
pub(super) fn write_planned(entries: Vec<PlannedEntry>, epoch: u64, out: impl Write + Send) -> Result<WrittenLayer, ImageError> {
    let mut sorted: std::collections::BTreeMap<Vec<Vec<u8>>, PlannedEntry> = std::collections::BTreeMap::new();
    for e in entries {
        let key: Vec<Vec<u8>> = e.path.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect();
        if key.is_empty() {
            continue; // the root itself is never an entry
        }
        sorted.insert(key, e);
    }
    let (diff_id, digest, size) = compressed(out, |b| {
        for e in sorted.into_values() {
            let path = PathBuf::from(&e.path.trim_start_matches('/'));
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode & 0o7777);
            h.set_uid(u64::from(e.uid));
            h.set_gid(u64::from(e.gid));
            h.set_mtime(e.mtime.min(epoch));
            match &e.kind {
                Planned::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, &path, io::empty()).map_err(io_err("write", &path))?;
                }
                Planned::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &path, target).map_err(io_err("write the link", &path))?;
                }
                Planned::File(src, size) => {
                    let changed = || ImageError::Invalid(format!("{src} changed while the layer was written"));
                    let f = src.open().map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) { changed() } else { ImageError::Io { context: format!("read {src} for /{}", path.display()), source: e } })?;
                    if !f.metadata().is_ok_and(|m| m.is_file() && m.len() == *size) {
                        return Err(changed());
                    }
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    let mut r = (&f).take(*size);
                    b.append_data(&mut h, &path, &mut r).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { changed() } else { ImageError::Io { context: format!("write /{}", path.display()), source: e } })?;
                }
            }
        }
        Ok(())
    })?;
    Ok(WrittenLayer { diff_id, digest, size, notes: Vec::new() })
}
