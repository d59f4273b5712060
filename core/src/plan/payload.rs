//! The payload's plan: what the payload does between its fork (by the sandbox's init) and its
//! exec — switch user, drop capabilities, load seccomp and Landlock, arrange its fds, exec — as a
//! flat byte buffer that the init (`init/init.c`) reads from a memfd and runs in the payload.
//!
//! The payload is forked by the init, not by the setup child, so that no process of the job ever
//! shares the host's address space once the job can use memory: an OOM kill in the job's cgroup
//! cannot pick a process whose memory is the host's, and the payload's peak RSS is its own (a
//! process that execs from the host's address space inherits the host's peak in its rusage).
//!
//! Format (native-endian u64 words): a header (magic, total size, number of operations, offset of
//! the operations), then data (NUL-terminated strings, arrays), then the operations, five words
//! each (code, four arguments). Strings and arrays are offsets from the start of the buffer.

use crate::error::Step;
use crate::plan::ops::Desc;
use std::path::Path;

/// The plan's first word, as init.c checks it.
const MAGIC: u64 = 0x444c_5941_5054_474c;

/// Operation codes, as in init.c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Code {
    DeathSignal = 1,
    Chdir,
    DropBounding,
    SetGroups,
    SetGid,
    SetUid,
    CapSet,
    KeepCaps,
    Ambient,
    Seccomp,
    LandlockCreate,
    LandlockRule,
    LandlockRestrict,
    NoNewPrivs,
    Fds,
    ControllingTty,
    UnblockSignals,
    Exec,
    Umask,
}

/// The payload plan being built, with a description of each operation for error messages.
#[derive(Default)]
pub(crate) struct PayloadPlan {
    /// Header flags (init.c): bit 0, init watches an OOM eventfd at its fd 7.
    pub flags: u64,
    data: Vec<u8>,
    ops: Vec<[u64; 5]>,
    /// What each operation does (same index as the operations).
    pub descs: Vec<Desc>,
}

const HEADER: usize = 40;

/// Flag: init watches the job's OOM eventfd (cgroup v1) at its fd 7.
pub(crate) const OOM_WATCH: u64 = 1;
/// Flag: no host: init exits with the payload's exit code (an OCI runtime's container).
pub(crate) const DETACHED: u64 = 2;
/// Flag (with DETACHED): init reports READY and waits for a byte on its fd 3 (the start FIFO).
pub(crate) const WAIT_START: u64 = 4;

impl PayloadPlan {
    fn align(&mut self) {
        while !self.data.len().is_multiple_of(8) {
            self.data.push(0);
        }
    }

    /// Appends a NUL-terminated string; returns its offset. (Strings were checked for NUL bytes.)
    pub fn string(&mut self, s: &[u8]) -> u64 {
        let off = HEADER + self.data.len();
        self.data.extend_from_slice(s);
        self.data.push(0);
        self.align();
        off as u64
    }

    /// Appends raw bytes (aligned to 8); returns their offset.
    pub fn bytes(&mut self, b: &[u8]) -> u64 {
        self.align();
        let off = HEADER + self.data.len();
        self.data.extend_from_slice(b);
        self.align();
        off as u64
    }

    /// Appends an array of u64 words, plus a 0 terminator when `terminated`; returns its offset.
    pub fn words(&mut self, w: &[u64], terminated: bool) -> u64 {
        self.align();
        let off = HEADER + self.data.len();
        for x in w {
            self.data.extend_from_slice(&x.to_ne_bytes());
        }
        if terminated {
            self.data.extend_from_slice(&0u64.to_ne_bytes());
        }
        off as u64
    }

    /// Adds an operation.
    pub fn op(&mut self, code: Code, args: [u64; 4], step: Step, what: impl Into<String>, path: Option<&Path>) {
        self.ops.push([code as u64, args[0], args[1], args[2], args[3]]);
        self.descs.push(Desc { step, what: what.into(), path: path.map(Path::to_path_buf), hint: None });
    }

    /// The finished buffer.
    pub fn finish(&self) -> Vec<u8> {
        let mut data = self.data.clone();
        while !data.len().is_multiple_of(8) {
            data.push(0);
        }
        let ops_off = HEADER + data.len();
        let size = ops_off + self.ops.len() * 40;
        let mut out = Vec::with_capacity(size);
        for w in [MAGIC, size as u64, self.ops.len() as u64, ops_off as u64, self.flags] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&data);
        for op in &self.ops {
            for w in op {
                out.extend_from_slice(&w.to_ne_bytes());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_init_reads() {
        let mut p = PayloadPlan::default();
        let s = p.string(b"/bin/true");
        let argv = p.words(&[s], true);
        p.op(Code::Exec, [argv, 1, argv, argv], Step::Exec, "exec", None);
        let b = p.finish();
        let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(w(0), MAGIC);
        assert_eq!(w(1) as usize, b.len());
        assert_eq!(w(2), 1);
        let ops = w(3) as usize;
        assert_eq!(u64::from_ne_bytes(b[ops..ops + 8].try_into().unwrap()), Code::Exec as u64);
        assert_eq!(&b[s as usize..s as usize + 10], b"/bin/true\0");
    }
}
