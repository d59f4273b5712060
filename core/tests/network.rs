//! `network: private`: a sandbox's own network namespace with a way out through slirp4netns.
//! Traffic goes only to addresses on this machine: a "remote" server lives in a network
//! namespace the test creates (a veth pair, private addresses), the host's loopback is the thing
//! that must stay out of reach. Run as root and again rootless (scripts/test.sh); the parts that
//! need root to build the remote namespace are skipped rootless.
mod common;
use cagette::{Network, Sandbox, SandboxSpec, Stdio, Verdict};
use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// One test at a time: the checks for helpers left behind look at every child of this process.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn private(script: &str) -> Sandbox {
    Sandbox::new().network(Network::Private).command("sh").args(["-c", script]).stdin(Stdio::Null).stdout(Stdio::Piped).stderr(Stdio::Piped)
}

fn run(sb: Sandbox) -> cagette::Output {
    sb.output().expect("spawn a private-network sandbox")
}

/// The slirp4netns processes this process started (its children), with their command lines.
fn helpers() -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        let ppid: i32 = rest.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me && comm.ends_with("(slirp4netns") {
            let cmd = std::fs::read(e.path().join("cmdline")).map(|c| String::from_utf8_lossy(&c).replace('\0', " ")).unwrap_or_default();
            out.push((pid, cmd));
        }
    }
    out
}

/// The helper's private directory, from its command line (`--api-socket=DIR/api.sock`).
fn helper_dir(cmd: &str) -> PathBuf {
    let sock = cmd.split(' ').find_map(|a| a.strip_prefix("--api-socket=")).expect("an api socket");
    PathBuf::from(sock).parent().unwrap().to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// A server on the host's loopback answering `host-secret` to every connection.
fn host_loopback_server() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"host-secret\n");
        }
    });
    port
}

/// A "remote" network: a namespace of the test's own, joined to the host by a veth pair, with a
/// TCP server at `addr:8000` that answers `remote-ok`. Removed on drop.
struct Remote {
    ns: String,
    veth: String,
    addr: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip (iproute2)");
    assert!(st.success(), "ip {args:?} failed");
}

impl Remote {
    fn new(n: u8) -> Remote {
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let (ns, veth, peer) = (format!("cgtns{tag}"), format!("cgth{tag}"), format!("cgtr{tag}"));
        let net = format!("10.213.{n}");
        ip(&["netns", "add", &ns]);
        let remote = Remote { ns: ns.clone(), veth: veth.clone(), addr: format!("{net}.2").parse().unwrap() };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{net}.1/24"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{net}.2/24"), "dev", &peer]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        // The server: a thread of ours that moved into the namespace (setns affects one thread).
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let addr = remote.addr;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind((addr, 8000)).unwrap();
            tx.send(()).unwrap();
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(b"remote-ok\n");
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("the remote server listens");
        remote
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.veth]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn egress_reaches_a_remote_network_but_not_the_host_loopback_or_link_local() {
    let _g = serial();
    let port = host_loopback_server();
    let remote = root().then(|| Remote::new(1));
    let to_remote = match &remote {
        Some(r) => format!("busybox nc -w 5 {} 8000 </dev/null; echo remote=$?;", r.addr),
        None => String::new(),
    };
    let script = format!(
        "{to_remote} busybox nc -w 3 10.0.2.2 {port} </dev/null; echo gateway=$?; busybox nc -w 3 127.0.0.1 {port} </dev/null; echo loopback=$?; \
         busybox nc -w 3 169.254.169.254 80 </dev/null; echo metadata=$?; ip route"
    );
    let o = run(private(&script));
    let (out, err) = (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned());
    assert_eq!(o.status, Verdict::Exited(0), "{out}{err}");
    if remote.is_some() {
        assert!(out.contains("remote-ok\nremote=0"), "the remote network was not reached: {out}{err}");
    }
    assert!(!out.contains("host-secret"), "the host's loopback was reached: {out}");
    assert!(out.contains("gateway=1") && out.contains("loopback=1") && out.contains("metadata=1"), "{out}{err}");
    assert!(err.contains("Permission denied"), "link-local is refused by the prohibit route: {err}");
    assert!(out.contains("default via 10.0.2.2 dev tap0") && out.contains("prohibit 169.254.0.0/16"), "{out}");
    // allow_host_loopback opens both.
    let o = run(private(&format!("busybox nc -w 3 10.0.2.2 {port} </dev/null; ip route")).allow_host_loopback(true));
    assert!(stdout(&o).contains("host-secret") && !stdout(&o).contains("prohibit"), "{}", stdout(&o));
    assert!(eventually(5.0, || helpers().is_empty()), "helpers left: {:?}", helpers());
}

