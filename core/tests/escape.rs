//! The escape suite: each test tries one way out of a default sandbox and asserts the specific
//! failure (errno, or what the payload can see), not just "non-zero exit". The attacks run as
//! root inside the sandbox, with the default capabilities, from Python (ctypes for raw calls).
//!
//! Three modes (scripts/test.sh runs all three): as root with the default root (the host's /,
//! read-only), as root with a rootfs of its own (`CAGETTE_ESCAPE_ROOTFS=1`: a directory holding
//! read-only binds of the host's /usr and a few files of /etc), and rootless (as nobody).
mod common;
use cagette::{Mount, NsMode, Sandbox, SandboxSpec, Stdio, Verdict};
use common::*;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    RootHostRoot,
    RootRootfs,
    Rootless,
}

fn mode() -> Mode {
    if unsafe { libc::geteuid() } != 0 {
        Mode::Rootless
    } else if std::env::var_os("CAGETTE_ESCAPE_ROOTFS").is_some() {
        Mode::RootRootfs
    } else {
        Mode::RootHostRoot
    }
}

/// The rootfs of the rootfs mode: symlinks to usr/ like a merged-/usr system, /usr bound
/// read-only from the host at run time, and copies of a few files of /etc.
fn escape_rootfs() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("escape-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        for l in ["bin", "sbin", "lib", "lib64"] {
            if let Ok(t) = std::fs::read_link(Path::new("/").join(l)) {
                std::os::unix::fs::symlink(t, dir.join(l)).unwrap();
            }
        }
        for f in ["passwd", "group", "hostname", "ld.so.cache"] {
            let _ = std::fs::copy(Path::new("/etc").join(f), dir.join("etc").join(f));
        }
        dir
    })
    .clone()
}

