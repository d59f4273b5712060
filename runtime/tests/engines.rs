//! Real engines drive cagette-runtime: podman (through conmon) and containerd (through its runc
//! v2 shim, with `ctr`). Each test uses storage, state and cgroups of its own under a temporary
//! directory and removes them. Root only; a missing engine fails the test (CI installs both).
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let o = cmd.stdin(std::process::Stdio::null()).output().expect("run the engine");
    eprintln!("$ {:?}\n{}{}({})", cmd, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr), o.status);
    o
}

/// The busybox rootfs as a tar (what `podman import` and the image build read).
fn rootfs_tar(dir: &Path) -> PathBuf {
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar").arg("-C").arg(busybox_rootfs()).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(st.success());
    tar
}

struct Podman {
    w: World,
}

impl Podman {
    fn new() -> Podman {
        let p = Podman { w: World::new("podman") };
        let tar = rootfs_tar(&p.w.dir);
        let o = run(p.cmd().arg("import").arg(&tar).arg("localhost/cagette-test-bb:latest"));
        assert!(o.status.success());
        p
    }

    /// podman with storage of its own, cgroupfs, and cagette-runtime as its runtime.
    fn cmd(&self) -> Command {
        let d = &self.w.dir;
        let mut c = Command::new("podman");
        c.arg("--root").arg(d.join("storage")).arg("--runroot").arg(d.join("run")).arg("--tmpdir").arg(d.join("tmp"));
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "vfs"]);
        c.arg("--runtime").arg(RUNTIME);
        c.stdin(std::process::Stdio::null());
        c
    }

    /// `podman run` with the ulimits this kind of VM needs (no CAP_SYS_RESOURCE) and the test's
    /// cgroup parent.
    fn run_args(&self) -> Vec<String> {
        ["run", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", "--network", "none", "--cgroup-parent", &self.w.cgroup_parent].iter().map(|s| s.to_string()).collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-a", "-f"]).output();
        let _ = self.cmd().args(["system", "reset", "-f"]).output();
        // podman's own parent of conmon's cgroups, created below ours.
        for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path().join(self.w.cgroup_parent.trim_start_matches('/')).join("conmon"));
        }
    }
}

/// One engine at a time (both drive terminals and cgroups on this machine), as root only:
/// the guard, or None when the test is skipped.
fn one_engine() -> Option<std::sync::MutexGuard<'static, ()>> {
    static ONE_ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let g = ONE_ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    Some(g)
}

