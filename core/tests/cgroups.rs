//! Resource limits through real cgroups: OOM verdicts, pids, CPU quota, CPU-time and wall limits,
//! cleanup (1,000 jobs leave nothing), sweeping after a host that died, and fail-closed errors.
//!
//! Runs on cgroup v1 here, and on cgroup v2 inside `../shared/vm/run-in-cgroup2-vm` (see
//! scripts/test.sh). Only busybox-compatible commands are used, so it runs in that VM too.
mod common;
use cagette::{CgroupMode, Sandbox, SandboxSpec, Size, Step, Stdio, TimeLimit, Verdict};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tests check that none of this process's job cgroups remain: run them one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn spec(argv: &[&str]) -> SandboxSpec {
    SandboxSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: Stdio::Null,
        stdout: Stdio::Piped,
        stderr: Stdio::Piped,
        ..Default::default()
    }
}

/// Directories that hold cagette's job cgroups on this host.
fn job_parents() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        vec![root.join("cagette")]
    } else {
        ["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset", "blkio"].iter().map(|c| root.join(c).join("cagette")).collect()
    }
}

/// Job cgroups of this process still present.
fn my_job_cgroups() -> Vec<PathBuf> {
    job_cgroups_of(std::process::id())
}

/// Job cgroups whose host is `pid`.
fn job_cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("job-{pid}-");
    job_parents()
        .into_iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
        .collect()
}

fn memory_hog(limit: u64) -> SandboxSpec {
    // tail keeps its (endless) last line in memory.
    SandboxSpec { memory: Some(Size(limit)), ..spec(&["tail", "/dev/zero"]) }
}

#[test]
fn over_the_memory_limit_is_oom_killed() {
    let _g = serial();
    let limit = 48 << 20;
    let o = Sandbox::from_spec(memory_hog(limit)).output().unwrap();
    assert_eq!(o.status, Verdict::OomKilled, "{o:?}");
    assert_eq!(o.status.exit_code(), 137);
    let peak = o.usage.memory_peak_bytes.expect("cgroup peak");
    assert!(peak as f64 >= limit as f64 * 0.9, "peak {peak} for a limit of {limit}");
    assert!(o.usage.oom_kills >= 1);
    assert!(my_job_cgroups().is_empty(), "cgroup left: {:?}", my_job_cgroups());
}

#[test]
fn sigkill_from_outside_is_not_an_oom_kill() {
    let _g = serial();
    let s = SandboxSpec { memory: Some(Size(64 << 20)), ..spec(&["sleep", "30"]) };
    let mut child = Sandbox::from_spec(s).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    child.kill(libc::SIGKILL).unwrap();
    let o = child.wait().unwrap();
    assert_eq!(o.verdict, Verdict::Signaled(libc::SIGKILL));
    assert_eq!(o.usage.oom_kills, 0);
}

#[test]
fn pids_limit_makes_fork_fail_inside() {
    let _g = serial();
    let s = SandboxSpec { pids: Some(8), ..spec(&["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; wait; echo finished"]) };
    let o = Sandbox::from_spec(s).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains("fork"), "no fork failure reported: {err:?}");
    let peak = o.usage.pids_peak.expect("pids peak");
    assert!(peak <= 8, "pids peak {peak} over the limit of 8");
}

#[test]
fn a_fork_bomb_is_contained_and_killed() {
    let _g = serial();
    let s = SandboxSpec {
        pids: Some(64),
        timeout: Some(Duration::from_millis(1500)),
        ..spec(&["sh", "-c", "b() { b | b & }; b; sleep 100"])
    };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::TimedOut(TimeLimit::Wall), "{o:?}");
    assert!(o.usage.pids_peak.unwrap() <= 64, "{:?}", o.usage);
    assert!(my_job_cgroups().is_empty(), "the bomb's cgroup was not removed");
}

#[test]
fn cpu_quota_of_half_a_cpu() {
    let _g = serial();
    let s = SandboxSpec { cpus: Some(0.5), timeout: Some(Duration::from_secs(2)), ..spec(&["sh", "-c", "while :; do :; done"]) };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::TimedOut(TimeLimit::Wall));
    let cpu = (o.usage.cpu_user + o.usage.cpu_system).as_secs_f64();
    let rate = cpu / o.usage.wall_time.as_secs_f64();
    assert!((0.4..=0.6).contains(&rate), "CPU rate {rate:.3} (cpu {cpu:.3}s over {:?})", o.usage.wall_time);
}

