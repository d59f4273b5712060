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

/// Directories that hold cagette's job cgroups on this host (under the cgroup path `rel`).
fn job_parents_of(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        vec![root.join(rel)]
    } else {
        ["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset", "blkio", "devices"].iter().map(|c| root.join(c).join(rel)).collect()
    }
}

fn job_parents() -> Vec<PathBuf> {
    let mut v = job_parents_of("cagette");
    if let Ok(p) = std::env::var("CAGETTE_PARENT") {
        v.extend(job_parents_of(p.trim_start_matches('/')));
    }
    v
}

/// A cgroup parent of a test's own (`top` in every hierarchy): removed, whatever is left below it,
/// when the test ends — also when it fails — so a failing test leaves no cgroup behind.
struct TestParent(String);

impl Drop for TestParent {
    fn drop(&mut self) {
        fn rm(d: &Path) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    rm(&e.path());
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        for p in job_parents_of(&self.0) {
            rm(&p);
        }
    }
}

/// Removes the cgroup directories of a test's own parent path (deepest first, up to and with
/// its top level), in every hierarchy, and checks that nothing is left.
fn remove_parent(rel: &str) {
    let levels: Vec<&str> = rel.split('/').collect();
    for n in (1..=levels.len()).rev() {
        for dir in job_parents_of(&levels[..n].join("/")) {
            let _ = std::fs::remove_dir(dir);
        }
    }
    // Nothing of cagette's may keep the caller's parent alive once its jobs are done (the
    // shared device allow-list cgroup once did, in the devices hierarchy).
    let top = rel.split('/').next().unwrap();
    let left: Vec<PathBuf> = job_parents_of(top).into_iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "the cgroup parent could not be removed after its jobs ended: {left:?} ({:?})", left.iter().flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path())).filter(|p| p.is_dir()).collect::<Vec<_>>());
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
        // The shell then becomes sleep by exec, not by a fork the full pids limit may refuse.
        ..spec(&["sh", "-c", "b() { b | b & }; b; exec sleep 100"])
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
    // A cgroup parent is a cgroup path (/ci/jobs): a relative one or one with ".." is refused.
    for bad in ["relative/jobs", "/ci/../jobs", "/"] {
        let s = SandboxSpec { memory: Some(Size(64 << 20)), cgroup_parent: Some(bad.into()), ..spec(&["true"]) };
        let e = Sandbox::from_spec(s).status().unwrap_err();
        let f = e.setup_failure().unwrap();
        assert_eq!(f.step, Step::Cgroup, "{bad}: {f:?}");
        assert!(f.hint.as_deref().is_some_and(|h| h.contains("/ci/jobs")), "{bad}: {f:?}");
    }

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
    // On v1 that write failed after the sandbox process was made (the cgroups are made while
    // it builds the sandbox): it is gone too.
    let children: String = std::fs::read_dir("/proc/self/task").unwrap().flatten().map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default()).collect();
    assert!(children.trim().is_empty(), "a failed setup left processes: {children}");
}

#[test]
fn the_job_sees_its_own_limits_through_its_cgroup_mount() {
    let _g = serial();
    // On v1 the host makes the job's cgroups while the setup child builds the sandbox, and the
    // child joins them before it makes its cgroup namespace and mounts the hierarchies: the
    // job's own cgroup is then the root it sees, with its limits.
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; grep -E ':(memory|pids):|^0::' /proc/self/cgroup";
    let s = SandboxSpec {
        memory: Some(Size(64 << 20)),
        pids: Some(16),
        mounts: vec![cagette::Mount::Cgroup { destination: "/sys/fs/cgroup".into(), read_only: true }],
        ..spec(&["sh", "-c", script])
    };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.get(..2), Some(&["67108864", "16"][..]), "{text}");
    let own: Vec<&&str> = lines[2..].iter().collect();
    assert!(!own.is_empty() && own.iter().all(|l| l.ends_with(":/")), "the job's cgroups are not the root it sees: {text}");
    assert!(my_job_cgroups().is_empty(), "the job's cgroup was not removed");
}

