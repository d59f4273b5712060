//! Each namespace isolates what it should. Real kernel, real processes.
mod common;
use cagette::{IdMap, Network, NsMode, Sandbox, Stdio, Verdict};
use common::*;

#[test]
fn pid_namespace_payload_sees_only_the_sandbox() {
    // Init is pid 1; the payload is pid 2; no host process is visible.
    let o = sh("echo $$; ls -d /proc/[0-9]* | wc -l; cat /proc/1/cmdline | tr '\\0' ' '");
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "payload pid: {out}");
    // init, sh, and the ls/wc/cat being run: far fewer than the host's processes.
    let n: usize = lines[1].trim().parse().unwrap();
    assert!(n <= 5, "saw {n} processes: {out}");
    assert!(lines[2].starts_with("cagette-init"), "pid 1 is {:?}", lines[2]);
    let host_n = std::fs::read_dir("/proc").unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().parse::<u32>().is_ok()).count();
    assert!(host_n > n, "host has {host_n} processes, sandbox {n}");
}

#[test]
fn uts_namespace_sets_hostname_without_touching_the_host() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let o = Sandbox::new().hostname("box-7").command("hostname").output().unwrap();
    assert_eq!(stdout(&o), "box-7\n");
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), host);
}

#[test]
fn network_none_has_only_loopback_up() {
    let o = sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ls /sys/class/net");
    assert_eq!(stdout(&o), "lo\nlo\n", "{o:?}");
    // Loopback is up: a TCP connection to 127.0.0.1 works.
    let py = "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname(), timeout=2); print('up')";
    let o = Sandbox::new().command("python3").args(["-c", py]).output().unwrap();
    assert_eq!(stdout(&o), "up\n", "{o:?}");
}

#[test]
fn network_host_sees_host_interfaces() {
    let host = std::fs::read_to_string("/proc/net/dev").unwrap().lines().count();
    let o = Sandbox::new().network(Network::Host).command("cat").arg("/proc/net/dev").output().unwrap();
    assert_eq!(stdout(&o).lines().count(), host);
}

#[test]
fn ipc_namespace_hides_host_message_queues() {
    // A System V message queue on the host is invisible inside.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0);
    let host_lines = std::fs::read_to_string("/proc/sysvipc/msg").unwrap().lines().count();
    let o = sh("cat /proc/sysvipc/msg | wc -l");
    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert!(host_lines >= 2, "the host sees its queue");
    assert_eq!(stdout(&o).trim(), "1", "only the header line inside");
}

#[test]
fn mount_namespace_keeps_mounts_inside() {
    let before = host_mounts();
    let child = sandbox("grep -c ' /tmp ' /proc/self/mountinfo; sleep 0.3").spawn().unwrap();
    // While the sandbox runs, the host's mount table is unchanged.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(host_mounts(), before);
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o).trim(), "1", "the sandbox has its own /tmp");
}

#[test]
fn user_namespace_maps_root_to_the_callers_id() {
    // Rootless, the default map is the caller's id as 0 (one id). As root, it is a private range
    // of 65536 ids that no host user owns (userns = auto), or host root with userns = host; a
    // caller-chosen range maps 0 -> 100000.
    let o = sh("cat /proc/self/uid_map; id -u");
    let out = stdout(&o);
    let words: Vec<&str> = out.split_whitespace().collect();
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        assert!(words.starts_with(&["0", &euid.to_string(), "1"]), "{out}");
        return;
    }
    let base: u32 = words[1].parse().unwrap();
    assert!(words[0] == "0" && words[2] == "65536" && base >= 0x8_0000 && base % 65536 == 0, "{out}");
    let host = Sandbox::from_spec(cagette::SandboxSpec { userns: cagette::UsernsMode::Host, ..Default::default() }).command("cat").arg("/proc/self/uid_map").output().unwrap();
    assert_eq!(stdout(&host).split_whitespace().collect::<Vec<_>>(), ["0", "0", "1"]);
    let child = Sandbox::new()
        .uid_map([IdMap { inside: 0, outside: 100000, count: 65536 }])
        .gid_map([IdMap { inside: 0, outside: 100000, count: 65536 }])
        .command("sh")
        .args(["-c", "id -u; sleep 0.5"])
        .stdout(Stdio::Piped)
        .spawn()
        .unwrap();
    // Seen from the host, the sandbox's root is uid 100000.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "0\n");
    assert!(uid_line.split_whitespace().nth(1) == Some("100000"), "{uid_line}");
}

