//! `cagette-runtime`: an OCI runtime with runc's command line, so that podman, containerd (and
//! through it Kubernetes) start cagette sandboxes. See docs/oci-runtime.md.
//!
//! ```sh
//! podman --runtime /usr/local/bin/cagette-runtime run --rm busybox true
//! ```

/// `eprintln!` that cannot panic: a message that cannot be written (stderr a pipe whose reader
/// has gone) is dropped, and the exit status stays the command's, never a panic's 101.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that cannot panic: a reader that has gone (`| head`, `| grep -q`) ends the command
/// at once with status 141, as SIGPIPE ends runc and crun (Rust ignores SIGPIPE, so `println!`
/// would panic instead); any other failure to write is an error with exit status 1.
macro_rules! outln {
    ($($arg:tt)*) => { stdout_line(format_args!($($arg)*)) };
}

fn stdout_line(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        log_error(&format!("cannot write to stdout: {e}"));
        std::process::exit(1);
    }
}

mod config;
mod error;
mod hooks;
mod hostmounts;
mod state;

use clap::{Args, Parser, Subcommand};
use error::RtError;
use state::State;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "cagette-runtime", version, about = "An OCI runtime (runc's command line) that runs cagette sandboxes")]
struct Cli {
    /// Directory of the containers' state.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Where errors are logged (besides stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Log debug messages too.
    #[arg(long, global = true)]
    debug: bool,
    /// cgroupsPath is systemd's slice:prefix:name (placed as the cgroupfs path /slice/prefix-name.scope).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Create and start a container, and wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container runs.
        #[arg(short, long)]
        detach: bool,
    },
    /// The container's state, as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init, or with --all to every process.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a stopped container (--force: kill it first).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// The processes of a container.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// Resource usage of a container (--stats: once).
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Change a running container's resources: a LinuxResources JSON (-r FILE, "-" for stdin)
    /// and/or flags.
    Update(UpdateArgs),
    /// What this runtime supports (the OCI features document).
    Features,
    /// Write an example config.json to the current directory.
    Spec {
        #[arg(long)]
        rootless: bool,
        #[arg(short, long)]
        bundle: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The bundle directory (default: the current directory).
    #[arg(short, long)]
    bundle: Option<PathBuf>,
    /// Write the container's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// A unix socket that receives the terminal's master (process.terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility: the root is always pivoted.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility: no session keyring is made.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many fds (from 3) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// The config's `linux.resources` object, as JSON ("-": stdin).
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Memory limit, bytes.
    #[arg(long)]
    memory: Option<i64>,
    /// Memory plus swap limit, bytes.
    #[arg(long = "memory-swap")]
    memory_swap: Option<i64>,
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    #[arg(long = "cpu-share")]
    cpu_share: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    id: String,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// A process.json (the config's `process` object).
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long)]
    tty: bool,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

struct Ctx {
    root: PathBuf,
    systemd_cgroup: bool,
}

fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/cagette-runtime");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("cagette-runtime"),
        None => std::env::temp_dir().join(format!("cagette-runtime-{}", nix::unistd::geteuid())),
    }
}

/// `--log` and whether `--log-format` is json, once the command line is parsed.
static LOG: std::sync::OnceLock<(PathBuf, bool)> = std::sync::OnceLock::new();

/// An error, on stderr and in `--log` (every error of the runtime goes through here).
fn log_error(msg: &str) {
    errln!("cagette-runtime: {msg}");
    log_line("error", msg);
}

