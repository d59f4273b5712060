//! Named sandboxes: registered while they run, listed, joined by `exec_in` (as `docker exec`),
//! and unregistered when they end — also when the host that started them died.
mod common;
use cagette::{list_sandboxes, Sandbox, SandboxSpec, Stdio, Verdict};
use common::*;
use std::time::Duration;

/// A unique name per test process and test.
fn name(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

fn listed(n: &str) -> bool {
    list_sandboxes().unwrap().iter().any(|s| s.name == n)
}

/// A named sandbox that waits (`sleep SECS`, a number of its own per test) with a file it
/// wrote in its /tmp.
fn start(n: &str, secs: u32, extra: impl FnOnce(Sandbox) -> Sandbox) -> cagette::Child {
    let sb = Sandbox::new().name(n).command("sh").args(["-c", &format!("echo from-the-sandbox > /tmp/mark; exec sleep {secs}")]).stdin(Stdio::Null);
    let child = extra(sb).spawn().unwrap();
    assert!(eventually(5.0, || listed(n)), "{n} was not listed");
    child
}

fn exec(n: &str, script: &str) -> cagette::Output {
    Sandbox::from_spec(SandboxSpec { exec_in: Some(n.into()), argv: vec!["sh".into(), "-c".into(), script.into()], ..SandboxSpec::default() }).output().unwrap()
}

#[test]
fn a_named_sandbox_is_listed_joined_and_unlisted() {
    let n = name("basic");
    let mut child = start(&n, 61, |s| s.hostname("named-box"));
    let e = list_sandboxes().unwrap().into_iter().find(|s| s.name == n).unwrap();
    assert_eq!(e.pid, child.pid());
    assert_eq!(e.host_pid, std::process::id() as i32);
    assert_eq!(e.argv[0], "sh");
    // The same name again: refused while it runs.
    let again = Sandbox::new().name(&n).command("true").output();
    let err = again.unwrap_err().to_string();
    assert!(err.contains("is running") && err.contains(&n), "{err}");
    // exec_in: its hostname, its /tmp, its pid namespace (pid 1 is its init), its user, filters.
    let o = exec(&n, "hostname; cat /tmp/mark; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'");
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert_eq!(stdout(&o), "named-box\nfrom-the-sandbox\ncagette-init \n0\nNoNewPrivs:1\nSeccomp:2\n");
    // Its user can be chosen (among the ids its user namespace maps: a rootless sandbox maps
    // only root); its env added to; its cwd.
    let spec = SandboxSpec { exec_in: Some(n.clone()), argv: vec!["sh".into(), "-c".into(), "id -u; echo $X; pwd".into()], user: Some(1000), cwd: Some("/tmp".into()), env: [("X".to_string(), "y".to_string())].into(), ..SandboxSpec::default() };
    if nix::unistd::geteuid().is_root() {
        let o = Sandbox::from_spec(spec).output().unwrap();
        assert_eq!(stdout(&o), "1000\ny\n/tmp\n", "{o:?}");
    } else {
        let e = Sandbox::from_spec(spec).output().unwrap_err().to_string();
        assert!(e.contains("uid 1000") && e.contains("mapped"), "{e}");
    }
    // A terminal of the sandbox's own devpts.
    let o = Sandbox::from_spec(SandboxSpec { exec_in: Some(n.clone()), argv: vec!["tty".into()], tty: true, ..SandboxSpec::default() }).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    // A timeout ends the command, not the sandbox.
    let o = Sandbox::from_spec(SandboxSpec { exec_in: Some(n.clone()), argv: vec!["sleep".into(), "30".into()], timeout: Some(Duration::from_millis(300)), ..SandboxSpec::default() }).output().unwrap();
    assert!(matches!(o.status, Verdict::TimedOut(_)), "{o:?}");
    assert!(child.try_wait().unwrap().is_none(), "the sandbox goes on");
    // Ended: unlisted, its file gone.
    child.kill(libc::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(!listed(&n));
    let e = Sandbox::new().exec_in(&n).command("true").output().unwrap_err().to_string();
    assert!(e.contains("no running sandbox named"), "{e}");
}

#[test]
fn exec_in_refuses_what_shapes_a_sandbox_and_unknown_names() {
    let o = Sandbox::from_spec(SandboxSpec { exec_in: Some("no-such-sandbox-here".into()), argv: vec!["true".into()], ..SandboxSpec::default() }).output().unwrap_err();
    assert!(o.to_string().contains("no running sandbox named"), "{o}");
    let n = name("shape");
    let mut child = start(&n, 62, |s| s);
    for (what, spec) in [
        ("memory", SandboxSpec { memory: Some(cagette::Size(64 << 20)), ..SandboxSpec::default() }),
        ("rootfs", SandboxSpec { rootfs: Some("/".into()), ..SandboxSpec::default() }),
        ("hostname", SandboxSpec { hostname: Some("x".into()), ..SandboxSpec::default() }),
    ] {
        let spec = SandboxSpec { exec_in: Some(n.clone()), argv: vec!["true".into()], ..spec };
        let e = Sandbox::from_spec(spec).output().unwrap_err().to_string();
        assert!(e.contains(what) && e.contains("exec_in"), "{what}: {e}");
    }
    for bad in ["", "-x", "a/b", "x y", &"n".repeat(65)] {
        let e = Sandbox::new().name(bad).command("true").output().unwrap_err().to_string();
        assert!(e.contains("name"), "{bad:?}: {e}");
    }
    child.kill(libc::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn exec_joins_the_sandbox_cgroup_and_ends_with_it() {
    if !nix::unistd::geteuid().is_root() {
        return; // a rootless caller has no cgroup of its own here to join: nothing to check
    }
    let n = name("cgroup");
    let mut child = start(&n, 63, |s| s.memory("128M".parse().unwrap()));
    // A command left running in the sandbox: in the job's cgroup (the host sees it there).
    let mut long = Sandbox::from_spec(SandboxSpec { exec_in: Some(n.clone()), argv: vec!["sleep".into(), "64".into()], ..SandboxSpec::default() }).spawn().unwrap();
    let host_pid = long.pid();
    let job_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
    assert!(eventually(5.0, || pids_with("sleep 64").len() == 1));
    let exec_cg: Vec<String> = pids_with("sleep 64").iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default()).collect();
    assert!(exec_cg.iter().all(|c| c == &job_cg), "the exec'd command is in the job's cgroup: {exec_cg:?} vs {job_cg}");
    let e = list_sandboxes().unwrap().into_iter().find(|s| s.name == n).unwrap();
    assert!(e.memory_bytes.is_some_and(|m| m > 0), "{e:?}");
    // The sandbox ends: the command in it ends too (its pid namespace is gone).
    child.kill(libc::SIGKILL).unwrap();
    child.wait().unwrap();
    let o = long.wait().unwrap();
    assert!(matches!(o.verdict, Verdict::Signaled(9) | Verdict::Exited(_)), "{o:?} (host pid {host_pid})");
    assert!(pids_with("sleep 64").is_empty() && pids_with("sleep 63").is_empty(), "nothing left");
}

#[test]
fn a_dead_hosts_entries_are_pruned() {
    // A host that died without unregistering: its file names a pid that is gone (or reused).
    let n = name("dead");
    let mut child = start(&n, 65, |s| s);
    let dir = if nix::unistd::geteuid().is_root() { std::path::PathBuf::from("/run/cagette/sandboxes") } else { std::env::var_os("XDG_RUNTIME_DIR").filter(|x| std::fs::metadata(x).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == nix::unistd::geteuid().as_raw())).map(|x| std::path::Path::new(&x).join("cagette/sandboxes")).unwrap_or_else(|| format!("/tmp/cagette-{}/sandboxes", nix::unistd::geteuid()).into()) };
    let file = dir.join(format!("{n}.json"));
    let saved = std::fs::read(&file).unwrap();
    child.kill(libc::SIGKILL).unwrap();
    child.wait().unwrap();
    std::fs::write(&file, &saved).unwrap(); // as if the host had died before removing it
    assert!(!listed(&n), "a sandbox whose init is gone is not listed");
    assert!(!file.exists(), "and its file is pruned");
    // The name is free again.
    let o = Sandbox::new().name(&n).command("true").output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0));
}
