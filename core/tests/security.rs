//! The security knobs: OCI seccomp profiles, extra allows and denies, kill mode, capability
//! additions, removals and ambient sets, and Landlock rules.
mod common;
use cagette::{Capability, IdMap, Landlock, Sandbox, SandboxSpec, Seccomp, SeccompMode, Step, Verdict};
use common::*;

fn sh_spec(script: &str) -> SandboxSpec {
    SandboxSpec { argv: vec!["sh".into(), "-c".into(), script.into()], ..Default::default() }
}

fn out(spec: SandboxSpec) -> (Verdict, String) {
    let o = Sandbox::from_spec(spec).output().unwrap();
    let text = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    (o.status, text)
}

#[test]
fn oci_seccomp_profile_with_errno_and_arguments() {
    // Default allow; mkdir fails with EACCES; personality only with argument 0xffffffff.
    let profile: cagette::OciSeccomp = serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall_on_this_kernel"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO"}
        ]
    }))
    .unwrap();
    let py = "import ctypes, errno, os\n\
              l = ctypes.CDLL(None, use_errno=True)\n\
              try:\n    os.mkdir('/tmp/x'); print('mkdir ok')\nexcept OSError as e:\n    print('mkdir', errno.errorcode[e.errno])\n\
              print('query', l.personality(ctypes.c_ulong(0xffffffff)) >= 0)\n\
              r = l.personality(ctypes.c_ulong(0x0040000)); print('set', r, errno.errorcode.get(ctypes.get_errno()))";
    let spec = SandboxSpec { argv: vec!["python3".into(), "-c".into(), py.into()], seccomp: Seccomp::Profile(profile), ..Default::default() };
    let (v, text) = out(spec);
    assert_eq!(v, Verdict::Exited(0), "{text}");
    assert_eq!(text, "mkdir EACCES\nquery True\nset -1 EPERM\n");
}

#[test]
fn default_profile_allow_deny_and_kill() {
    // An extra deny: mkdir refused with EPERM; an extra allow lets the payload make user
    // namespaces' sibling call through (here: unshare without new user namespace flags stays
    // allowed anyway) -- check that allow really removes a default deny: acct.
    let spec = SandboxSpec { seccomp_deny: vec!["mkdirat".into(), "mkdir".into()], ..sh_spec("mkdir /tmp/x 2>&1; echo rc=$?") };
    let (_, text) = out(spec);
    assert!(text.contains("Operation not permitted") && text.contains("rc=1"), "{text}");

    let py = "import ctypes, errno\nl = ctypes.CDLL(None, use_errno=True)\nl.acct(None)\nprint(errno.errorcode[ctypes.get_errno()])";
    let base = SandboxSpec { argv: vec!["python3".into(), "-c".into(), py.into()], ..Default::default() };
    assert_eq!(out(base.clone()).1, "EPERM\n", "acct is denied by default (seccomp)");
    // Allowed through the filter, the kernel itself still refuses it: no CAP_SYS_PACCT.
    assert_eq!(out(SandboxSpec { seccomp_allow: vec!["acct".into()], ..base.clone() }).1, "EPERM\n");
    assert_eq!(out(SandboxSpec { seccomp: Seccomp::Mode(SeccompMode::None), ..base }).1, "EPERM\n");

    // Kill mode: the denied call kills the process with SIGSYS; the verdict names the call
    // when the kernel's audit record is readable (root).
    let spec = SandboxSpec {
        argv: vec!["python3".into(), "-c".into(), "import ctypes; ctypes.CDLL(None).syscall(250, 0, 0, 0, 0, 0)".into()],
        seccomp_kill: true,
        ..Default::default()
    };
    let (v, _) = out(spec);
    let expected = if unsafe { libc::geteuid() } == 0 { Some("keyctl".to_string()) } else { None };
    assert_eq!(v, Verdict::SeccompKilled { syscall: expected });
    assert_eq!(v.exit_code(), 128 + libc::SIGSYS);

    // Bad names are refused before anything runs, naming them.
    let e = Sandbox::from_spec(SandboxSpec { seccomp_deny: vec!["not_a_syscall".into()], ..sh_spec("true") }).status().unwrap_err();
    let f = e.setup_failure().unwrap();
    assert_eq!(f.step, Step::Seccomp);
    assert!(f.message.contains("not_a_syscall"));
    // Without no_new_privs the filter is loaded before the privileges are dropped (it takes
    // CAP_SYS_ADMIN then), as runc does: it is in force, and no_new_privs is not set.
    let mut spec = sh_spec("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status");
    spec.no_new_privs = false;
    spec.stdout = cagette::Stdio::Piped;
    let o = Sandbox::from_spec(spec).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("NoNewPrivs:\t0") && text.contains("Seccomp:\t2"), "{text}");
}

