//! Private networks (`network: private`): the sandbox's own network namespace with a default
//! route out through `slirp4netns`, a user-mode TCP/IP stack that runs on the host as a helper
//! of the job. The same code works as root and rootless: slirp4netns enters the sandbox's
//! namespaces by path (`/proc/PID/ns/…` of a child we hold a pidfd of) and opens a tap device
//! there; every connection the sandbox makes becomes an ordinary socket of the helper on the
//! host.
//!
//! What it refuses: the host's loopback (`--disable-host-loopback`: 10.0.2.2 is not a way to
//! the host's 127.0.0.1) and link-local addresses (a `prohibit` route to 169.254.0.0/16 the
//! setup child adds before the payload runs: cloud metadata services). Both stay open with
//! `allow_host_loopback`. The host's other addresses are reachable, as they are from any
//! machine on the network (podman's pasta and slirp4netns modes behave the same).
//!
//! The helper is part of the job: it starts after the namespaces exist and before the payload
//! runs (the setup child waits for the host's go, which comes once the helper reported the
//! network up), its CPU time is added to the job's usage report, it is killed when the job is
//! reaped, and if the host dies its exit pipe closes and it exits too. It stays out of the job's
//! cgroup: its death unregisters the tap device, 20-40 ms the cgroup's removal would wait for.
//! Its files (the generated `/etc/resolv.conf` and `/etc/hosts`, its API socket and log) live
//! in a private directory removed with it.

pub(crate) mod bridge;

use crate::error::{SetupFailure, Step};
use crate::sandbox::spec::{Mount, Network, SandboxSpec};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::PollFlags;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The sandbox's address, its gateway (the host, refused unless `allow_host_loopback`) and the
/// stack's DNS forwarder (slirp4netns' defaults).
pub(crate) const SANDBOX_ADDR: &str = "10.0.2.100";
const DNS_FORWARDER: &str = "10.0.2.3";
/// How long the helper may take to bring the network up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const INSTALL_HINT: &str = "install slirp4netns (Debian/Ubuntu: apt install slirp4netns; Fedora: dnf install slirp4netns), or use network \"none\"";

/// The helper directories: `cagette-net-<host pid>-XXXXXX`.
const DIR_PREFIX: &str = "cagette-net-";

/// Removes the helper directories of hosts that died without cleaning up (ours only: the same
/// owner, and the pid in the name no longer running).
fn sweep(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else { return };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|r| r.split_once('-')).and_then(|(p, _)| p.parse::<u32>().ok()) else { continue };
        let ours = e.path().symlink_metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn fail(errno: Option<i32>, path: Option<PathBuf>, what: &str) -> SetupFailure {
    SetupFailure::new(Step::Network, errno, path, what)
}

/// Where `slirp4netns` is: `$CAGETTE_SLIRP4NETNS` when set (and nothing else then), else the
/// first match in `PATH`, then the usual directories.
pub fn helper_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAGETTE_SLIRP4NETNS") {
        let p = PathBuf::from(p);
        return (nix::unistd::access(&p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file()).then_some(p);
    }
    find_executable("slirp4netns", &["/usr/bin", "/usr/local/bin", "/bin"])
}

/// The first executable file `name` in `PATH`, then in `also`.
fn find_executable(name: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file())
}

/// The helper of one private-network sandbox: its directory (files bound into the sandbox) and,
/// once started, the `slirp4netns` process. Dropping it kills and reaps the process and removes
/// the directory.
#[derive(Debug)]
pub(crate) struct NetHelper {
    dir: PathBuf,
    /// slirp4netns (`private`), or `ip` (`bridge`).
    binary: PathBuf,
    /// `bridge` (a veth pair, which the kernel removes with the sandbox's namespace), not
    /// `private`.
    bridge: bool,
    proc: Option<std::process::Child>,
    pidfd: Option<OwnedFd>,
    /// Our end of the exit pipe: when it closes (we drop it, or the host dies), slirp4netns exits.
    exit_w: Option<OwnedFd>,
}