/// The host's mounts stay as they were: slirp4netns' own sandbox (as root) is built from a copy
/// of the host's mount namespace and detaches the old root; without a namespace of its own made
/// a slave first, a mount below a shared mount (here a tmpfs inside a shared tmpfs, as
/// `/run/netns/NAME` is inside the shared `/run/netns`) was unmounted on the host by every job.
#[test]
fn the_helper_unmounts_nothing_on_the_host() {
    let _g = serial();
    if !root() {
        eprintln!("skipped: only root's helper builds a mount namespace (--enable-sandbox)");
        return;
    }
    let dir = TempDir::new("net-shared");
    let outer = dir.path().join("outer");
    let inner = outer.join("inner");
    std::fs::create_dir(&outer).unwrap();
    let sh_ok = |script: &str| assert!(Command::new("sh").args(["-c", script]).status().unwrap().success(), "{script}");
    sh_ok(&format!("mount -t tmpfs cagette-test {o} && mount --make-shared {o} && mkdir {i} && mount -t tmpfs cagette-test {i}", o = outer.display(), i = inner.display()));
    let before = host_mounts();
    let o = run(private("echo up"));
    let after = host_mounts();
    let _ = Command::new("umount").arg("-R").arg(&outer).status();
    assert_eq!(o.status, Verdict::Exited(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(before.contains(&inner.display().to_string()), "the test's mount is in place: {before:?}");
    assert_eq!(before, after, "a private sandbox changed the host's mounts");
}

#[test]
fn dns_hosts_and_hostname_are_the_sandbox_own() {
    let _g = serial();
    let spec = SandboxSpec {
        network: Network::Private,
        hostname: Some("web".into()),
        dns: vec!["9.9.9.9".parse().unwrap(), "2620:fe::fe".parse().unwrap()],
        add_hosts: vec!["db:10.0.2.2".parse().unwrap()],
        argv: vec!["sh".into(), "-c".into(), "cat /etc/resolv.conf /etc/hosts; hostname".into()],
        stdout: Stdio::Piped,
        ..SandboxSpec::default()
    };
    let out = stdout(&Sandbox::from_spec(spec).output().unwrap());
    assert!(out.contains("nameserver 9.9.9.9\nnameserver 2620:fe::fe\n") && !out.contains("10.0.2.3"), "{out}");
    assert!(out.contains("10.0.2.100\tweb\n") && out.contains("10.0.2.2\tdb\n") && out.ends_with("web\n"), "{out}");
    // The default: the stack's forwarder.
    let out = stdout(&run(private("cat /etc/resolv.conf")));
    assert_eq!(out, "nameserver 10.0.2.3\n");
}

#[test]
fn publish_forwards_a_host_port_and_private_sandboxes_cannot_reach_each_other() {
    let _g = serial();
    let port = free_port();
    let mut a = private("echo published | busybox nc -l -p 80; sleep 30").publish([format!("{port}:80").parse().unwrap()]).spawn().unwrap();
    let mut got = String::new();
    let reached = eventually(10.0, || {
        got.clear();
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).and_then(|mut s| s.read_to_string(&mut got)).is_ok() && got == "published\n"
    });
    assert!(reached, "the published port did not answer: {got:?}");
    // A second private sandbox: neither A's address (it is its own) nor the host's loopback
    // (where A is published) leads to A.
    let o = run(private(&format!("busybox nc -w 3 10.0.2.100 80 </dev/null; echo own=$?; busybox nc -w 3 10.0.2.2 {port} </dev/null; echo published=$?")));
    assert_eq!(stdout(&o), "own=1\npublished=1\n", "{}", String::from_utf8_lossy(&o.stderr));
    a.kill(libc::SIGKILL).unwrap();
    a.wait().unwrap();
    assert!(eventually(5.0, || helpers().is_empty()), "helpers left: {:?}", helpers());
}

#[test]
fn bad_publish_values_and_a_port_in_use_are_clear_errors_with_nothing_left() {
    let _g = serial();
    for bad in ["80", "0:80", "8080:70000", "x:80", "1.2.3:8080:80", "8080:80/sctp"] {
        let e = bad.parse::<cagette::Publish>().unwrap_err();
        assert!(e.contains(bad) && e.contains("HOST_PORT:SANDBOX_PORT"), "{e}");
    }
    let spec: Result<SandboxSpec, _> = SandboxSpec::from_json(r#"{"argv":["true"],"publish":["8080:80"]}"#);
    let e = spec.unwrap_err().to_string();
    assert!(e.contains("publish needs network \"private\""), "{e}");
    let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let e = private("true").publish([format!("{port}:80").parse().unwrap()]).output().unwrap_err().to_string();
    assert!(e.contains(&format!("cannot listen on 127.0.0.1:{port}")) && e.contains("in use"), "{e}");
    assert!(eventually(5.0, || helpers().is_empty() && !has_children()), "a process of the failed sandbox was left: {:?}", helpers());
}

#[test]
fn the_helper_ends_with_the_job_and_a_dead_helper_ends_the_job() {
    let _g = serial();
    // A timeout: the job and its helper go, and the helper's directory with them.
    let mut child = private("sleep 30").timeout(Duration::from_millis(500)).spawn().unwrap();
    let found = helpers();
    assert_eq!(found.len(), 1, "{found:?}");
    let dir = helper_dir(&found[0].1);
    assert!(dir.join("resolv.conf").exists());

    assert!(matches!(child.wait().unwrap().verdict, Verdict::TimedOut(_)));
    assert!(!dir.exists(), "the helper's directory was left");
    assert!(eventually(5.0, || helpers().is_empty()), "the helper was left: {:?}", helpers());
    // The helper killed while the job runs: the job is killed too, with its own verdict.
    let mut child = private("sleep 30").spawn().unwrap();
    let (pid, _) = helpers()[0].clone();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let o = child.wait().unwrap();
    assert_eq!(o.verdict, Verdict::NetworkLost);
    assert_eq!(o.verdict.exit_code(), 137);
    assert!(eventually(5.0, || helpers().is_empty()));
}

/// The host of the next test: a process of its own (this test binary again) that starts a
/// private sandbox and waits, to be killed with SIGKILL.
#[test]
#[ignore = "run by a_killed_host_leaves_no_helper_and_its_directory_is_swept"]
fn host_process_for_the_kill_test() {
    if std::env::var_os("CAGETTE_NET_TEST_HOST").is_some() {
        let _ = private("sleep 60").output();
    }
}

#[test]
fn a_killed_host_leaves_no_helper_and_its_directory_is_swept() {
    let _g = serial();
    let exe = std::env::current_exe().unwrap();
    let mut host = Command::new(exe)
        .args(["--exact", "host_process_for_the_kill_test", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CAGETTE_NET_TEST_HOST", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = host.id() as i32;
    let parent = |p: i32| std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.split(' ').nth(1).and_then(|p| p.parse::<i32>().ok())));
    let mut helper = None;
    assert!(eventually(10.0, || {
        helper = pids_with("slirp4netns").into_iter().find(|&p| parent(p) == Some(host_pid));
        helper.is_some()
    }), "the host started no helper");
    let helper = helper.unwrap();
    let cmd = std::fs::read(format!("/proc/{helper}/cmdline")).map(|c| String::from_utf8_lossy(&c).replace('\0', " ")).unwrap();
    let dir = helper_dir(&cmd);
    host.kill().unwrap();
    host.wait().unwrap();
    // Its exit pipe closed: the helper exits (reparented, it is reaped by the system's init).
    let gone = || std::fs::read(format!("/proc/{helper}/cmdline")).map_or(true, |c| c.is_empty());
    assert!(eventually(10.0, gone), "the helper outlived its host");
    assert!(dir.exists(), "a killed host cannot remove its helper's directory");
    // The next private sandbox sweeps it.
    let o = run(private("true"));
    assert_eq!(o.status, Verdict::Exited(0));
    assert!(!dir.exists(), "the dead host's directory was not swept");
}

// ---- network "bridge" (root only): a veth pair routed by the host's kernel ----

fn bridge(script: &str) -> Sandbox {
    Sandbox::new().network(Network::Bridge).command("sh").args(["-c", script]).stdin(Stdio::Null).stdout(Stdio::Piped).stderr(Stdio::Piped)
}

/// The host ends of bridge pairs that exist now.
fn bridge_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("cagbr")).collect()
}