#[test]
fn time_and_cgroup_namespaces_are_new() {
    let host_time = std::fs::read_link("/proc/self/ns/time").unwrap();
    let host_cg = std::fs::read_link("/proc/self/ns/cgroup").unwrap();
    let o = sh("readlink /proc/self/ns/time; readlink /proc/self/ns/cgroup");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], host_time.to_string_lossy(), "time namespace");
    assert_ne!(lines[1], host_cg.to_string_lossy(), "cgroup namespace");
}

#[test]
fn namespaces_can_be_shared_with_the_host() {
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    let mut sb = Sandbox::new().command("readlink").arg("/proc/self/ns/uts");
    sb.spec_mut().namespaces.uts = NsMode::Host;
    let o = sb.output().unwrap();
    assert_eq!(stdout(&o).trim(), host_uts.to_string_lossy());
}

#[test]
fn joining_a_network_namespace_by_path() {
    if unsafe { libc::geteuid() } != 0 {
        return; // joining a host-owned namespace needs root
    }
    // Hold a net namespace open with a sandbox of our own, then join it from another one.
    let holder = Sandbox::new().command("sleep").arg("5").stdout(Stdio::Null).spawn().unwrap();
    let path = format!("/proc/{}/ns/net", holder.pid());
    let want = std::fs::read_link(&path).unwrap();
    let mut sb = Sandbox::new().network(Network::Join(path.into())).command("readlink").arg("/proc/self/ns/net");
    sb.spec_mut().namespaces.user = NsMode::Host;
    let o = sb.output().unwrap();
    assert_eq!(stdout(&o).trim(), want.to_string_lossy(), "{o:?}");
    drop(holder);
}

#[test]
fn joining_a_pid_namespace_by_path_puts_init_in_it() {
    if unsafe { libc::geteuid() } != 0 {
        return; // joining a host-owned namespace needs root
    }
    // A sandbox holds a pid namespace (its init is pid 1 there); another joins it: its own init
    // is born there (a thread of the caller joins it to clone), so its /proc shows the holder's.
    let mut h = Sandbox::new().command("sleep").arg("5").stdout(Stdio::Null);
    h.spec_mut().namespaces.user = NsMode::Host;
    let holder = h.spawn().unwrap();
    let path = format!("/proc/{}/ns/pid", holder.pid());
    let want = std::fs::read_link(&path).unwrap();
    let mut sb = Sandbox::new().pid_namespace(NsMode::Join(path.into())).command("sh").args(["-c", "readlink /proc/self/ns/pid; ls -d /proc/[0-9]* | wc -l"]);
    sb.spec_mut().namespaces.user = NsMode::Host;
    let o = sb.output().unwrap();
    let w = want.to_string_lossy();
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], w, "{o:?}");
    // The holder's init and sleep, this sandbox's init, sh and ls: no host process.
    assert!(lines[1].trim().parse::<u32>().unwrap() <= 6, "{o:?}");
    assert_eq!(o.status, Verdict::Exited(0));
    // The caller's own threads are not in it.
    assert_ne!(std::fs::read_link("/proc/thread-self/ns/pid_for_children").unwrap(), want);
    drop(holder);
}

#[test]
fn joining_something_that_is_not_a_pid_namespace_is_a_clear_error() {
    // A network namespace given as the pid namespace: setns refuses it; the error names the
    // step and the path (not the clone that never ran).
    let o = Sandbox::new().pid_namespace(NsMode::Join("/proc/self/ns/net".into())).command("true").output();
    let e = o.expect_err("joined a network namespace as a pid namespace").to_string();
    assert!(e.contains("join the pid namespace") && e.contains("/proc/self/ns/net"), "{e}");
}