/// Helper run in a child process by `stale_cgroups_of_a_dead_host_are_swept`.
#[test]
#[ignore]
fn helper_hold_a_job() {
    if std::env::var_os("CAGETTE_HELPER").is_none() {
        return;
    }
    let s = SandboxSpec { memory: Some(Size(64 << 20)), stdout: Stdio::Inherit, cgroup_parent: std::env::var_os("CAGETTE_PARENT").map(PathBuf::from), ..spec(&["sh", "-c", "echo started; sleep 1000.45"]) };
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
    let s = SandboxSpec { pids: Some(8), cgroup_parent: std::env::var_os("CAGETTE_PARENT").map(PathBuf::from), ..spec(&["true"]) };
    assert!(Sandbox::from_spec(s).status().unwrap().success());
}

/// Helper: a job with limits under a descriptor limit that runs out one step later each time
/// (through the host's and the setup child's steps in turn), with the host's root and with a
/// rootfs; one line per attempt, then whether children or descriptors were left.
#[test]
#[ignore]
fn helper_jobs_short_of_descriptors() {
    if std::env::var_os("CAGETTE_HELPER").is_none() {
        return;
    }
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // A rootfs when the test has one (not in the cgroup-v2 VM, which has no source tree).
    let rootfs = std::env::var_os("CAGETTE_ROOTFS").map(PathBuf::from);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let open = fd_count() as u64;
    for root in std::iter::once(None).chain(rootfs.map(Some)) {
        for extra in 0..40u64 {
            setrlimit(Resource::RLIMIT_NOFILE, open + extra, hard).unwrap();
            let s = SandboxSpec { memory: Some(Size(64 << 20)), pids: Some(16), rootfs: root.clone(), ..spec(&["true"]) };
            let r = Sandbox::from_spec(s).status();
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
            match r {
                Ok(o) => println!("attempt {} {extra}: {:?}", root.is_some(), o.verdict),
                Err(e) => println!("attempt {} {extra}: error at {:?}: {e}", root.is_some(), e.setup_failure().map(|f| f.step)),
            }
        }
    }
    // The process keeps the init's memfd (and on v2 the device program) for later starts.
    println!("left: children {} descriptors {} (from {open})", has_children(), fd_count());
}

#[test]
fn a_start_short_of_descriptors_fails_cleanly_at_every_step() {
    let _g = serial();
    // Wherever the descriptors run out (the host's steps, the hand-over of the v1 cgroups, the
    // setup child's), the start ends with an error or runs, and a later start with room runs:
    // nothing hangs or panics, and no process, descriptor or cgroup is left behind.
    let rootfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-busybox-rootfs.sh").exists().then(busybox_rootfs);
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--ignored", "--exact", "helper_jobs_short_of_descriptors", "--nocapture", "--test-threads=1"]).env("CAGETTE_HELPER", "1").stdout(std::process::Stdio::piped());
    if let Some(r) = &rootfs {
        cmd.env("CAGETTE_ROOTFS", r);
    }
    let mut helper = cmd.spawn().unwrap();
    let pid = helper.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = helper.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = helper.kill();
            let _ = helper.wait();
            panic!("a start short of descriptors hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut helper.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "the helper failed: {status:?}\n{out}");
    for root in if rootfs.is_some() { &["false", "true"][..] } else { &["false"][..] } {
        let attempts: Vec<&str> = out.lines().filter(|l| l.contains(&format!("attempt {root} "))).collect();
        assert_eq!(attempts.len(), 40, "{out}");
        assert!(attempts.iter().any(|l| l.contains("error at")), "no start ran short: {out}");
        assert!(attempts.last().is_some_and(|l| l.ends_with("Exited(0)")), "the last start, with room, did not run: {out}");
    }
    let left = out.lines().find(|l| l.starts_with("left: ")).unwrap_or_else(|| panic!("{out}"));
    let n: Vec<u64> = left.split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse().ok()).collect();
    assert!(left.contains("children false") && n.len() == 2 && n[0] <= n[1] + 2, "{left}");
    assert!(job_cgroups_of(pid).is_empty(), "cgroups left: {:?}", job_cgroups_of(pid));
}

#[test]
fn stale_cgroups_of_a_dead_host_are_swept() {
    let _g = serial();
    stale_cgroups_swept_under(None);
    // Under a cgroup parent of the caller's (a cgroup path, created in every hierarchy) too.
    let rel = format!("cagette-test-parent-{}/jobs", std::process::id());
    let _cleanup = TestParent(rel.split('/').next().unwrap().to_string());
    stale_cgroups_swept_under(Some(&rel));
    remove_parent(&rel);
}