#[test]
fn cpu_time_limit_kills_the_whole_tree() {
    let _g = serial();
    let s = SandboxSpec {
        cpu_time: Some(Duration::from_millis(400)),
        timeout: Some(Duration::from_secs(30)),
        namespaces: cagette::Namespaces { pid: cagette::NsMode::Host, ..Default::default() },
        ..spec(&["sh", "-c", "(while :; do :; done) & (while :; do :; done) & sleep 1000.25"])
    };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::TimedOut(TimeLimit::Cpu), "{o:?}");
    let cpu = o.usage.cpu_user + o.usage.cpu_system;
    assert!(cpu >= Duration::from_millis(400) && cpu < Duration::from_secs(3), "{cpu:?}");
    // Even without a pid namespace, the cgroup kill took every process.
    assert!(eventually(5.0, || pids_with("sleep 1000.25").is_empty()), "a process survived the CPU-time kill");
    assert!(my_job_cgroups().is_empty());
}

#[test]
fn wall_timeout_kills_the_whole_tree_without_a_pid_namespace() {
    let _g = serial();
    let s = SandboxSpec {
        memory: Some(Size(256 << 20)),
        timeout: Some(Duration::from_millis(300)),
        namespaces: cagette::Namespaces { pid: cagette::NsMode::Host, ..Default::default() },
        ..spec(&["sh", "-c", "sleep 1000.35 & sleep 1000.35 & wait"])
    };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::TimedOut(TimeLimit::Wall));
    assert!(eventually(5.0, || pids_with("sleep 1000.35").is_empty()), "a process survived the timeout");
}

