//! Exit codes, signals, timeouts, reaping, streams and fds: the lifecycle of a job.
mod common;
use cagette::{Sandbox, Stdio, TimeLimit, Verdict};
use common::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

#[test]
fn exit_codes_pass_through_exactly() {
    for code in [0, 1, 3, 42, 125, 126, 127, 128, 200, 255] {
        let o = Sandbox::new().command("sh").args(["-c", &format!("exit {code}")]).status().unwrap();
        assert_eq!(o.verdict, Verdict::Exited(code));
    }
}

#[test]
fn signal_deaths_pass_through_exactly() {
    for sig in [libc::SIGKILL, libc::SIGSEGV, libc::SIGTERM, libc::SIGABRT] {
        let o = Sandbox::new().command("sh").args(["-c", &format!("kill -{sig} $$")]).status().unwrap();
        assert_eq!(o.verdict, Verdict::Signaled(sig), "signal {sig}");
        assert_eq!(o.verdict.exit_code(), 128 + sig);
    }
}

#[test]
fn sigterm_to_the_sandbox_reaches_the_payload() {
    let mut child = sandbox("trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done").spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    child.kill(libc::SIGTERM).unwrap();
    let o = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(o.verdict, Verdict::Exited(42));
    assert_eq!(rest, "got-term\n");
}

#[test]
fn a_copy_of_the_pidfd_signals_the_job_and_says_when_it_has_ended() {
    // What the bindings do: signal through their own copy of the pidfd while the job is waited for.
    let mut child = sandbox("trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done").spawn().unwrap();
    let pidfd = child.pidfd().try_clone_to_owned().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    let fd = std::os::fd::AsFd::as_fd(&pidfd);
    cagette::send_signal(fd, 0).expect("signal 0 to a running job");
    for bad in [-1, 65, 1000] {
        let e = cagette::send_signal(fd, bad).expect_err("an invalid signal number");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "signal {bad}: {e}");
    }
    cagette::send_signal(fd, libc::SIGUSR1).unwrap();
    let o = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!((o.verdict, rest.as_str()), (Verdict::Exited(7), "got-usr1\n"));
    // Ended and reaped: ESRCH, for signal 0 and a real one; never another process.
    for sig in [0, libc::SIGTERM] {
        let e = cagette::send_signal(fd, sig).expect_err("a job that has ended");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "signal {sig}: {e}");
    }
}

#[test]
fn a_wait_limit_beyond_the_clock_is_no_limit() {
    // Instant + Duration::MAX overflows: it once panicked.
    let mut child = Sandbox::new().command("true").spawn().unwrap();
    let o = child.wait_timeout(Duration::MAX).unwrap().expect("ended");
    assert_eq!(o.verdict, Verdict::Exited(0));
}

#[test]
fn orphans_are_reaped_by_init() {
    // Orphans reparented to init are reaped: no zombie remains while the payload still runs.
    let o = sh("for i in 1 2 3; do (sleep 0.05 &) ; done; sleep 0.4; awk '{print $3}' /proc/[0-9]*/stat | grep -c Z");
    assert_eq!(stdout(&o).trim(), "0", "{o:?}");
}

#[test]
fn background_processes_die_with_the_payload() {
    let marker = format!("{}.{}", 3000 + std::process::id() % 1000, 7);
    let o = sh(&format!("sleep {marker} & echo started"));
    assert_eq!(stdout(&o), "started\n");
    assert!(eventually(5.0, || pids_with(&format!("sleep {marker}")).is_empty()), "the background sleep outlived its sandbox");
}

#[test]
fn wall_timeout_kills_the_whole_tree() {
    let marker = format!("{}.{}", 4000 + std::process::id() % 1000, 3);
    let o = Sandbox::new()
        .command("sh")
        .args(["-c", &format!("sleep {marker} & sleep {marker}")])
        .timeout(Duration::from_millis(300))
        .status()
        .unwrap();
    assert_eq!(o.verdict, Verdict::TimedOut(TimeLimit::Wall));
    assert_eq!(o.verdict.exit_code(), 124);
    assert!(o.usage.wall_time >= Duration::from_millis(300));
    assert!(eventually(5.0, || pids_with(&format!("sleep {marker}")).is_empty()), "a process survived the timeout");
}

#[test]
fn wait_timeout_does_not_kill() {
    let mut child = sandbox("sleep 0.3; exit 5").spawn().unwrap();
    assert!(child.wait_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(child.wait().unwrap().verdict, Verdict::Exited(5));
}

#[test]
fn dropping_a_child_kills_it() {
    let marker = format!("{}.{}", 5000 + std::process::id() % 1000, 9);
    let child = Sandbox::new().command("sleep").arg(&marker).spawn().unwrap();
    assert!(eventually(5.0, || !pids_with(&format!("sleep {marker}")).is_empty()));
    drop(child);
    assert!(pids_with(&format!("sleep {marker}")).is_empty(), "drop left the process running");
}

#[test]
fn output_collects_both_streams_without_deadlock() {
    // 1 MiB on each stream, interleaved: a naive sequential read would deadlock.
    let o = sh("i=0; while [ $i -lt 16 ]; do head -c 65536 /dev/zero; head -c 65536 /dev/zero >&2; i=$((i+1)); done");
    assert_eq!(o.status, Verdict::Exited(0));
    assert_eq!(o.stdout.len(), 1 << 20);
    assert_eq!(o.stderr.len(), 1 << 20);
}

#[test]
fn communicate_feeds_stdin() {
    let mut child = sandbox("tr a-z A-Z; exit 3").stdin(Stdio::Piped).spawn().unwrap();
    let input = "hello sandbox\n".repeat(10000);
    let (out, _) = child.communicate(Some(input.as_bytes())).unwrap();
    assert_eq!(out, input.to_uppercase().as_bytes());
    assert_eq!(child.wait().unwrap().verdict, Verdict::Exited(3));
}

#[test]
fn piped_stdin_write_by_hand() {
    let mut child = sandbox("cat").stdin(Stdio::Piped).spawn().unwrap();
    child.stdin.as_mut().unwrap().write_all(b"abc").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.stdout, b"abc");
}

