//! Unprivileged id ranges for the jobs of a root caller.
//!
//! As root, a sandbox whose uid 0 were host uid 0 would be root over every host inode it can
//! reach: read `/etc/shadow` through the read-only host root, connect to root-only sockets, write
//! root-only FIFOs. So a root caller's job gets, by default, a range of 65536 ids that no host user
//! owns: the sandbox's ids 0..65535 are host ids `base..base+65535`.
//!
//! The pool is `cagette`'s line of `/etc/subuid` and `/etc/subgid` when both exist (as podman's
//! `--userns=auto` uses `containers`'), else 0x60000000..0x6fffffff, the top of the range systemd
//! reserves for container ids (524288..1879048191, docs/UIDS-GIDS.md), cut in 4096 slices of 65536.
//! A slice is held with an exclusive `flock` on `/run/cagette/idranges/<slice>` for as long as a
//! job uses it, so concurrent hosts never share one; the kernel releases the lock when the host
//! dies or the job ends.

use crate::error::{SetupFailure, Step};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;
use std::sync::OnceLock;

/// Ids in one range.
pub const RANGE_SIZE: u32 = 65536;
const DEFAULT_START: u32 = 0x6000_0000;
const DEFAULT_SLICES: u32 = 4096;
const LOCK_DIR: &str = "/run/cagette/idranges";

/// A held range, released (its lock closed) when dropped.
#[derive(Debug)]
pub(crate) struct IdRange {
    base: u32,
    _lock: Flock<File>,
}

impl IdRange {
    /// The first host id of the range (the sandbox's uid and gid 0).
    pub fn base(&self) -> u32 {
        self.base
    }
}

/// (first id, number of 64K slices) of the pool.
fn pool() -> (u32, u32) {
    static POOL: OnceLock<(u32, u32)> = OnceLock::new();
    *POOL.get_or_init(|| {
        let line = |file: &str| -> Option<(u32, u32)> {
            let text = std::fs::read_to_string(file).ok()?;
            text.lines().find_map(|l| {
                let mut it = l.trim().split(':');
                (it.next()? == "cagette").then_some(())?;
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
        };
        match (line("/etc/subuid"), line("/etc/subgid")) {
            (Some((us, uc)), Some((gs, gc))) if us == gs && uc == gc && uc >= RANGE_SIZE => (us, uc / RANGE_SIZE),
            _ => (DEFAULT_START, DEFAULT_SLICES),
        }
    })
}

fn lock_dir() -> Result<&'static Path, SetupFailure> {
    // Checked once per process; only a success is kept (a failure is tried again next time).
    static MADE: OnceLock<()> = OnceLock::new();
    let dir = Path::new(LOCK_DIR);
    crate::host::once_ok(&MADE, || {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let fail = |e: std::io::Error, what: &str| SetupFailure::new(Step::IdMap, e.raw_os_error(), Some(dir.to_path_buf()), what);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| fail(e, "create the directory of id-range locks"))?;
        let md = std::fs::symlink_metadata(dir).map_err(|e| fail(e, "check the directory of id-range locks"))?;
        if !md.is_dir() || md.uid() != 0 || md.mode() & 0o022 != 0 {
            return Err(SetupFailure::new(Step::IdMap, Some(libc::EPERM), Some(dir.to_path_buf()), "the directory of id-range locks is not a root-owned private directory")
                .hint(format!("remove {LOCK_DIR} and let cagette create it again")));
        }
        Ok(())
    })
    .map(|()| dir)
}

/// Takes a range no other job holds.
pub(crate) fn allocate() -> Result<IdRange, SetupFailure> {
    let dir = lock_dir()?;
    let (start, slices) = pool();
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_mul(40503));
    for i in 0..slices {
        let slice = (seed.wrapping_add(i)) % slices;
        let path = dir.join(slice.to_string());
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path)
            .map_err(|e| SetupFailure::new(Step::IdMap, e.raw_os_error(), Some(path.clone()), "open an id-range lock"))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(IdRange { base: start + slice * RANGE_SIZE, _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(SetupFailure::new(Step::IdMap, Some(e as i32), Some(path), "lock an id range")),
        }
    }
    Err(SetupFailure::new(Step::IdMap, Some(libc::EUSERS), Some(dir.to_path_buf()), &format!("all {slices} id ranges are in use by other jobs"))
        .hint("end some jobs, give cagette a larger pool in /etc/subuid and /etc/subgid (a line `cagette:START:COUNT`), or run with userns = host"))
}