/// Runs a Python snippet (with helpers `sc(name, *args)` -> "ok" or the errno name, and
/// `try_(fn)` -> "ok" or the errno name) in a sandbox; returns its stdout lines.
fn attack(spec: SandboxSpec, code: &str) -> Vec<String> {
    let prelude = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
NR = {"keyctl": 250, "bpf": 321, "perf_event_open": 298, "init_module": 175, "finit_module": 313,
      "setns": 308, "unshare": 272, "mount": 165, "umount2": 166, "ptrace": 101, "mknod": 133,
      "sethostname": 170, "clone3": 435, "open_tree": 428, "kexec_load": 246, "userfaultfd": 323,
      "chroot": 161, "swapon": 167, "reboot": 169, "settimeofday": 164, "clock_settime": 227,
      "open_by_handle_at": 304, "add_key": 248, "pivot_root": 155}
def sc(name, *args):
    conv = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args]
    r = libc.syscall(NR[name], *conv)
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
def try_(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
"#;
    let mut spec = spec;
    spec.argv = vec!["python3".into(), "-c".into(), format!("{prelude}\n{code}")];
    if spec.stdin == Stdio::Inherit {
        spec.stdin = Stdio::Null;
    }
    spec.stdout = Stdio::Piped;
    spec.stderr = Stdio::Piped;
    let o = Sandbox::from_spec(spec).output().expect("spawn");
    assert_eq!(o.status, Verdict::Exited(0), "attack script failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

/// A host file that exists for one test and is removed even when the test fails.
struct Marker(std::path::PathBuf);

impl Marker {
    fn new(tag: &str) -> Marker {
        let p = std::env::temp_dir().join(format!("cagette-{tag}-marker-{}", std::process::id()));
        std::fs::write(&p, "host secret").unwrap();
        Marker(p)
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn default() -> SandboxSpec {
    match mode() {
        Mode::RootRootfs => SandboxSpec { rootfs: Some(escape_rootfs()), mounts: vec![Mount::bind("/usr", "/usr").read_only()], ..Default::default() },
        _ => SandboxSpec::default(),
    }
}

#[test]
fn cannot_see_or_signal_host_processes() {
    // Attack: signal the host process that started the sandbox, by its host pid.
    let host = std::process::id();
    let out = attack(default(), &format!("print(try_(lambda: os.kill({host}, 0)))\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))"));
    assert_eq!(out[0], "ESRCH");
    let n: usize = out[1].parse().unwrap();
    assert!(n <= 3, "the sandbox sees {n} processes");
}

#[test]
fn cannot_ptrace_a_host_process() {
    // Attack: PTRACE_ATTACH to the host process. Own pid namespace: it does not exist there.
    let host = std::process::id();
    let out = attack(default(), &format!("print(sc('ptrace', 16, {host}, 0, 0))"));
    assert_eq!(out, ["ESRCH"]);
    // Sharing the host's pid namespace: ptrace is filtered (seccomp). Such a job needs a cgroup
    // to track its processes: without one (rootless, not delegated) it is refused.
    let spec = SandboxSpec { namespaces: cagette::Namespaces { pid: NsMode::Host, ..Default::default() }, ..default() };
    if unsafe { libc::geteuid() } != 0 {
        let e = Sandbox::from_spec(SandboxSpec { argv: vec!["true".into()], ..spec }).status().unwrap_err();
        let f = e.setup_failure().expect("a setup failure");
        assert_eq!(f.step, cagette::Step::Cgroup);
        assert!(f.message.contains("pid namespace") && f.hint.as_deref().is_some_and(|h| h.contains("namespaces.pid")), "{f:?}");
        return;
    }
    let out = attack(spec, &format!("print(sc('ptrace', 16, {host}, 0, 0))"));
    assert_eq!(out, ["EPERM"]);
}

#[test]
fn proc_root_and_fds_lead_nowhere_on_the_host() {
    // Attack: reach the host's files through /proc/<pid>/root, /proc/self/fd of a leaked fd, or
    // the working directory.
    let guard = Marker::new("escape");
    let marker = guard.0.clone();
    // A host fd that is not close-on-exec, open while the sandbox starts.
    let leaky = std::fs::File::open(&marker).unwrap();
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&leaky), libc::F_SETFD, 0) };
    let m = marker.display();
    let out = attack(
        default(),
        &format!(
            "print(try_(lambda: open('/proc/self/root{m}')))\n\
             print(try_(lambda: open('{m}')))\n\
             print(try_(lambda: os.listdir('/proc/1/root')))\n\
             print(sorted(int(f) for f in os.listdir('/proc/self/fd') if int(f) > 3))\n\
             print(os.readlink('/proc/self/cwd'), os.readlink('/proc/self/root'))"
        ),
    );
    drop(leaky);
    // init (pid 1) keeps capabilities the payload lacks: the kernel refuses to let the payload
    // look into it (EACCES), so it cannot borrow init's root or namespaces either.
    assert_eq!(out, ["ENOENT", "ENOENT", "EACCES", "[]", "/ /"]);
}

#[test]
fn cannot_remount_or_mount_or_unmount() {
    // Attack: remount / or a read-only bind read-write; mount a new proc or sysfs; unmount a
    // masked path to reveal what it hides.
    let d = TempDir::new("ro");
    let mut spec = default();
    spec.mounts.push(Mount::bind(d.path(), "/ro").read_only());
    let out = attack(
        spec,
        "MS_REMOUNT, MS_BIND, MS_RDONLY = 32, 4096, 1\n\
         print(sc('mount', 0, b'/', 0, MS_REMOUNT, 0))\n\
         print(sc('mount', 0, b'/ro', 0, MS_REMOUNT | MS_BIND, 0))\n\
         print(sc('mount', b'proc', b'/tmp', b'proc', 0, 0))\n\
         print(sc('mount', b'sysfs', b'/tmp', b'sysfs', 0, 0))\n\
         print(sc('umount2', b'/sys/firmware', 2))\n\
         print(sc('open_tree', -100, b'/', 1))\n\
         print(try_(lambda: open('/ro/x', 'w')))",
    );
    assert_eq!(out, ["EPERM", "EPERM", "EPERM", "EPERM", "EPERM", "EPERM", "EROFS"]);
}

#[test]
fn kernel_knobs_are_out_of_reach() {
    // Attack: write /proc/sysrq-trigger and /proc/sys/kernel/*; raise our own cgroup limits.
    let out = attack(
        default(),
        "print(try_(lambda: open('/proc/sysrq-trigger', 'w').write('b')))\n\
         print(try_(lambda: open('/proc/sys/kernel/hostname', 'w').write('pwned')))\n\
         print(try_(lambda: open('/sys/fs/cgroup/memory/memory.limit_in_bytes', 'w')))\n\
         print(try_(lambda: open('/sys/fs/cgroup/memory.max', 'w')))\n\
         print(try_(lambda: open('/sys/kernel/mm/transparent_hugepage/enabled', 'w')))",
    );
    // The sandbox's /sys is a fresh read-only sysfs with no cgroup file system mounted in it.
    // (Some kernels have no /proc/sysrq-trigger at all.)
    let sysrq = if std::path::Path::new("/proc/sysrq-trigger").exists() { "EROFS" } else { "ENOENT" };
    assert_eq!(out, [sysrq, "EROFS", "ENOENT", "ENOENT", "EROFS"]);
}

#[test]
fn no_raw_devices() {
    // Attack: open /dev/mem or a block device, or make one with mknod.
    let out = attack(
        default(),
        "S_IFBLK = 0o060000\n\
         print(try_(lambda: open('/dev/mem', 'rb')))\n\
         print(try_(lambda: open('/dev/vda', 'rb')))\n\
         print(try_(lambda: open('/dev/sda', 'rb')))\n\
         print(sc('mknod', b'/tmp/sda', S_IFBLK | 0o600, os.makedev(8, 0)))",
    );
    assert_eq!(out, ["ENOENT", "ENOENT", "ENOENT", "EPERM"]);
}

#[test]
fn dangerous_kernel_interfaces_are_filtered() {
    // Attack: load a kernel module, kexec, keyrings, bpf, perf, userfaultfd, swap, reboot,
    // clocks, and the open_by_handle_at "shocker" escape.
    let out = attack(
        default(),
        "fd = os.open('/etc/hostname', os.O_RDONLY)\n\
         for name, args in [('finit_module', (fd, b'', 0)), ('init_module', (0, 0, b'')), ('kexec_load', (0, 0, 0, 0)),\n\
                            ('keyctl', (0, 0, 0, 0, 0)), ('add_key', (b'user', b'x', 0, 0, -2)), ('bpf', (0, 0, 0)),\n\
                            ('perf_event_open', (0, 0, -1, -1, 0)), ('userfaultfd', (0,)), ('swapon', (b'/tmp/x', 0)),\n\
                            ('reboot', (0, 0, 0, 0)), ('settimeofday', (0, 0)), ('clock_settime', (0, 0)),\n\
                            ('open_by_handle_at', (fd, 0, 0)), ('pivot_root', (b'/', b'/'))]: print(name, sc(name, *args))",
    );
    for line in &out {
        assert!(line.ends_with(" EPERM"), "{line}: expected EPERM (all: {out:?})");
    }
    assert_eq!(out.len(), 14);
}

#[test]
fn cannot_join_other_namespaces_or_rename_the_host() {
    // Attack: setns into pid 1's namespaces; change the hostname (of the host, hopefully).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = attack(
        default(),
        "print(try_(lambda: os.open('/proc/1/ns/net', os.O_RDONLY)))\n\
         fd = os.open('/proc/self/ns/net', os.O_RDONLY)\n\
         print(sc('setns', fd, 0))\n\
         print(sc('sethostname', b'pwned', 5))",
    );
    assert_eq!(out, ["EACCES", "EPERM", "EPERM"]);
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), host);
}

