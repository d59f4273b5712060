//! Security: the payload's privileges (capabilities, user, groups, no_new_privs), its filters
//! (seccomp, Landlock), and the private id ranges of root callers' jobs. Each part plans its steps
//! into the payload's plan (`plan/payload.rs`); the sandbox's init runs them in the payload.

pub(crate) mod caps;
pub(crate) mod idrange;
pub(crate) mod landlock;
pub(crate) mod seccomp;
pub(crate) mod syscall_table;

use crate::error::{SetupFailure, Step};
use crate::plan::payload::{Code as PCode, PayloadPlan};
use crate::sandbox::spec::{NsMode, SandboxSpec};

fn fail(step: Step, what: impl AsRef<str>) -> SetupFailure {
    SetupFailure::new(step, Some(libc::EINVAL), None, what.as_ref())
}

/// Plans the payload's privileges: the bounding set (dropped while it still may), supplementary
/// groups, gid and uid, the remaining capability sets (and ambient ones), no_new_privs.
pub(crate) fn privileges(p: &mut PayloadPlan, spec: &SandboxSpec, user_ns: bool) -> Result<(), SetupFailure> {
    let euid = crate::host::euid();
        // Capabilities: drop the bounding set while we still may, then switch user, then trim
        // the remaining sets.
        let keep_caps = (match &spec.capabilities {
            Some(c) => caps::mask(c),
            None => caps::mask(caps::DEFAULT_CAPABILITIES),
        } | caps::mask(&spec.cap_add))
            & !caps::mask(&spec.cap_drop);
        let ambient = spec.ambient_capabilities && keep_caps != 0;
        let last_cap = u64::from(crate::host::last_cap());
        if spec.namespaces.user != NsMode::Host || euid == 0 {
            p.op(PCode::DropBounding, [keep_caps, last_cap, 0, 0], Step::Capabilities, "drop capabilities from the bounding set", None);
        }
        let setgroups_allowed = !(user_ns && euid != 0);
        if !spec.supplementary_groups.is_empty() && !setgroups_allowed {
            return Err(fail(Step::User, "supplementary groups cannot be set in an unprivileged user namespace (setgroups is denied)"));
        }
        if setgroups_allowed && (user_ns || euid == 0) {
            let bytes: Vec<u8> = spec.supplementary_groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
            let off = p.bytes(&bytes);
            p.op(PCode::SetGroups, [off, spec.supplementary_groups.len() as u64, 0, 0], Step::User, format!("set supplementary groups {:?}", spec.supplementary_groups), None);
        }
        let gid = spec.group.unwrap_or(0);
        let uid = spec.user.unwrap_or(0);
        if user_ns || spec.group.is_some() {
            p.op(PCode::SetGid, [u64::from(gid), 0, 0, 0], Step::User, format!("switch to gid {gid}"), None);
        }
        if ambient && uid != 0 {
            // Keep the permitted set across the switch to a non-zero uid.
            p.op(PCode::KeepCaps, [0; 4], Step::Capabilities, "keep capabilities across the uid switch", None);
        }
        if user_ns || spec.user.is_some() {
            p.op(PCode::SetUid, [u64::from(uid), 0, 0, 0], Step::User, format!("switch to uid {uid}"), None);
        }
        if spec.namespaces.user != NsMode::Host || euid == 0 {
            let keep = if uid == 0 || ambient { keep_caps } else { 0 };
            p.op(PCode::CapSet, [keep, if ambient { keep } else { 0 }, 0, 0], Step::Capabilities, "set the payload's capabilities", None);
            if ambient {
                p.op(PCode::Ambient, [keep, last_cap, 0, 0], Step::Capabilities, "raise the ambient capabilities", None);
            }
        } else if ambient {
            return Err(fail(Step::Capabilities, "ambient capabilities need a user namespace or root"));
        }
        if spec.no_new_privs {
            p.op(PCode::NoNewPrivs, [0; 4], Step::NoNewPrivs, "set no_new_privs", None);
        }

    Ok(())
}

/// Whether the seccomp filter is loaded early, before the payload drops its privileges: without
/// no_new_privs, loading one takes CAP_SYS_ADMIN, which the payload has only until then (as
/// runc does). The payload's later steps (ids, capabilities, chdir, exec) then run under it.
pub(crate) fn seccomp_early(spec: &SandboxSpec) -> Result<bool, SetupFailure> {
    Ok(!spec.no_new_privs && seccomp::compile(spec)?.is_some())
}

/// Plans the seccomp filter's loading (see [`seccomp_early`]).
pub(crate) fn seccomp_op(p: &mut PayloadPlan, spec: &SandboxSpec) -> Result<(), SetupFailure> {
        if let Some(filter) = seccomp::compile(spec)? {
            let bytes: Vec<u8> = filter.prog.iter().flat_map(|i| i.code.to_ne_bytes().into_iter().chain([i.jt, i.jf]).chain(i.k.to_ne_bytes())).collect();
            let off = p.bytes(&bytes);
            let what = if spec.no_new_privs { "load the seccomp filter" } else { "load the seccomp filter (without no_new_privs: needs CAP_SYS_ADMIN)" };
            p.op(PCode::Seccomp, [off, filter.prog.len() as u64, 0, 0], Step::Seccomp, what, None);
        }
    Ok(())
}

/// Plans the payload's filters, as late as possible (a profile could deny what setup needs):
/// Landlock, then seccomp (unless it was loaded early).
pub(crate) fn filters(p: &mut PayloadPlan, spec: &SandboxSpec, seccomp_loaded: bool) -> Result<(), SetupFailure> {
        if let Some(ll) = &spec.landlock {
            landlock::compile(p, ll)?;
        }
        if !seccomp_loaded {
            seccomp_op(p, spec)?;
        }
    Ok(())
}