impl NetHelper {
    /// Checks for the helper, makes the private directory with the sandbox's `resolv.conf` and
    /// `hosts`, and returns the mounts that bind them (read-only) over `/etc/…` — unless a mount of
    /// the spec already targets that path.
    pub(crate) fn prepare(spec: &SandboxSpec, hostname: &str) -> Result<(NetHelper, Vec<Mount>), SetupFailure> {
        let is_bridge = spec.network == Network::Bridge;
        let binary = if is_bridge {
            let (ip, nft) = bridge::check_host()?;
            bridge::ensure_firewall(&nft)?;
            ip
        } else {
            helper_path().ok_or_else(|| fail(Some(libc::ENOENT), Some("slirp4netns".into()), "network \"private\" needs slirp4netns, which is not installed").hint(INSTALL_HINT))?
        };
        let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_dir() && crate::host::euid() != 0).unwrap_or_else(std::env::temp_dir);
        sweep(&base);
        let template = base.join(format!("{DIR_PREFIX}{}-XXXXXX", std::process::id()));
        let dir = nix::unistd::mkdtemp(&template).map_err(|e| fail(Some(e as i32), Some(base.clone()), "create the private network's directory"))?;
        let helper = NetHelper { dir, binary, bridge: is_bridge, proc: None, pidfd: None, exit_w: None };
        // The directory is 0700; the files must be readable by the sandbox's ids once bound.
        nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, &helper.dir, nix::sys::stat::Mode::from_bits_truncate(0o711), nix::sys::stat::FchmodatFlags::NoFollowSymlink)
            .map_err(|e| fail(Some(e as i32), Some(helper.dir.clone()), "make the private network's directory searchable"))?;
        let mut resolv = String::new();
        if spec.dns.is_empty() {
            if is_bridge {
                // The host's own resolvers, those a sandbox can reach (none on the host itself).
                let found = bridge::host_nameservers();
                if found.is_empty() {
                    resolv.push_str("# the host's /etc/resolv.conf names no resolver a bridge sandbox can reach (its loopback is out of reach): pass dns\n");
                }
                for d in found {
                    resolv.push_str(&format!("nameserver {d}\n"));
                }
            } else {
                resolv.push_str(&format!("nameserver {DNS_FORWARDER}\n"));
            }
        }
        for d in &spec.dns {
            resolv.push_str(&format!("nameserver {d}\n"));
        }
        // A bridge sandbox's address is known only once its pair is made: its name is on
        // 127.0.1.1, as Debian does for a host without a fixed address.
        let own = if is_bridge { "127.0.1.1" } else { SANDBOX_ADDR };
        let mut hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n");
        for h in &spec.add_hosts {
            hosts.push_str(&format!("{}\t{}\n", h.ip, h.name));
        }
        let mut mounts = Vec::new();
        for (name, text) in [("resolv.conf", resolv), ("hosts", hosts)] {
            let path = helper.dir.join(name);
            crate::fs::hostfile::write_host_file_mode(&path, text.as_bytes(), 0o644).map_err(|e| fail(e.raw_os_error(), Some(path.clone()), &format!("write the sandbox's {name}")))?;
            let dest = format!("/etc/{name}");
            let taken = spec.mounts.iter().any(|m| Path::new(m.destination()) == Path::new(&dest));
            if !taken {
                mounts.push(Mount::Bind { source: path, destination: dest, read_only: true, recursive: false, flags: Default::default() });
            }
        }
        Ok((helper, mounts))
    }

    /// Starts slirp4netns on the namespaces of `pid` (the sandbox's setup child, waiting for the
    /// host's go), waits until it reports the network configured, moves it into the job's
    /// cgroup, and forwards the published ports.
    pub(crate) fn start(&mut self, pid: i32, user_ns: bool, spec: &SandboxSpec) -> Result<(), SetupFailure> {
        // The sandbox's network namespace must exist by now (created by clone), never the host's.
        if self.bridge {
            // attach checks the namespace itself, on the file it then uses.
            return bridge::attach(&self.binary, pid);
        }
        self.check_own_namespace(pid)?;
        self.start_slirp(pid, user_ns, spec)
    }

    fn check_own_namespace(&self, pid: i32) -> Result<(), SetupFailure> {
        let ns = |p: &str| std::fs::metadata(p).map(|m| (std::os::unix::fs::MetadataExt::dev(&m), std::os::unix::fs::MetadataExt::ino(&m)));
        let theirs = format!("/proc/{pid}/ns/net");
        match (ns(&theirs), ns("/proc/self/ns/net")) {
            (Ok(a), Ok(b)) if a != b => {}
            (Ok(_), Ok(_)) => return Err(fail(None, Some(theirs.into()), "the sandbox has no network namespace of its own yet: refusing to configure the host's")),
            (Err(e), _) | (_, Err(e)) => return Err(fail(e.raw_os_error(), Some(theirs.into()), "inspect the sandbox's network namespace")),
        }
        Ok(())
    }

    fn start_slirp(&mut self, pid: i32, user_ns: bool, spec: &SandboxSpec) -> Result<(), SetupFailure> {
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(Some(e as i32), None, "create the network helper's ready pipe"))?;
        let (exit_r, exit_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(Some(e as i32), None, "create the network helper's exit pipe"))?;
        let api = self.dir.join("api.sock");
        let log_path = self.dir.join("slirp4netns.log");
        let log = std::fs::File::create(&log_path).map_err(|e| fail(e.raw_os_error(), Some(log_path.clone()), "create the network helper's log"))?;
        let log2 = log.try_clone().map_err(|e| fail(e.raw_os_error(), None, "duplicate the network helper's log"))?;
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("--configure").arg("--mtu=65520").arg(format!("--ready-fd={}", ready_w.as_raw_fd())).arg(format!("--exit-fd={}", exit_r.as_raw_fd()));
        cmd.arg(format!("--api-socket={}", api.display())).arg("--enable-seccomp");
        if crate::host::euid() == 0 {
            // Its own mount namespace, every capability but NET_BIND_SERVICE dropped. (As another
            // user it would need to be root in a user namespace of its own: setegid(0) fails.)
            cmd.arg("--enable-sandbox");
            // slirp4netns 1.2.0 builds that sandbox from a copy of our mount namespace in which
            // only `/` is made private (not recursively) before it detaches the old root: every
            // mount below a shared mount other than `/` is unmounted on the host too (seen here:
            // `/run/netns/NAME` vanished from the host after each `--net private` job). The
            // helper is therefore born in a mount namespace of its own, every mount a slave of
            // ours: nothing it unmounts or mounts reaches the host.
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and makes only two raw
            // system calls (unshare, mount with a short literal path that nix keeps on the
            // stack): no allocation, lock or panic, as rule 1 asks of a child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                    nix::mount::mount(None::<&str>, "/", None::<&str>, nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC, None::<&str>)?;
                    Ok(())
                });
            }
        }
        if !spec.allow_host_loopback {
            cmd.arg("--disable-host-loopback");
        }
        if user_ns {
            cmd.arg(format!("--userns-path=/proc/{pid}/ns/user"));
        }
        cmd.arg("--netns-type=path").arg(format!("/proc/{pid}/ns/net")).arg("tap0");
        cmd.stdin(std::process::Stdio::null()).stdout(log).stderr(log2);
        // The helper's two ends must survive its exec; every other descriptor of ours stays
        // close-on-exec. (Another thread forking meanwhile may inherit them too: harmless, the
        // ready wait also watches the helper's pidfd, and an extra exit_r only reads.)
        for fd in [&ready_w, &exit_r] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| fail(Some(e as i32), None, "pass a pipe to the network helper"))?;
        }
        let spawned = cmd.spawn();
        drop(ready_w);
        drop(exit_r);
        let proc = spawned.map_err(|e| fail(e.raw_os_error(), Some(self.binary.clone()), "start slirp4netns").hint(INSTALL_HINT))?;
        let pidfd = rustix::process::pidfd_open(rustix::process::Pid::from_raw(proc.id() as i32).ok_or_else(|| fail(None, None, "the network helper has no pid"))?, rustix::process::PidfdFlags::empty())
            .map_err(|e| fail(Some(e.raw_os_error()), None, "open a pidfd of the network helper"))?;
        self.proc = Some(proc);
        self.pidfd = Some(pidfd);
        self.exit_w = Some(exit_w);
        // Wait for "1" on the ready pipe, the helper's end, or the timeout.
        let pidfd = self.pidfd.as_ref().map(|f| f.as_fd());
        let mut fds = vec![(ready_r.as_fd(), PollFlags::POLLIN)];
        fds.extend(pidfd.map(|f| (f, PollFlags::POLLIN)));
        let ready = crate::sandbox::child::poll_fds(&fds, Some(READY_TIMEOUT)).map_err(|e| fail(e.raw_os_error(), None, "wait for the network helper"))?;
        let mut byte = [0u8; 1];
        let up = ready.first().is_some_and(|r| !r.is_empty()) && std::fs::File::from(ready_r).read(&mut byte).is_ok_and(|n| n == 1);
        if !up {
            let why = if ready.iter().all(|r| r.is_empty()) { format!("did not bring the network up within {} s", READY_TIMEOUT.as_secs()) } else { "ended before the network was up".into() };
            return Err(fail(None, Some(self.binary.clone()), &format!("slirp4netns {why}: {}", self.log_tail())));
        }
        for p in &spec.publish {
            self.forward(&api, p)?;
        }
        Ok(())
    }

    fn pid(&self) -> i32 {
        self.proc.as_ref().map_or(0, |p| p.id() as i32)
    }

    /// The CPU time (user, system) the helper has used so far, from `/proc/PID/stat`: it is
    /// added to the job's usage report (the helper is the job's, though not in its cgroup).
    pub(crate) fn cpu(&self) -> (std::time::Duration, std::time::Duration) {
        let pid = self.pid();
        if pid <= 0 {
            return Default::default();
        }
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| stat_cpu(&s)).unwrap_or_default()
    }

    /// The helper's pidfd (readable when it ended), once started.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// The end of the helper's log (its own words on why it failed).
    pub(crate) fn log_tail(&self) -> String {
        let text = crate::fs::hostfile::read_host_file(&self.dir.join("slirp4netns.log"), 1 << 16).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let tun = text.contains("/dev/net/tun");
        let lines: Vec<&str> = text.lines().filter(|l| !(l.starts_with("sent tapfd") || l.starts_with("received tapfd") || l.starts_with("* ") || l.starts_with("WARNING: Support for seccomp") || l.trim().is_empty())).collect();
        let mut said = if lines.is_empty() { "(no message)".into() } else { lines[lines.len().saturating_sub(5)..].join("; ") };
        if tun {
            said.push_str(" (slirp4netns needs /dev/net/tun readable and writable by this user: most distributions ship it mode 0666)");
        }
        said
    }

    /// Asks the helper (its API socket) to forward a host port into the sandbox.
    fn forward(&self, api: &Path, p: &crate::sandbox::spec::Publish) -> Result<(), SetupFailure> {
        let what = format!("publish {}", String::from(*p));
        let request = serde_json::json!({"execute": "add_hostfwd", "arguments": {"proto": if p.udp { "udp" } else { "tcp" }, "host_addr": p.host_ip.to_string(), "host_port": p.host_port, "guest_port": p.sandbox_port}});
        let mut s = std::os::unix::net::UnixStream::connect(api).map_err(|e| fail(e.raw_os_error(), Some(api.to_path_buf()), &format!("{what}: connect to slirp4netns")))?;
        let io = |e: std::io::Error| fail(e.raw_os_error(), Some(api.to_path_buf()), &format!("{what}: talk to slirp4netns"));
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        s.write_all(request.to_string().as_bytes()).map_err(io)?;
        s.shutdown(std::net::Shutdown::Write).map_err(io)?;
        let mut reply = Vec::new();
        s.take(1 << 16).read_to_end(&mut reply).map_err(io)?;
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        if v.get("return").is_some() {
            return Ok(());
        }
        let desc = v.pointer("/error/desc").and_then(|d| d.as_str()).unwrap_or("no answer").to_string();
        // slirp4netns says only "failed": find out whether the host port is taken.
        let probe = if p.udp { std::net::UdpSocket::bind((p.host_ip, p.host_port)).err() } else { std::net::TcpListener::bind((p.host_ip, p.host_port)).err() };
        match probe {
            Some(e) => Err(fail(e.raw_os_error(), None, &format!("{what}: cannot listen on {}:{} on the host", p.host_ip, p.host_port)).hint("choose a free host port (or an address of this host)")),
            None => Err(fail(None, None, &format!("{what}: slirp4netns refused it: {desc}")).hint("check the address and ports")),
        }
    }
}

