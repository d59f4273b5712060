//! Landlock: everything read-only and executable, the writable paths (and /dev) fully allowed.

use crate::error::{SetupFailure, Step};
use crate::plan::ops::sandbox_components;
use crate::plan::payload::{Code as PCode, PayloadPlan};
use std::path::Path;

/// Landlock: everything read-only and executable, the writable paths (and /dev) fully allowed.
/// The handled rights follow the kernel's ABI version; no Landlock is an error.
pub(crate) fn compile(p: &mut PayloadPlan, ll: &crate::sandbox::spec::Landlock) -> Result<(), SetupFailure> {
    let abi = crate::host::landlock_abi();
    if abi < 1 {
        return Err(SetupFailure::new(Step::Landlock, Some(libc::EOPNOTSUPP), None, "Landlock rules were asked for, but this kernel has no Landlock")
            .hint("boot a kernel with CONFIG_SECURITY_LANDLOCK and lsm=...,landlock, or drop the landlock option (`cagette probe` tells)"));
    }
    const READ: u64 = 1 | (1 << 2) | (1 << 3); // execute, read file, read dir
    let mut handled: u64 = (1 << 13) - 1; // ABI 1: bits 0-12
    if abi >= 2 {
        handled |= 1 << 13; // refer
    }
    if abi >= 3 {
        handled |= 1 << 14; // truncate
    }
    p.op(PCode::LandlockCreate, [handled, 0, 0, 0], Step::Landlock, format!("create a Landlock ruleset (ABI {abi})"), None);
    let root = p.string(b"/");
    p.op(PCode::LandlockRule, [root, READ, 0, 0], Step::Landlock, "allow reading everywhere", Some(Path::new("/")));
    let mut writable: Vec<String> = vec!["/dev".into()];
    writable.extend(ll.writable.iter().cloned());
    for w in writable {
        sandbox_components(&w, Step::Landlock)?;
        let off = p.string(w.as_bytes());
        p.op(PCode::LandlockRule, [off, handled, 0, 0], Step::Landlock, format!("allow writing under {w}"), Some(Path::new(&w)));
    }
    p.op(PCode::LandlockRestrict, [0; 4], Step::Landlock, "enforce the Landlock ruleset", None);
    Ok(())
}
