//! The flat plan: what the parent compiles before clone ([`compile`]), its types ([`ops`]), and
//! the payload's part of it that the sandbox's init runs ([`payload`]). Arrows run one way:
//! `sandbox/spawn` → `plan/compile` → each capability (`fs/`, `limits/`, `security/`) →
//! `plan/ops`; only `child/` executes it.

pub(crate) mod compile;
pub(crate) mod ops;
pub(crate) mod payload;
