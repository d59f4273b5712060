//! Files cagette writes on the host (reports, and files read from paths a user gives), handled so
//! that a sandbox that can write into the same directory cannot redirect them: no symlink is
//! followed on the way, a file is written under a temporary name and renamed over the target (a
//! symlink or FIFO planted there is replaced, never written through), and what is read must be a
//! regular file of bounded size (a FIFO cannot hang the reader, /dev/zero cannot exhaust it).

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, renameat};
use nix::sys::stat::{Mode, fstat};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

fn err(path: &Path, e: Errno, what: &str) -> io::Error {
    let hint = if e == Errno::ELOOP { " (a symlink on the way: cagette does not follow symlinks here; give the real path)" } else { "" };
    io::Error::new(io::Error::from(e).kind(), format!("{what} {}: {}{hint}", path.display(), io::Error::from(e)))
}

/// Opens the directory part of `path` without following symlinks; returns it and the file name.
fn parent_dir(path: &Path, what: &str) -> io::Result<(OwnedFd, PathBuf)> {
    let name = path.file_name().map(PathBuf::from).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {}: not a file name", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let how = OpenHow::new().flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let dir = openat2(nix::fcntl::AT_FDCWD, &parent, how).map_err(|e| err(&parent, e, what))?;
    Ok((dir, name))
}

/// Writes `data` to `path` (replacing it) without following a symlink anywhere on the way:
/// the data goes to a new temporary file in the same directory, which is then renamed over the
/// target. The new file is mode 0644.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("cagette-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::os::unix::fs::symlink("/etc/hostname", dir.join("report.json")).unwrap();
/// cagette::write_host_file(&dir.join("report.json"), b"{}\n").unwrap();
/// assert_eq!(std::fs::read(dir.join("report.json")).unwrap(), b"{}\n"); // the link was replaced
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_host_file(path: &Path, data: &[u8]) -> io::Result<()> {
    write_host_file_mode(path, data, 0o644)
}

/// [`write_host_file`] with the new file's mode (0o600 for secrets).
pub(crate) fn write_host_file_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let what = "write";
    let (dir, name) = parent_dir(path, what)?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = PathBuf::from(format!(".{}.cagette-{}-{}", name.to_string_lossy(), std::process::id(), SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(&dir, &tmp, flags, Mode::from_bits_truncate(mode)).map_err(|e| err(path, e, what))?;
    let r = std::fs::File::from(fd).write_all(data).and_then(|()| renameat(&dir, &tmp, &dir, &name).map_err(|e| err(path, e, what)));
    if r.is_err() {
        let _ = nix::unistd::unlinkat(&dir, &tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    r
}

/// Reads a regular file of at most `limit` bytes: a FIFO, device or directory is refused (opened
/// non-blocking, so a FIFO cannot hang the reader), and so is a longer file.
///
/// ```
/// assert!(cagette::read_host_file(std::path::Path::new("/dev/zero"), 1 << 20).is_err());
/// ```
pub fn read_host_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let fd = openat(nix::fcntl::AT_FDCWD, path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty()).map_err(|e| err(path, e, "read"))?;
    let st = fstat(&fd).map_err(|e| err(path, e, "read"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("read {}: not a regular file (a FIFO, device or directory is not read)", path.display())));
    }
    if st.st_size as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("read {}: {} bytes, more than the {limit} allowed", path.display(), st.st_size)));
    }
    let mut out = Vec::with_capacity(st.st_size as usize);
    std::fs::File::from(fd).take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("read {}: more than the {limit} bytes allowed", path.display())));
    }
    Ok(out)
}
