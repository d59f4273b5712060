//! Facts about the host process and its kernel that several capabilities ask (read once).

use std::sync::OnceLock;

/// The value in `cell`, made by `make` at the first call that succeeds. A failure is returned
/// and not kept, so the next call tries again (say, after a moment short of descriptors); if two
/// threads make one at once, the first kept wins and the other's is dropped. (std's
/// `OnceLock::get_or_try_init` is not stable yet.)
pub(crate) fn once_ok<T, E>(cell: &OnceLock<T>, make: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = make()?;
    Ok(cell.get_or_init(|| v))
}

/// The caller's effective uid.
pub(crate) fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The caller's effective gid.
pub(crate) fn egid() -> u32 {
    nix::unistd::getegid().as_raw()
}

/// Whether the running kernel is at least `major.minor`.
pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    static V: OnceLock<(u32, u32)> = OnceLock::new();
    let v = *V.get_or_init(|| {
        let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut it = r.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse::<u32>().ok());
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    });
    v >= (major, minor)
}

/// The highest capability number this kernel knows.
pub(crate) fn last_cap() -> u32 {
    static LAST: OnceLock<u32> = OnceLock::new();
    *LAST.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40))
}


/// The kernel's Landlock ABI version (0 without Landlock):
/// landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION), which no wrapper crate has.
pub(crate) fn landlock_abi() -> i64 {
    // SAFETY: with a null attribute pointer, a size of 0 and the VERSION flag the kernel only
    // returns its ABI version (or an error); nothing is read, written or created.
    let r = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1usize) };
    if r > 0 { r } else { 0 }
}