/// Prints the payload's open fds without opening any (a shell would show its own helpers).
const LIST_FDS: &str = "import os\ndef is_open(fd):\n    try:\n        os.fstat(fd)\n        return True\n    except OSError:\n        return False\nprint(' '.join(str(fd) for fd in range(1024) if is_open(fd)))";

#[test]
fn payload_sees_only_its_own_fds() {
    // A host fd that is not close-on-exec must not leak in.
    let leaky = std::fs::File::open("/etc/hostname").unwrap();
    unsafe { libc::fcntl(leaky.as_raw_fd(), libc::F_SETFD, 0) };
    let o = Sandbox::new().command("python3").args(["-c", LIST_FDS]).output().unwrap();
    assert_eq!(stdout(&o), "0 1 2\n", "{o:?}");
    drop(leaky);
}

#[test]
fn passed_fds_arrive_at_their_numbers() {
    let d = TempDir::new("passfd");
    std::fs::write(d.path().join("f"), "passed-content").unwrap();
    let f = std::fs::File::open(d.path().join("f")).unwrap();
    let o = Sandbox::new()
        .pass_fd(f.as_raw_fd(), 7)
        .command("python3")
        .args(["-c", &format!("{LIST_FDS}\nimport os; print(os.read(7, 100).decode())")])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "0 1 2 7\npassed-content\n", "{o:?}");
}

#[test]
fn stdio_to_a_given_fd() {
    let d = TempDir::new("stdiofd");
    let f = std::fs::File::create(d.path().join("out")).unwrap();
    let o = Sandbox::new().command("echo").arg("to-file").stdout(Stdio::Fd(f.as_raw_fd())).status().unwrap();
    assert!(o.success());
    assert_eq!(std::fs::read_to_string(d.path().join("out")).unwrap(), "to-file\n");
}

#[test]
fn env_is_minimal_by_default_and_explicit() {
    unsafe { std::env::set_var("CAGETTE_TEST_SECRET", "leak") };
    let o = Sandbox::new().env("FOO", "bar").command("env").output().unwrap();
    let mut vars: Vec<String> = stdout(&o).lines().map(|l| l.split('=').next().unwrap().to_string()).collect();
    vars.sort();
    assert_eq!(vars, ["FOO", "HOME", "PATH", "TERM"], "{o:?}");
    let o = Sandbox::new().inherit_env(true).command("env").output().unwrap();
    assert!(stdout(&o).contains("CAGETTE_TEST_SECRET=leak"));
}

#[test]
fn usage_reports_cpu_and_memory() {
    let o = Sandbox::new()
        .command("python3")
        .args(["-c", "import time\nb = bytearray(64 << 20)\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"])
        .status()
        .unwrap();
    assert!(o.success(), "{o:?}");
    assert!(o.usage.cpu_user + o.usage.cpu_system >= Duration::from_millis(150), "{:?}", o.usage);
    assert!(o.usage.max_rss_bytes.is_some_and(|b| b >= 64 << 20), "{:?}", o.usage);
    assert!(o.usage.wall_time >= Duration::from_millis(200));
}

#[test]
fn runs_as_a_given_user_without_capabilities() {
    let o = Sandbox::new()
        .uid_map([cagette::IdMap { inside: 0, outside: unsafe { libc::geteuid() }, count: 1 }])
        .command("sh")
        .args(["-c", "id -u; grep CapEff /proc/self/status"])
        .output()
        .unwrap();
    // Root inside keeps the default set: CHOWN..AUDIT_WRITE, not SYS_ADMIN (bit 21).
    let out = stdout(&o);
    let eff = u64::from_str_radix(out.lines().nth(1).unwrap().split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN must be dropped: {out}");
    assert_ne!(eff & 1, 0, "CAP_CHOWN is in the default set: {out}");
    if unsafe { libc::geteuid() } == 0 {
        let o = Sandbox::new()
            .uid_map([cagette::IdMap { inside: 0, outside: 0, count: 2000 }])
            .gid_map([cagette::IdMap { inside: 0, outside: 0, count: 2000 }])
            .user(1000)
            .group(1000)
            .command("sh")
            .args(["-c", "id -u; id -g; grep CapEff /proc/self/status"])
            .output()
            .unwrap();
        assert_eq!(stdout(&o), "1000\n1000\nCapEff:\t0000000000000000\n", "{o:?}");
    }
}

#[test]
fn no_new_privs_is_set() {
    let o = sh("grep NoNewPrivs /proc/self/status");
    assert_eq!(stdout(&o), "NoNewPrivs:\t1\n");
}

#[test]
fn rlimits_apply() {
    let o = Sandbox::new().rlimit(cagette::RlimitResource::Nofile, 64, 128).command("sh").args(["-c", "ulimit -n; ulimit -Hn"]).output().unwrap();
    assert_eq!(stdout(&o), "64\n128\n");
}

#[test]
fn spawn_from_a_thread_that_exits() {
    // The sandbox must survive its spawning thread (PDEATHSIG alone would kill it) and still be
    // waitable from another thread.
    let child = std::thread::spawn(|| sandbox("sleep 0.3; echo alive").spawn().unwrap()).join().unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "alive\n");
}
