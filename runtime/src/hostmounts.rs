//! Containers without a mount namespace of their own (an OCI config that lists none): their
//! root is a bind of the rootfs onto itself in the host's mount namespace, with everything the
//! config mounts inside it, entered with chroot. `create` notes the mounts already stacked on
//! the rootfs (an engine's overlay, say); `delete`, and a `create` that fails, detach the ones
//! above them, which takes every mount inside along (runc and crun leave them on the host).

use crate::error::RtError;
use std::path::Path;

/// The ids of the mounts whose mount point is `path`, bottom first (mountinfo's order).
pub fn mounts_on(path: &Path) -> Vec<u64> {
    use std::os::unix::ffi::OsStrExt;
    let want = path.as_os_str().as_bytes();
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| b == b' ');
            let id = std::str::from_utf8(f.next()?).ok()?.parse::<u64>().ok()?;
            let point = f.nth(3)?;
            (unescape(point) == want).then_some(id)
        })
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Detaches (MNT_DETACH) the mounts on `path` above those in `keep`, the topmost first.
pub fn unmount_above(path: &Path, keep: &[u64]) -> Result<(), RtError> {
    for _ in 0..64 {
        match mounts_on(path).last() {
            Some(top) if !keep.contains(top) => {
                // The path was made canonical at create; its last component is not followed.
                nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW).map_err(|e| RtError::Io { what: format!("unmount the container's root at {}", path.display()), err: e.into() })?;
            }
            _ => return Ok(()),
        }
    }
    Err(RtError::State(format!("{}: more than 64 mounts stacked by the container", path.display())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(super::unescape(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(super::unescape(br"/x\04"), br"/x\04");
    }
}
