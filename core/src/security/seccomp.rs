//! System-call filtering: cagette's default profile (the effect of Docker's default), additions
//! and removals, and OCI `linux.seccomp` profiles, all compiled to classic BPF in the parent.
//! The payload only loads the program, right before exec.

use crate::error::{SetupFailure, Step};
use crate::sandbox::spec::{OciSeccomp, SandboxSpec, Seccomp, SeccompMode};
use std::collections::BTreeSet;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const AND_K: u16 = 0x54;
const LD_A: u16 = 0x20;
const JA: u16 = 0x05;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

#[cfg(target_arch = "x86_64")]
fn table() -> &'static [(&'static str, u32)] {
    crate::security::syscall_table::X86_64
}
#[cfg(target_arch = "aarch64")]
fn table() -> &'static [(&'static str, u32)] {
    crate::security::syscall_table::AARCH64
}

/// The name of syscall `nr` on this architecture, if known.
pub(crate) fn name(nr: u32) -> Option<&'static str> {
    table().iter().find(|(_, v)| *v == nr).map(|(n, _)| *n)
}

/// The syscall number of `name` on this architecture, if it has one.
pub(crate) fn number(name: &str) -> Option<u32> {
    // Built once per process: every spawn compiles its filter from ~60 names, and a linear
    // search of the ~460-entry table for each was 1 % of the library's CPU per job.
    static BY_NAME: std::sync::LazyLock<std::collections::HashMap<&'static str, u32>> = std::sync::LazyLock::new(|| table().iter().copied().collect());
    BY_NAME.get(name).copied()
}

/// Syscalls the default profile refuses with EPERM (those this architecture has). The effect of
/// Docker's default profile: kernel modules, kexec, keyrings, bpf, perf, userfaultfd, the mount
/// family, clock setting, reboot, swap, accounting, quotas, raw I/O ports, obsolete and
/// host-wide calls, io_uring, and the file-handle calls of the "shocker" escape.
pub const DEFAULT_DENIED: &[&str] = &[
    "acct", "add_key", "adjtimex", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "fanotify_init", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "get_mempolicy", "init_module", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "mbind", "mount", "mount_setattr", "move_mount", "move_pages", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "query_module", "quotactl",
    "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday", "stime",
    "swapoff", "swapon", "syslog", "_sysctl", "sysfs", "umount", "umount2", "uselib",
    "userfaultfd", "ustat", "vhangup", "vm86", "vm86old",
];

/// Denied too when the sandbox shares the host's pid namespace (then host processes of the
/// same user could be traced).
const PTRACE_FAMILY: &[&str] = &["ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd"];

