//! The device allow-list of a job's cgroup on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to the job's cgroup (v2 has no devices controller;
//! runc and crun do the same). It allows read, write and mknod on the standard devices (null, zero,
//! full, random, urandom, tty, ptmx, the ptys), the access each added rule grants on its device,
//! and denies every other.
//! On v1 the devices controller does it (cgroup.rs).
//!
//! The program is built here (a few instructions per device) and loaded once per process for the
//! standard list; a job that adds devices gets its own.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

// The standard allow-list is v1's: (type 'c'/'b', major, minor or any).
use super::cgroup::STANDARD_DEVICES;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

const LDX_W: u8 = 0x61;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const AND64_K: u8 = 0x57;
const RSH64_K: u8 = 0x77;
const JNE_K: u8 = 0x55;
const JSET_K: u8 = 0x45;
const EXIT: u8 = 0x95;

/// BPF_DEVCG_ACC_MKNOD, _READ, _WRITE.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// The program for `extra` then the standard devices: returns 1 (allow) for a listed device
/// and an access its rule grants, 0 for every other. ctx is struct bpf_cgroup_dev_ctx { u32
/// access_type; u32 major; u32 minor }.
pub(crate) fn program(extra: &[crate::DeviceRule]) -> Vec<[u8; 8]> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),     // r2 = access_type
        insn(MOV64_X, 3, 2, 0, 0),   // r3 = r2
        insn(AND64_K, 3, 0, 0, 0xffff), // r3 = device type (1 block, 2 char)
        insn(RSH64_K, 2, 0, 0, 16),  // r2 = access (ACC_* bits)
        insn(LDX_W, 4, 1, 4, 0),     // r4 = major
        insn(LDX_W, 5, 1, 8, 0),     // r5 = minor
    ];
    let all = ACC_MKNOD | ACC_READ | ACC_WRITE;
    let granted = |r: &crate::DeviceRule| [(r.read, ACC_READ), (r.write, ACC_WRITE), (r.mknod, ACC_MKNOD)].iter().filter(|(on, _)| *on).fold(0, |a, (_, b)| a | b);
    let rules = extra.iter().map(|r| (r.kind, r.major, Some(r.minor), granted(r))).chain(STANDARD_DEVICES.iter().map(|&(t, a, b)| (t, a, b, all)));
    for (t, major, minor, access) in rules {
        let ty = if t == 'b' { 1 } else { 2 };
        let mut checks = vec![(JNE_K, 3u8, ty), (JNE_K, 4, major as i32)];
        if let Some(m) = minor {
            checks.push((JNE_K, 5, m as i32));
        }
        if access != all {
            // An access the rule does not grant: any of its bits set.
            checks.push((JSET_K, 2, all & !access));
        }
        let k = checks.len();
        for (i, (code, reg, v)) in checks.into_iter().enumerate() {
            // On mismatch skip the remaining checks and the allow (r0 = 1; exit).
            p.push(insn(code, reg, 0, (k - i - 1 + 2) as i16, v));
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: bpf(2) reads (and for some commands writes) at most sizeof(attr) bytes of this
    // buffer, which lives for the call; the pointers inside it point to live buffers of ours.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

fn load(extra: &[crate::DeviceRule]) -> std::io::Result<OwnedFd> {
    const BPF_PROG_LOAD: i64 = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    let prog: Vec<u8> = program(extra).concat();
    let license = c"Apache-2.0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&((prog.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(prog.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let name = b"cagette_devices";
    attr[48..48 + name.len()].copy_from_slice(name);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: BPF_PROG_LOAD returned a new fd: open, and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the allow-list (standard devices plus `extra`) to the cgroup open as `cgroup`.
pub(crate) fn attach(cgroup: &impl AsRawFd, extra: &[crate::DeviceRule]) -> std::io::Result<()> {
    const BPF_PROG_ATTACH: i64 = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    // The standard program, loaded once per process (only a success is kept: a failure, say a
    // moment short of descriptors or memory, is tried again at the next start).
    static STANDARD_PROG: OnceLock<OwnedFd> = OnceLock::new();
    let own;
    let prog = if extra.is_empty() {
        crate::host::once_ok(&STANDARD_PROG, || load(&[]))?
    } else {
        own = load(extra)?;
        &own
    };
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    // Together with any program a parent cgroup has (systemd's): a device must pass all.
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_jumps_to_the_next_rule() {
        let p = super::program(&[crate::DeviceRule::rwm('c', 10, 229), crate::DeviceRule { kind: 'b', major: 8, minor: 20, read: true, write: false, mknod: false }]);
        // 6 loads, 2 extra (rwm: 5 insns; r: 6 with the access check), 8 standard rules (7 with
        // a minor: 5 insns; pts: 4), the deny (2).
        assert_eq!(p.len(), 6 + 5 + 6 + 7 * 5 + 4 + 2);
        // The first check of the first rule jumps over its 2 other checks and the allow.
        assert_eq!(p[6][0], 0x55);
        assert_eq!(i16::from_le_bytes([p[6][2], p[6][3]]), 4);
        // The read-only rule's access check jumps over the allow when write or mknod is asked.
        let acc = p[6 + 5 + 3];
        assert_eq!((acc[0], acc[1] & 0xf), (0x45, 2));
        assert_eq!(i16::from_le_bytes([acc[2], acc[3]]), 2);
        assert_eq!(i32::from_le_bytes([acc[4], acc[5], acc[6], acc[7]]), 1 | 4);
    }
}
