//! What `create` does once the sandbox is built and before its process starts: the config's
//! hooks (host commands given by the engine, each with the state on its stdin), namespaced
//! sysctls (written from a thread that joined the container's namespaces), and device nodes
//! (made in the container's /dev, resolved inside its root).

use crate::error::RtError;
use cagette::IdMap;
use oci_spec::runtime::{Hook, LinuxDevice, LinuxDeviceType};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a hook that gives no `timeout` may run: the spec leaves it open, and an unbounded
/// wait would let one hook hang the runtime, and with it every command on the container (they
/// wait for its lock).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one hook: `path` with `args` (args[0] as argv[0]) and exactly `env`, the state JSON on
/// its stdin, in a process group of its own that is killed after its timeout
/// ([`DEFAULT_HOOK_TIMEOUT`] when it gives none).
fn run(h: &Hook, state: &serde_json::Value) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let args = h.args().clone().unwrap_or_default();
    let mut c = std::process::Command::new(h.path());
    if let Some(a0) = args.first() {
        c.arg0(a0);
    }
    c.args(args.iter().skip(1));
    c.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            c.env(k, v);
        }
    }
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).process_group(0);
    let limit = h.timeout().filter(|t| *t > 0).map_or(DEFAULT_HOOK_TIMEOUT, |t| Duration::from_secs(t as u64));
    let started = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("{}: {e}", h.path().display()))?;
    // The state goes in from a thread of its own: a hook that does not read it (the state can
    // exceed a pipe's buffer) must not stop the timeout below. The write ends, with EPIPE, once
    // the hook and whatever kept its stdin have ended; the thread is not waited for.
    if let Some(mut i) = child.stdin.take() {
        let text = state.to_string();
        let _ = std::thread::Builder::new().name("hook-stdin".into()).spawn(move || {
            let _ = i.write_all(text.as_bytes());
        });
    }
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{} ended with {st}", h.path().display())),
            Ok(None) => {}
            Err(e) => return Err(format!("{}: {e}", h.path().display())),
        }
        if started.elapsed() > limit {
            // The hook's whole group (it leads it): what it started goes with it.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(format!("{} timed out after {} s", h.path().display(), limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs hooks in order; the first failure is the command's error.
pub fn run_all(kind: &str, hooks: &[Hook], state: &serde_json::Value) -> Result<(), RtError> {
    for h in hooks {
        run(h, state).map_err(|e| RtError::Hook(format!("{kind} hook failed: {e}")))?;
    }
    Ok(())
}

/// Runs hooks in order; a failure is a warning (poststart, poststop: the spec says so).
pub fn run_all_warn(kind: &str, hooks: &[Hook], state: &serde_json::Value) {
    for h in hooks {
        if let Err(e) = run(h, state) {
            errln!("cagette-runtime: warning: {kind} hook failed: {e}");
        }
    }
}

/// Writes namespaced sysctls from a thread that joined the container's network and IPC
/// namespaces (/proc/sys/net and the IPC keys follow the writer's namespaces).
pub fn sysctls(pid: i32, sysctl: &[(String, String)]) -> Result<(), RtError> {
    if sysctl.is_empty() {
        return Ok(());
    }
    let open = |ns: &str| std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).map_err(RtError::io(format!("open the container's {ns} namespace")));
    let (net, ipc) = (open("net")?, open("ipc")?);
    let items = sysctl.to_vec();
    let t = std::thread::spawn(move || -> Result<(), RtError> {
        use nix::sched::{CloneFlags, setns};
        setns(net.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| RtError::Io { what: "join the container's network namespace".into(), err: e.into() })?;
        setns(ipc.as_fd(), CloneFlags::CLONE_NEWIPC).map_err(|e| RtError::Io { what: "join the container's IPC namespace".into(), err: e.into() })?;
        for (k, v) in &items {
            let p = Path::new("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&p, v).map_err(RtError::io(format!("set sysctl {k}={v}")))?;
        }
        Ok(())
    });
    t.join().map_err(|_| RtError::State("the sysctl thread panicked".into()))?
}

fn map_id(id: u32, maps: &[IdMap]) -> u32 {
    if maps.is_empty() {
        return id;
    }
    maps.iter().find(|m| id >= m.inside && id - m.inside < m.count).map_or(65534, |m| m.outside + (id - m.inside))
}

/// Makes the config's device nodes in the container's /dev (its root, seen through the init's
/// /proc/PID/root, resolved with RESOLVE_IN_ROOT: nothing outside it can be reached).
pub fn make_devices(pid: i32, devices: &[LinuxDevice], uid_map: &[IdMap], gid_map: &[IdMap]) -> Result<(), RtError> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, mkdirat, mknodat, openat, openat2};
    if devices.is_empty() {
        return Ok(());
    }
    let root = openat(rustix::fs::CWD, format!("/proc/{pid}/root"), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| RtError::Io { what: "open the container's root".into(), err: e.into() })?;
    for d in devices {
        let rel = d.path().strip_prefix("/").unwrap_or(d.path());
        let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default());
        // mkdir -p the parent inside the root, one level at a time from a directory fd, never
        // through a symlink (the root's files are the bundle's: a planted link would lead out).
        let mut dir = rustix::io::dup(&root).map_err(|e| RtError::Io { what: "open the container's root".into(), err: e.into() })?;
        for c in parent.components() {
            match mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(RtError::Io { what: format!("create {} in the container", d.path().display()), err: e.into() }),
            }
            dir = openat2(&dir, c.as_os_str(), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH)
                .map_err(|e| RtError::Io { what: format!("open {} in the container (a symlink or not a directory: refused)", parent.display()), err: e.into() })?;
        }
        let ft = match d.typ() {
            LinuxDeviceType::B => FileType::BlockDevice,
            LinuxDeviceType::P => FileType::Fifo,
            _ => FileType::CharacterDevice,
        };
        let perm = d.file_mode().unwrap_or(0o666) & 0o7777;
        let dev = rustix::fs::makedev(d.major() as u32, d.minor() as u32);
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(RtError::Io { what: format!("replace {} in the container", d.path().display()), err: e.into() }),
        }
        mknodat(&dir, name, ft, Mode::from_raw_mode(perm), if ft == FileType::Fifo { 0 } else { dev }).map_err(|e| RtError::Io { what: format!("create the device {} in the container", d.path().display()), err: e.into() })?;
        // The node just made, held by an fd (never through a symlink put there since), must be
        // of the type made; then its exact mode (no umask), and the owner as the host sees the
        // container's ids, are set on that fd.
        let node = openat(&dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).map_err(|e| RtError::Io { what: format!("open {}", d.path().display()), err: e.into() })?;
        let st = rustix::fs::fstat(&node).map_err(|e| RtError::Io { what: format!("stat {}", d.path().display()), err: e.into() })?;
        if FileType::from_raw_mode(st.st_mode) != ft {
            return Err(RtError::State(format!("{} in the container was replaced while it was made: refused", d.path().display())));
        }
        use std::os::fd::AsRawFd;
        rustix::fs::chmodat(rustix::fs::CWD, format!("/proc/self/fd/{}", node.as_raw_fd()), Mode::from_raw_mode(perm), rustix::fs::AtFlags::empty()).map_err(|e| RtError::Io { what: format!("chmod {}", d.path().display()), err: e.into() })?;
        let uid = map_id(d.uid().unwrap_or(0), uid_map);
        let gid = map_id(d.gid().unwrap_or(0), gid_map);
        rustix::fs::chownat(&node, "", Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)), rustix::fs::AtFlags::EMPTY_PATH).map_err(|e| RtError::Io { what: format!("chown {}", d.path().display()), err: e.into() })?;
    }
    Ok(())
}