/// A compiled filter: the program the payload loads.
pub(crate) struct Filter {
    pub prog: Box<[libc::sock_filter]>,
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn fail(what: impl Into<String>) -> SetupFailure {
    SetupFailure::new(Step::Seccomp, Some(libc::EINVAL), None, &what.into())
}

/// One condition on an argument (64-bit values, checked as two 32-bit halves).
#[derive(Clone, Debug)]
enum Cond {
    Eq(u32, u64),
    Ne(u32, u64),
    MaskedEq(u32, u64, u64),
    /// Any of these bits set.
    AnyBits(u32, u32),
}

/// One rule: if the syscall is `nr` and every condition holds, return `ret`.
#[derive(Clone, Debug)]
struct Rule {
    nr: u32,
    conds: Vec<Cond>,
    ret: u32,
}

fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

fn arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

/// The body of one rule: its conditions (each jumping past the rule's `ret` when false, i.e. to
/// the next rule) and its `ret`.
fn rule_body(r: &Rule) -> Result<Vec<libc::sock_filter>, SetupFailure> {
    let mut body: Vec<libc::sock_filter> = Vec::new();
    let mut fixups: Vec<(usize, bool)> = Vec::new(); // (index, the false branch is jt)
    for c in &r.conds {
        match *c {
            Cond::Eq(i, v) => {
                body.push(stmt(LD_A, arg_hi(i)));
                fixups.push((body.len(), false));
                body.push(jump(JEQ_K, (v >> 32) as u32, 0, 0));
                body.push(stmt(LD_A, arg_lo(i)));
                fixups.push((body.len(), false));
                body.push(jump(JEQ_K, v as u32, 0, 0));
            }
            Cond::Ne(i, v) => {
                // Not equal: the high words differ (skip the low test), or the low words do.
                body.push(stmt(LD_A, arg_hi(i)));
                body.push(jump(JEQ_K, (v >> 32) as u32, 0, 2));
                body.push(stmt(LD_A, arg_lo(i)));
                fixups.push((body.len(), true));
                body.push(jump(JEQ_K, v as u32, 0, 0));
            }
            Cond::MaskedEq(i, mask, v) => {
                body.push(stmt(LD_A, arg_hi(i)));
                body.push(stmt(AND_K, (mask >> 32) as u32));
                fixups.push((body.len(), false));
                body.push(jump(JEQ_K, (v >> 32) as u32, 0, 0));
                body.push(stmt(LD_A, arg_lo(i)));
                body.push(stmt(AND_K, mask as u32));
                fixups.push((body.len(), false));
                body.push(jump(JEQ_K, v as u32, 0, 0));
            }
            Cond::AnyBits(i, bits) => {
                body.push(stmt(LD_A, arg_lo(i)));
                fixups.push((body.len(), false));
                body.push(jump(JSET_K, bits, 0, 0));
            }
        }
    }
    body.push(stmt(RET_K, r.ret));
    let end = body.len();
    for (idx, false_is_jt) in fixups {
        let dist = end - idx - 1;
        if dist > 255 {
            return Err(fail("a seccomp rule has too many conditions"));
        }
        if false_is_jt {
            body[idx].jt = dist as u8;
        } else {
            body[idx].jf = dist as u8;
        }
    }
    Ok(body)
}

/// A piece of the syscall-number line: from `start` to the next piece's start.
enum Piece<'a> {
    /// Every number in it gets this action.
    Const(u32),
    /// Exactly one number, with conditional rules (in order), then the default action.
    Rules(Vec<&'a Rule>),
}

/// The tree's leaves: the whole number line, cut where the action changes.
fn pieces<'a>(rules: &'a [Rule], default_ret: u32) -> Vec<(u32, Piece<'a>)> {
    let mut nrs: Vec<u32> = rules.iter().map(|r| r.nr).collect();
    nrs.sort_unstable();
    nrs.dedup();
    let mut out: Vec<(u32, Piece<'a>)> = Vec::new();
    let push_const = |out: &mut Vec<(u32, Piece<'a>)>, start: u32, ret: u32| {
        if let Some((_, Piece::Const(prev))) = out.last()
            && *prev == ret {
                return; // extends the previous piece
            }
        out.push((start, Piece::Const(ret)));
    };
    let mut cur = 0u32;
    for nr in nrs {
        if nr > cur {
            push_const(&mut out, cur, default_ret);
        }
        let group: Vec<&Rule> = rules.iter().filter(|r| r.nr == nr).collect();
        match group.as_slice() {
            [r] if r.conds.is_empty() => push_const(&mut out, nr, r.ret),
            _ => out.push((nr, Piece::Rules(group))),
        }
        cur = nr + 1;
    }
    push_const(&mut out, cur, default_ret);
    out
}

/// A balanced binary search over the pieces (A holds the syscall number everywhere in the
/// tree): a few comparisons per system call, and a short program, which matters because the
/// kernel emulates the filter for every syscall number when it loads it (its action cache).
fn tree(pieces: &[(u32, Piece<'_>)], default_ret: u32) -> Result<Vec<libc::sock_filter>, SetupFailure> {
    match pieces {
        [] => Ok(vec![stmt(RET_K, default_ret)]),
        [(_, Piece::Const(ret))] => Ok(vec![stmt(RET_K, *ret)]),
        [(_, Piece::Rules(rules))] => {
            let mut out = Vec::new();
            for r in rules {
                out.extend(rule_body(r)?);
            }
            out.push(stmt(RET_K, default_ret));
            Ok(out)
        }
        _ => {
            let mid = pieces.len() / 2;
            let left = tree(&pieces[..mid], default_ret)?;
            let right = tree(&pieces[mid..], default_ret)?;
            let start = pieces[mid].0;
            let mut out = if left.len() <= 255 {
                vec![jump(JGE_K, start, left.len() as u8, 0)]
            } else {
                // Too far for a conditional jump: go through `ja`, whose offset is 32 bits.
                vec![jump(JGE_K, start, 0, 1), stmt(JA, left.len() as u32)]
            };
            out.extend(left);
            out.extend(right);
            Ok(out)
        }
    }
}

fn assemble(rules: &[Rule], default_ret: u32) -> Result<Filter, SetupFailure> {
    let mut p: Vec<libc::sock_filter> = Vec::new();
    // Non-native architectures (and x32 on x86_64) are killed outright.
    p.push(stmt(LD_W_ABS, 4));
    p.push(jump(JEQ_K, AUDIT_ARCH, 1, 0));
    p.push(stmt(RET_K, RET_KILL_PROCESS));
    p.push(stmt(LD_W_ABS, 0));
    #[cfg(target_arch = "x86_64")]
    {
        p.push(jump(JGE_K, 0x4000_0000, 0, 1));
        p.push(stmt(RET_K, RET_KILL_PROCESS));
    }
    p.extend(tree(&pieces(rules, default_ret), default_ret)?);
    if p.len() > 4096 {
        return Err(fail(format!("the seccomp program has {} instructions, more than the kernel's 4096", p.len())));
    }
    Ok(Filter { prog: p.into_boxed_slice() })
}

fn errno_ret(e: u32) -> u32 {
    RET_ERRNO | (e & 0xffff)
}

/// Compiles the spec's seccomp settings; `None` when filtering is off.
pub(crate) fn compile(spec: &SandboxSpec) -> Result<Option<Filter>, SetupFailure> {
    let deny_ret = if spec.seccomp_kill { RET_KILL_PROCESS } else { errno_ret(libc::EPERM as u32) };
    let unknown = |name: &str| fail(format!("unknown system call {name:?} in seccomp_allow/seccomp_deny")).hint("use the kernel's names, e.g. \"keyctl\", \"ptrace\"");
    for n in spec.seccomp_allow.iter().chain(spec.seccomp_deny.iter()) {
        if number(n).is_none() {
            return Err(unknown(n));
        }
    }
    let mut rules: Vec<Rule> = Vec::new();
    let default_ret = match &spec.seccomp {
        Seccomp::Mode(SeccompMode::None) => {
            if !spec.seccomp_deny.is_empty() {
                return Err(fail("seccomp_deny needs a seccomp filter, but seccomp is \"none\""));
            }
            return Ok(None);
        }
        Seccomp::Mode(SeccompMode::Default) => {
            let allow: BTreeSet<&str> = spec.seccomp_allow.iter().map(String::as_str).collect();
            let mut deny: BTreeSet<&str> = DEFAULT_DENIED.iter().copied().collect();
            if spec.namespaces.pid != crate::sandbox::spec::NsMode::New {
                deny.extend(PTRACE_FAMILY.iter().copied());
            }
            deny.extend(spec.seccomp_deny.iter().map(String::as_str));
            for name in deny {
                if allow.contains(name) {
                    continue;
                }
                if let Some(nr) = number(name) {
                    rules.push(Rule { nr, conds: vec![], ret: deny_ret });
                }
            }
            if !spec.allow_user_namespaces && !allow.contains("unshare") {
                let newuser = libc::CLONE_NEWUSER as u32;
                for name in ["clone", "unshare"] {
                    if let Some(nr) = number(name) {
                        // clone's flags are its first argument on x86_64 and aarch64.
                        rules.push(Rule { nr, conds: vec![Cond::AnyBits(0, newuser)], ret: deny_ret });
                    }
                }
                // clone3's flags are behind a pointer: answer ENOSYS so libc falls back to clone.
                if let Some(nr) = number("clone3") {
                    rules.push(Rule { nr, conds: vec![], ret: errno_ret(libc::ENOSYS as u32) });
                }
            }
            // ioctl(TIOCSTI) pushes input into a terminal, ioctl(TIOCLINUX) can read and paste a
            // console's screen: refused whatever the fd (a sandbox has no controlling terminal,
            // but its stdio may be the caller's). The command is an unsigned int: compare its low
            // 32 bits only, or a value with high bits set would slip by (CVE-2019-10063).
            if let Some(nr) = number("ioctl") {
                // (c_ulong in glibc's headers, c_int in musl's.)
                #[allow(clippy::unnecessary_cast)]
                for cmd in [libc::TIOCSTI as u64, libc::TIOCLINUX as u64] {
                    rules.push(Rule { nr, conds: vec![Cond::MaskedEq(1, 0xffff_ffff, cmd)], ret: deny_ret });
                }
            }
            // personality: only the harmless personas (as Docker).
            if !allow.contains("personality")
                && let Some(nr) = number("personality") {
                    for ok in [0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
                        rules.push(Rule { nr, conds: vec![Cond::Eq(0, ok)], ret: RET_ALLOW });
                    }
                    rules.push(Rule { nr, conds: vec![], ret: deny_ret });
                }
            RET_ALLOW
        }
        Seccomp::Profile(p) => {
            let default_ret = oci_rules(p, &mut rules)?;
            // Additions on top of a profile: deny first, so they win.
            let mut extra: Vec<Rule> = spec.seccomp_deny.iter().filter_map(|n| number(n)).map(|nr| Rule { nr, conds: vec![], ret: deny_ret }).collect();
            extra.extend(spec.seccomp_allow.iter().filter_map(|n| number(n)).map(|nr| Rule { nr, conds: vec![], ret: RET_ALLOW }));
            extra.append(&mut rules);
            rules = extra;
            default_ret
        }
    };
    assemble(&rules, default_ret).map(Some)
}

fn oci_action(action: &str, errno: Option<u32>) -> Result<u32, SetupFailure> {
    Ok(match action {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => errno_ret(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_LOG" => RET_LOG,
        other => return Err(fail(format!("seccomp action {other} is not supported")).hint("use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL(_PROCESS), SCMP_ACT_TRAP or SCMP_ACT_LOG")),
    })
}

fn oci_rules(p: &OciSeccomp, rules: &mut Vec<Rule>) -> Result<u32, SetupFailure> {
    let default_ret = oci_action(&p.default_action, p.default_errno_ret)?;
    for s in &p.syscalls {
        let ret = oci_action(&s.action, s.errno_ret)?;
        let mut conds = Vec::new();
        for a in &s.args {
            if a.index > 5 {
                return Err(fail(format!("seccomp argument index {} is out of range (0-5)", a.index)));
            }
            conds.push(match a.op.as_str() {
                "SCMP_CMP_EQ" => Cond::Eq(a.index, a.value),
                "SCMP_CMP_NE" => Cond::Ne(a.index, a.value),
                "SCMP_CMP_MASKED_EQ" => Cond::MaskedEq(a.index, a.value, a.value_two),
                other => return Err(fail(format!("seccomp comparison {other} is not supported yet")).hint("use SCMP_CMP_EQ, SCMP_CMP_NE or SCMP_CMP_MASKED_EQ")),
            });
        }
        // Names this kernel or architecture does not know are skipped, as runc does: profiles
        // list syscalls of many kernels.
        for name in &s.names {
            if let Some(nr) = number(name) {
                rules.push(Rule { nr, conds: conds.clone(), ret });
            }
        }
    }
    Ok(default_ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_program_is_small() {
        let f = compile(&SandboxSpec::default()).unwrap().unwrap();
        // Loading costs about 0.2 us per instruction plus the kernel's per-syscall emulation
        // for its action cache: keep the default program short.
        assert!(f.prog.len() < 200, "default seccomp program has {} instructions", f.prog.len());
        eprintln!("default seccomp program: {} instructions", f.prog.len());
    }

    #[test]
    fn every_default_deny_name_is_known_or_absent_on_purpose() {
        // Names this architecture lacks are fine (e.g. vm86 on x86_64); typos are not.
        let known_absent = ["create_module", "get_kernel_syms", "query_module", "nfsservctl", "stime", "umount", "vm86", "vm86old", "_sysctl", "uselib", "ustat", "sysfs"];
        for n in DEFAULT_DENIED {
            assert!(number(n).is_some() || known_absent.contains(n), "unknown syscall name {n:?} in the default profile");
        }
    }
}

#[cfg(test)]
mod dump {
    /// `CAGETTE_DUMP_SECCOMP=FILE cargo test -p cagette --lib dump_default_program` writes the
    /// default program (8-byte sock_filter records) for measuring its load time outside.
    #[test]
    fn dump_default_program() {
        let Some(path) = std::env::var_os("CAGETTE_DUMP_SECCOMP") else { return };
        let f = super::compile(&crate::SandboxSpec::default()).unwrap().unwrap();
        let bytes: Vec<u8> = f.prog.iter().flat_map(|i| [i.code.to_ne_bytes().to_vec(), vec![i.jt, i.jf], i.k.to_ne_bytes().to_vec()].concat()).collect();
        std::fs::write(path, bytes).unwrap();
    }
}
