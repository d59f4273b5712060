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