/// Whether this host can run bridge sandboxes; if not, checks that the refusal says why.
fn bridge_usable() -> bool {
    if !root() {
        let e = bridge("true").output().unwrap_err().to_string();
        assert!(e.contains("network \"bridge\" needs root") && e.contains("private"), "{e}");
        return false;
    }
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim() != "1" {
        let e = bridge("true").output().unwrap_err().to_string();
        assert!(e.contains("IPv4 forwarding") && e.contains("net.ipv4.ip_forward=1"), "{e}");
        eprintln!("skipped the rest: IPv4 forwarding is off here (scripts/test.sh turns it on in CI)");
        return false;
    }
    true
}

#[test]
fn bridge_reaches_a_remote_network_but_not_the_host_or_another_sandbox() {
    let _g = serial();
    if !bridge_usable() {
        return;
    }
    let before = bridge_links();
    let remote = Remote::new(3);
    // A service on every address of the host: out of a bridge sandbox's reach, even through its
    // gateway (an address of the host) — unlike a machine on the host's network.
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"host-secret\n");
        }
    });
    // Sandbox A listens (again and again); the host, which may reach into a sandbox, checks that
    // it does.
    let mut a = bridge("ip -4 -o addr show eth0; while true; do busybox nc -l -p 9000 -e echo from-a; done").spawn().unwrap();
    let mut line = String::new();
    let mut out = a.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let a_addr: Ipv4Addr = line.split_whitespace().nth(3).and_then(|c| c.split('/').next()).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("A's address: {line:?}"));
    let mut got = String::new();
    assert!(eventually(5.0, || TcpStream::connect((a_addr, 9000)).and_then(|mut s| s.read_to_string(&mut got)).is_ok() && got.contains("from-a")), "the host could not reach A at {a_addr}: {got:?}");
    // The firewall is checked before each job: removed (as a firewall reload would), it is back
    // for B.
    let _ = Command::new("nft").args(["delete", "table", "inet", "cagette"]).status();
    // Sandbox B: the remote network yes; the host's service (through B's gateway, an address
    // of the host), link-local and A no.
    let script = format!(
        "busybox nc -w 5 {r} 8000 </dev/null; echo remote=$?; gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); \
         busybox nc -w 2 $gw {port} </dev/null; echo gateway=$?; busybox nc -w 2 169.254.169.254 80 </dev/null; echo metadata=$?; \
         busybox nc -w 2 {a_addr} 9000 </dev/null; echo other=$?; cat /etc/hosts",
        r = remote.addr
    );
    let o = run(bridge(&script));
    let (text, err) = (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned());
    assert_eq!(o.status, Verdict::Exited(0), "{text}{err}");
    assert!(text.contains("remote-ok\nremote=0"), "the remote network was not reached: {text}{err}");
    assert!(!text.contains("host-secret") && text.contains("gateway=1") && text.contains("metadata=1"), "{text}{err}");
    assert!(!text.contains("from-a") && text.contains("other=1"), "B reached A: {text}{err}");
    assert!(text.contains("127.0.1.1\tcagette"), "{text}");
    a.kill(libc::SIGKILL).unwrap();
    a.wait().unwrap();
    drop(remote);
    assert!(eventually(10.0, || bridge_links().iter().all(|l| before.contains(l))), "pairs left: {:?}", bridge_links());
}