#[test]
fn cannot_regain_capabilities_with_a_new_user_namespace() {
    // Attack: unshare a user namespace (full capabilities inside it) to mount a host path.
    let out = attack(
        default(),
        "CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x20000\n\
         print(sc('unshare', CLONE_NEWUSER | CLONE_NEWNS))\n\
         print(sc('clone3', 0, 0))",
    );
    assert_eq!(out, ["EPERM", "ENOSYS"]);
    // Allowed on request: then it works, but the host is still out of reach (read-only).
    let spec = SandboxSpec { allow_user_namespaces: true, ..default() };
    let out = attack(
        spec,
        "print(sc('unshare', 0x10000000 | 0x20000))\n\
         print(try_(lambda: open('/usr/cagette-pwned', 'w')))",
    );
    assert_eq!(out, ["ok", "EROFS"]);
}

#[test]
fn chroot_and_dirfd_breakouts_stay_inside() {
    // Attack: the classic chroot escape (chroot into a subdirectory while keeping a cwd or a
    // directory fd outside it, then walk up with ".."), looking for a host-only file.
    let guard = Marker::new("chroot");
    let m = guard.0.display();
    let out = attack(
        default(),
        &format!(
            "before = sorted(os.listdir('/'))\n\
             os.mkdir('/tmp/jail')\n\
             dfd = os.open('/', os.O_PATH)\n\
             os.chroot('/tmp/jail')\n\
             os.fchdir(dfd)\n\
             for _ in range(64): os.chdir('..')\n\
             os.chroot('.')\n\
             print(try_(lambda: open('{m}')))\n\
             print(try_(lambda: os.open('../../../..{m}', os.O_RDONLY, dir_fd=dfd)))\n\
             print(sorted(os.listdir('/')) == before)"
        ),
    );
    assert_eq!(out, ["ENOENT", "ENOENT", "True"]);
}