fn cap_eff(text: &str, line: &str) -> u64 {
    let l = text.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no {line} in {text}"));
    u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capabilities_add_drop_and_ambient() {
    let bit = |c: Capability| 1u64 << c.number();
    let (_, text) = out(SandboxSpec { cap_add: vec![Capability::CAP_NET_ADMIN], cap_drop: vec![Capability::CAP_CHOWN], ..sh_spec("grep Cap /proc/self/status; chown 1 /tmp 2>&1; echo rc=$?") });
    let eff = cap_eff(&text, "CapEff:");
    assert_ne!(eff & bit(Capability::CAP_NET_ADMIN), 0, "{text}");
    assert_eq!(eff & bit(Capability::CAP_CHOWN), 0, "{text}");
    assert_eq!(cap_eff(&text, "CapBnd:") & bit(Capability::CAP_SYS_ADMIN), 0, "{text}");
    assert!(text.contains("rc=1"), "chown without CAP_CHOWN must fail: {text}");

    // A non-root payload keeps nothing, unless ambient capabilities are asked for.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let maps = (vec![IdMap { inside: 0, outside: 0, count: 2000 }], vec![IdMap { inside: 0, outside: 0, count: 2000 }]);
    let base = SandboxSpec { uid_map: maps.0.clone(), gid_map: maps.1.clone(), user: Some(1000), group: Some(1000), capabilities: Some(vec![Capability::CAP_NET_BIND_SERVICE]), ..sh_spec("grep -E 'Cap(Eff|Amb)' /proc/self/status") };
    let (_, text) = out(base.clone());
    assert_eq!(cap_eff(&text, "CapEff:"), 0, "{text}");
    let (_, text) = out(SandboxSpec { ambient_capabilities: true, ..base });
    assert_eq!(cap_eff(&text, "CapEff:"), bit(Capability::CAP_NET_BIND_SERVICE), "{text}");
    assert_eq!(cap_eff(&text, "CapAmb:"), bit(Capability::CAP_NET_BIND_SERVICE), "{text}");
}

#[test]
fn landlock_read_only_except_declared_paths() {
    if cagette::probe().landlock_abi.is_none() {
        // Fail closed where the kernel has no Landlock.
        let e = Sandbox::from_spec(SandboxSpec { landlock: Some(Landlock::default()), ..sh_spec("true") }).status().unwrap_err();
        assert_eq!(e.setup_failure().unwrap().step, Step::Landlock);
        return;
    }
    let spec = SandboxSpec {
        landlock: Some(Landlock { writable: vec!["/tmp/out".into()] }),
        mounts: vec![cagette::Mount::tmpfs("/tmp/out"), cagette::Mount::tmpfs("/tmp/other")],
        ..sh_spec("echo a > /tmp/out/f && echo out-ok; { echo b > /tmp/other/f; } 2>/dev/null || echo other-refused; cat /etc/hostname > /dev/null && echo read-ok; echo x > /dev/null && echo devnull-ok")
    };
    let (v, text) = out(spec);
    assert_eq!(v, Verdict::Exited(0), "{text}");
    assert_eq!(text, "out-ok\nother-refused\nread-ok\ndevnull-ok\n");
    // A writable path that does not exist: a clear error naming it.
    let e = Sandbox::from_spec(SandboxSpec { landlock: Some(Landlock { writable: vec!["/nope".into()] }), ..sh_spec("true") }).status().unwrap_err();
    let f = e.setup_failure().unwrap();
    assert_eq!((f.step, f.errno), (Step::Landlock, Some(libc::ENOENT)));
    assert_eq!(f.path.as_deref(), Some(std::path::Path::new("/nope")));
}
