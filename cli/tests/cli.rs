//! The `cagette` command line, end to end: flags, exit codes, the report, host death, rootless
//! use, and the clone fallback under a seccomp filter that refuses clone3.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cagette")
}

fn cagette(args: &[&str]) -> Output {
    Command::new(bin()).args(args).stdin(Stdio::null()).output().expect("run cagette")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("cagette-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

fn busybox_rootfs() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if !dir.join("bin/busybox").exists() {
            let tmp = dir.with_extension(std::process::id().to_string());
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-busybox-rootfs.sh");
            assert!(Command::new("sh").arg(script).arg(&tmp).status().unwrap().success(), "busybox-static is needed");
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
    });
    dir
}

fn pids_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&c).replace('\0', " ").starts_with(needle).then_some(pid)
        })
        .collect()
}

fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn the_readme_example_runs() {
    let d = tempdir("readme");
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("src/main.c"), "int main(){}").unwrap();
    let o = Command::new(bin())
        .current_dir(&*d)
        .args(["run", "--net", "none", "--hostname", "box", "--bind", "./src:/src:ro", "--tmpfs", "/tmp", "--", "sh", "-c", "id -u; hostname; ls /src"])
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "0\nbox\nmain.c\n", "{}", text(&o.stderr));
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn exit_status_and_report() {
    let root = busybox_rootfs();
    let o = cagette(&["run", "--rootfs", root.to_str().unwrap(), "--report", "-", "--", "/bin/sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(r["verdict"], "exited");
    assert_eq!(r["exit_code"], 3);
    for k in ["signal", "wall_time_s", "cpu_user_s", "cpu_system_s", "memory_peak_bytes"] {
        assert!(r.get(k).is_some(), "report lacks {k}: {r}");
    }
    assert!(r["wall_time_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn signals_timeouts_and_setup_codes() {
    let o = cagette(&["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15));

    let d = tempdir("report");
    let rp = d.join("r.json");
    let o = cagette(&["run", "--timeout", "200ms", "--report", rp.to_str().unwrap(), "--", "sleep", "10"]);
    assert_eq!(o.status.code(), Some(124));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rp).unwrap()).unwrap();
    assert_eq!(r["verdict"], "timed_out");
    assert_eq!(r["limit"], "wall");

    let o = cagette(&["run", "--report", "-", "--", "no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127));
    let r: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(r["verdict"], "setup_failed");
    assert_eq!(r["step"], "exec");
    let err = text(&o.stderr);
    assert!(err.contains("no-such-command-xyz") && err.contains("hint:"), "{err}");

    let o = cagette(&["run", "--bind", "/no/such/dir:/x", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains("step mount") && err.contains("/no/such/dir") && err.contains("No such file or directory"), "{err}");

    let o = cagette(&["run", "--hostname=-bad", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("hostname"));

    let o = cagette(&["run", "--rootfs", "/no/such/rootfs", "--", "/bin/sh"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("/no/such/rootfs"));

    let o = cagette(&["run", "--bind", "nonsense", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("SRC:DST"));

    let o = cagette(&["run", "--no-such-flag", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "usage errors are cagette's own failures");
    assert!(text(&o.stderr).contains("Usage: cagette run"), "{}", text(&o.stderr));

    // `run` parses through a parser of its own (a faster start): its help is the same one the
    // full command line gives, and `cagette --help` still lists it.
    let o = cagette(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    assert!(help.starts_with("Run a command in a sandbox. Exit status") && help.contains("Usage: cagette run") && help.contains("--memory"), "{help}");
    let o = cagette(&["help", "run"]);
    assert_eq!(text(&o.stdout), help, "`cagette help run` and `cagette run --help` differ");
    let o = cagette(&["--help"]);
    assert!(text(&o.stdout).contains("run      Run a command in a sandbox"), "{}", text(&o.stdout));
}

#[test]
fn sigterm_to_cagette_is_forwarded() {
    let mut child = Command::new(bin())
        .args(["run", "--", "sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn each_forwarded_signal_reaches_the_payload_in_turn() {
    let mut child = Command::new(bin())
        // Bounded: were a signal lost, the job ends at its time limit and the read below fails.
        .args(["run", "--timeout", "20s", "--", "sh", "-c", "trap 'echo usr1' USR1; trap 'echo hup' HUP; trap 'exit 43' INT; echo ready; while :; do sleep 0.05; done"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for (sig, expect) in [(None, "ready\n"), (Some(libc::SIGUSR1), "usr1\n"), (Some(libc::SIGHUP), "hup\n"), (Some(libc::SIGUSR1), "usr1\n")] {
        if let Some(sig) = sig {
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, expect);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(43));
}

#[test]
fn sigkill_of_the_host_kills_the_whole_sandbox() {
    let marker = format!("{}.{}", 6000 + std::process::id() % 1000, 1);
    let mut child = Command::new(bin())
        .args(["run", "--", "sh", "-c", &format!("sleep {marker} & sleep {marker} & wait")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    if !eventually(10, || pids_with(&format!("sleep {marker}")).len() == 2) {
        let _ = child.kill();
        panic!("the sleeps did not start");
    }
    child.kill().unwrap(); // SIGKILL: no cleanup code runs in the host
    child.wait().unwrap();
    assert!(eventually(10, || pids_with(&format!("sleep {marker}")).is_empty()), "sandbox processes survived their host");
}

#[test]
fn print_spec_shows_the_one_description() {
    let o = cagette(&["run", "--print-spec", "--bind", "/usr:/u:ro", "--timeout", "5s", "--share", "pid", "--", "true"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["argv"], serde_json::json!(["true"]));
    assert_eq!(v["mounts"][0]["type"], "bind");
    assert_eq!(v["mounts"][0]["read_only"], true);
    assert_eq!(v["timeout"], 5.0);
    assert_eq!(v["namespaces"]["pid"], "host");
    // Only a spec that would run is shown: a bad value is the usage error a run gives.
    let bad = cagette(&["run", "--print-spec", "--memory", "1", "--", "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(bad.stdout.is_empty() && text(&bad.stderr).contains("--print-spec: memory 1 bytes is below"), "{}", text(&bad.stderr));
    // And the spec file round-trips through --spec.
    let d = tempdir("spec");
    let f = d.join("spec.json");
    std::fs::write(&f, &o.stdout).unwrap();
    let o = cagette(&["run", "--spec", f.to_str().unwrap(), "--", "sh", "-c", "test -d /u/bin && echo ok"]);
    assert_eq!(text(&o.stdout), "ok\n", "{}", text(&o.stderr));
}

#[test]
fn probe_prints_capabilities() {
    let o = cagette(&["probe", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["user_namespaces"], true);
    assert_eq!(v["mount_api"], true);
    assert!(v["cgroup"].is_string());
}

/// A reader that has gone (`cagette ps | head -1`): the command ends with status 141, as
/// SIGPIPE ends a C tool, and does not panic.
#[test]
fn a_reader_that_has_gone_ends_the_output_without_a_panic() {
    for args in [&["probe"][..], &["probe", "--json"], &["ps"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = Command::new(bin()).args(args).env("RUST_BACKTRACE", "1").stdin(Stdio::null()).stdout(writer).output().expect("run cagette");
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {:?}, stderr: {err}", o.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // The same with stderr (`cagette run … 2>&1 | head -1`): a setup failure is still 125.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = Command::new(bin()).args(["run", "--rootfs", "/nonexistent-cagette-root", "--", "true"]).stdin(Stdio::null()).stderr(writer).output().expect("run cagette");
    assert_eq!(o.status.code(), Some(125), "{:?}", o.status);
}

/// Installs a seccomp filter that answers ENOSYS to clone3 (as some container runtimes do).
fn refuse_clone3() -> std::io::Result<()> {
    #[repr(C)]
    struct Filter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct Prog {
        len: u16,
        filter: *const Filter,
    }
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let prog = [
        Filter { code: LD_W_ABS, jt: 0, jf: 0, k: 0 }, // seccomp_data.nr
        Filter { code: JEQ_K, jt: 0, jf: 1, k: libc::SYS_clone3 as u32 },
        Filter { code: RET_K, jt: 0, jf: 0, k: 0x0005_0000 | libc::ENOSYS as u32 }, // SECCOMP_RET_ERRNO
        Filter { code: RET_K, jt: 0, jf: 0, k: 0x7fff_0000 },                        // SECCOMP_RET_ALLOW
    ];
    let p = Prog { len: prog.len() as u16, filter: prog.as_ptr() };
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, 2, &p as *const Prog as libc::c_ulong, 0, 0) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn a_start_short_of_descriptors_ends_with_an_error_never_a_hang() {
    // RLIMIT_NOFILE from 8 up: the descriptors run out at one step after another (on cgroup v1
    // as root, also where the host hands the job's cgroups to the sandbox process). Each start
    // ends, with an error naming the step or with the command's status, and leaves no cgroup.
    let root = busybox_rootfs();
    let (mut ran, mut refused) = (0, 0);
    for n in 8..=48 {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={n}"))
            .arg(bin())
            .args(["run", "--rootfs"])
            .arg(&root)
            .args(["--memory", "64M", "--pids", "16", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run prlimit (util-linux)");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a start with RLIMIT_NOFILE {n} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        if status.success() {
            ran += 1;
        } else {
            refused += 1;
            assert!(err.contains("Too many open files") || err.contains("os error 24"), "RLIMIT_NOFILE {n}: {status:?}: {err}");
        }
        let prefix = format!("job-{pid}-");
        let left: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|h| [h.path().join("cagette"), h.path()])
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "RLIMIT_NOFILE {n} left cgroups: {left:?}");
    }
    assert!(ran > 0 && refused > 0, "ran {ran}, refused {refused}");
}

#[test]
fn falls_back_to_clone_when_clone3_is_refused() {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--hostname", "fallback", "--", "sh", "-c", "hostname; echo $$"]);
    unsafe { cmd.pre_exec(refuse_clone3) };
    let o = cmd.output().unwrap();
    assert_eq!(text(&o.stdout), "fallback\n2\n", "{}", text(&o.stderr));
    // And the filter really refuses clone3 there.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "true"]);
    unsafe { cmd.pre_exec(|| refuse_clone3().and_then(|_| if libc::syscall(libc::SYS_clone3, 0, 0) < 0 && *libc::__errno_location() == libc::ENOSYS { Ok(()) } else { Err(std::io::Error::other("clone3 not refused")) })) };
    assert!(cmd.status().unwrap().success());
}

#[test]
fn rootless_through_a_user_namespace() {
    if unsafe { libc::geteuid() } != 0 {
        return; // this test drops from root to nobody itself
    }
    // Copy the binary where nobody can run it.
    let d = tempdir("rootless");
    let b = d.join("cagette");
    std::fs::copy(bin(), &b).unwrap();
    let root = busybox_rootfs();
    let rootfs = d.join("bb");
    assert!(Command::new("cp").arg("-a").arg(&root).arg(&rootfs).status().unwrap().success());
    Command::new("chmod").args(["-R", "a+rX"]).arg(&*d).status().unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&b)
        .args(["run", "--hostname", "rootless", "--tmpfs", "/scratch", "--", "sh", "-c", "id -u; hostname; cat /proc/self/uid_map | tr -s ' '; echo x > /scratch/f && cat /scratch/f; touch /usr/x 2>/dev/null || echo ro"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "0\nrootless\n 0 65534 1\nx\nro\n", "{}", text(&o.stderr));
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&b)
        .args(["run", "--rootfs"])
        .arg(&rootfs)
        .args(["--report", "-", "--", "/bin/sh", "-c", "exit 3"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    // An unprivileged caller cannot map other ids: a clear error at step id_map.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&b)
        .args(["run", "--uid-map", "0:0:1", "--", "true"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains("step id_map") && err.contains("uid_map") && err.contains("hint"), "{err}");
}

/// A plain layer tar imported by two `cagette image import` processes at once: one unpack
/// (the layer lock), two names, nothing left in staging; `--progress` reports; the image runs.
#[test]
fn image_import_from_two_processes_plain_layer_and_progress() {
    let d = tempdir("img2proc");
    let layer = d.join("busybox.tar.gz");
    assert!(Command::new("tar").arg("-C").arg(busybox_rootfs()).arg("-czf").arg(&layer).arg(".").status().unwrap().success());
    let store = d.join("store");
    let (s, l) = (store.to_str().unwrap(), layer.to_str().unwrap());
    let children: Vec<_> = (0..2)
        .map(|i| Command::new(bin()).args(["image", "--store", s, "import", l, "--name", &format!("bb:{i}"), "--progress"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).starts_with("imported bb:"), "{}", text(&o.stdout));
    }
    // At least the process that did the work drew its progress (the other may find it done).
    assert!(outs.iter().any(|o| text(&o.stderr).contains("1/1 layers")), "{}", text(&outs[0].stderr));
    assert_eq!(std::fs::read_dir(store.join("layers/sha256")).unwrap().count(), 1, "the layer was unpacked once");
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    let ls = cagette(&["image", "--store", s, "ls"]);
    assert!(text(&ls.stdout).contains("bb:0") && text(&ls.stdout).contains("bb:1"), "{}", text(&ls.stdout));
    let o = cagette(&["run", "--store", s, "--image", "bb:1", "--", "/bin/echo", "from-a-plain-layer"]);
    assert_eq!(text(&o.stdout), "from-a-plain-layer\n", "{}", text(&o.stderr));
    // Bad input: a file that is no image at all.
    let junk = d.join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let o = cagette(&["image", "--store", s, "import", junk.to_str().unwrap(), "--name", "junk:1", "-q"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("cagette:"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn the_report_is_never_written_through_a_planted_symlink() {
    // The job makes out/report.json a symlink to a host file; cagette must replace the link,
    // not write through it.
    let d = tempdir("report-link");
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = d.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let plant = format!("ln -s {} /out/report.json", victim.display());
    let o = cagette(&["run", "--bind", &format!("{}:/out", out.display()), "--report", out.join("report.json").to_str().unwrap(), "--", "sh", "-c", &plant]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let md = std::fs::symlink_metadata(out.join("report.json")).unwrap();
    assert!(md.file_type().is_file(), "the report is not a regular file");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["verdict"], "exited");
    // A FIFO planted there does not hang cagette either (it is replaced, never opened).
    let o = cagette(&["run", "--bind", &format!("{}:/out", out.display()), "--report", out.join("r2.json").to_str().unwrap(), "--", "mkfifo", "/out/r2.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(std::fs::symlink_metadata(out.join("r2.json")).unwrap().file_type().is_file());
}

/// Runs `cmd` under `script`, so that it has a real terminal as its controlling terminal.
fn in_a_terminal(cmd: &str) -> Output {
    Command::new("script").args(["-qec", cmd, "/dev/null"]).stdin(Stdio::null()).output().expect("script (util-linux)")
}

#[test]
fn a_real_terminal_is_never_the_sandboxs() {
    // Under a real terminal (the caller's shell's), TIOCSTI from the sandbox is refused, with
    // and without the seccomp filter, and /dev/tty does not open.
    let py = "import fcntl, termios, os\n\
              for fd in (0, 1):\n\
              \x20   try: fcntl.ioctl(fd, termios.TIOCSTI, b'x'); print('injected')\n\
              \x20   except OSError as e: print(e.errno)\n\
              try: open('/dev/tty'); print('tty')\n\
              except OSError as e: print(e.errno)";
    std::fs::write(std::env::temp_dir().join(format!("cagette-tiocsti-{}.py", std::process::id())), py).unwrap();
    let script = std::env::temp_dir().join(format!("cagette-tiocsti-{}.py", std::process::id()));
    for extra in ["", "--seccomp none"] {
        let o = in_a_terminal(&format!("{} run {extra} --bind {}:/t.py:ro -- python3 /t.py", bin(), script.display()));
        let out = text(&o.stdout);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert!(!out.contains("injected") && !out.contains("tty\r"), "{out}");
        // EPERM (1) from the filter or from the kernel (not the controlling terminal), or EIO
        // (5) where the kernel has legacy TIOCSTI off; ENXIO (6) for /dev/tty.
        assert!(lines.len() == 3 && ["1", "5"].contains(&lines[0]) && ["1", "5"].contains(&lines[1]) && lines[2] == "6", "{extra}: {out:?}");
    }
    let _ = std::fs::remove_file(&script);
}

#[test]
fn tty_gives_the_command_a_terminal_of_its_own() {
    let o = in_a_terminal(&format!("stty cols 101 rows 33; {} run -t -- sh -c 'tty; stty size; exit 5'", bin()));
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(out.contains("/dev/pts/0") && out.contains("33 101"), "{out:?}");
    // -it: what is typed reaches the command through its terminal.
    let o = Command::new("script").args(["-qec", &format!("{} run -it -- sh -c 'read x; echo got:$x; exit 3'", bin()), "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"hello\n")?;
        c.wait_with_output()
    }).unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("got:hello"), "{}", text(&o.stdout));
    // Without a terminal of our own, -t still works (output through the sandbox's pty).
    let o = cagette(&["run", "-t", "--", "sh", "-c", "test -t 1 && echo is-a-tty"]);
    assert_eq!(text(&o.stdout).trim(), "is-a-tty");
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let d = tempdir("bad");
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let run = |args: &[&str]| {
        let started = Instant::now();
        let o = Command::new(bin()).current_dir(&*d).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?} took {:?}", started.elapsed());
        o
    };
    let fifo_s = fifo.to_str().unwrap();
    std::fs::write(d.join("empty-rootfs.json"), r#"{"argv": ["true"], "rootfs": ""}"#).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--spec", fifo_s, "--", "true"], "not a regular file"),
        (vec!["run", "--spec", "/dev/zero", "--", "true"], "not a regular file"),
        (vec!["run", "--seccomp", fifo_s, "--", "true"], "not a regular file"),
        (vec!["run", "--user", "4294967295", "--", "true"], "out of range"),
        (vec!["run", "--user", "0:4294967295", "--", "true"], "out of range"),
        (vec!["run", "--rootfs", "", "--", "true"], "a value is required"),
        (vec!["run", "--spec", "empty-rootfs.json"], "rootfs is empty"),
        (vec!["run", "--rootfs", "../../../../../../..", "--", "true"], "host's root directory"),
        (vec!["run", "--bind", ":/x", "--", "true"], "empty source"),
        (vec!["run", "--tmpfs", "/x:mode=77777777", "--", "true"], "mode"),
        (vec!["run", "--timeout", "9300000000000000000", "--", "true"], "longer than the largest"),
        (vec!["run", "--timeout", "3e15h", "--", "true"], "duration"),
        (vec!["run", "--memory", "1", "--", "true"], "below"),
        (vec!["run", "--memory", "0", "--", "true"], "more than 0"),
        (vec!["run", "--pids", "0", "--", "true"], "at least"),
        (vec!["run", "--cpus", "0", "--", "true"], "positive"),
        (vec!["run", "--", ""], "no command"),
        (vec!["run", "--report", "/nonexistent-dir/r.json", "--", "true"], "does not exist"),
        (vec!["image", "import", fifo_s, "--name", "x:1", "--store", "store"], "neither a directory"),
    ];
    for (args, want) in cases {
        let o = run(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A spec with piped streams: refused, not a hang.
    std::fs::write(d.join("piped.json"), r#"{"argv": ["cat"], "stdin": "piped", "stdout": "piped"}"#).unwrap();
    let o = run(&["run", "--spec", "piped.json"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("piped"), "{}", text(&o.stderr));
    // Nothing was created in the working directory (no dev/, proc/, ...), nor left running.
    let mut left: Vec<String> = std::fs::read_dir(&*d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert!(left.iter().all(|n| ["fifo", "piped.json", "empty-rootfs.json", "store"].contains(&n.as_str())), "{left:?}");
    // A report that cannot be written after the run is cagette's failure (125), not a pass.
    let ro = d.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let o = Command::new(bin()).args(["run", "--bind", &format!("{}:/ro", ro.display()), "--report", ro.join("r.json").to_str().unwrap(), "--", "sh", "-c", "mkdir /ro/r.json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("cannot write the report"), "{}", text(&o.stderr));
}

#[test]
fn a_full_store_is_named_and_the_store_stays_hidden() {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let d = tempdir("fullstore");
    // A layer of 4 MB of incompressible data, into a store on a 1 MB tmpfs (mounted in a
    // mount namespace of its own: the host's mount table is not touched).
    let src = d.join("src");
    std::fs::create_dir(&src).unwrap();
    let mut data = vec![0u8; 4 << 20];
    let mut x: u32 = 12345;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(src.join("big"), &data).unwrap();
    let layer = d.join("layer.tar");
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&layer).arg(".").status().unwrap().success());
    let store = d.join("store");
    std::fs::create_dir(&store).unwrap();
    let script = format!("mount -t tmpfs -o size=1m none {s} && exec {} image --store {s} import {} --name big:1 -q", bin(), layer.display(), s = store.display());
    let o = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("the image store {} is full", store.display())) && err.contains("layer 1 of 1"), "{err}");
    // The default root never shows the store (its layers may hold setuid files and devices);
    // one outside /tmp, which the sandbox would see (read-only) otherwise.
    let visible = TempDir(PathBuf::from(format!("/var/tmp/cagette-cli-store-{}", std::process::id())));
    std::fs::create_dir_all(visible.join("layers")).unwrap();
    std::fs::write(visible.join("marker"), "x").unwrap();
    let o = cagette(&["run", "--store", visible.to_str().unwrap(), "--", "ls", "-A", visible.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "", "the store is visible in the sandbox");
    let o = cagette(&["run", "--", "ls", "-A", visible.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("marker"), "the check cannot fail: {}", text(&o.stdout));
}

#[test]
fn docker_habits_work() {
    let d = tempdir("docker");
    std::fs::write(d.join("f"), "in").unwrap();
    let vol = format!("{}:/data:ro", d.display());
    // -v, -m, -w, -u, --rm, --network, --pids-limit, --read-only, and no `--` before the command.
    let o = cagette(&["run", "--rm", "-v", &vol, "-m", "64M", "-w", "/data", "-u", "0:0", "--network", "none", "--pids-limit", "16", "--read-only", "cat", "f"]);
    assert_eq!((o.status.code(), text(&o.stdout).as_str()), (Some(0), "in"), "{}", text(&o.stderr));
    let o = cagette(&["run", "--volume", &vol, "--workdir", "/data", "--", "ls"]);
    assert_eq!(text(&o.stdout), "f\n", "{}", text(&o.stderr));
    // --entrypoint without an image: the command, then the arguments.
    let o = cagette(&["run", "--entrypoint", "echo", "a", "b"]);
    assert_eq!(text(&o.stdout), "a b\n");
    // --security-opt.
    let o = cagette(&["run", "--security-opt", "seccomp=unconfined", "--print-spec", "true"]);
    assert!(text(&o.stdout).contains("\"seccomp\": \"none\""), "{}", text(&o.stdout));
    let o = cagette(&["run", "--security-opt", "label=type:x", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("unsupported --security-opt"), "{}", text(&o.stderr));
    // Negative numbers are named, not a flag-parsing riddle.
    let o = cagette(&["run", "--pids", "-1", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("--pids -1"), "{}", text(&o.stderr));
    // version, images --json, probe with the JSON names in text too.
    assert!(text(&cagette(&["version"]).stdout).starts_with("cagette "));
    let store = d.join("store");
    let o = cagette(&["images", "--store", store.to_str().unwrap(), "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(), serde_json::json!([]));
    let p = text(&cagette(&["probe"]).stdout);
    let j: serde_json::Value = serde_json::from_slice(&cagette(&["probe", "--json"]).stdout).unwrap();
    for k in j.as_object().unwrap().keys() {
        assert!(p.lines().any(|l| l.starts_with(k.as_str())), "probe's text lacks {k}: {p}");
    }
    // An unknown spec key suggests the closest.
    std::fs::write(d.join("s.json"), r#"{"argv": ["true"], "memry": "1G"}"#).unwrap();
    let o = cagette(&["run", "--spec", d.join("s.json").to_str().unwrap()]);
    assert!(text(&o.stderr).contains("did you mean `memory`?"), "{}", text(&o.stderr));
}

/// `run --name`, `ps` (table and --json), `exec` (as docker exec: -e, -w, -u, --timeout, exit
/// codes), and the errors of each.
#[test]
fn named_sandboxes_ps_and_exec() {
    let name = format!("cli-{}", std::process::id());
    let mut web = Command::new(bin()).args(["run", "--name", &name, "--hostname", "web", "--", "sh", "-c", "echo up > /tmp/state; exec sleep 71"]).stdin(Stdio::null()).spawn().unwrap();
    let listed = |json: &str| json.contains(&format!("\"name\":\"{name}\""));
    let mut ok = false;
    for _ in 0..250 {
        if listed(&text(&cagette(&["ps", "--json"]).stdout)) {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ok, "not listed");
    let ps: serde_json::Value = serde_json::from_slice(&cagette(&["ps", "--json"]).stdout).unwrap();
    let me = ps.as_array().unwrap().iter().find(|s| s["name"] == name.as_str()).unwrap().clone();
    assert_eq!(me["argv"][0], "sh");
    let table = text(&cagette(&["ps"]).stdout);
    assert!(table.starts_with("NAME") && table.contains(&name) && table.contains("sleep 71"), "{table}");
    // exec: the sandbox's hostname and files; options; the command's exit code.
    let o = cagette(&["exec", "-e", "X=1", "-w", "/tmp", &name, "sh", "-c", "hostname; cat state; echo $X; pwd; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "web\nup\n1\n/tmp\n");
    // `-e K` takes this environment's value, as `run -e K` does.
    let o = Command::new(bin()).args(["exec", "-e", "FROM_HOST", &name, "sh", "-c", "echo $FROM_HOST"]).env("FROM_HOST", "host-value").stdin(Stdio::null()).output().unwrap();
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), "host-value\n".to_string()), "{}", text(&o.stderr));
    let o = cagette(&["exec", "--timeout", "200ms", &name, "sleep", "5"]);
    assert_eq!(o.status.code(), Some(124));
    let o = cagette(&["exec", &name, "no-such-command"]);
    assert_eq!(o.status.code(), Some(127));
    // Errors: the same name twice, an unknown name, a bad name, exec without a command.
    let o = cagette(&["run", "--name", &name, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("is running"), "{}", text(&o.stderr));
    let o = cagette(&["exec", "no-such-sandbox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("no running sandbox named") && text(&o.stderr).contains("cagette ps"), "{}", text(&o.stderr));
    let o = cagette(&["run", "--name", "bad/name", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(cagette(&["exec", &name]).status.code() == Some(125));
    // Ended: no longer listed.
    unsafe { libc::kill(web.id() as i32, libc::SIGTERM) };
    web.wait().unwrap();
    assert!(!listed(&text(&cagette(&["ps", "--json"]).stdout)));
}

#[test]
fn net_private_flags_and_a_missing_helper() {
    // The flags, end to end: DNS, hosts, and a published port refused before anything runs.
    let o = cagette(&["run", "--net", "private", "--dns", "9.9.9.9", "--add-host", "db:10.0.2.2", "--", "cat", "/etc/resolv.conf", "/etc/hosts"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("nameserver 9.9.9.9\n") && text(&o.stdout).contains("10.0.2.2\tdb\n"), "{}", text(&o.stdout));
    let o = cagette(&["run", "--net", "private", "-p", "80", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("invalid --publish: publish \"80\""), "{}", text(&o.stderr));
    let o = cagette(&["run", "--publish", "8080:80", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("publish needs network \"private\""), "{}", text(&o.stderr));
    // No slirp4netns: fails closed, says what to install, leaves nothing.
    let o = Command::new(bin()).args(["run", "--net", "private", "--", "true"]).env("CAGETTE_SLIRP4NETNS", "/nonexistent/slirp4netns").stdin(Stdio::null()).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains("needs slirp4netns, which is not installed") && err.contains("apt install slirp4netns"), "{err}");
    let o = Command::new(bin()).args(["probe", "--json"]).env("CAGETTE_SLIRP4NETNS", "/nonexistent/slirp4netns").output().unwrap();
    let probe: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(probe["private_network_problem"], "slirp4netns is not installed", "{probe}");
}

/// `cagette build` as root and as nobody (rootless, through a user namespace): the same image
/// digest, the rootless step's files written as root's in the layer.
#[test]
fn build_as_root_and_rootless_gives_the_same_image() {
    if unsafe { libc::geteuid() } != 0 {
        return; // this test drops from root to nobody itself
    }
    let d = tempdir("build-rootless");
    let b = d.join("cagette");
    std::fs::copy(bin(), &b).unwrap();
    // The base: busybox as a one-layer OCI layout.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-busybox-image.py");
    let lay = d.join("lay");
    assert!(Command::new("python3").arg(&script).arg(busybox_rootfs()).arg(&lay).status().unwrap().success());
    let ctx = d.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "file\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox:1\nCOPY --chown=5:5 f /f\nRUN rm /bin/true && mkdir /d && echo x > /d/x && echo $(id -u) > /d/id\nCMD [\"cat\", \"/d/x\"]\n").unwrap();
    let mine = d.join("nobody");
    std::fs::create_dir_all(&mine).unwrap();
    Command::new("chmod").args(["-R", "a+rX"]).arg(&*d).status().unwrap();
    Command::new("chown").args(["65534:65534"]).arg(&mine).status().unwrap();
    let as_nobody = |args: &[&str]| Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(&b).args(args).current_dir("/").env("TMPDIR", &mine).output().unwrap();
    let (s1, s2) = (d.join("store-root"), mine.join("store"));
    let (s1, s2, lay, ctx) = (s1.to_str().unwrap(), s2.to_str().unwrap(), lay.to_str().unwrap(), ctx.to_str().unwrap());
    assert!(cagette(&["image", "--store", s1, "import", lay, "--name", "busybox:1", "--keep-blobs", "-q"]).status.success());
    let o = cagette(&["build", "--store", s1, "-q", "-t", "t:1", "--network", "none", ctx]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let as_root = text(&o.stdout);
    let o = as_nobody(&["image", "--store", s2, "import", lay, "--name", "busybox:1", "--keep-blobs", "-q"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = as_nobody(&["build", "--store", s2, "-q", "-t", "t:1", "--network", "none", ctx]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(as_root.starts_with("sha256:"), "{as_root}");
    assert_eq!(text(&o.stdout), as_root, "a rootless build gives another image");
    let o = as_nobody(&["run", "--store", s2, "--image", "t:1", "--", "sh", "-c", "cat /f /d/x /d/id; ls /bin/true 2>&1"]);
    assert_eq!(text(&o.stdout), "file\nx\n0\nls: /bin/true: No such file or directory\n", "{}", text(&o.stderr));
}

/// A bad limit for the RUN steps is a usage error before anything is built, even when no step
/// would run a sandbox.
#[test]
fn build_limits_are_checked_before_the_build() {
    let d = tempdir("build-limits");
    let ctx = d.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let store = d.join("store");
    let (s, c) = (store.to_str().unwrap(), ctx.to_str().unwrap());
    for (flag, value, want) in [("--pids", "0", "pids"), ("--memory", "1", "memory"), ("--cpus", "0", "cpus")] {
        let o = cagette(&["build", "--store", s, "-q", "-t", "t:1", flag, value, c]);
        assert_eq!(o.status.code(), Some(125), "{flag} {value}: {}", text(&o.stderr));
        assert!(text(&o.stderr).starts_with("cagette: build: ") && text(&o.stderr).contains(want), "{flag} {value}: {}", text(&o.stderr));
    }
    let o = cagette(&["image", "--store", s, "ls"]);
    assert!(!text(&o.stdout).contains("t:1"), "an image was built: {}", text(&o.stdout));
}