fn stale_cgroups_swept_under(parent: Option<&str>) {
    use std::io::Read;
    let exe = std::env::current_exe().unwrap();
    let with_parent = |c: &mut std::process::Command| {
        if let Some(p) = parent {
            c.env("CAGETTE_PARENT", format!("/{p}"));
        }
    };
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["--ignored", "--exact", "helper_hold_a_job", "--nocapture", "--test-threads=1"]).env("CAGETTE_HELPER", "1").stdout(std::process::Stdio::piped());
    with_parent(&mut cmd);
    let mut host = cmd.spawn().unwrap();
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
    let stale = || {
        let prefix = format!("job-{host_pid}-");
        job_parents_of(parent.unwrap_or("cagette"))
            .into_iter()
            .filter_map(|p| std::fs::read_dir(p).ok())
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
            .collect::<Vec<_>>()
    };
    assert!(!stale().is_empty(), "the helper's job has no cgroup");
    host.kill().unwrap();
    host.wait().unwrap();
    // The sandbox itself dies with its host (init notices); its cgroup stays until swept.
    assert!(eventually(5.0, || pids_with("sleep 1000.45").is_empty()), "the job outlived its host");
    assert!(!stale().is_empty(), "expected a stale cgroup before the sweep");
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["--ignored", "--exact", "helper_run_one_job", "--test-threads=1"]).env("CAGETTE_HELPER", "1").stdout(std::process::Stdio::null());
    with_parent(&mut cmd);
    assert!(cmd.status().unwrap().success());
    assert!(stale().is_empty(), "stale cgroups not swept: {:?}", stale());
}

#[test]
fn cgroup_parent_is_a_cgroup_path_created_as_needed() {
    let _g = serial();
    let rel = format!("cagette-test-cgpath-{}/ci/jobs", std::process::id());
    let _cleanup = TestParent(rel.split('/').next().unwrap().to_string());
    let s = SandboxSpec { memory: Some(Size(64 << 20)), pids: Some(16), cgroup_parent: Some(format!("/{rel}").into()), ..spec(&["cat", "/proc/self/cgroup"]) };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    // The job ran in a cgroup below the parent, in every hierarchy it used; gone afterwards.
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !v2 {
        for ctrl in ["memory", "pids"] {
            let line = text.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|x| x == ctrl))).unwrap_or_else(|| panic!("no {ctrl} line in {text}"));
            // With a cgroup namespace of its own the job sees its cgroup as "/".
            assert!(line.ends_with(":/"), "{line}");
        }
    }
    for p in job_parents_of(&rel).into_iter().filter(|p| p.exists()) {
        let left: Vec<_> = std::fs::read_dir(&p).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("job-")).collect();
        assert!(left.is_empty(), "job cgroups left under {}: {left:?}", p.display());
    }
    // The parent is made for the job (seen while one runs) and, made by cagette, goes with it.
    let mut long = Sandbox::from_spec(SandboxSpec { memory: Some(Size(64 << 20)), pids: Some(16), cgroup_parent: Some(format!("/{rel}").into()), ..spec(&["sleep", "30"]) }).spawn().unwrap();
    assert!(job_parents_of(&rel).iter().any(|p| p.is_dir()), "the parent was not created");
    long.kill(libc::SIGKILL).unwrap();
    long.wait().unwrap();
    let top = rel.split('/').next().unwrap();
    let left: Vec<PathBuf> = job_parents_of(top).into_iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "the parent cagette made outlived its last job: {left:?}");
    remove_parent(&rel);
}