#[test]
fn symlink_swap_during_setup_never_redirects_a_mount() {
    // Attack: while sandboxes are being set up, flip a rootfs path between a directory and a
    // symlink to the host's / (the kind of race CVE-2021-30465 won against runc).
    let d = TempDir::new("swap");
    let root = d.path().join("root");
    let bb = busybox_rootfs();
    assert!(std::process::Command::new("cp").arg("-a").arg(&bb).arg(&root).status().unwrap().success());
    let target = root.join("target");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let tmp = target.with_extension("new");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::remove_file(&tmp);
                let _ = std::os::unix::fs::symlink("/", &tmp);
                let _ = std::fs::rename(&tmp, &target); // now a symlink to /
                let _ = std::fs::remove_file(&target);
                let _ = std::fs::create_dir(&target); // now a directory
            }
        })
    };
    let before = host_mounts();
    let name = format!("cagette-swap-{}", std::process::id());
    for _ in 0..40 {
        let spec = SandboxSpec {
            rootfs: Some(root.clone()),
            mounts: vec![Mount::tmpfs(format!("/target/{name}"))],
            argv: vec!["/bin/true".into()],
            ..Default::default()
        };
        // Setup may fail when the path is mid-swap; it must never escape.
        let _ = Sandbox::from_spec(spec).status();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(host_mounts(), before, "a mount landed on the host");
    assert!(!std::path::Path::new(&format!("/{name}")).exists(), "a mount point was created at the host's root");
}


/// A pty pair of this process: (master, slave).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m)).to_owned();
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(s >= 0);
        (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s))
    }
}

#[test]
fn no_terminal_injection_and_no_controlling_terminal() {
    // Attack (bubblewrap's CVE-2017-5226): push characters into the caller's terminal with
    // ioctl(TIOCSTI) on an inherited terminal fd, also with the high bits of the command set
    // (CVE-2019-10063), or TIOCLINUX; or open /dev/tty, the controlling terminal.
    use std::os::fd::AsRawFd;
    let (_master, slave) = pty();
    let code = "import fcntl, termios\n\
                print(try_(lambda: fcntl.ioctl(0, termios.TIOCSTI, b'x')))\n\
                r = libc.syscall(16, 0, ctypes.c_ulong((1 << 32) | termios.TIOCSTI), ctypes.c_char_p(b'x'))\n\
                print('ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])\n\
                print(try_(lambda: fcntl.ioctl(0, 0x541C, b'\\x02')))\n\
                print(try_(lambda: open('/dev/tty', 'rb')))\n\
                print(os.getsid(0) == os.getpgid(0) == os.getppid(), open('/proc/self/stat').read().rsplit(')', 1)[1].split()[4])";
    let mut spec = default();
    spec.stdin = Stdio::Fd(slave.as_raw_fd());
    let out = attack(spec, code);
    // The session is init's (pid 1), a session of its own; tty_nr 0: no controlling terminal.
    assert_eq!(out, ["EPERM", "EPERM", "EPERM", "ENXIO", "True 0"]);
    // Without the seccomp filter, the kernel still refuses: the terminal is not the sandbox's
    // controlling one (EPERM), or legacy TIOCSTI is off altogether (EIO).
    let mut spec = default();
    spec.stdin = Stdio::Fd(slave.as_raw_fd());
    spec.seccomp = cagette::Seccomp::Mode(cagette::SeccompMode::None);
    let out = attack(spec, "import fcntl, termios\nprint(try_(lambda: fcntl.ioctl(0, termios.TIOCSTI, b'x')))");
    assert!(out == ["EPERM"] || out == ["EIO"], "{out:?}");
}