/// One line in --log, in --log-format (json: {"level", "msg", "time"}, as containerd's shim reads).
fn log_line(level: &str, msg: &str) {
    if let Some((p, json)) = LOG.get() {
        let line = if *json {
            serde_json::json!({"level": level, "msg": msg, "time": state::now_rfc3339()}).to_string()
        } else {
            format!("time=\"{}\" level={level} msg={:?}", state::now_rfc3339(), msg)
        };
        use std::io::Write;
        // Non-blocking: a FIFO nobody reads (or a full one) loses the line instead of hanging
        // the runtime. The path is the engine's (runc's default is /dev/stderr, a symlink).
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).custom_flags(libc::O_NONBLOCK).open(p) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(p) = &cli.log {
        let _ = LOG.set((p.clone(), cli.log_format == "json"));
    }
    let ctx = Ctx { root: cli.root.clone().unwrap_or_else(default_root), systemd_cgroup: cli.systemd_cgroup };
    if cli.debug {
        let args: Vec<String> = std::env::args().collect();
        log_line("debug", &format!("called as {args:?}"));
    }
    // Every command that reads or writes containers first checks the state root is ours alone.
    let root_ok = if matches!(cli.cmd, Cmd::Features | Cmd::Spec { .. }) { Ok(()) } else { state::check_root(&ctx.root, false) };
    let r = root_ok.and_then(|()| match &cli.cmd {
        Cmd::Create(a) => create(&ctx, a).map(|_| 0),
        Cmd::Start { id } => start(&ctx, id).map(|_| 0),
        Cmd::Run { create: a, detach } => run(&ctx, a, *detach),
        Cmd::State { id } => state::load(&ctx.root, id).map(|st| {
            outln!("{}", serde_json::to_string_pretty(&state::oci_json(&st)).unwrap_or_default());
            0
        }),
        Cmd::Kill { all, id, signal } => kill(&ctx, id, signal.as_deref(), *all).map(|_| 0),
        Cmd::Delete { force, id } => delete(&ctx, id, *force).map(|_| 0),
        Cmd::List { format, quiet } => list(&ctx, format, *quiet).map(|_| 0),
        Cmd::Ps { format, id, .. } => ps(&ctx, id, format).map(|_| 0),
        Cmd::Pause { id } => freeze(&ctx, id, true).map(|_| 0),
        Cmd::Resume { id } => freeze(&ctx, id, false).map(|_| 0),
        Cmd::Exec(a) => exec(&ctx, a),
        Cmd::Events { stats, interval, id } => events(&ctx, id, *stats, interval).map(|_| 0),
        Cmd::Update(a) => update(&ctx, a).map(|_| 0),
        Cmd::Features => {
            outln!("{}", serde_json::to_string_pretty(&features()).unwrap_or_default());
            Ok(0)
        }
        Cmd::Spec { rootless, bundle } => spec_cmd(*rootless, bundle.as_deref()).map(|_| 0),
    });
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            log_error(&e.to_string());
            std::process::exit(1);
        }
    }
}

fn bundle_dir(b: Option<&Path>) -> Result<PathBuf, RtError> {
    let b = match b {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().map_err(RtError::io("find the current directory"))?,
    };
    let b = if b.is_absolute() { b } else { std::env::current_dir().map_err(RtError::io("find the current directory"))?.join(b) };
    let md = std::fs::symlink_metadata(&b).map_err(|e| RtError::Bundle(format!("{}: {e}", b.display())))?;
    if md.file_type().is_symlink() {
        return Err(RtError::Bundle(format!("{} is a symlink: give the bundle's real directory", b.display())));
    }
    if !md.is_dir() {
        return Err(RtError::Bundle(format!("{} is not a directory", b.display())));
    }
    Ok(b)
}

/// Undoes a half-made container when dropped (unless disarmed).
struct Undo<'a> {
    dir: &'a Path,
    cgroup: Option<cagette::DetachedCgroup>,
    pid: Option<i32>,
    /// Without a mount namespace: the rootfs and the mounts that were on it before.
    host_root: Option<(PathBuf, Vec<u64>)>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::__WALL));
        }
        if let Some((root, keep)) = &self.host_root {
            let _ = hostmounts::unmount_above(root, keep);
        }
        if let Some(c) = &self.cgroup {
            let _ = c.remove();
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// `--preserve-fds N`: fds 3 to 3+N-1, passed as they are. N is bounded by this process's
/// open-file limit (no more fds can be open), before anything is allocated for them.
fn preserved_fds(n: u32) -> Result<Vec<cagette::PassFd>, RtError> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    if u64::from(n) + 3 > limit {
        return Err(RtError::Usage(format!("--preserve-fds {n}: more than the open-file limit ({limit}) allows")));
    }
    // n + 3 <= the limit, and fds are ints: each fits.
    Ok((0..n).filter_map(|i| i32::try_from(i).ok()?.checked_add(3)).map(|fd| cagette::PassFd { host: fd, sandbox: fd }).collect())
}