#[test]
fn podman_runs_cagette_sandboxes() {
    let Some(_one) = one_engine() else { return };
    let p = Podman::new();
    let img = "localhost/cagette-test-bb:latest";
    // run --rm, the exit code passed through.
    let o = run(p.cmd().args(p.run_args()).args(["--rm", img, "sh", "-c", "echo hello from $(hostname); exit 3"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("hello from"), "{}", stdout(&o));
    // run -it under script (a terminal of its own).
    // The exit code says whether the process had the terminal (an engine can drop the output of
    // a terminal process that ends at once: seen once in a few runs, with runc's path alike).
    let cmdline = format!("{} {} --rm -it {img} sh -c '[ -t 0 ] && [ \"$(tty)\" = /dev/pts/0 ] && exit 4; exit 9'", shell_words(&p.cmd()), p.run_args().join(" "));
    let o = run(Command::new("script").args(["-qec", &cmdline, "/dev/null"]));
    assert_eq!(o.status.code(), Some(4), "4: a terminal, /dev/pts/0; 9: none");
    // run -d, exec (exit code), stop, rm.
    let o = run(p.cmd().args(p.run_args()).args(["-d", "--name", "web", img, "sleep", "1000"]));
    assert!(o.status.success());
    let o = run(p.cmd().args(["exec", "web", "sh", "-c", "pidof sleep | wc -w; exit 6"]));
    assert_eq!(o.status.code(), Some(6));
    assert_eq!(stdout(&o).trim(), "1");
    // A non-root user (an image's USER, or --user): podman sends the bounding set with empty
    // effective and permitted sets; the process runs with no capabilities, the bounding set kept.
    let o = run(p.cmd().args(p.run_args()).args(["--rm", "--user", "1000:1000", img, "sh", "-c", "id -u; grep -E '^Cap(Eff|Bnd)' /proc/self/status"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("1000\n") && out.contains("CapEff:\t0000000000000000") && !out.contains("CapBnd:\t0000000000000000"), "{out}");
    let o = run(p.cmd().args(["stop", "-t", "5", "web"]));
    assert!(o.status.success());
    let o = run(p.cmd().args(["inspect", "web", "--format", "{{.State.Status}} {{.State.ExitCode}}"]));
    assert_eq!(stdout(&o).trim(), "exited 143");
    assert!(run(p.cmd().args(["rm", "web"])).status.success());
    // Limits enforced: pids, memory (OOM).
    let o = run(p.cmd().args(p.run_args()).args(["--rm", "--pids-limit", "5", img, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait"]));
    assert!(stderr(&o).contains("can't fork"), "{}", stderr(&o));
    let o = run(p.cmd().args(p.run_args()).args(["--name", "oom", "--memory", "32m", "--memory-swap", "32m", img, "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]));
    assert_eq!(o.status.code(), Some(137));
    assert!(!stdout(&o).contains("survived"));
    assert!(run(p.cmd().args(["rm", "oom"])).status.success());
    // OOMKilled in `podman inspect`: conmon 2.1.6 (Debian 12) writes its "oom" marker into its
    // working directory, and podman 4.3 reads it from the container's userdata directory (fixed
    // in conmon 2.1.13 / podman 5; crun shows the same here): started from there, it is seen.
    let o = run(p.cmd().args(["create"]).args(&p.run_args()[1..]).args(["--name", "oom2", "--memory", "32m", "--memory-swap", "32m", img, "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"]));
    assert!(o.status.success());
    let userdata = stdout(&run(p.cmd().args(["inspect", "oom2", "--format", "{{.StaticDir}}"]))).trim().to_string();
    let o = run(p.cmd().args(["start", "-a", "oom2"]).current_dir(&userdata));
    assert_eq!(o.status.code(), Some(137));
    let o = run(p.cmd().args(["inspect", "oom2", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}"]));
    assert_eq!(stdout(&o).trim(), "true 137");
    assert!(run(p.cmd().args(["rm", "oom2"])).status.success());
    // Nothing of ours is left: no container state, no cgroup.
    let o = run(p.cmd().args(["ps", "-a", "-q"]));
    assert_eq!(stdout(&o).trim(), "");
    let left: Vec<PathBuf> = p.w.cgroups_left().into_iter().filter(|d| !d.ends_with("conmon")).collect();
    assert!(left.is_empty(), "{left:?}");
}

fn shell_words(c: &Command) -> String {
    std::iter::once(c.get_program().to_string_lossy().into_owned()).chain(c.get_args().map(|a| format!("'{}'", a.to_string_lossy()))).collect::<Vec<_>>().join(" ")
}

struct Containerd {
    dir: PathBuf,
    child: std::process::Child,
    cgroup: String,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = std::env::temp_dir().join(format!("cagette-rt-containerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/containerd.sock\"\n[ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
            dir.display()
        );
        std::fs::write(dir.join("config.toml"), cfg).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd").arg("--config").arg(dir.join("config.toml")).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start containerd");
        for _ in 0..500 {
            if dir.join("containerd.sock").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Containerd { dir, child, cgroup: format!("/cagette-test-ctr-{}", std::process::id()) }
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.dir.join("containerd.sock"));
        c.stdin(std::process::Stdio::null());
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in ["t1", "t2", "t3"] {
            let _ = self.ctr().args(["task", "kill", "-s", "KILL", id]).output();
            let _ = self.ctr().args(["task", "rm", "-f", id]).output();
            let _ = self.ctr().args(["container", "rm", id]).output();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The shims outlive containerd: they end once their task is removed (above).
        let _ = Command::new("umount").arg("-R").arg(self.dir.join("state")).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path().join(self.cgroup.trim_start_matches('/')));
        }
    }
}

#[test]
fn containerd_runs_cagette_sandboxes_through_its_runc_shim() {
    let Some(_one) = one_engine() else { return };
    let c = Containerd::start();
    // An image made here: the busybox rootfs imported by podman and saved as a docker archive.
    let archive = c.dir.join("bb.tar");
    let pd = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root").arg(c.dir.join("podman")).arg("--runroot").arg(c.dir.join("podman-run")).args(["--storage-driver", "vfs", "--events-backend", "file"]).args(args);
        cmd
    };
    assert!(run(&mut pd(&["import", rootfs_tar(&c.dir).to_str().unwrap(), "localhost/cagette-test-bb:latest"])).status.success());
    assert!(run(&mut pd(&["save", "-o", archive.to_str().unwrap(), "localhost/cagette-test-bb:latest"])).status.success());
    let _ = pd(&["system", "reset", "-f"]).output();
    let o = run(c.ctr().args(["images", "import"]).arg(&archive));
    assert!(o.status.success());
    let img = "localhost/cagette-test-bb:latest";
    let rt = ["--runc-binary", RUNTIME];
    let cg = |id: &str| format!("{}/{id}", c.cgroup);
    // ctr's client may lose the output of a process that ends at once when the machine is
    // loaded (its copy from the shim races the exit event; seen twice in CI, never on a quiet
    // machine, where runc behaves the same): the commands that print wait a second first.
    // run --rm: the exit status is the task's.
    let o = run(c.ctr().arg("run").args(rt).args(["--cgroup", &cg("t1"), "--rm", img, "t1", "sh", "-c", "echo hi from ctr; sleep 1; exit 6"]));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stdout(&o).contains("hi from ctr"));
    // With a terminal.
    let cmdline = format!("ctr --address {} run --runc-binary {RUNTIME} --cgroup {} --rm -t {img} t2 sh -c '[ -t 0 ] && [ \"$(tty)\" = /dev/pts/0 ] && exit 2; exit 9'", c.dir.join("containerd.sock").display(), cg("t2"));
    // The exit code says whether the process had the terminal (ctr may drop the output of a
    // process that ends at once: its copy from the shim races the exit).
    let o = run(Command::new("script").args(["-qec", &cmdline, "/dev/null"]));
    assert_eq!(o.status.code(), Some(2), "2: a terminal, /dev/pts/0; 9: none");
    // Detached, task exec, task kill, the exit status.
    let o = run(c.ctr().arg("run").args(rt).args(["--cgroup", &cg("t3"), "-d", img, "t3", "sleep", "1000"]));
    assert!(o.status.success());
    let o = run(c.ctr().args(["task", "exec", "--exec-id", "e1", "t3", "sh", "-c", "echo in-task; sleep 1; exit 4"]));
    assert_eq!(o.status.code(), Some(4));
    assert!(stdout(&o).contains("in-task"));
    let o = run(c.ctr().args(["task", "ps", "t3"]));
    assert_eq!(stdout(&o).lines().count(), 3, "header, init, sleep: {}", stdout(&o));
    assert!(run(c.ctr().args(["task", "kill", "t3"])).status.success());
    let mut stopped = false;
    for _ in 0..500 {
        let o = c.ctr().args(["task", "ls"]).output().unwrap();
        if stdout(&o).lines().any(|l| l.starts_with("t3") && l.contains("STOPPED")) {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(stopped);
    let o = run(c.ctr().args(["task", "rm", "t3"]));
    assert!(o.status.success());
    assert!(stderr(&o).contains("143") || stdout(&o).contains("143"), "exit 143 (SIGTERM): {}", stderr(&o));
    assert!(run(c.ctr().args(["container", "rm", "t3"])).status.success());
    let left: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().flat_map(|e| std::fs::read_dir(e.path().join(c.cgroup.trim_start_matches('/'))).into_iter().flatten().flatten().filter(|e| e.path().is_dir()).map(|e| e.path())).collect();
    assert!(left.is_empty(), "{left:?}");
}