#[test]
fn kill_zero_stays_in_the_sandbox() {
    // Attack: kill(0, SIGKILL) signals the caller's process group when the sandbox shares it.
    let mut sibling = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let mut spec = default();
    spec.argv = vec!["python3".into(), "-c".into(), "import os, signal; os.kill(0, signal.SIGKILL)".into()];
    spec.stdin = Stdio::Null;
    let o = Sandbox::from_spec(spec).output().unwrap();
    assert_eq!(o.status, Verdict::Signaled(libc::SIGKILL), "{o:?}");
    let alive = unsafe { libc::kill(sibling.id() as i32, 0) } == 0 && sibling.try_wait().unwrap().is_none();
    let _ = sibling.kill();
    let _ = sibling.wait();
    assert!(alive, "kill(0) from the sandbox reached a process of the caller's group");
}

/// A root-owned (0600) file, socket and FIFO in a host directory that the default root shows.
struct RootOnly {
    dir: PathBuf,
    _listener: std::os::unix::net::UnixListener,
    _reader: std::fs::File,
}

impl RootOnly {
    fn new() -> RootOnly {
        use std::os::unix::fs::PermissionsExt;
        let dir = PathBuf::from(format!("/var/tmp/cagette-esc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("secret"), "root only").unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for f in ["secret", "sock", "fifo"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A reader, as /run/initctl has one: a write would then go through.
        use std::os::unix::fs::OpenOptionsExt;
        let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(dir.join("fifo")).unwrap();
        RootOnly { dir, _listener: listener, _reader: reader }
    }
}

impl Drop for RootOnly {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn root_only_files_sockets_and_fifos_stay_out_of_reach() {
    // Attack: as uid 0 inside, read /etc/shadow, connect to a root-only socket, write into a
    // root-only FIFO (think docker.sock, /run/initctl), find the host's IPC endpoints under /run.
    if mode() == Mode::Rootless {
        // Rootless, the sandbox is the caller: such files are not the caller's to begin with.
        let out = attack(default(), "print(try_(lambda: open('/etc/shadow')))");
        assert_eq!(out, ["EACCES"]);
        return;
    }
    let r = RootOnly::new();
    let d = r.dir.display();
    let code = format!(
        "import socket\n\
         print(try_(lambda: open('/etc/shadow')))\n\
         print(try_(lambda: open('{d}/secret')))\n\
         print(try_(lambda: socket.socket(socket.AF_UNIX).connect('{d}/sock')))\n\
         print(try_(lambda: os.open('{d}/fifo', os.O_WRONLY | os.O_NONBLOCK)))\n\
         print(sorted(os.listdir('/run')) if os.path.exists('/run') else [], sorted(os.listdir('/dev/shm')))"
    );
    let out = attack(default(), &code);
    match mode() {
        Mode::RootHostRoot => assert_eq!(out, ["EACCES", "EACCES", "EACCES", "EACCES", "[] []"]),
        // The rootfs has no /etc/shadow and does not show the host's /var/tmp.
        _ => assert_eq!(out, ["ENOENT", "ENOENT", "ENOENT", "ENOENT", "[] []"]),
    }
    if mode() == Mode::RootHostRoot {
        // The same attack with userns = host (the sandbox's root is host root) succeeds: what
        // the default protects against is real.
        let spec = SandboxSpec { userns: cagette::UsernsMode::Host, ..default() };
        let out = attack(spec, &code);
        assert_eq!(&out[..4], ["ok", "ok", "ok", "ok"]);
    }
}

#[test]
fn planted_device_nodes_cannot_be_opened() {
    // Attack: a device node planted in a rootfs or a writable bind (`c 1 3`, /dev/null's
    // numbers, standing for /dev/kvm or /dev/kmsg) opened from inside.
    if mode() == Mode::Rootless {
        return; // only root can make device nodes
    }
    let d = TempDir::new("devnode");
    let node = std::ffi::CString::new(d.path().join("planted").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
    let mut spec = default();
    spec.mounts.push(Mount::bind(d.path(), "/out"));
    let out = attack(spec, "print(try_(lambda: open('/out/planted', 'wb')))\nprint(try_(lambda: open('/dev/null', 'wb')))");
    assert_eq!(out, ["EACCES", "ok"]);
    // In a rootfs (writable or not) and as userns = host alike.
    let root = TempDir::new("devroot");
    assert!(std::process::Command::new("cp").arg("-a").arg(busybox_rootfs()).arg(root.path().join("r")).status().unwrap().success());
    let node = std::ffi::CString::new(root.path().join("r/planted").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
    for (writable, userns) in [(false, cagette::UsernsMode::Auto), (true, cagette::UsernsMode::Host)] {
        let spec = SandboxSpec { rootfs: Some(root.path().join("r")), rootfs_writable: writable, userns, argv: vec!["sh".into(), "-c".into(), "echo x > /planted; echo rc=$?".into()], stdout: Stdio::Piped, stderr: Stdio::Piped, ..Default::default() };
        let o = Sandbox::from_spec(spec).output().unwrap();
        assert_eq!(stdout(&o), "rc=1\n", "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"), "{o:?}");
    }
}

#[test]
fn a_planted_symlink_never_redirects_a_later_bind() {
    // Attack: job A, with a writable bind of a cache, plants cache/deps -> a host directory;
    // job B binds cache/deps read-write and would write there.
    let cache = TempDir::new("cache");
    let target = TempDir::new("victim");
    let mut a = default();
    a.mounts.push(Mount::bind(cache.path(), "/cache"));
    let plant = format!("import os\nos.symlink('{}', '/cache/deps')\nprint('planted')", target.path().display());
    assert_eq!(attack(a, &plant), ["planted"]);
    let mut b = default();
    b.mounts.push(Mount::bind(cache.path().join("deps"), "/deps"));
    b.argv = vec!["/bin/true".into()];
    let e = Sandbox::from_spec(b.clone()).status().unwrap_err();
    let f = e.setup_failure().expect("a setup failure");
    assert_eq!((f.step, f.errno), (cagette::Step::Mount, Some(libc::ELOOP)), "{f:?}");
    assert!(f.message.contains("deps") && f.message.contains("symlink") && f.hint.as_deref().is_some_and(|h| h.contains("follow_symlinks")), "{f:?}");
    // The caller may opt in (the link is theirs): then it is followed, once, at spawn.
    b.follow_symlinks = true;
    assert!(Sandbox::from_spec(b).status().unwrap().success());
}

#[test]
fn sharing_the_pid_namespace_leaves_no_process_behind() {
    // Attack: with the host's pid namespace, escape the process tree (setsid, double fork) and
    // outlive the job. Such a job gets a cgroup, and everything in it dies with the job.
    if mode() == Mode::Rootless {
        return; // refused without a cgroup (see cannot_ptrace_a_host_process)
    }
    let tag = format!("62.{}", std::process::id());
    let mut spec = default();
    spec.namespaces.pid = NsMode::Host;
    spec.timeout = Some(std::time::Duration::from_secs(1));
    spec.argv = vec!["sh".into(), "-c".into(), format!("(setsid sleep {tag} &); sleep 30")];
    spec.stdout = Stdio::Null;
    let o = Sandbox::from_spec(spec).status().unwrap();
    assert!(matches!(o.verdict, Verdict::TimedOut(_)), "{o:?}");
    assert!(eventually(2.0, || pids_with(&format!("sleep {tag}")).is_empty()), "a process outlived the job");
}

#[test]
fn the_hostname_is_not_the_hosts() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = attack(default(), "import socket\nprint(socket.gethostname())");
    assert_eq!(out, [cagette::DEFAULT_HOSTNAME]);
    assert_ne!(host.trim(), cagette::DEFAULT_HOSTNAME);
}