#[test]
fn parents_made_for_jobs_go_with_the_last_one_and_a_callers_own_stay() {
    let _g = serial();
    let top = format!("cagette-test-made-{}", std::process::id());
    let _cleanup = TestParent(top.clone());
    let job = |parent: &str, argv: &[&str]| SandboxSpec { memory: Some(Size(64 << 20)), pids: Some(16), cgroup_parent: Some(parent.into()), ..spec(argv) };
    let exists = |rel: &str| job_parents_of(rel).into_iter().filter(|p| p.exists()).collect::<Vec<_>>();
    // Two jobs under one new parent: the first to end leaves it to the other; the last takes
    // it (and every level cagette made) away.
    let shared = format!("/{top}/a/b");
    let mut first = Sandbox::from_spec(job(&shared, &["sleep", "30"])).spawn().unwrap();
    let mut second = Sandbox::from_spec(job(&shared, &["sleep", "30"])).spawn().unwrap();
    first.kill(libc::SIGKILL).unwrap();
    first.wait().unwrap();
    assert!(!exists(&shared[1..]).is_empty(), "the parent went while a job was in it");
    second.kill(libc::SIGKILL).unwrap();
    second.wait().unwrap();
    assert!(exists(&top).is_empty(), "made levels outlived the last job: {:?}", exists(&top));
    // A host directory given as the parent (a cgroup path of the same name): nothing is left.
    let d = TempDir::new("notcg");
    let o = Sandbox::from_spec(job(d.path().to_str().unwrap(), &["true"])).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    let first_level = d.path().components().nth(1).unwrap().as_os_str().to_string_lossy().into_owned();
    let under: Vec<PathBuf> = job_parents_of(&first_level).into_iter().map(|p| p.join(d.path().strip_prefix(format!("/{first_level}")).unwrap())).filter(|p| p.exists()).collect();
    assert!(under.is_empty(), "cgroups left for {}: {under:?}", d.path().display());
    // A parent the caller made before is the caller's: it stays, with nothing of cagette's in it.
    let own = format!("{top}/own");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let ctrls: &[&str] = if v2 { &[""] } else { &["memory", "pids", "cpuacct", "devices", "freezer"] };
    for c in ctrls {
        std::fs::create_dir_all(Path::new("/sys/fs/cgroup").join(c).join(&own)).unwrap();
    }
    let o = Sandbox::from_spec(job(&format!("/{own}"), &["true"])).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    for c in ctrls {
        let p = Path::new("/sys/fs/cgroup").join(c).join(&own);
        assert!(p.is_dir(), "the caller's own parent {} was removed", p.display());
        let inside: Vec<_> = std::fs::read_dir(&p).unwrap().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect();
        assert!(inside.is_empty(), "left in the caller's parent: {inside:?}");
    }
    remove_parent(&own);
    // A level an older cagette made (marked by an empty child cgroup, not the attribute) still
    // goes with the last job under it; a made level is marked by the attribute alone.
    let legacy = format!("{top}/legacy");
    for c in ctrls {
        std::fs::create_dir_all(Path::new("/sys/fs/cgroup").join(c).join(&legacy).join("cagette-made-level")).unwrap();
    }
    let o = Sandbox::from_spec(job(&format!("/{legacy}"), &["true"])).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert!(exists(&legacy).is_empty(), "a level marked by an older cagette outlived its last job: {:?}", exists(&legacy));
    let mut held = Sandbox::from_spec(job(&format!("/{top}/fresh"), &["sleep", "30"])).spawn().unwrap();
    for p in exists(&format!("{top}/fresh")) {
        let mut v = [0u8; 8];
        assert!(rustix::fs::getxattr(&p, c"user.cagette.made-level", &mut v[..]).is_ok(), "{} is not marked", p.display());
        assert!(!p.join("cagette-made-level").exists(), "{} has a mark cgroup beside the attribute", p.display());
    }
    held.kill(libc::SIGKILL).unwrap();
    held.wait().unwrap();
    let fresh = format!("{top}/fresh");
    assert!(exists(&fresh).is_empty(), "made levels outlived the last job: {:?}", exists(&fresh));
}

#[test]
fn the_shared_device_cgroup_goes_with_the_last_job() {
    let _g = serial();
    // cgroup v1 as root: jobs join one shared cgroup of the devices hierarchy for the standard
    // allow-list (v2 attaches an eBPF program to each job's own cgroup instead).
    let devices = Path::new("/sys/fs/cgroup/devices");
    if !devices.join("cgroup.procs").exists() || !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: no cgroup v1 devices hierarchy, or not root");
        return;
    }
    let rel = format!("cagette-test-shareddev-{}", std::process::id());
    let _cleanup = TestParent(rel.clone());
    let shared = devices.join(&rel).join("standard-devices");
    let with_parent = |argv: &[&str]| SandboxSpec { pids: Some(16), cgroup_parent: Some(format!("/{rel}").into()), ..spec(argv) };
    let mut long = Sandbox::from_spec(with_parent(&["sleep", "30"])).spawn().unwrap();
    assert!(shared.is_dir(), "the job did not join a shared device cgroup");
    let tasks = std::fs::read_to_string(shared.join("tasks")).unwrap();
    assert!(tasks.lines().any(|l| l == long.pid().to_string()), "the job is not in {}: {tasks:?}", shared.display());
    // A job that ends while another is in the shared cgroup leaves it (and the other) alone.
    let o = Sandbox::from_spec(with_parent(&["true"])).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert!(shared.is_dir(), "the shared device cgroup was removed while a job was in it");
    assert!(long.try_wait().unwrap().is_none(), "the other job ended");
    // The last job ends: the shared cgroup goes with it, and so can the caller's parent.
    long.kill(libc::SIGKILL).unwrap();
    long.wait().unwrap();
    assert!(!shared.exists(), "the shared device cgroup outlived its last job");
    remove_parent(&rel);
}

