//! cagette-runtime against the real kernel: the OCI lifecycle (create, start, state, kill,
//! delete), exec, hooks, limits, and bad input (each a clear error, nothing left behind).
//! Root only (an OCI runtime for engines that run as root); skipped otherwise.
mod common;

use common::*;

macro_rules! root_only {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn sh(script: &str) -> serde_json::Value {
    args(&["sh", "-c", script])
}

#[test]
fn create_waits_for_start_then_the_container_runs_and_stops() {
    root_only!();
    let w = World::new("life");
    let b = w.bundle("c1", |c| c["process"]["args"] = sh("echo ran > /ran; exit 3"));
    let (ok, err) = w.create("c1", &b);
    assert!(ok, "{err}");
    let st = w.state("c1");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "c1");
    assert_eq!(st["bundle"], b.to_str().unwrap());
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!b.join("rootfs/ran").exists(), "the process must wait for start");
    // The cgroup named by cgroupsPath holds the container's init.
    let cg = w.cgroups_left();
    assert!(cg.iter().any(|d| d.ends_with("c1")), "{cg:?}");
    let o = w.rt(&["start", "c1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    w.wait_stopped("c1");
    assert!(b.join("rootfs/ran").exists());
    assert_eq!(w.state("c1")["pid"], 0);
    // A second start, and a kill of a stopped container, fail.
    let o = w.rt(&["start", "c1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot start a container that is stopped"), "{}", stderr(&o));
    let o = w.rt(&["kill", "c1", "KILL"]);
    assert!(!o.status.success() && stderr(&o).contains("not running"), "{}", stderr(&o));
    let o = w.rt(&["delete", "c1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!w.root.join("c1").exists());
    assert!(w.cgroups_left().is_empty(), "{:?}", w.cgroups_left());
    let o = w.rt(&["state", "c1"]);
    assert!(!o.status.success() && stderr(&o).contains("container \"c1\" does not exist"), "{}", stderr(&o));
}

#[test]
fn run_passes_the_exit_code_and_cleans_up() {
    root_only!();
    let w = World::new("run");
    let b = w.bundle("r1", |c| c["process"]["args"] = sh("exit 7"));
    let o = w.rt(&["run", "--bundle", b.to_str().unwrap(), "r1"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(!w.root.join("r1").exists());
    assert!(w.cgroups_left().is_empty());
    let b = w.bundle("r2", |c| c["process"]["args"] = sh("kill -KILL $$"));
    let o = w.rt(&["run", "--bundle", b.to_str().unwrap(), "r2"]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
}

#[test]
fn kill_delete_and_delete_force() {
    root_only!();
    let w = World::new("kill");
    let b = w.bundle("k1", |c| c["process"]["args"] = sh("sleep 1000 & sleep 1000"));
    let (ok, err) = w.detached(&["run", "--detach", "--bundle", b.to_str().unwrap(), "k1"], &b);
    assert!(ok, "{err}");
    assert_eq!(w.status("k1"), "running");
    let pid = w.state("k1")["pid"].as_i64().unwrap();
    // Not stopped: delete without --force is refused.
    let o = w.rt(&["delete", "k1"]);
    assert!(!o.status.success() && stderr(&o).contains("not stopped: running"), "{}", stderr(&o));
    // pause / resume through the freezer.
    assert!(w.rt(&["pause", "k1"]).status.success());
    assert_eq!(w.status("k1"), "paused");
    assert!(w.rt(&["resume", "k1"]).status.success());
    assert_eq!(w.status("k1"), "running");
    // ps lists init and both sleeps.
    let o = w.rt(&["ps", "--format", "json", "k1"]);
    let pids: Vec<i64> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pids.len(), 3, "{pids:?}");
    // SIGTERM by name reaches the payload through init; the container stops.
    let o = w.rt(&["kill", "k1", "TERM"]);
    assert!(o.status.success(), "{}", stderr(&o));
    w.wait_stopped("k1");
    assert!(w.rt(&["delete", "k1"]).status.success());
    assert!(!std::path::Path::new(&format!("/proc/{pid}/ns")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")));
    // --force on a running container kills every process of it.
    let b = w.bundle("k2", |c| c["process"]["args"] = sh("sleep 1000 & sleep 1000"));
    let (ok, err) = w.detached(&["run", "--detach", "--bundle", b.to_str().unwrap(), "k2"], &b);
    assert!(ok, "{err}");
    let o = w.rt(&["delete", "--force", "k2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.cgroups_left().is_empty(), "{:?}", w.cgroups_left());
    // containerd deletes with --force what is gone already: success.
    assert!(w.rt(&["delete", "--force", "k2"]).status.success());
    let o = w.rt(&["delete", "k2"]);
    assert!(!o.status.success() && stderr(&o).contains("does not exist"));
}

#[test]
fn exec_runs_in_the_container_with_its_exit_code() {
    root_only!();
    let w = World::new("exec");
    let b = w.bundle("e1", |c| {
        c["process"]["args"] = args(&["sleep", "1000"]);
        c["process"]["env"] = args(&["PATH=/bin", "FROM_CONFIG=yes"]);
    });
    let (ok, err) = w.detached(&["run", "-d", "--bundle", b.to_str().unwrap(), "e1"], &b);
    assert!(ok, "{err}");
    let o = w.rt(&["exec", "e1", "sh", "-c", "echo $FROM_CONFIG $(hostname); exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "yes cagette");
    // The engines' form: --process FILE --detach --pid-file P; the command is in the container's
    // cgroup and pid namespace.
    let p = w.dir.join("process.json");
    std::fs::write(&p, serde_json::json!({"args": ["sh", "-c", "echo $$ > /exec-pid; sleep 1000"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string()).unwrap();
    let pidf = w.dir.join("exec.pid");
    let (ok, err) = w.detached(&["exec", "--process", p.to_str().unwrap(), "--detach", "--pid-file", pidf.to_str().unwrap(), "e1"], &b);
    assert!(ok, "{err}");
    let epid: i32 = std::fs::read_to_string(&pidf).unwrap().trim().parse().unwrap();
    // The shell creates the file, then writes it: wait for a whole number (slow under the VM).
    let mut inside = 0;
    for _ in 0..1000 {
        if let Some(n) = std::fs::read_to_string(b.join("rootfs/exec-pid")).ok().and_then(|t| t.trim().parse::<i32>().ok()) {
            inside = n;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(inside > 1 && inside < 100, "pid in the container's namespace: {inside}");
    let o = w.rt(&["ps", "--format", "json", "e1"]);
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pids.contains(&epid), "the exec'd command is in the container's cgroup: {pids:?} {epid}");
    // Exec in a stopped container is refused.
    assert!(w.rt(&["kill", "e1", "KILL"]).status.success());
    w.wait_stopped("e1");
    let o = w.rt(&["exec", "e1", "true"]);
    assert!(!o.status.success() && stderr(&o).contains("is stopped"), "{}", stderr(&o));
}

#[test]
fn limits_and_runtime_settings_are_applied() {
    root_only!();
    let w = World::new("limits");
    let b = w.bundle("l1", |c| {
        c["process"]["args"] = sh("cat /proc/self/oom_score_adj; cat /proc/sys/net/ipv4/ip_forward; ls -l /dev/testnull; ulimit -n; \
            (: < /dev/fuse) 2>/dev/null && echo read || echo no-read; (: > /dev/fuse) 2>/dev/null && echo write || echo no-write");
        c["process"]["oomScoreAdj"] = 300.into();
        c["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        // /dev/fuse (opening it does nothing until a mount) for reading only: the rule's access,
        // not the node's default rwm, decides.
        c["linux"]["devices"] = serde_json::json!([{"path": "/dev/testnull", "type": "c", "major": 1, "minor": 3, "fileMode": 432, "uid": 0, "gid": 0},
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]);
        c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 67108864}, "pids": {"limit": 20},
            "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}]});
        c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    });
    let (ok, err) = w.create("l1", &b);
    assert!(ok, "{err}");
    let cg = w.cgroups_left();
    let file = |ctrl: &str, f: &str| cg.iter().find_map(|d| std::fs::read_to_string(d.join(f)).ok().filter(|_| d.to_string_lossy().contains(ctrl) || !d.starts_with("/sys/fs/cgroup/memory"))).unwrap_or_default();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(file("", "memory.max").trim(), "67108864");
        assert_eq!(file("", "pids.max").trim(), "20");
    } else {
        assert_eq!(file("memory", "memory.limit_in_bytes").trim(), "67108864");
        assert_eq!(file("pids", "pids.max").trim(), "20");
        // The config's rules first, in order (as OCI asks), then its nodes, then the standard list.
        let list = file("devices", "devices.list");
        assert!(list.starts_with("c 10:229 r\nc 1:3 rwm\n"), "{list}");
    }
    assert!(w.rt(&["start", "l1"]).status.success());
    w.wait_stopped("l1");
    let out = std::fs::read_to_string(b.join("out")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "300", "{out}");
    assert_eq!(lines[1], "1", "{out}");
    assert!(lines[2].starts_with("crw-rw----") && lines[2].contains("1,   3"), "{out}");
    assert_eq!(lines[3], "256", "{out}");
    assert_eq!(lines[4..], ["read", "no-write"], "{out}");
    assert!(w.rt(&["delete", "l1"]).status.success());
}

#[test]
fn hooks_run_with_the_state_and_a_failing_prestart_leaves_nothing() {
    root_only!();
    let w = World::new("hooks");
    let log = w.dir.join("hooks.log");
    let hook = |name: &str| serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read s; echo {name} \"$s\" >> {}", log.display())]});
    let b = w.bundle("h1", |c| {
        c["process"]["args"] = args(&["true"]);
        c["hooks"] = serde_json::json!({"prestart": [hook("prestart")], "poststart": [hook("poststart")], "poststop": [hook("poststop")]});
    });
    let (ok, err) = w.create("h1", &b);
    assert!(ok, "{err}");
    assert!(w.rt(&["start", "h1"]).status.success());
    w.wait_stopped("h1");
    assert!(w.rt(&["delete", "h1"]).status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("prestart ") && lines[0].contains("\"status\":\"created\"") && lines[0].contains("\"id\":\"h1\""), "{text}");
    assert!(lines[1].starts_with("poststart ") && lines[1].contains("\"status\":\"running\""), "{text}");
    assert!(lines[2].starts_with("poststop ") && lines[2].contains("\"status\":\"stopped\""), "{text}");

    let b = w.bundle("h2", |c| {
        c["process"]["args"] = sh("touch /output");
        c["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/false", "args": ["false"]}]});
    });
    let (ok, err) = w.create("h2", &b);
    assert!(!ok);
    assert!(err.contains("prestart hook failed"), "{err}");
    assert!(!w.root.join("h2").exists(), "no state left");
    assert!(w.cgroups_left().is_empty(), "no cgroup left: {:?}", w.cgroups_left());
    assert!(!b.join("rootfs/output").exists());
}

#[test]
fn bad_configs_and_bundles_are_clear_errors_that_leave_nothing() {
    root_only!();
    let w = World::new("bad");
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
        ("types", Box::new(|c| c["process"]["args"] = "sh".into()), "config.json: process.args"),
        ("ns", Box::new(|c| c["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "bogus"}])), "config.json"),
        ("nspath", Box::new(|c| c["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "ipc", "path": "proc/1/ns/ipc"}])), "is not absolute"),
        ("noroot", Box::new(|c| c["root"]["path"] = "nowhere".into()), "root.path"),
        ("cap", Box::new(|c| c["process"]["capabilities"]["bounding"] = args(&["CAP_TEST"])), "config.json"),
        ("rlimit", Box::new(|c| c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_TEST", "hard": 1, "soft": 1}])), "config.json"),
        ("apparmor", Box::new(|c| c["process"]["apparmorProfile"] = "x".into()), "process.apparmorProfile"),
        ("mountopt", Box::new(|c| c["mounts"][0]["options"] = args(&["nosymfollow"])), "mount option \"nosymfollow\" is not supported"),
        ("cgpath", Box::new(|c| c["linux"]["cgroupsPath"] = "/a/../b".into()), "linux.cgroupsPath"),
        ("sysctl", Box::new(|c| c["linux"]["sysctl"] = serde_json::json!({"kernel.panic": "1"})), "not a namespaced sysctl"),
        // The root would be pivoted in the joined mount namespace: never the host's.
        ("hostmnt", Box::new(|c| c["linux"]["namespaces"] = serde_json::json!([{"type": "mount", "path": format!("/proc/{}/ns/mnt", std::process::id())}, {"type": "pid"}, {"type": "uts"}, {"type": "network"}])), "the mount namespace to join is the host's own"),
        ("nomntuser", Box::new(|c| {
            c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "uts"}, {"type": "network"}, {"type": "user"}]);
            c["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        }), "without a mount namespace of its own, a sandbox cannot have a new user namespace"),
    ];
    for (name, edit, want) in cases {
        let b = w.bundle(name, |c| edit(c));
        let (ok, err) = w.create(name, &b);
        assert!(!ok, "{name}: accepted");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!w.root.join(name).exists(), "{name}: state left");
    }
    // A symlink as the bundle, a missing bundle, a bad id, a duplicate id, no id.
    let real = w.bundle("real", |_| {});
    let link = w.dir.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (ok, err) = w.create("viasymlink", &link);
    assert!(!ok && err.contains("is a symlink"), "{err}");
    let o = w.rt(&["create", "--bundle", w.dir.join("missing").to_str().unwrap(), "missing"]);
    assert!(!o.status.success() && stderr(&o).contains("missing: No such file"), "{}", stderr(&o));
    let (ok, err) = w.create("a/b", &real);
    assert!(!ok && err.contains("invalid container id"), "{err}");
    let (ok, err) = w.create("dup", &real);
    assert!(ok, "{err}");
    let (ok, err) = w.create("dup", &real);
    assert!(!ok && err.contains("container with id exists: dup"), "{err}");
    assert_eq!(w.status("dup"), "created", "the first is untouched");
    let o = w.rt(&["create", "--bundle", real.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(w.rt(&["delete", "--force", "dup"]).status.success());
    assert!(w.cgroups_left().is_empty(), "{:?}", w.cgroups_left());
    // A config.json that is a FIFO is refused without blocking.
    let fifo_bundle = w.dir.join("fifo");
    std::fs::create_dir_all(fifo_bundle.join("rootfs")).unwrap();
    nix::unistd::mkfifo(&fifo_bundle.join("config.json"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (ok, err) = w.create("fifo", &fifo_bundle);
    assert!(!ok && err.contains("not a regular file"), "{err}");
}

#[test]
fn a_terminal_goes_to_the_console_socket() {
    root_only!();
    use std::os::fd::AsRawFd;
    let w = World::new("tty");
    let b = w.bundle("t1", |c| {
        c["process"]["terminal"] = true.into();
        c["process"]["args"] = sh("tty; echo through-the-pty");
    });
    let sock = w.dir.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (ok, err) = w.detached(&["create", "--bundle", b.to_str().unwrap(), "--console-socket", sock.to_str().unwrap(), "t1"], &b);
    assert!(ok, "{err}");
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!(std::os::fd::RawFd);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), nix::sys::socket::MsgFlags::empty()).unwrap();
    let fd = msg.cmsgs().unwrap().find_map(|c| if let nix::sys::socket::ControlMessageOwned::ScmRights(f) = c { f.first().copied() } else { None }).expect("an fd");
    use std::os::fd::FromRawFd;
    // SAFETY: the fd was just received over SCM_RIGHTS: ours alone.
    let mut master = unsafe { std::fs::File::from_raw_fd(fd) };
    assert!(w.rt(&["start", "t1"]).status.success());
    let mut out = Vec::new();
    use std::io::Read;
    let mut chunk = [0u8; 256];
    while let Ok(n) = master.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&out).contains("through-the-pty") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/0") && text.contains("through-the-pty"), "{text:?}");
    w.wait_stopped("t1");
    assert!(w.rt(&["delete", "t1"]).status.success());
    // terminal without a console socket: refused.
    let b = w.bundle("t2", |c| c["process"]["terminal"] = true.into());
    let (ok, err) = w.create("t2", &b);
    assert!(!ok && err.contains("--console-socket is required"), "{err}");
}

#[test]
fn list_features_and_spec() {
    root_only!();
    let w = World::new("list");
    let b = w.bundle("x1", |c| c["process"]["args"] = args(&["sleep", "100"]));
    assert!(w.create("x1", &b).0);
    let o = w.rt(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["id"], "x1");
    assert_eq!(v[0]["status"], "created");
    assert_eq!(stdout(&w.rt(&["list", "-q"])).trim(), "x1");
    let f: serde_json::Value = serde_json::from_slice(&w.rt(&["features"]).stdout).unwrap();
    assert!(f["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n == "user"));
    let o = w.rt(&["spec", "--bundle", b.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("exists"), "spec never overwrites");
    let o = w.rt(&["events", "--stats", "x1"]);
    let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ev["type"], "stats");
    assert!(ev["data"]["pids"].as_u64().unwrap() >= 1);
}

#[test]
fn update_changes_a_running_containers_limits() {
    root_only!();
    let w = World::new("update");
    let b = w.bundle("u1", |c| {
        c["process"]["args"] = args(&["sleep", "1000"]);
        c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 67108864}, "pids": {"limit": 20}, "devices": [{"allow": false, "access": "rwm"}]});
    });
    let (ok, err) = w.detached(&["run", "-d", "--bundle", b.to_str().unwrap(), "u1"], &b);
    assert!(ok, "{err}");
    let res = w.dir.join("res.json");
    std::fs::write(&res, r#"{"memory": {"limit": 134217728}}"#).unwrap();
    let o = w.rt(&["update", "-r", res.to_str().unwrap(), "--pids-limit", "30", "u1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cg = w.cgroups_left();
    let read = |f: &str| cg.iter().find_map(|d| std::fs::read_to_string(d.join(f)).ok()).unwrap_or_default().trim().to_string();
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("memory.max"), "134217728");
    } else {
        assert_eq!(read("memory.limit_in_bytes"), "134217728");
    }
    assert_eq!(read("pids.max"), "30");
    // A bad value is refused, naming it; a stopped container cannot be updated.
    let o = w.rt(&["update", "--pids-limit", "1", "u1"]);
    assert!(!o.status.success() && stderr(&o).contains("pids"), "{}", stderr(&o));
    assert!(w.rt(&["delete", "--force", "u1"]).status.success());
    let o = w.rt(&["update", "--pids-limit", "30", "u1"]);
    assert!(!o.status.success() && stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn a_planted_symlink_cannot_lead_a_device_node_out_of_the_root() {
    root_only!();
    let w = World::new("devlink");
    // No /dev mount: the bundle's own /dev, where a link points at a host directory.
    let outside = w.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let b = w.bundle("d1", |c| {
        let mounts: Vec<serde_json::Value> = c["mounts"].as_array().unwrap().iter().filter(|m| !m["destination"].as_str().unwrap().starts_with("/dev")).cloned().collect();
        c["mounts"] = mounts.into();
        c["linux"]["devices"] = serde_json::json!([{"path": "/dev/evil/sub/null", "type": "c", "major": 1, "minor": 3}]);
    });
    std::fs::create_dir_all(b.join("rootfs/dev")).unwrap();
    std::os::unix::fs::symlink(&outside, b.join("rootfs/dev/evil")).unwrap();
    let (ok, err) = w.create("d1", &b);
    assert!(!ok, "created through a symlink");
    assert!(err.contains("a symlink or not a directory"), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something was made outside the root");
    assert!(!w.root.join("d1").exists() && w.cgroups_left().is_empty());
}

#[test]
fn a_container_joins_pid_and_mount_namespaces_by_path() {
    // As a Kubernetes pod with shareProcessNamespace: the container's init is born in the pid
    // namespace it joins (not only its children), and its root is built in the joined mount
    // namespace.
    root_only!();
    let w = World::new("nsjoin");
    // The namespaces' holder: `unshare -m -p -f sleep` (short options: util-linux's and the
    // cgroup v2 VM's busybox), its sleep pid 1 of the new pid namespace, in a mount namespace
    // copied from the host's (so the bundle is reachable there). Both go with the guard.
    struct Holder(std::process::Child, Option<i32>);
    impl Drop for Holder {
        fn drop(&mut self) {
            if let Some(p) = self.1 {
                let _ = std::process::Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new("unshare").args(["-m", "-p", "-f", "sleep", "1000"]).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut holder = Holder(child, None);
    let parent = holder.0.id().to_string();
    // The sleep: the process whose parent is unshare (/proc/PID/stat's 4th field).
    let ppid_of = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.split(' ').nth(1).map(str::to_string)));
    for _ in 0..500 {
        let found = std::fs::read_dir("/proc").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|p| p.parse::<i32>().is_ok() && ppid_of(p).as_deref() == Some(&parent));
        if let Some(p) = found {
            holder.1 = p.parse().ok();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let inner = holder.1.expect("unshare's child");
    let ns = |t: &str| std::fs::read_link(format!("/proc/{inner}/ns/{t}")).unwrap().to_string_lossy().into_owned();
    let b = w.bundle("j1", |c| {
        c["process"]["args"] = sh("readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt; cat /proc/[0-9]*/comm | grep -c '^sleep$'");
        c["linux"]["namespaces"] = serde_json::json!([{"type": "pid", "path": format!("/proc/{inner}/ns/pid")}, {"type": "mount", "path": format!("/proc/{inner}/ns/mnt")}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]);
    });
    let (ok, err) = w.create("j1", &b);
    assert!(ok, "{err}");
    // The init itself is in the joined namespaces.
    let pid = w.state("j1")["pid"].as_i64().unwrap();
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap().to_string_lossy(), ns("pid"));
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap().to_string_lossy(), ns("mnt"));
    assert!(w.rt(&["start", "j1"]).status.success());
    w.wait_stopped("j1");
    let out = std::fs::read_to_string(b.join("out")).unwrap();
    // The holder's sleep is among the processes it sees.
    assert_eq!(out, format!("{}\n{}\n1\n", ns("pid"), ns("mnt")), "{}", std::fs::read_to_string(b.join("err")).unwrap_or_default());
    assert!(w.rt(&["delete", "j1"]).status.success());
    drop(holder);
    assert!(w.cgroups_left().is_empty(), "{:?}", w.cgroups_left());
}

#[test]
fn a_container_without_a_mount_namespace_leaves_no_mount_on_the_host() {
    // A config listing no mount namespace: the root is the rootfs bound onto itself in the
    // host's mount namespace and entered with chroot; delete (or a failed create) unmounts it
    // and everything in it (runc and crun leave them behind).
    root_only!();
    let w = World::new("nomntns");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap().to_string_lossy().into_owned();
    let mounts_under = |dir: &std::path::Path| std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(dir.to_str().unwrap()))).count();
    let b = w.bundle("n1", |c| {
        c["process"]["args"] = sh("readlink /proc/self/ns/mnt; ls /dev/null; cat /etc/passwd | head -c 4");
        c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}]);
        c.as_object_mut().unwrap().remove("hostname");
    });
    let (ok, err) = w.create("n1", &b);
    assert!(ok, "{err}");
    assert!(mounts_under(&b) >= 3, "the root, /proc, /dev...: {}", mounts_under(&b));
    assert!(w.rt(&["start", "n1"]).status.success());
    w.wait_stopped("n1");
    let out = std::fs::read_to_string(b.join("out")).unwrap();
    assert_eq!(out, format!("{host_mnt}\n/dev/null\nroot"), "{}", std::fs::read_to_string(b.join("err")).unwrap_or_default());
    assert!(w.rt(&["delete", "n1"]).status.success());
    assert_eq!(mounts_under(&b), 0, "mounts left under {}", b.display());
    // A create that fails after the root was attached (a tmpfs onto a file) leaves no mount either.
    let b2 = w.bundle("n2", |c| {
        c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}]);
        c.as_object_mut().unwrap().remove("hostname");
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/bin/sh", "type": "tmpfs", "source": "tmpfs"}));
    });
    let (ok, err) = w.create("n2", &b2);
    assert!(!ok, "accepted a tmpfs onto a file");
    assert!(err.contains("/bin/sh"), "{err}");
    assert_eq!(mounts_under(&b2), 0, "mounts left under {}", b2.display());
    assert!(!w.root.join("n2").exists());
    // A command run in such a container would keep the host's root (it shares our mount
    // namespace; only chroot confines the container): refused, with the container untouched.
    let b3 = w.bundle("n3", |c| {
        c["process"]["args"] = args(&["sleep", "1000"]);
        c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}]);
        c.as_object_mut().unwrap().remove("hostname");
    });
    let (ok, err) = w.detached(&["run", "-d", "--bundle", b3.to_str().unwrap(), "n3"], &b3);
    assert!(ok, "{err}");
    let o = w.rt(&["exec", "n3", "sh", "-c", "ls /"]);
    assert!(!o.status.success() && stderr(&o).contains("has no mount namespace of its own"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert_eq!(w.status("n3"), "running");
    assert!(w.rt(&["delete", "--force", "n3"]).status.success());
    assert_eq!(mounts_under(&b3), 0, "mounts left under {}", b3.display());
    assert!(w.cgroups_left().is_empty(), "{:?}", w.cgroups_left());
}

/// A reader that has gone (`state … | grep -q`, `list | head -1`): the runtime ends with status
/// 141, as SIGPIPE ends runc and crun, and does not panic (a panic's backtrace, with
/// RUST_BACKTRACE set, took ~90 ms of an engine's polling loop).
#[test]
fn a_reader_that_has_gone_ends_the_output_without_a_panic() {
    let w = World::new("pipe");
    for args in [&["features"][..], &["list"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = std::process::Command::new(RUNTIME)
            .arg("--root")
            .arg(&w.root)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .expect("run cagette-runtime");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {:?}, stderr: {err}", o.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // An error whose message cannot be written (stderr closed the same way) is still status 1.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = std::process::Command::new(RUNTIME).arg("--root").arg(&w.root).args(["state", "no-such-container"]).stdin(std::process::Stdio::null()).stderr(writer).output().expect("run cagette-runtime");
    assert_eq!(o.status.code(), Some(1), "{:?}", o.status);
    // Any other write error (a full disk: /dev/full) is status 1, on stderr and in --log too.
    let log = w.dir.join("full.log");
    let full = std::fs::File::options().write(true).open("/dev/full").expect("/dev/full");
    let o = std::process::Command::new(RUNTIME).arg("--root").arg(&w.root).arg("--log").arg(&log).args(["--log-format", "json", "features"]).stdin(std::process::Stdio::null()).stdout(full).output().expect("run cagette-runtime");
    assert_eq!(o.status.code(), Some(1), "{:?}", o.status);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write to stdout: No space left on device"), "{}", String::from_utf8_lossy(&o.stderr));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("\"level\":\"error\"") && logged.contains("cannot write to stdout"), "{logged}");
}

/// Processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle)))
        .collect()
}

#[test]
fn a_state_root_others_can_write_is_refused() {
    root_only!();
    use std::os::unix::fs::PermissionsExt;
    let w = World::new("badroot");
    let b = w.bundle("x", |c| c["process"]["args"] = args(&["true"]));
    std::fs::create_dir_all(&w.root).unwrap();
    // Writable by others, as a directory made in advance in a shared /tmp would be.
    std::fs::set_permissions(&w.root, std::fs::Permissions::from_mode(0o777)).unwrap();
    for cmd in [&["list"][..], &["state", "x"], &["delete", "--force", "x"], &["create", "--bundle", b.to_str().unwrap(), "x"]] {
        let o = w.rt(cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("is writable by others (mode 777): refusing to use it"), "{cmd:?}: {}", stderr(&o));
    }
    assert!(!w.root.join("x").exists() && w.cgroups_left().is_empty(), "nothing made");
    // Owned by another user.
    std::fs::set_permissions(&w.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&w.root, Some(65534), None).unwrap();
    let o = w.rt(&["list"]);
    assert!(!o.status.success() && stderr(&o).contains("belongs to uid 65534"), "{}", stderr(&o));
    // A symlink, even to a good directory.
    std::os::unix::fs::chown(&w.root, Some(0), None).unwrap();
    let link = w.dir.join("state-link");
    std::os::unix::fs::symlink(&w.root, &link).unwrap();
    let o = std::process::Command::new(RUNTIME).arg("--root").arg(&link).arg("list").output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("is a symlink"), "{}", stderr(&o));
    // A root that create makes is private; one that is missing is no error for a reader.
    let fresh = w.dir.join("fresh/state");
    let o = std::process::Command::new(RUNTIME).arg("--root").arg(&fresh).args(["list", "-q"]).output().unwrap();
    assert!(o.status.success() && o.stdout.is_empty(), "{}", stderr(&o));
    let o = std::process::Command::new(RUNTIME).arg("--root").arg(&fresh).args(["run", "--bundle", b.to_str().unwrap(), "x"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
}

#[test]
fn fifos_big_files_and_bad_values_are_errors_never_a_hang_or_a_panic() {
    root_only!();
    let w = World::new("hostile");
    let fifo = |p: &std::path::Path| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A state file that is a FIFO: `state` fails at once, `list` skips it.
    std::fs::create_dir_all(w.root.join("f1")).unwrap();
    fifo(&w.root.join("f1/state.json"));
    let o = w.rt_within(20, &[], &["state", "f1"]);
    assert!(!o.status.success() && stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    let o = w.rt_within(20, &[], &["list", "-q"]);
    assert!(o.status.success() && o.stdout.is_empty(), "{}", stderr(&o));
    std::fs::remove_dir_all(w.root.join("f1")).unwrap();

    let b = w.bundle("h1", |c| c["process"]["args"] = args(&["sleep", "1000"]));
    let (ok, err) = w.detached(&["run", "-d", "--bundle", b.to_str().unwrap(), "h1"], &b);
    assert!(ok, "{err}");
    let (pipe, big, arr) = (w.dir.join("pipe"), w.dir.join("big.json"), w.dir.join("array.json"));
    fifo(&pipe);
    std::fs::write(&big, vec![b' '; 5 << 20]).unwrap();
    std::fs::write(&arr, "[]").unwrap();
    for (cmd, want) in [
        (vec!["exec", "--process", pipe.to_str().unwrap(), "h1"], "not a regular file"),
        (vec!["exec", "--process", big.to_str().unwrap(), "h1"], "larger than 4194304 bytes"),
        (vec!["update", "-r", pipe.to_str().unwrap(), "h1"], "not a regular file"),
        (vec!["update", "-r", arr.to_str().unwrap(), "--memory", "67108864", "h1"], "resources: not a JSON object"),
    ] {
        let o = w.rt_within(20, &[], &cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want) && !stderr(&o).contains("panicked"), "{cmd:?}: {}", stderr(&o));
    }
    assert_eq!(w.status("h1"), "running");
    // --log on a FIFO nobody reads: the error is still reported on stderr, at once.
    let o = w.rt_within(20, &["--log", pipe.to_str().unwrap()], &["kill", "h1", "NOSUCHSIGNAL"]);
    assert!(!o.status.success() && stderr(&o).contains("unknown signal"), "{}", stderr(&o));
    assert!(w.rt(&["delete", "--force", "h1"]).status.success());

    // --preserve-fds beyond any open-file limit: refused before anything is made.
    let b = w.bundle("p1", |c| c["process"]["args"] = args(&["true"]));
    let o = w.rt_within(20, &[], &["create", "--preserve-fds", "4294967295", "--bundle", b.to_str().unwrap(), "p1"]);
    assert!(!o.status.success() && stderr(&o).contains("--preserve-fds 4294967295: more than the open-file limit"), "{}", stderr(&o));
    assert!(!w.root.join("p1").exists() && w.cgroups_left().is_empty());

    // A pid file that is a symlink is replaced, never written through.
    let target = w.dir.join("not-a-pid-file");
    std::fs::write(&target, "keep").unwrap();
    let pid_file = w.dir.join("p1.pid");
    std::os::unix::fs::symlink(&target, &pid_file).unwrap();
    let (ok, err) = w.detached(&["create", "--pid-file", pid_file.to_str().unwrap(), "--bundle", b.to_str().unwrap(), "p1"], &b);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(&pid_file).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), w.state("p1")["pid"].to_string());
    assert!(w.rt(&["delete", "--force", "p1"]).status.success());
    let leftovers: Vec<_> = std::fs::read_dir(&w.dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // `spec` never writes through a dangling symlink.
    let sb = w.dir.join("specdir");
    std::fs::create_dir_all(&sb).unwrap();
    std::os::unix::fs::symlink(w.dir.join("made-by-spec"), sb.join("config.json")).unwrap();
    let o = w.rt(&["spec", "--bundle", sb.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("exists"), "{}", stderr(&o));
    assert!(!w.dir.join("made-by-spec").exists());
}

#[test]
fn a_hook_that_reads_nothing_and_never_ends_is_killed_with_all_it_started() {
    root_only!();
    let w = World::new("hookhang");
    let marker = format!("{}.25", 5000 + std::process::id() % 1000);
    let b = w.bundle("k1", |c| {
        c["process"]["args"] = args(&["true"]);
        // State far above a pipe's buffer (annotations are in it), and a hook that never reads it.
        c["annotations"] = serde_json::json!({"big": "x".repeat(1 << 20)});
        c["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", format!("sleep {marker} & sleep {marker}")], "timeout": 1}]});
    });
    let started = std::time::Instant::now();
    let o = w.rt_within(30, &[], &["create", "--bundle", b.to_str().unwrap(), "k1"]);
    assert!(!o.status.success() && stderr(&o).contains("prestart hook failed: /bin/sh timed out after 1 s"), "{}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(pids_with(&format!("sleep {marker}")).is_empty(), "the hook's children outlived it");
    assert!(!w.root.join("k1").exists() && w.cgroups_left().is_empty(), "nothing left");
}