#[test]
fn usage_comes_from_the_cgroup() {
    let _g = serial();
    let s = SandboxSpec { cgroup: CgroupMode::Always, ..spec(&["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]) };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(o.usage.memory_peak_bytes.unwrap() > 0);
    assert!(o.usage.pids_peak.unwrap() >= 1);
    assert!(o.usage.cpu_user + o.usage.cpu_system > Duration::ZERO);
}

#[test]
fn a_thousand_jobs_leave_no_cgroup() {
    let _g = serial();
    let n: usize = std::env::var("CAGETTE_TEST_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut oom = 0;
    let mut timed_out = 0;
    for i in 0..n {
        let s = match i % 20 {
            0 => memory_hog(24 << 20),
            1 => SandboxSpec { memory: Some(Size(64 << 20)), timeout: Some(Duration::from_millis(50)), ..spec(&["sleep", "10"]) },
            _ => SandboxSpec { memory: Some(Size(64 << 20)), pids: Some(16), ..spec(&["true"]) },
        };
        match Sandbox::from_spec(s).output().unwrap().status {
            Verdict::OomKilled => oom += 1,
            Verdict::TimedOut(_) => timed_out += 1,
            Verdict::Exited(0) => {}
            other => panic!("job {i}: {other:?}"),
        }
    }
    assert_eq!(oom, n.div_ceil(20));
    assert_eq!(timed_out, (n + 18) / 20);
    assert!(my_job_cgroups().is_empty(), "left behind: {:?}", my_job_cgroups());
}

#[test]
fn limits_fail_closed_with_a_clear_error() {
    let _g = serial();
    // A cgroup parent that is not a cgroup: refused, nothing written there.
    let d = TempDir::new("notcg");
    let s = SandboxSpec { memory: Some(Size(64 << 20)), cgroup_parent: Some(d.path().to_path_buf()), ..spec(&["true"]) };
    let e = Sandbox::from_spec(s).status().unwrap_err();
    let f = e.setup_failure().unwrap();
    assert_eq!(f.step, Step::Cgroup);
    assert!(f.path.as_deref().unwrap().starts_with(d.path()), "{f:?}");
    assert!(f.hint.is_some());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "something was created in a non-cgroup directory");

    // Limits with cgroup = never.
    let s = SandboxSpec { pids: Some(4), cgroup: CgroupMode::Never, ..spec(&["true"]) };
    let f = Sandbox::from_spec(s).status().unwrap_err();
    assert_eq!(f.setup_failure().unwrap().step, Step::Cgroup);

    // A value the kernel refuses names the file.
    let s = SandboxSpec { cpuset_cpus: Some("999".into()), ..spec(&["true"]) };
    let f = Sandbox::from_spec(s).status().unwrap_err();
    let f = f.setup_failure().unwrap();
    assert_eq!(f.step, Step::Cgroup);
    assert!(f.message.contains("cpuset.cpus"), "{f:?}");
    assert!(my_job_cgroups().is_empty(), "a failed setup left its cgroup");
}

/// Helper run in a child process by `stale_cgroups_of_a_dead_host_are_swept`.
#[test]
#[ignore]
fn helper_hold_a_job() {
    if std::env::var_os("CAGETTE_HELPER").is_none() {
        return;
    }
    let s = SandboxSpec { memory: Some(Size(64 << 20)), stdout: Stdio::Inherit, ..spec(&["sh", "-c", "echo started; sleep 1000.45"]) };
    let mut child = Sandbox::from_spec(s).spawn().unwrap();
    child.wait().unwrap();
}

/// Helper: run one job with a limit (the first use in a process sweeps stale cgroups).
#[test]
#[ignore]
fn helper_run_one_job() {
    if std::env::var_os("CAGETTE_HELPER").is_none() {
        return;
    }
    let s = SandboxSpec { pids: Some(8), ..spec(&["true"]) };
    assert!(Sandbox::from_spec(s).status().unwrap().success());
}

#[test]
fn stale_cgroups_of_a_dead_host_are_swept() {
    let _g = serial();
    use std::io::Read;
    let exe = std::env::current_exe().unwrap();
    let mut host = std::process::Command::new(&exe)
        .args(["--ignored", "--exact", "helper_hold_a_job", "--nocapture", "--test-threads=1"])
        .env("CAGETTE_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let host_pid = host.id();
    // Wait until the job runs, then SIGKILL its host: no cleanup code runs there.
    let mut out = host.stdout.take().unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&buf).contains("started") {
        let n = out.read(&mut b).unwrap();
        assert!(n > 0, "helper ended early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..n]);
    }
    let stale = || job_cgroups_of(host_pid);
    assert!(!stale().is_empty(), "the helper's job has no cgroup");
    host.kill().unwrap();
    host.wait().unwrap();
    // The sandbox itself dies with its host (init notices); its cgroup stays until swept.
    assert!(eventually(5.0, || pids_with("sleep 1000.45").is_empty()), "the job outlived its host");
    assert!(!stale().is_empty(), "expected a stale cgroup before the sweep");
    let st = std::process::Command::new(&exe)
        .args(["--ignored", "--exact", "helper_run_one_job", "--test-threads=1"])
        .env("CAGETTE_HELPER", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(stale().is_empty(), "stale cgroups not swept: {:?}", stale());
}

/// The first block device of this host, if any (the cgroup-v2 VM has none).
fn a_block_device() -> Option<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block").ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with("loop") && !n.starts_with("ram")).collect();
    names.sort();
    let name = names.into_iter().next()?;
    let dev = std::fs::read_to_string(format!("/sys/block/{name}/dev")).ok()?.trim().to_string();
    Some((format!("/dev/{name}"), dev))
}

#[test]
fn per_device_io_limits_reach_the_cgroup() {
    let _g = serial();
    let Some((path, majmin)) = a_block_device() else {
        eprintln!("no block device on this host: per-device I/O limits not exercised here");
        return;
    };
    if !std::path::Path::new(&path).exists() {
        return;
    }
    let s = SandboxSpec {
        io_max: vec![cagette::IoMax { device: path.clone(), rbps: Some(Size(1 << 20)), wbps: None, riops: None, wiops: Some(100) }],
        ..spec(&["sleep", "5"])
    };
    let mut child = Sandbox::from_spec(s).spawn().unwrap();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let dirs = my_job_cgroups();
    let text: String = dirs
        .iter()
        .flat_map(|d| {
            let files: &[&str] = if v2 { &["io.max"] } else { &["blkio.throttle.read_bps_device", "blkio.throttle.write_iops_device"] };
            files.iter().map(move |f| std::fs::read_to_string(d.join(f)).unwrap_or_default()).collect::<Vec<_>>()
        })
        .collect();
    child.kill(libc::SIGKILL).unwrap();
    child.wait().unwrap();
    if v2 {
        assert!(text.contains(&format!("{majmin} rbps=1048576")) && text.contains("wiops=100"), "io.max: {text:?}");
    } else {
        assert!(text.contains(&format!("{majmin} 1048576")) && text.contains(&format!("{majmin} 100")), "blkio: {text:?}");
    }
    // A path that is not a block device: refused, naming it.
    let s = SandboxSpec { io_max: vec![cagette::IoMax { device: "/etc/hostname".into(), rbps: Some(Size(1)), wbps: None, riops: None, wiops: None }], ..spec(&["true"]) };
    let e = Sandbox::from_spec(s).status().unwrap_err();
    let f = e.setup_failure().unwrap();
    assert_eq!((f.step, f.errno), (Step::Cgroup, Some(libc::ENOTBLK)), "{f:?}");
    assert!(my_job_cgroups().is_empty());
}
