//! Detached sandboxes (`Sandbox::spawn_detached`, the OCI runtime's engine): built, waiting for
//! `start` on a FIFO, running on with no host, exiting with the payload's code; and refusals.
mod common;

use cagette::{CgroupMode, DetachOptions, Sandbox};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::path::Path;

fn fifo(dir: &Path) -> (std::path::PathBuf, OwnedFd) {
    let p = dir.join("start");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let f = std::fs::File::options().read(true).write(true).open(&p).expect("open the fifo read-write");
    (p, f.into())
}

fn wait_exit(pid: i32) -> i32 {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)).expect("waitpid") {
        WaitStatus::Exited(_, c) => c,
        other => panic!("init ended otherwise: {other:?}"),
    }
}

fn children(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("detach-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_detached_sandbox_waits_for_start_then_exits_with_the_payloads_code() {
    let dir = tempdir("wait");
    let (path, fd) = fifo(&dir);
    let d = Sandbox::new().userns(cagette::UsernsMode::Host)
        .command("sh")
        .args(["-c", "exit 7"])
        .cgroup(CgroupMode::Always)
        .spawn_detached(DetachOptions { start_fifo: Some(fd), cgroup_name: Some(format!("cagette-test-detach-{}", std::process::id())), ..Default::default() })
        .expect("spawn_detached");
    // Built, and waiting: init runs, its payload not yet.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(Path::new(&format!("/proc/{}", d.pid)).exists());
    assert_eq!(children(d.pid).trim(), "", "the payload must not start before `start`");
    let cg = d.cgroup.clone().expect("a cgroup");
    assert!(cg.exists());
    assert_eq!(cg.procs(), vec![d.pid]);
    // start: one byte into the FIFO (a writer that does not block: init holds it open).
    use std::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    let mut w = std::fs::File::options().write(true).custom_flags(libc::O_NONBLOCK).open(&path).expect("open the fifo to start");
    w.write_all(&[0]).unwrap();
    assert_eq!(wait_exit(d.pid), 7);
    // The cgroup stays until its owner removes it.
    assert!(cg.exists());
    cg.remove().expect("remove the cgroup");
    assert!(!cg.exists());
    // Nobody waits on the FIFO now: a second start fails.
    let e = std::fs::File::options().write(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENXIO));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_a_fifo_the_payload_runs_at_once_and_a_signal_gives_128_plus_its_number() {
    let d = Sandbox::new().userns(cagette::UsernsMode::Host).command("sh").args(["-c", "kill -KILL $$"]).spawn_detached(DetachOptions::default()).expect("spawn_detached");
    assert!(d.cgroup.is_none());
    assert_eq!(wait_exit(d.pid), 128 + 9);
}

#[test]
fn a_detached_sandbox_outlives_the_value_and_is_killed_through_its_cgroup() {
    let d = Sandbox::new().userns(cagette::UsernsMode::Host)
        .command("sleep")
        .arg("30")
        .stdout(cagette::Stdio::Null)
        .stderr(cagette::Stdio::Null)
        .cgroup(CgroupMode::Always)
        .spawn_detached(DetachOptions { start_fifo: None, cgroup_name: Some(format!("cagette-test-detach-kill-{}", std::process::id())), ..Default::default() })
        .expect("spawn_detached");
    let cg = d.cgroup.clone().unwrap();
    let pid = d.pid;
    drop(d);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(cg.procs().len(), 2, "init and sleep still run: {:?}", cg.procs());
    cg.freeze(true).unwrap();
    assert!(cg.is_frozen());
    cg.freeze(false).unwrap();
    cg.kill();
    assert_eq!(wait_exit_or_signal(pid), 9);
    cg.remove().unwrap();
}

fn wait_exit_or_signal(pid: i32) -> i32 {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)).expect("waitpid") {
        WaitStatus::Signaled(_, s, _) => s as i32,
        WaitStatus::Exited(_, c) => 1000 + c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn what_needs_this_process_is_refused_for_a_detached_sandbox() {
    let e = Sandbox::new().userns(cagette::UsernsMode::Host).command("true").timeout(std::time::Duration::from_secs(1)).spawn_detached(DetachOptions::default()).unwrap_err();
    assert!(e.to_string().contains("detached sandbox cannot have a timeout"), "{e}");
    let e = Sandbox::new().userns(cagette::UsernsMode::Host).command("true").name("x").spawn_detached(DetachOptions::default()).unwrap_err();
    assert!(e.to_string().contains("a name"), "{e}");
    let e = Sandbox::new().userns(cagette::UsernsMode::Host)
        .command("true")
        .cgroup(CgroupMode::Always)
        .spawn_detached(DetachOptions { start_fifo: None, cgroup_name: Some("job-1-2-3".into()), ..Default::default() })
        .unwrap_err();
    assert!(e.to_string().contains("not starting with job-"), "{e}");
    // Device rules both cgroup versions cannot read the same way: refused before anything runs.
    let bad = [
        (cagette::DeviceRule::rwm('x', 1, 3), "not 'c' (character) or 'b' (block)"),
        (cagette::DeviceRule::rwm('c', 5000, 1), "majors up to 4095"),
        (cagette::DeviceRule { kind: 'c', major: 1, minor: 3, read: false, write: false, mknod: false }, "allows nothing"),
    ];
    for (rule, want) in bad {
        let e = Sandbox::new().userns(cagette::UsernsMode::Host).command("true").spawn_detached(DetachOptions { allow_devices: vec![rule], ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("allow_devices") && e.to_string().contains(want), "{e}");
    }
}