fn make_fifo(p: &Path) -> Result<OwnedFd, RtError> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| RtError::Io { what: format!("create {}", p.display()), err: e.into() })?;
    let f = std::fs::File::options().read(true).write(true).open(p).map_err(RtError::io(format!("open {}", p.display())))?;
    Ok(f.into())
}

/// Sends the terminal's master to the engine's console socket (SCM_RIGHTS), as runc does.
fn send_console(socket: &Path, pty: &std::fs::File) -> Result<(), RtError> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let s = std::os::unix::net::UnixStream::connect(socket).map_err(RtError::io(format!("connect to the console socket {}", socket.display())))?;
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    let fds = [pty.as_raw_fd()];
    sendmsg::<()>(s.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).map_err(|e| RtError::Io { what: "send the terminal to the console socket".into(), err: e.into() })?;
    Ok(())
}

fn create(ctx: &Ctx, a: &CreateArgs) -> Result<State, RtError> {
    create_locked(ctx, a).map(|(st, _lock)| st)
}

/// `create`, returning the container's lock still held: `run` starts the container under the
/// same lock, so no other command can start, or delete, it in between.
fn create_locked(ctx: &Ctx, a: &CreateArgs) -> Result<(State, state::Lock), RtError> {
    state::check_id(&a.id)?;
    let bundle = bundle_dir(a.bundle.as_deref())?;
    let spec = config::load(&bundle)?;
    let tr = config::translate(&spec, &bundle, &a.id, ctx.systemd_cgroup)?;
    if tr.terminal && a.console_socket.is_none() {
        return Err(RtError::Usage("process.terminal is true: --console-socket is required".into()));
    }
    state::check_root(&ctx.root, true)?;
    let dir = state::dir(&ctx.root, &a.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(RtError::Exists(a.id.clone())),
        Err(e) => return Err(RtError::Io { what: format!("create {}", dir.display()), err: e }),
    }
    let lock = state::lock(&dir)?;
    let mut undo = Undo { dir: &dir, cgroup: None, pid: None, host_root: None, armed: true };
    let host_root = match (&tr.sandbox.namespaces.mount, &tr.sandbox.rootfs) {
        (cagette::NsMode::Host, Some(r)) => {
            let r = std::fs::canonicalize(r).map_err(RtError::io(format!("resolve the rootfs {}", r.display())))?;
            let keep = hostmounts::mounts_on(&r);
            undo.host_root = Some((r.clone(), keep.clone()));
            Some((r, keep))
        }
        _ => None,
    };
    let fifo = make_fifo(&dir.join("exec.fifo"))?;
    let mut sb = tr.sandbox.clone();
    sb.pass_fds.extend(preserved_fds(a.preserve_fds)?);
    let opts = cagette::DetachOptions { start_fifo: Some(fifo), cgroup_name: Some(tr.cgroup_name.clone()), allow_devices: tr.allow_devices.clone() };
    let d = cagette::Sandbox::from_spec(sb).spawn_detached(opts)?;
    undo.pid = Some(d.pid);
    undo.cgroup = d.cgroup.clone();
    if let Some(adj) = tr.oom_score_adj {
        std::fs::write(format!("/proc/{}/oom_score_adj", d.pid), adj.to_string()).map_err(RtError::io(format!("set oom_score_adj to {adj} (lowering it needs CAP_SYS_RESOURCE)")))?;
    }
    hooks::sysctls(d.pid, &tr.sysctl)?;
    hooks::make_devices(d.pid, &tr.devices, &tr.sandbox.uid_map, &tr.sandbox.gid_map)?;
    if let (Some(sock), Some(pty)) = (&a.console_socket, &d.pty) {
        send_console(sock, pty)?;
    }
    let st = State {
        id: a.id.clone(),
        pid: d.pid,
        start_ticks: state::start_ticks(d.pid).unwrap_or(0),
        bundle: bundle.clone(),
        created: state::now_rfc3339(),
        annotations: tr.annotations.clone(),
        cgroup: d.cgroup.clone(),
        spec: tr.sandbox.clone(),
        hooks: tr.hooks.clone(),
        started: false,
        host_root,
    };
    state::save(&ctx.root, &st)?;
    let oci = state::oci_json(&st);
    for (name, list) in [("prestart", tr.hooks.prestart()), ("createRuntime", tr.hooks.create_runtime())] {
        hooks::run_all(name, list.as_deref().unwrap_or_default(), &oci)?;
    }
    if let Some(p) = &a.pid_file {
        state::write_atomic(p, &d.pid.to_string())?;
    }
    undo.armed = false;
    Ok((st, lock))
}