#[test]
fn bridge_dns_hosts_and_bad_values() {
    let _g = serial();
    // publish and allow_host_loopback belong to "private" only: refused before anything runs.
    let e = bridge("true").publish(["8080:80".parse().unwrap()]).output().unwrap_err().to_string();
    assert!(e.contains("publish needs network \"private\""), "{e}");
    let e = bridge("true").allow_host_loopback(true).output().unwrap_err().to_string();
    assert!(e.contains("allow_host_loopback needs network \"private\""), "{e}");
    let e = SandboxSpec::from_json(r#"{"argv":["true"],"network":"bridge","publish":["8080:80"]}"#).unwrap_err().to_string();
    assert!(e.contains("publish needs network"), "{e}");
    if !bridge_usable() {
        return;
    }
    let before = bridge_links();
    let o = run(bridge("cat /etc/resolv.conf /etc/hosts").dns(["192.0.2.53".parse().unwrap()]).add_host("db", "192.0.2.10".parse().unwrap()));
    let text = stdout(&o);
    assert!(text.starts_with("nameserver 192.0.2.53\n") && text.contains("192.0.2.10\tdb\n"), "{text}");
    // A failed start (the command does not exist) leaves no pair behind.
    let e = Sandbox::new().network(Network::Bridge).command("/nonexistent").output().unwrap_err().to_string();
    assert!(e.contains("nonexistent"), "{e}");
    assert!(eventually(10.0, || bridge_links().iter().all(|l| before.contains(l))), "pairs left: {:?}", bridge_links());
}