#[test]
fn an_oom_kill_of_any_process_ends_the_whole_job() {
    let _g = serial();
    // The OOM killer picks `tail`; the shell would go on and exit 0 (a pass, to a harness).
    let script = "head -c 300000000 /dev/zero | tail -n 1 >/dev/null; sleep 0.5; echo survived";
    let o = Sandbox::from_spec(SandboxSpec { memory: Some(Size(32 << 20)), ..spec(&["sh", "-c", script]) }).output().unwrap();
    assert_eq!(o.status, Verdict::OomKilled, "{o:?}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("survived"), "the job went on after the OOM kill");
    assert!(o.usage.oom_kills >= 1);
    // oom_policy = continue: the shell goes on; the kill is counted. The pipeline's processes
    // raise their oom_score_adj: the kernel can strike a second time while the first victim's
    // pages are still charged (seen: one run in twenty), and with no one else to pick it took
    // the shell itself.
    let script = "(echo 1000 > /proc/self/oom_score_adj; head -c 300000000 /dev/zero | tail -n 1 >/dev/null); sleep 0.5; echo survived";
    let s = SandboxSpec { memory: Some(Size(32 << 20)), oom_policy: cagette::OomPolicy::Continue, ..spec(&["sh", "-c", script]) };
    let o = Sandbox::from_spec(s).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("survived"));
    assert!(o.usage.oom_kills >= 1, "{o:?}");
    assert!(my_job_cgroups().is_empty(), "left behind: {:?}", my_job_cgroups());
}

#[test]
fn a_tiny_memory_limit_is_an_error_and_never_hurts_the_host() {
    let _g = serial();
    // This process (the host) holds more memory than any of the limits below.
    let ballast = vec![1u8; 64 << 20];
    for bytes in [0u64, 1, 4095, 256 << 10] {
        let s = SandboxSpec { memory: Some(Size(bytes)), ..spec(&["true"]) };
        let e = Sandbox::from_spec(s).status().unwrap_err();
        let f = e.setup_failure().unwrap();
        assert_eq!(f.step, Step::Spec, "{bytes}: {f:?}");
        assert!(f.message.contains("memory"), "{f:?}");
    }
    // At the minimum, a job that allocates at once is OOM-killed, many times over: the kill
    // never picks the host (init forks the payload from its own memory).
    for _ in 0..20 {
        let o = Sandbox::from_spec(memory_hog(cagette::MIN_MEMORY)).output().unwrap();
        assert_eq!(o.status, Verdict::OomKilled, "{o:?}");
    }
    assert_eq!(ballast.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    assert!(my_job_cgroups().is_empty(), "left behind: {:?}", my_job_cgroups());
}

#[test]
fn devices_outside_the_allow_list_cannot_be_opened() {
    let _g = serial();
    if unsafe { libc::geteuid() } != 0 {
        return; // the device cgroup needs root
    }
    // Without a user namespace (real root, CAP_MKNOD) only the device cgroup stands between the
    // job and a device node it makes itself: /dev/null's numbers are allowed, /dev/kmsg's not.
    let script = "mknod /dev/allowed c 1 3 && echo x > /dev/allowed && echo null-ok; mknod /dev/denied c 1 11 && head -c1 /dev/denied; echo rc=$?";
    let mut s = SandboxSpec { memory: Some(Size(64 << 20)), ..spec(&["sh", "-c", script]) };
    s.namespaces.user = cagette::NsMode::Host;
    let o = Sandbox::from_spec(s).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("null-ok") && out.contains("rc=1"), "{out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"), "{}", String::from_utf8_lossy(&o.stderr));
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