fn start(ctx: &Ctx, id: &str) -> Result<(), RtError> {
    let st0 = state::load(&ctx.root, id)?;
    let dir = state::dir(&ctx.root, id);
    let _lock = state::lock(&dir)?;
    let mut st = state::load(&ctx.root, id).unwrap_or(st0);
    start_locked(ctx, &mut st)
}

/// `start` of a container whose lock the caller holds, from its state as last saved.
fn start_locked(ctx: &Ctx, st: &mut State) -> Result<(), RtError> {
    let dir = state::dir(&ctx.root, &st.id);
    match state::status(st) {
        "created" => {}
        s => return Err(RtError::State(format!("cannot start a container that is {s}"))),
    }
    let fifo = dir.join("exec.fifo");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut w = std::fs::File::options().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) { RtError::State("cannot start: the container's init is no longer waiting".into()) } else { RtError::Io { what: format!("open {}", fifo.display()), err: e } }
        })?;
        w.write_all(&[0]).map_err(RtError::io("start the container"))?;
    }
    let _ = std::fs::remove_file(&fifo);
    st.started = true;
    state::save(&ctx.root, st)?;
    let mut oci = state::oci_json(st);
    oci["status"] = "running".into();
    hooks::run_all_warn("poststart", st.hooks.poststart().as_deref().unwrap_or_default(), &oci);
    Ok(())
}