/// utime and stime of a `/proc/PID/stat` line (fields 14 and 15, in clock ticks).
fn stat_cpu(stat: &str) -> Option<(Duration, Duration)> {
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|&t| t > 0)? as u64;
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).map(|t| Duration::from_nanos(t * 1_000_000_000 / tick));
    // After "pid (comm) ": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some((ticks(11)?, ticks(12)?))
}

impl Drop for NetHelper {
    fn drop(&mut self) {
        self.exit_w = None;
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            // Its death closes the tap device, and the kernel unregisters it synchronously in
            // the exiting process (RCU grace periods: about 20 ms here). Nothing of the job
            // waits on that: a thread reaps it, or, if none can be started, we do.
            let pid = nix::unistd::Pid::from_raw(p.id() as i32);
            let reaper = std::thread::Builder::new().name("cagette-net-reap".into()).spawn(move || {
                let _ = p.wait();
            });
            if reaper.is_err() {
                // The closure was dropped with the handle, never waited for: reap it here.
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_times_from_proc_stat() {
        // A comm with spaces and parentheses, as the kernel writes it.
        let line = "4242 (slirp (x) y) S 1 4242 4242 0 -1 4194560 143 0 0 0 250 75 0 0 20 0 1 0 12345 0 0";
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
        let (u, s) = super::stat_cpu(line).unwrap();
        assert_eq!((u.as_millis() as u64, s.as_millis() as u64), (250 * 1000 / tick, 75 * 1000 / tick));
        assert!(super::stat_cpu("garbage").is_none());
        // Our own process: some CPU time, never an error.
        assert!(super::stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap()).is_some());
    }
}