fn run(ctx: &Ctx, a: &CreateArgs, detach: bool) -> Result<i32, RtError> {
    // Created and started under one lock, from the state in hand: no other command comes in
    // between, and the state is not read back twice.
    let (mut st, lock) = create_locked(ctx, a)?;
    let started = start_locked(ctx, &mut st);
    drop(lock);
    if let Err(e) = started {
        let _ = delete(ctx, &a.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    // The container's init is our child: its exit status is the container's.
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let code = loop {
        match waitpid(nix::unistd::Pid::from_raw(st.pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RtError::Io { what: "wait for the container".into(), err: e.into() }),
        }
    };
    delete(ctx, &a.id, true)?;
    Ok(code)
}

fn parse_signal(s: Option<&str>) -> Result<nix::sys::signal::Signal, RtError> {
    use nix::sys::signal::Signal;
    let Some(s) = s else { return Ok(Signal::SIGTERM) };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| RtError::Usage(format!("unknown signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<Signal>().map_err(|_| RtError::Usage(format!("unknown signal {s:?}")))
}

fn kill(ctx: &Ctx, id: &str, sig: Option<&str>, all: bool) -> Result<(), RtError> {
    let sig = parse_signal(sig)?;
    let st = state::load(&ctx.root, id)?;
    if !state::alive(&st) {
        return Err(RtError::State("container not running".into()));
    }
    let mut pids = vec![st.pid];
    if all && let Some(c) = &st.cgroup {
        pids = c.procs();
    }
    for p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
    Ok(())
}

fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<(), RtError> {
    let st = match state::load(&ctx.root, id) {
        Ok(st) => st,
        // Already gone: --force (containerd's cleanup) succeeds.
        Err(RtError::NotFound(_)) if force => {
            let _ = std::fs::remove_dir_all(state::dir(&ctx.root, id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let dir = state::dir(&ctx.root, id);
    let _lock = state::lock(&dir)?;
    let status = state::status(&st);
    if status != "stopped" {
        if !force && status != "created" {
            return Err(RtError::State(format!("cannot delete container {id} that is not stopped: {status}")));
        }
        if let Some(c) = &st.cgroup {
            let _ = c.freeze(false);
            c.kill();
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), nix::sys::signal::Signal::SIGKILL);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while state::alive(&st) && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if state::alive(&st) {
            return Err(RtError::State(format!("container {id} did not end after SIGKILL")));
        }
    }
    if let Some((root, keep)) = &st.host_root {
        hostmounts::unmount_above(root, keep)?;
    }
    if let Some(c) = &st.cgroup {
        c.remove().map_err(RtError::io(format!("remove the cgroup of {id}")))?;
    }
    let mut oci = state::oci_json(&st);
    oci["status"] = "stopped".into();
    hooks::run_all_warn("poststop", st.hooks.poststop().as_deref().unwrap_or_default(), &oci);
    std::fs::remove_dir_all(&dir).map_err(RtError::io(format!("remove {}", dir.display())))?;
    Ok(())
}

fn list(ctx: &Ctx, format: &str, quiet: bool) -> Result<(), RtError> {
    let states: Vec<State> = state::ids(&ctx.root).iter().filter_map(|id| state::load(&ctx.root, id).ok()).collect();
    if quiet {
        for s in &states {
            outln!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        "json" => outln!("{}", serde_json::Value::Array(states.iter().map(state::oci_json).collect())),
        "table" => {
            outln!("{:<24} {:<8} {:<8} {:<40} {:<32}", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
            for s in &states {
                let status = state::status(s);
                let pid = if status == "stopped" { 0 } else { s.pid };
                outln!("{:<24} {:<8} {:<8} {:<40} {:<32}", s.id, pid, status, s.bundle.display(), s.created);
            }
        }
        f => return Err(RtError::Usage(format!("unknown format {f:?}: table or json"))),
    }
    Ok(())
}

fn ps(ctx: &Ctx, id: &str, format: &str) -> Result<(), RtError> {
    let st = state::load(&ctx.root, id)?;
    let pids = if state::alive(&st) { st.cgroup.as_ref().map(|c| c.procs()).unwrap_or_else(|| vec![st.pid]) } else { Vec::new() };
    match format {
        "json" => outln!("{}", serde_json::to_string(&pids).unwrap_or_default()),
        "table" => {
            outln!("{:>8} CMD", "PID");
            for p in pids {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd: Vec<String> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                outln!("{p:>8} {}", cmd.join(" "));
            }
        }
        f => return Err(RtError::Usage(format!("unknown format {f:?}: table or json"))),
    }
    Ok(())
}

fn freeze(ctx: &Ctx, id: &str, frozen: bool) -> Result<(), RtError> {
    let st = state::load(&ctx.root, id)?;
    let want = if frozen { "running" } else { "paused" };
    let now = state::status(&st);
    if now != want {
        return Err(RtError::State(format!("container {id} is {now}, not {want}")));
    }
    let c = st.cgroup.as_ref().ok_or_else(|| RtError::State("the container has no cgroup".into()))?;
    c.freeze(frozen).map_err(RtError::io(if frozen { "freeze the container" } else { "thaw the container" }))
}

fn events(ctx: &Ctx, id: &str, once: bool, interval: &str) -> Result<(), RtError> {
    let every = cagette::parse_duration(interval).map_err(|e| RtError::Usage(format!("--interval {interval}: {e}")))?;
    loop {
        let st = state::load(&ctx.root, id)?;
        let data = st.cgroup.as_ref().map(|c| c.stats()).unwrap_or_default();
        outln!("{}", serde_json::json!({"type": "stats", "id": id, "data": data}));
        if once || !state::alive(&st) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

fn exec(ctx: &Ctx, a: &ExecArgs) -> Result<i32, RtError> {
    let st = state::load(&ctx.root, &a.id)?;
    if state::status(&st) != "running" {
        return Err(RtError::State(format!("cannot exec in a container that is {}", state::status(&st))));
    }
    let mut cmd = cagette::SandboxSpec::default();
    let mut tty = a.tty;
    if let Some(p) = &a.process {
        let text = config::read_bounded(p, config::MAX_CONFIG).map_err(RtError::io(format!("read {}", p.display())))?;
        let proc: oci_spec::runtime::Process = serde_json::from_slice(&text).map_err(|e| RtError::Config(format!("{}: {e}", p.display())))?;
        cmd.argv = proc.args().clone().unwrap_or_default();
        for kv in proc.env().iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env.insert(k.into(), v.into());
            }
        }
        cmd.cwd = Some(proc.cwd().clone()).filter(|c| c.is_absolute());
        cmd.user = Some(proc.user().uid());
        cmd.group = Some(proc.user().gid());
        cmd.supplementary_groups = proc.user().additional_gids().clone().unwrap_or_default();
        tty |= proc.terminal().unwrap_or(false);
    } else {
        cmd.argv = a.command.clone();
        for kv in &a.env {
            let (k, v) = kv.split_once('=').ok_or_else(|| RtError::Usage(format!("--env {kv:?}: not KEY=VALUE")))?;
            cmd.env.insert(k.into(), v.into());
        }
        cmd.cwd = a.cwd.clone();
        if let Some(u) = &a.user {
            let (uid, gid) = u.split_once(':').map_or((u.as_str(), None), |(a, b)| (a, Some(b)));
            cmd.user = Some(uid.parse().map_err(|_| RtError::Usage(format!("--user {u:?}: give UID[:GID] as numbers")))?);
            cmd.group = gid.map(|g| g.parse()).transpose().map_err(|_| RtError::Usage(format!("--user {u:?}: give UID[:GID] as numbers")))?;
        }
    }
    if cmd.argv.is_empty() {
        return Err(RtError::Usage("exec: no command (give --process FILE or the command after the id)".into()));
    }
    if tty && a.console_socket.is_none() {
        return Err(RtError::Usage("exec with a terminal needs --console-socket".into()));
    }
    cmd.tty = tty;
    cmd.stdin = cagette::Stdio::Inherit;
    cmd.stdout = cagette::Stdio::Inherit;
    cmd.stderr = cagette::Stdio::Inherit;
    cmd.pass_fds = preserved_fds(a.preserve_fds)?;
    let mut spec = cagette::exec_into(&cmd, &st.spec, st.pid, &st.id).map_err(cagette::Error::from)?;
    spec.pass_fds = cmd.pass_fds.clone();
    let dir = state::dir(&ctx.root, &a.id);
    let fifo_path = dir.join(format!("exec-{}.fifo", std::process::id()));
    let fifo = make_fifo(&fifo_path)?;
    let r = (|| {
        let d = cagette::Sandbox::from_spec(spec).spawn_detached(cagette::DetachOptions { start_fifo: Some(fifo), ..Default::default() })?;
        let mut undo = Undo { dir: Path::new("/nonexistent-cagette-runtime"), cgroup: None, pid: Some(d.pid), host_root: None, armed: true };
        // Into the container's cgroup before the command starts (its init waits on the FIFO).
        if let Some(c) = &st.cgroup {
            for (_, cg) in &c.dirs {
                std::fs::write(cg.join("cgroup.procs"), d.pid.to_string()).map_err(RtError::io(format!("move the command into {}", cg.display())))?;
            }
        }
        if state::start_ticks(st.pid) != Some(st.start_ticks) {
            return Err(RtError::State(format!("container {} ended while the command was starting", st.id)));
        }
        if let (Some(sock), Some(pty)) = (&a.console_socket, &d.pty) {
            send_console(sock, pty)?;
        }
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut w = std::fs::File::options().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo_path).map_err(RtError::io("start the command"))?;
            w.write_all(&[0]).map_err(RtError::io("start the command"))?;
        }
        if let Some(p) = &a.pid_file {
            state::write_atomic(p, &d.pid.to_string())?;
        }
        undo.armed = false;
        Ok(d.pid)
    })();
    let _ = std::fs::remove_file(&fifo_path);
    let pid = r?;
    if a.detach {
        return Ok(0);
    }
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RtError::Io { what: "wait for the command".into(), err: e.into() }),
        }
    }
}

fn update(ctx: &Ctx, a: &UpdateArgs) -> Result<(), RtError> {
    let st = state::load(&ctx.root, &a.id)?;
    if !state::alive(&st) {
        return Err(RtError::State(format!("container {} is not running", a.id)));
    }
    let mut r: serde_json::Value = match &a.resources {
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                let mut t = Vec::new();
                use std::io::Read;
                std::io::stdin().take(config::MAX_CONFIG + 1).read_to_end(&mut t).map_err(RtError::io("read the resources from stdin"))?;
                if t.len() as u64 > config::MAX_CONFIG {
                    return Err(RtError::Usage(format!("update -r -: the resources on stdin are larger than {} bytes", config::MAX_CONFIG)));
                }
                t
            } else {
                config::read_bounded(p, config::MAX_CONFIG).map_err(RtError::io(format!("read {}", p.display())))?
            };
            serde_json::from_slice(&text).map_err(|e| RtError::Config(format!("resources: {e}")))?
        }
        None => serde_json::json!({}),
    };
    if !r.is_object() {
        return Err(RtError::Config("resources: not a JSON object (give the linux.resources object of config.json)".into()));
    }
    let set = |r: &mut serde_json::Value, a: &str, b: &str, v: serde_json::Value| {
        if !r[a].is_object() {
            r[a] = serde_json::json!({});
        }
        r[a][b] = v;
    };
    if let Some(v) = a.memory { set(&mut r, "memory", "limit", v.into()); }
    if let Some(v) = a.memory_swap { set(&mut r, "memory", "swap", v.into()); }
    if let Some(v) = a.pids_limit { set(&mut r, "pids", "limit", v.into()); }
    if let Some(v) = a.cpu_quota { set(&mut r, "cpu", "quota", v.into()); }
    if let Some(v) = a.cpu_period { set(&mut r, "cpu", "period", v.into()); }
    if let Some(v) = a.cpu_share { set(&mut r, "cpu", "shares", v.into()); }
    if let Some(v) = &a.cpuset_cpus { set(&mut r, "cpu", "cpus", v.clone().into()); }
    if let Some(v) = &a.cpuset_mems { set(&mut r, "cpu", "mems", v.clone().into()); }
    let res: oci_spec::runtime::LinuxResources = serde_json::from_value(r).map_err(|e| RtError::Config(format!("resources: {e}")))?;
    let limits = config::resources_spec(&res)?;
    let cg = st.cgroup.as_ref().ok_or_else(|| RtError::State("the container has no cgroup".into()))?;
    cg.update(&limits)?;
    Ok(())
}

fn features() -> serde_json::Value {
    let caps: Vec<String> = cagette::Capability::ALL.iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "relatime", "private", "rprivate"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_LOG"], "operators": ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"], "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"]},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {"io.github.cagette.runtime": "cagette-runtime"}
    })
}

fn spec_cmd(rootless: bool, bundle: Option<&Path>) -> Result<(), RtError> {
    let dir = bundle.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let p = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config::example(rootless)).unwrap_or_default();
    // A new file only: an existing one, or a symlink (even a dangling one), is left alone.
    use std::io::Write;
    let mut f = match std::fs::File::options().write(true).create_new(true).open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(RtError::Usage(format!("{} exists: remove it first", p.display()))),
        Err(e) => return Err(RtError::Io { what: format!("create {}", p.display()), err: e }),
    };
    f.write_all((text + "\n").as_bytes()).map_err(RtError::io(format!("write {}", p.display())))
}

#[allow(dead_code)]
fn _assert_fd(_: &impl AsFd) {}
