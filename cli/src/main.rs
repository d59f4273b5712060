//! `cagette`: run a command in a sandbox.
//!
//! Every flag maps onto cagette's one `SandboxSpec`; `--spec FILE` starts from a JSON spec and
//! `--print-spec` shows the spec the flags produce.

use cagette::{
    Capability, IdMap, Mount, Network, NsMode, Outcome, Report, SandboxSpec, Seccomp, SeccompMode,
    Size, Verdict,
};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `println!` that cannot panic: a reader that has gone (`| head`, `| grep -q`) ends the command
/// at once with status 141, as SIGPIPE ends a C tool (Rust ignores SIGPIPE, so `println!` would
/// panic instead); any other failure to write is cagette's own failure (125).
macro_rules! outln {
    ($($arg:tt)*) => { stdout_line(format_args!($($arg)*)) };
}

/// `eprintln!` that cannot panic: a message that cannot be written (stderr a pipe whose reader
/// has gone, as in `cagette run … 2>&1 | head -1`) is dropped, and the exit status stays the
/// job's or cagette's own (125), never a panic's 101.
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn stdout_line(line: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        errln!("cagette: cannot write to stdout: {e}");
        std::process::exit(125);
    }
}

#[derive(Parser)]
#[command(name = "cagette", version, about = "Run commands in Linux sandboxes (namespaces, private root, verdicts)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// What `cagette run --help` says first.
const RUN_ABOUT: &str = "Run a command in a sandbox. Exit status: the command's; 128+N if killed by signal N; 124 on \
timeout; 125 if the sandbox could not be set up; 126 if the command could not be executed; 127 if \
it was not found.";

/// `cagette run …` alone: every job's start parses through this, which builds only the `run`
/// subcommand's arguments instead of every subcommand's (benches/README.md, "CLI start").
#[derive(Parser)]
#[command(name = "cagette")]
struct RunOnly {
    #[command(subcommand)]
    cmd: RunCmd,
}

#[derive(Subcommand)]
enum RunCmd {
    #[command(about = RUN_ABOUT)]
    Run(Box<RunArgs>),
}

#[derive(Subcommand)]
enum Cmd {
    #[command(about = RUN_ABOUT)]
    Run(Box<RunArgs>),
    /// Manage OCI images in the store (--store DIR or CAGETTE_STORE; default /var/lib/cagette
    /// as root, ~/.local/share/cagette otherwise).
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
        /// The image store.
        #[arg(long, global = true, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Build an image from a Dockerfile: each RUN step runs in a sandbox on the image so far,
    /// each step that makes a layer is cached, and the result is reproducible (mtimes clamped to
    /// SOURCE_DATE_EPOCH, or 0). The image goes into the store (--store, as `cagette image`).
    Build(Box<BuildArgs>),
    /// Show what this host supports (user namespaces, cgroups, overlayfs, ...).
    Probe {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the images of the store (as `cagette image ls`).
    Images {
        /// The image store.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a running named sandbox (`cagette run --name NAME`), as `docker exec`:
    /// in its namespaces, root and cgroup, with its user, capabilities and filters.
    Exec(Box<ExecArgs>),
    /// List the running named sandboxes (yours): name, pid, age, command, memory and CPU.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print cagette's version.
    Version {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The build context: the directory COPY reads from (its .dockerignore applies).
    context: PathBuf,
    /// The name to give the image (name:tag).
    #[arg(long, short = 't', value_name = "NAME")]
    tag: Option<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// A value for an ARG of the Dockerfile (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    build_arg: Vec<String>,
    /// Build up to this stage (a name given with AS, or an index).
    #[arg(long)]
    target: Option<String>,
    /// RUN steps' network: host (Docker's default) or none.
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    network: String,
    /// Run every step, even those the cache has.
    #[arg(long)]
    no_cache: bool,
    /// Memory limit of each RUN step (e.g. 1G).
    #[arg(long)]
    memory: Option<Size>,
    /// CPU limit of each RUN step (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Process limit of each RUN step.
    #[arg(long)]
    pids: Option<u64>,
    /// Time limit of each RUN step (e.g. 10m).
    #[arg(long, value_parser = cagette::parse_duration)]
    step_timeout: Option<Duration>,
    /// Pull a FROM image the store lacks (or holds without its blobs): missing (the default) or
    /// never.
    #[arg(long, default_value = "missing", value_parser = ["missing", "never"])]
    pull: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The image store.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Print only the image's manifest digest, no step lines (RUN steps' own output still shows).
    #[arg(long, short)]
    quiet: bool,
}

fn build(a: &BuildArgs) -> ExitCode {
    let dir = a.store.clone().unwrap_or_else(cagette::ImageStore::default_dir);
    let store = cagette::ImageStore::open(&dir).unwrap_or_else(|e| die(e));
    let mut o = cagette::BuildOptions::default();
    o.dockerfile = a.file.clone();
    o.tag = a.tag.clone();
    for kv in &a.build_arg {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                o.build_args.insert(k.to_string(), v.to_string());
            }
            // `--build-arg K` takes the value from this environment, as docker does.
            _ => match std::env::var(kv) {
                Ok(v) if !kv.is_empty() => {
                    o.build_args.insert(kv.clone(), v);
                }
                _ => die(format!("--build-arg {kv}: expected KEY=VALUE (or the name of a variable of this environment)")),
            },
        }
    }
    o.target = a.target.clone();
    o.network_host = a.network == "host";
    o.no_cache = a.no_cache;
    o.memory = a.memory;
    o.cpus = a.cpus;
    o.pids = a.pids;
    o.step_timeout = a.step_timeout;
    // Before anything is built: a bad limit is found otherwise at the first RUN step not cached.
    if let Err(e) = o.check_limits() {
        die(format!("build: {e}"));
    }
    o.inherit_output = true;
    if a.pull == "missing" {
        o.pull = Some(a.registry.options());
    }
    let quiet = a.quiet;
    let started = std::time::Instant::now();
    let r = store.build(&a.context, &o, &mut |e| {
        match e {
            cagette::BuildEvent::Step { n, total, text, .. } if !quiet => errln!("STEP {n}/{total}: {text}"),
            cagette::BuildEvent::Cached if !quiet => errln!("--> cached"),
            cagette::BuildEvent::Pulling(r) if !quiet => errln!("--> pulling {r}"),
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    });
    match r {
        Ok(info) => {
            if quiet {
                outln!("{}", info.manifest);
            } else {
                let name = a.tag.as_deref().unwrap_or("(untagged)");
                errln!("built {name} in {:.2} s: {} layer{}, manifest {}", started.elapsed().as_secs_f64(), info.layers.len(), if info.layers.len() == 1 { "" } else { "s" }, info.manifest);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("cagette build: {e}");
            ExitCode::from(1)
        }
    }
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an image (verifying every blob and layer): an OCI image layout directory, a
    /// `docker save` archive, or a plain layer tar (.tar, .tar.gz, .tar.zst).
    Import {
        /// The OCI image layout (a directory with oci-layout and index.json), or a tar file.
        dir: PathBuf,
        /// The name to give it (name:tag).
        #[arg(long)]
        name: String,
        /// Keep the compressed layers, manifest and config too (needed to push or export it;
        /// an OCI layout only).
        #[arg(long)]
        keep_blobs: bool,
        #[command(flatten)]
        bar: ProgressArgs,
    },
    /// Pull an image from a registry into the store: `alpine:3.20` (docker.io/library/ for short
    /// names), `127.0.0.1:5000/app:1` (loopback registries over plain HTTP), `ghcr.io/org/tool@sha256:…`.
    /// Layers are verified and unpacked while they download; layers the store has are skipped.
    Pull {
        /// The image reference.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Keep the compressed layers, manifest and config too (needed to push or export it).
        #[arg(long)]
        keep_blobs: bool,
        #[command(flatten)]
        bar: ProgressArgs,
    },
    /// Store credentials for a registry (in the containers auth.json that podman and skopeo
    /// read: --authfile, REGISTRY_AUTH_FILE, or $XDG_RUNTIME_DIR/containers/auth.json).
    Login {
        /// The registry (host[:port]).
        registry: String,
        /// The user name.
        #[arg(long, short)]
        username: String,
        /// Read the password (or token) from standard input (it is never taken as an argument).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// The credentials file to write.
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
    },
    /// Push an image of the store to a registry (its blobs must have been kept: --keep-blobs).
    Push {
        /// The image in the store.
        name: String,
        /// Where to: registry/repository:tag.
        destination: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Write an image of the store as an OCI layout directory or a docker-save archive (its
    /// blobs must have been kept: --keep-blobs).
    Export {
        /// The image in the store.
        name: String,
        /// The directory (oci) or file (docker-archive) to write; must not exist.
        dest: PathBuf,
        /// oci or docker-archive.
        #[arg(long, default_value = "oci", value_parser = ["oci", "docker-archive"])]
        format: String,
    },
    /// List the images.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write an image as a flat rootfs directory.
    Unpack {
        /// name:tag
        name: String,
        /// The directory to write (created).
        dest: PathBuf,
    },
    /// Remove an image (its layers stay until gc).
    Rm {
        /// name:tag
        name: String,
    },
    /// Remove layers no image uses.
    Gc,
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct ExecArgs {
    /// Give the command a terminal of its own (a pty of the sandbox's devpts).
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep standard input open for the command (with -t: what you type goes to it).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Set an environment variable (on top of the sandbox's).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the sandbox (default: the sandbox's).
    #[arg(short = 'w', long = "workdir", visible_alias = "cwd", value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Run as UID[:GID] inside (default: the sandbox's user).
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Kill the command after this long (the sandbox goes on).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Write a JSON report of the command's verdict and usage to PATH (- for stdout).
    #[arg(long, value_name = "PATH|-")]
    report: Option<String>,
    /// The sandbox's name.
    name: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, value_name = "CMD", required = true)]
    command: Vec<String>,
}

fn exec(a: &ExecArgs) -> ExitCode {
    let mut spec = SandboxSpec { exec_in: Some(a.name.clone()), argv: a.command.clone(), tty: a.tty, ..SandboxSpec::default() };
    for e in &a.env {
        env_arg(&mut spec, e);
    }
    spec.cwd = a.cwd.clone();
    if let Some(u) = &a.user {
        let (uid, gid) = u.split_once(':').map_or((u.as_str(), None), |(x, y)| (x, Some(y)));
        spec.user = Some(uid.parse().unwrap_or_else(|_| die(format!("invalid --user {u:?}: expected UID[:GID] (numbers)"))));
        spec.group = gid.map(|g| g.parse().unwrap_or_else(|_| die(format!("invalid --user {u:?}: expected UID[:GID] (numbers)"))));
    }
    if let Some(t) = &a.timeout {
        spec.timeout = Some(cagette::parse_duration(t).unwrap_or_else(|e| die(format!("--timeout {t:?}: {e}"))));
    }
    if !a.interactive && !a.tty {
        spec.stdin = cagette::Stdio::Null;
    }
    execute(spec, a.interactive, a.report.as_deref())
}

fn ps(json: bool) -> ExitCode {
    let list = match cagette::list_sandboxes() {
        Ok(l) => l,
        Err(e) => {
            errln!("cagette: {e}");
            return ExitCode::from(125);
        }
    };
    if json {
        outln!("{}", serde_json::to_string(&list).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    outln!("{:<20} {:>8} {:>8} {:>10} {:>9}  COMMAND", "NAME", "PID", "AGE", "MEMORY", "CPU");
    for s in list {
        let age = now.saturating_sub(s.started);
        let age = if age < 120 { format!("{age}s") } else if age < 7200 { format!("{}m", age / 60) } else { format!("{}h", age / 3600) };
        let mem = s.memory_bytes.map_or("-".to_string(), |b| format!("{:.1}M", b as f64 / (1 << 20) as f64));
        let cpu = s.cpu_s.map_or("-".to_string(), |c| format!("{c:.2}s"));
        outln!("{:<20} {:>8} {:>8} {:>10} {:>9}  {}", s.name, s.pid, age, mem, cpu, s.argv.join(" "));
    }
    ExitCode::SUCCESS
}

/// Whether an image transfer (`image pull`, `image import`) shows a progress bar.
#[derive(clap::Args, Clone, Copy, Default)]
struct ProgressArgs {
    /// Show a progress bar even when stderr is not a terminal (one line a second).
    #[arg(long)]
    progress: bool,
    /// No progress bar.
    #[arg(long, short, conflicts_with = "progress")]
    quiet: bool,
}

/// How to reach a registry (for `image pull` and `run --pull`).
#[derive(clap::Args, Clone, Default)]
struct RegistryArgs {
    /// The platform to pull from a multi-platform image: os/arch[/variant] (default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// A registry (host[:port]) to reach over plain HTTP, as docker's insecure-registries
    /// (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// A PEM file of certificate authorities to trust besides the system's.
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_files: Vec<PathBuf>,
    /// A credentials file to read first (auth.json or docker's config.json).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Credentials as USER:PASSWORD (prefer `cagette image login`: arguments are visible to
    /// other users of the machine).
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// A mirror for a registry, tried before it: REGISTRY=MIRROR (docker.io=mirror.local:5000).
    #[arg(long = "mirror", value_name = "REGISTRY=MIRROR")]
    mirrors: Vec<String>,
    /// The containers tools' registries.conf to follow (mirrors, insecure and blocked registries),
    /// or `none`. Default: $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf
    /// (not as root), /etc/containers/registries.conf, as podman.
    #[arg(long = "registries-conf", value_name = "FILE|none")]
    registries_conf: Option<PathBuf>,
}

impl RegistryArgs {
    fn options(&self) -> cagette::PullOptions {
        let credentials = self.creds.as_ref().map(|c| match c.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => die("--creds: expected USER:PASSWORD"),
        });
        let mirrors = self
            .mirrors
            .iter()
            .map(|m| match m.split_once('=') {
                Some((r, m)) if !r.is_empty() && !m.is_empty() => (r.to_string(), m.to_string()),
                _ => die(format!("--mirror {m:?}: expected REGISTRY=MIRROR")),
            })
            .collect();
        cagette::PullOptions {
            mirrors,
            platform: self.platform.clone(),
            insecure_registries: self.insecure_registries.clone(),
            ca_files: self.ca_files.clone(),
            credentials,
            auth_file: self.authfile.clone(),
            registries_conf: match &self.registries_conf {
                None => cagette::RegistriesConf::Default,
                Some(p) if p.as_os_str() == "none" => cagette::RegistriesConf::Off,
                Some(p) => cagette::RegistriesConf::File(p.clone()),
            },
            ..cagette::PullOptions::default()
        }
    }
}

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
struct RunArgs {
    /// Start from this JSON sandbox spec (flags below are applied on top).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Print the resulting spec as JSON and exit without running anything.
    #[arg(long)]
    print_spec: bool,
    /// Run from an image of the store (name:tag): its layers are the root, its config the defaults.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// The image store (default: CAGETTE_STORE, /var/lib/cagette as root, ~/.local/share/cagette).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// With --image: keep what the job writes to the root in DIR (the root overlay's upper
    /// layer; needs --image-work, an empty directory on the same file system).
    #[arg(long, value_name = "DIR", requires = "image_work")]
    image_upper: Option<PathBuf>,
    /// The overlay work directory that goes with --image-upper.
    #[arg(long, value_name = "DIR", requires = "image_upper")]
    image_work: Option<PathBuf>,
    /// With --image: pull it when the store lacks it (missing, the default), every time
    /// (always), or never.
    #[arg(long, value_name = "missing|always|never", default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Use DIR as the root file system (default: the host's / read-only).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Leave the rootfs writable.
    #[arg(long)]
    rootfs_rw: bool,
    /// Bind a host path: SRC:DST[:ro|rw] (default rw). Also -v/--volume, as docker's.
    #[arg(long, short = 'v', visible_alias = "volume", value_name = "SRC:DST[:ro|rw]")]
    bind: Vec<String>,
    /// Mount a tmpfs: DST[:size=N][,mode=OCTAL].
    #[arg(long, value_name = "DST[:size=N]")]
    tmpfs: Vec<String>,
    /// Mount an overlay with an ephemeral upper: LOWER[,LOWER...]:DST (first lower on top).
    #[arg(long, value_name = "LOWERS:DST")]
    overlay: Vec<String>,
    /// Network: none (own namespace, loopback only; the default), private (own namespace with a
    /// way out through slirp4netns; never to the host's loopback), bridge (root: a veth pair
    /// routed by the host's kernel, faster; never to the host itself) or host. Also --network.
    #[arg(long, visible_alias = "network", value_name = "none|private|bridge|host")]
    net: Option<String>,
    /// With --net private: forward a host port into the sandbox, [HOST_IP:]HOST_PORT:PORT[/udp]
    /// (the host side binds 127.0.0.1 unless an address is given). Also -p.
    #[arg(long, short = 'p', value_name = "[IP:]HOST:PORT[/udp]")]
    publish: Vec<String>,
    /// With --net private or bridge: a name server for the sandbox's /etc/resolv.conf (repeatable).
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// With --net private or bridge: an extra /etc/hosts line, NAME:IP (repeatable).
    #[arg(long, value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// With --net private: let the sandbox reach the host's loopback (as 10.0.2.2) and link-local
    /// addresses (cloud metadata).
    #[arg(long)]
    allow_host_loopback: bool,
    /// Hostname inside the sandbox.
    #[arg(long)]
    hostname: Option<String>,
    /// Register the sandbox under this name while it runs (`cagette ps` lists it, `cagette exec
    /// NAME CMD` runs more commands in it).
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (K=V); K alone copies the host's value.
    #[arg(long, short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Start from the host's environment instead of a minimal one.
    #[arg(long)]
    inherit_env: bool,
    /// Working directory inside the sandbox. Also -w/--workdir.
    #[arg(long, short = 'w', visible_alias = "workdir", value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Run as UID[:GID] inside the sandbox.
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    user: Option<String>,
    /// Replace the image's Entrypoint (or, without an image, the command to run with the
    /// arguments after it). An empty value clears the image's.
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Docker's security options: seccomp=FILE, seccomp=unconfined, no-new-privileges.
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// Accepted for docker's habit: every sandbox is removed when it ends.
    #[arg(long)]
    rm: bool,
    /// Accepted for docker's habit: the root is read-only unless --rootfs-rw.
    #[arg(long, conflicts_with = "rootfs_rw")]
    read_only: bool,
    /// Ids without explicit maps: auto (as root, a private range of 65536 unprivileged host ids;
    /// otherwise your uid as 0) or host (your uid as 0: as root, host root — unsafe).
    #[arg(long, value_name = "auto|host")]
    userns: Option<String>,
    /// Follow symlinks in host paths (rootfs, bind sources, overlay directories); by default a
    /// path through a symlink is refused.
    #[arg(long)]
    follow_symlinks: bool,
    /// Give the command a host device node besides the standard ones (e.g. /dev/fuse).
    #[arg(long, value_name = "PATH")]
    device: Vec<PathBuf>,
    /// uid mapping INSIDE:OUTSIDE:COUNT (repeatable; default: your uid as 0).
    #[arg(long, value_name = "IN:OUT:COUNT")]
    uid_map: Vec<String>,
    /// gid mapping INSIDE:OUTSIDE:COUNT (repeatable; default: your gid as 0).
    #[arg(long, value_name = "IN:OUT:COUNT")]
    gid_map: Vec<String>,
    /// Stay in the host's namespace of this kind: user, pid, mount, uts, ipc, cgroup, time.
    #[arg(long, value_name = "NS")]
    share: Vec<String>,
    /// System-call filter: default, none, or a file holding an OCI linux.seccomp profile (JSON).
    #[arg(long, value_name = "default|none|FILE")]
    seccomp: Option<String>,
    /// Allow a system call the default filter denies (repeatable).
    #[arg(long, value_name = "SYSCALL")]
    seccomp_allow: Vec<String>,
    /// Deny one more system call (repeatable).
    #[arg(long, value_name = "SYSCALL")]
    seccomp_deny: Vec<String>,
    /// Kill the process on a denied system call instead of failing the call with EPERM.
    #[arg(long)]
    seccomp_kill: bool,
    /// Let the payload create user namespaces.
    #[arg(long)]
    allow_userns: bool,
    /// Enforce Landlock: everything read-only except this path (repeatable; /dev is always writable).
    #[arg(long, value_name = "PATH")]
    landlock_writable: Vec<String>,
    /// Raise the kept capabilities as ambient ones (a non-root payload keeps them).
    #[arg(long)]
    ambient_caps: bool,
    /// Keep a capability beyond the default set (e.g. NET_ADMIN, or ALL).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from the default set (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Memory limit of the whole job (e.g. 256M); over it the job is OOM-killed. Also -m.
    #[arg(long, short = 'm', value_name = "SIZE")]
    memory: Option<String>,
    /// Memory high mark: throttle and reclaim above it (cgroup v2).
    #[arg(long, value_name = "SIZE")]
    memory_high: Option<String>,
    /// When the OOM killer kills one process of the job: kill-job (default: the whole job ends,
    /// verdict oom_killed) or continue.
    #[arg(long, value_name = "kill-job|continue")]
    oom_policy: Option<String>,
    /// Swap allowed on top of --memory.
    #[arg(long, value_name = "SIZE")]
    memory_swap: Option<String>,
    /// CPU quota in CPUs (e.g. 0.5, 2).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// CPU weight, 1-10000 (default 100).
    #[arg(long, value_name = "W")]
    cpu_weight: Option<u32>,
    /// Maximum number of processes and threads. Also --pids-limit.
    #[arg(long, visible_alias = "pids-limit", value_name = "N")]
    pids: Option<i64>,
    /// CPUs to run on (e.g. 0-1).
    #[arg(long, value_name = "LIST")]
    cpuset: Option<String>,
    /// I/O weight, 1-10000.
    #[arg(long, value_name = "W")]
    io_weight: Option<u32>,
    /// Per-device I/O limit: DEVICE:rbps=N,wbps=N,riops=N,wiops=N (DEVICE a path or MAJ:MIN).
    #[arg(long, value_name = "DEV:LIMITS")]
    io_max: Vec<String>,
    /// Kill the job once it has used this much CPU time (e.g. 5s).
    #[arg(long, value_name = "DURATION")]
    cpu_time: Option<String>,
    /// Give the job a cgroup even without limits (usage report from the cgroup).
    #[arg(long)]
    cgroup: bool,
    /// Parent cgroup for the job.
    #[arg(long, value_name = "DIR")]
    cgroup_parent: Option<PathBuf>,
    /// Kill the whole sandbox after this long (e.g. 10s, 500ms, 2m).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Give the command a terminal of its own (a pty in the sandbox, never yours), shown here.
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep standard input open for the command (with -t: what you type goes to its terminal,
    /// in raw mode, as with `docker run -it`).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Write a JSON report of the verdict and usage to PATH (- for stdout).
    #[arg(long, value_name = "PATH|-")]
    report: Option<String>,
    /// The command and its arguments (after `--`, or simply after the options).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    command: Vec<String>,
}

/// The largest spec or seccomp profile the CLI reads (JSON).
const MAX_JSON: u64 = 16 << 20;

/// `-e K=V`, or `-e K`: this environment's value of K (empty when it has none), for `run` and
/// `exec` alike.
fn env_arg(spec: &mut SandboxSpec, e: &str) {
    match e.split_once('=') {
        Some((k, v)) => spec.env.insert(k.into(), v.into()),
        None => spec.env.insert(e.into(), std::env::var(e).unwrap_or_default()),
    };
}

fn die(msg: impl std::fmt::Display) -> ! {
    errln!("cagette: {msg}");
    std::process::exit(125)
}

fn parse_map(s: &str) -> IdMap {
    let p: Vec<&str> = s.split(':').collect();
    let n = |x: &str| x.parse::<u32>().unwrap_or_else(|_| die(format!("invalid id map {s:?}: expected INSIDE:OUTSIDE:COUNT, like 0:1000:1")));
    if p.len() != 3 {
        die(format!("invalid id map {s:?}: expected INSIDE:OUTSIDE:COUNT, like 0:1000:1"));
    }
    IdMap { inside: n(p[0]), outside: n(p[1]), count: n(p[2]) }
}

fn parse_cap(s: &str) -> Vec<Capability> {
    if s.eq_ignore_ascii_case("all") {
        return Capability::ALL.to_vec();
    }
    vec![s.parse().unwrap_or_else(|e| die(e))]
}

fn build_spec(a: &RunArgs) -> SandboxSpec {
    let mut spec: SandboxSpec = match &a.spec {
        Some(p) => {
            let bytes = cagette::read_host_file(p, MAX_JSON).unwrap_or_else(|e| die(format!("cannot read the spec: {e}")));
            let text = String::from_utf8(bytes).unwrap_or_else(|_| die(format!("invalid spec {}: not UTF-8 text", p.display())));
            SandboxSpec::from_json(&text).unwrap_or_else(|e| die(format!("invalid spec {}: {e}", p.display())))
        }
        None => SandboxSpec::default(),
    };
    if !a.command.is_empty() {
        spec.argv = a.command.clone();
    }
    if let Some(r) = &a.rootfs {
        spec.rootfs = Some(r.clone());
    }
    if a.image.is_some() {
        spec.image = a.image.clone();
    }
    if a.store.is_some() {
        spec.image_store = a.store.clone();
    }
    if a.image_upper.is_some() {
        spec.image_upper = a.image_upper.clone();
        spec.image_work = a.image_work.clone();
    }
    spec.rootfs_writable |= a.rootfs_rw;
    for b in &a.bind {
        let parts: Vec<&str> = b.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [s, d] => (*s, *d, "rw"),
            [s, d, m] => (*s, *d, *m),
            _ => die(format!("invalid --bind {b:?}: expected SRC:DST[:ro|rw]")),
        };
        let m = Mount::bind(src, dst);
        spec.mounts.push(match mode {
            "ro" => m.read_only(),
            "rw" => m,
            _ => die(format!("invalid --bind {b:?}: the mode must be ro or rw")),
        });
    }
    for t in &a.tmpfs {
        let (dst, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let mut m = Mount::tmpfs(dst);
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", v)) => m = m.size(v.parse::<Size>().unwrap_or_else(|e| die(format!("--tmpfs {t:?}: {e}")))),
                Some(("mode", v)) => m = m.mode(u32::from_str_radix(v, 8).unwrap_or_else(|_| die(format!("--tmpfs {t:?}: mode must be octal, like 1777")))),
                _ => die(format!("invalid --tmpfs option {o:?}: expected size=N or mode=OCTAL")),
            }
        }
        spec.mounts.push(m);
    }
    for o in &a.overlay {
        let (lowers, dst) = o.rsplit_once(':').unwrap_or_else(|| die(format!("invalid --overlay {o:?}: expected LOWER[,LOWER...]:DST")));
        spec.mounts.push(Mount::overlay(lowers.split(','), dst));
    }
    match a.net.as_deref() {
        None => {}
        Some("none") => spec.network = Network::None,
        Some("host") => spec.network = Network::Host,
        Some("private") => spec.network = Network::Private,
        Some("bridge") => spec.network = Network::Bridge,
        Some(other) => die(format!("invalid --net {other:?}: expected none, private, bridge or host")),
    }
    for p in &a.publish {
        spec.publish.push(p.parse().unwrap_or_else(|e| die(format!("invalid --publish: {e}"))));
    }
    for d in &a.dns {
        spec.dns.push(d.parse().unwrap_or_else(|_| die(format!("invalid --dns {d:?}: expected an IP address"))));
    }
    for h in &a.add_host {
        spec.add_hosts.push(h.parse().unwrap_or_else(|e| die(format!("invalid --add-host: {e}"))));
    }
    spec.allow_host_loopback |= a.allow_host_loopback;
    for o in &a.security_opt {
        match o.split_once('=').unwrap_or((o.as_str(), "")) {
            ("seccomp", "unconfined") => spec.seccomp = Seccomp::Mode(SeccompMode::None),
            ("seccomp", file) if !file.is_empty() => {
                let bytes = cagette::read_host_file(std::path::Path::new(file), MAX_JSON).unwrap_or_else(|e| die(format!("--security-opt seccomp: cannot read the profile: {e}")));
                let text = String::from_utf8(bytes).unwrap_or_else(|_| die(format!("--security-opt seccomp={file}: not UTF-8 text")));
                spec.seccomp = Seccomp::Profile(serde_json::from_str(&text).unwrap_or_else(|e| die(format!("--security-opt seccomp={file}: not an OCI linux.seccomp profile: {e}"))));
            }
            ("no-new-privileges", "" | "true") => spec.no_new_privs = true,
            _ => die(format!("unsupported --security-opt {o:?}: cagette takes seccomp=FILE, seccomp=unconfined and no-new-privileges (AppArmor and SELinux labels are not applied)")),
        }
    }
    if let Some(ep) = &a.entrypoint {
        let words: Vec<String> = if ep.is_empty() { Vec::new() } else { vec![ep.clone()] };
        if spec.image.is_some() {
            spec.entrypoint = Some(words);
        } else {
            spec.argv = words.into_iter().chain(a.command.iter().cloned()).collect();
        }
    }
    if a.hostname.is_some() {
        spec.hostname = a.hostname.clone();
    }
    if a.name.is_some() {
        spec.name = a.name.clone();
    }
    for e in &a.env {
        env_arg(&mut spec, e);
    }
    spec.inherit_env |= a.inherit_env;
    if a.cwd.is_some() {
        spec.cwd = a.cwd.clone();
    }
    if let Some(u) = &a.user {
        let (uid, gid) = u.split_once(':').map(|(x, y)| (x, Some(y))).unwrap_or((u.as_str(), None));
        spec.user = Some(uid.parse().unwrap_or_else(|_| die(format!("invalid --user {u:?}: expected UID[:GID] (numbers)"))));
        if let Some(g) = gid {
            spec.group = Some(g.parse().unwrap_or_else(|_| die(format!("invalid --user {u:?}: expected UID[:GID] (numbers)"))));
        }
    }
    match a.userns.as_deref() {
        None => {}
        Some("auto") => spec.userns = cagette::UsernsMode::Auto,
        Some("host") => spec.userns = cagette::UsernsMode::Host,
        Some(other) => die(format!("invalid --userns {other:?}: expected auto or host")),
    }
    spec.follow_symlinks |= a.follow_symlinks;
    spec.devices.extend(a.device.iter().cloned());
    match a.oom_policy.as_deref() {
        None => {}
        Some("kill-job") | Some("kill_job") => spec.oom_policy = cagette::OomPolicy::KillJob,
        Some("continue") => spec.oom_policy = cagette::OomPolicy::Continue,
        Some(other) => die(format!("invalid --oom-policy {other:?}: expected kill-job or continue")),
    }
    spec.uid_map.extend(a.uid_map.iter().map(|s| parse_map(s)));
    spec.gid_map.extend(a.gid_map.iter().map(|s| parse_map(s)));
    for ns in &a.share {
        let n = &mut spec.namespaces;
        let slot = match ns.as_str() {
            "user" => &mut n.user,
            "pid" => &mut n.pid,
            "mount" => &mut n.mount,
            "uts" => &mut n.uts,
            "ipc" => &mut n.ipc,
            "cgroup" => &mut n.cgroup,
            "time" => &mut n.time,
            "net" => {
                spec.network = Network::Host;
                continue;
            }
            other => die(format!("invalid --share {other:?}: expected user, pid, mount, uts, ipc, net, cgroup or time")),
        };
        *slot = NsMode::Host;
    }
    for c in &a.cap_add {
        spec.cap_add.extend(parse_cap(c));
    }
    for c in &a.cap_drop {
        spec.cap_drop.extend(parse_cap(c));
    }
    spec.ambient_capabilities |= a.ambient_caps;
    if let Some(sc) = &a.seccomp {
        spec.seccomp = match sc.as_str() {
            "default" => Seccomp::Mode(SeccompMode::Default),
            "none" => Seccomp::Mode(SeccompMode::None),
            file => {
                let bytes = cagette::read_host_file(std::path::Path::new(file), MAX_JSON).unwrap_or_else(|e| die(format!("--seccomp: cannot read the profile: {e}")));
                let text = String::from_utf8(bytes).unwrap_or_else(|_| die(format!("--seccomp {file}: not UTF-8 text")));
                Seccomp::Profile(serde_json::from_str(&text).unwrap_or_else(|e| die(format!("--seccomp {file}: not an OCI linux.seccomp profile: {e}"))))
            }
        };
    }
    spec.seccomp_allow.extend(a.seccomp_allow.iter().cloned());
    spec.seccomp_deny.extend(a.seccomp_deny.iter().cloned());
    spec.seccomp_kill |= a.seccomp_kill;
    spec.allow_user_namespaces |= a.allow_userns;
    if !a.landlock_writable.is_empty() {
        spec.landlock.get_or_insert_with(Default::default).writable.extend(a.landlock_writable.iter().cloned());
    }
    let size = |flag: &str, v: &Option<String>| v.as_ref().map(|v| v.parse::<Size>().unwrap_or_else(|e| die(format!("--{flag}: {e}"))));
    if a.memory.is_some() {
        spec.memory = size("memory", &a.memory);
    }
    if a.memory_high.is_some() {
        spec.memory_high = size("memory-high", &a.memory_high);
    }
    if a.memory_swap.is_some() {
        spec.memory_swap = size("memory-swap", &a.memory_swap);
    }
    spec.cpus = a.cpus.or(spec.cpus);
    spec.cpu_weight = a.cpu_weight.or(spec.cpu_weight);
    if let Some(p) = a.pids {
        // Negative numbers come here (not as a flag parsing error) to be named clearly.
        spec.pids = Some(u64::try_from(p).unwrap_or_else(|_| die(format!("--pids {p}: the number of processes must be at least 2"))));
    }
    spec.io_weight = a.io_weight.or(spec.io_weight);
    if a.cpuset.is_some() {
        spec.cpuset_cpus = a.cpuset.clone();
    }
    for l in &a.io_max {
        // The device may itself contain ':' (MAJ:MIN): the limits follow the last ':'.
        let (dev, limits) = l.rsplit_once(':').unwrap_or_else(|| die(format!("invalid --io-max {l:?}: expected DEVICE:rbps=N,wbps=N,riops=N,wiops=N")));
        let mut m = cagette::IoMax { device: dev.to_string(), rbps: None, wbps: None, riops: None, wiops: None };
        for kv in limits.split(',') {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| die(format!("invalid --io-max limit {kv:?}: expected rbps=N, wbps=N, riops=N or wiops=N")));
            let bad = || die(format!("invalid --io-max value {v:?} for {k}"));
            match k {
                "rbps" => m.rbps = Some(v.parse::<Size>().unwrap_or_else(|_| bad())),
                "wbps" => m.wbps = Some(v.parse::<Size>().unwrap_or_else(|_| bad())),
                "riops" => m.riops = Some(v.parse::<u64>().unwrap_or_else(|_| die(format!("invalid --io-max value {v:?} for riops")))),
                "wiops" => m.wiops = Some(v.parse::<u64>().unwrap_or_else(|_| die(format!("invalid --io-max value {v:?} for wiops")))),
                _ => die(format!("invalid --io-max limit {k:?}: expected rbps, wbps, riops or wiops")),
            }
        }
        spec.io_max.push(m);
    }
    if let Some(t) = &a.cpu_time {
        spec.cpu_time = Some(cagette::parse_duration(t).unwrap_or_else(|e| die(format!("--cpu-time: {e}"))));
    }
    if a.cgroup {
        spec.cgroup = cagette::CgroupMode::Always;
    }
    if a.cgroup_parent.is_some() {
        spec.cgroup_parent = a.cgroup_parent.clone();
    }
    if let Some(t) = &a.timeout {
        spec.timeout = Some(cagette::parse_duration(t).unwrap_or_else(|e| die(format!("--timeout: {e}"))));
    }
    spec.tty |= a.tty;
    spec
}

/// Blocks the signals we forward and returns a signalfd for them (None if the kernel refuses
/// one: they are then not forwarded, and keep their default action).
fn forward_signals() -> Option<SignalFd> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH] {
        set.add(s);
    }
    let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()?;
    // Blocked only once the signalfd exists: until then they keep their default action.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).ok()?;
    Some(fd)
}

fn run(a: &RunArgs) -> ExitCode {
    let spec = build_spec(a);
    if a.print_spec {
        // Only a spec that would run: the same checks as before a start.
        if let Err(e) = spec.validate() {
            die(format!("--print-spec: {}", e.message));
        }
        outln!("{}", serde_json::to_string_pretty(&spec).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if spec.argv.is_empty() && spec.image.is_none() {
        die("no command given: cagette run [OPTIONS] -- CMD [ARGS...]");
    }
    for (name, s) in [("stdin", spec.stdin), ("stdout", spec.stdout), ("stderr", spec.stderr)] {
        if s == cagette::Stdio::Piped {
            die(format!("the spec's {name} is \"piped\": pipes are for programs that use the library; the command run by the CLI uses the CLI's own streams (use \"inherit\" or \"null\")"));
        }
    }
    // A report that was asked for must be writable: checked before the job runs.
    if let Some(dest) = a.report.as_deref().filter(|d| *d != "-") {
        let p = std::path::Path::new(dest);
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() || p.is_dir() {
            die(format!("--report {dest}: {}", if p.is_dir() { "is a directory" } else { "its directory does not exist" }));
        }
    }
    if let Some(image) = spec.image.clone().filter(|_| a.pull != "never") {
        let dir = spec.image_store.clone().unwrap_or_else(cagette::ImageStore::default_dir);
        let store = cagette::ImageStore::open(&dir).unwrap_or_else(|e| die(e));
        if (a.pull == "always" || matches!(store.get(&image), Err(cagette::ImageError::NotFound(_))))
            && let Err(e) = pull(&store, &image, &a.registry, ProgressArgs::default()) {
                die(format!("--image {image}: {e}"));
            }
    }
    execute(spec, a.interactive, a.report.as_deref())
}

/// Runs `spec` (a new sandbox, or a command in a running one), forwarding signals and the
/// terminal; prints setup failures; writes the report; returns the exit status.
fn execute(spec: SandboxSpec, interactive: bool, report_to: Option<&str>) -> ExitCode {
    let sigfd = forward_signals();
    let tty = spec.tty;
    let result = cagette::Sandbox::from_spec(spec).spawn().and_then(|mut child| {
        if tty {
            child.interact(interactive, sigfd.as_ref().map(|f| f.as_fd()))
        } else {
            wait(&mut child, sigfd.as_ref())
        }
    });
    let report = Report::from_result(&result);
    if let Err(e) = &result {
        match e.setup_failure() {
            Some(f) => {
                errln!("cagette: setup failed at step {}: {}", f.step, f.message);
                if let Some(p) = &f.path {
                    errln!("  path: {}", p.display());
                }
                if let Some(h) = &f.hint {
                    errln!("  hint: {h}");
                }
            }
            None => errln!("cagette: {e}"),
        }
    }
    let mut code = match &result {
        Ok(o) => o.verdict.exit_code(),
        Err(e) => e.setup_failure().map(|f| Verdict::SetupFailed(f.clone()).exit_code()).unwrap_or(125),
    };
    if let Ok(o) = &result
        && o.usage.oom_kills > 0 && o.verdict.success() {
            errln!("cagette: warning: the job exited 0, but the OOM killer killed {} of its processes (oom_policy = continue)", o.usage.oom_kills);
        }
    if let Some(dest) = report_to {
        let json = serde_json::to_string(&report).unwrap_or_default();
        let r = if dest == "-" {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}").and_then(|_| out.flush())
        } else {
            // Never through a symlink the job could have planted in a directory it can write.
            cagette::write_host_file(std::path::Path::new(dest), format!("{json}\n").as_bytes())
        };
        if let Err(e) = r {
            errln!("cagette: cannot write the report: {e}");
            // The report was asked for: not having it is cagette's failure.
            code = 125;
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn wait(child: &mut cagette::Child, sigfd: Option<&SignalFd>) -> cagette::Result<Outcome> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = vec![PollFd::new(child.pidfd(), PollFlags::POLLIN)];
        if let Some(s) = sigfd {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        // At most 100 ms: the job's time limit is checked below. EINTR is a wake-up like any other.
        let _ = poll(&mut fds, PollTimeout::from(100u8));
        let signalled = fds.get(1).and_then(|p| p.revents()).is_some_and(|r| r.contains(PollFlags::POLLIN));
        if let (Some(s), true) = (sigfd, signalled) {
            while let Ok(Some(info)) = s.read_signal() {
                child.kill(info.ssi_signo as i32)?;
            }
        }
        if let Some(o) = child.wait_timeout(Duration::ZERO)? {
            return Ok(o);
        }
    }
}

fn print_probe(json: bool) {
    let p = cagette::probe();
    if json {
        outln!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
        return;
    }
    // The same names as --json, one per line.
    let v = serde_json::to_value(&p).unwrap_or_default();
    if let Some(o) = v.as_object() {
        for (k, v) in o {
            let text = match v {
                serde_json::Value::Array(a) => a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join(" "),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "no".into(),
                other => other.to_string(),
            };
            outln!("{k:<24} {text}");
        }
    }
}

/// Lists images as a table, or JSON (the store's own records).
fn list_images(l: &[cagette::ImageInfo], json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(l).unwrap_or_default());
        return;
    }
    outln!("{:<32} {:<8} MANIFEST", "NAME", "LAYERS");
    for i in l {
        outln!("{:<32} {:<8} {}", i.name, i.layers.len(), i.manifest);
    }
}

/// The import progress bar: redrawn in place on a terminal, one line a second otherwise.
/// Progress of an import or a pull: indicatif's bar on a terminal; one plain line a second
/// otherwise (with --progress), for logs.
struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    started: std::time::Instant,
    last: Option<std::time::Instant>,
}

impl ProgressBar {
    fn new(show: bool) -> ProgressBar {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        let bar = (show && tty).then(|| {
            let style = indicatif::ProgressStyle::with_template("[{bar:30}] {percent:>3}%  {msg}  {decimal_bytes}/{decimal_total_bytes}  {decimal_bytes_per_sec}").map(|s| s.progress_chars("#> "));
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) = style {
                b.set_style(style);
            }
            b
        });
        ProgressBar { bar, lines: show && !tty, started: std::time::Instant::now(), last: None }
    }
    fn update(&mut self, p: &cagette::ImportProgress) {
        if p.layers == 0 {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(p.bytes);
            bar.set_position(p.bytes_done);
            bar.set_message(format!("{}/{} layers", p.layers_done, p.layers));
            return;
        }
        let now = std::time::Instant::now();
        if !self.lines || self.last.is_some_and(|l| now.duration_since(l).as_secs() < 1) && p.layers_done < p.layers {
            return;
        }
        self.last = Some(now);
        let frac = if p.bytes == 0 { 1.0 } else { p.bytes_done as f64 / p.bytes as f64 };
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        errln!("{:>3.0}%  {}/{} layers  {:.1}/{:.1} MB  {:.0} MB/s", frac * 100.0, p.layers_done, p.layers, p.bytes_done as f64 / 1e6, p.bytes as f64 / 1e6, p.bytes_done as f64 / 1e6 / secs);
    }
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Pulls `reference` into `store`, with a progress bar (or lines) and the import's notes.
fn pull(store: &cagette::ImageStore, reference: &str, registry: &RegistryArgs, bar: ProgressArgs) -> Result<cagette::ImageInfo, cagette::ImageError> {
    let r = with_progress(bar, |p| store.pull_with(reference, &registry.options(), p));
    // On stderr: `run --pull` leaves stdout to the sandbox.
    r.inspect(|i| errln!("pulled {}", summary(i)))
}

/// Runs an image transfer (`f`, given the progress callback) with a progress bar, or lines when
/// stderr is not a terminal and `--progress` asks for them, or nothing with `--quiet`; then
/// prints the transfer's notes.
fn with_progress(
    ProgressArgs { progress, quiet }: ProgressArgs,
    f: impl FnOnce(&mut dyn FnMut(&cagette::ImportProgress) -> std::ops::ControlFlow<()>) -> Result<cagette::ImageInfo, cagette::ImageError>,
) -> Result<cagette::ImageInfo, cagette::ImageError> {
    use std::io::IsTerminal;
    let mut bar = ProgressBar::new(!quiet && (std::io::stderr().is_terminal() || progress));
    let r = f(&mut |p| {
        bar.update(p);
        std::ops::ControlFlow::Continue(())
    });
    bar.finish();
    r.inspect(|i| {
        for n in &i.notes {
            errln!("cagette: note: {n}");
        }
    })
}

/// "NAME (N layers, manifest DIGEST)".
fn summary(i: &cagette::ImageInfo) -> String {
    format!("{} ({} layer{}, manifest {})", i.name, i.layers.len(), if i.layers.len() == 1 { "" } else { "s" }, i.manifest)
}

fn image(cmd: ImageCmd, store: Option<PathBuf>) -> ExitCode {
    let dir = store.unwrap_or_else(cagette::ImageStore::default_dir);
    let store = cagette::ImageStore::open(&dir).unwrap_or_else(|e| die(e));
    let r: Result<(), cagette::ImageError> = match cmd {
        ImageCmd::Pull { reference, registry, keep_blobs, bar } => pull(&store.clone().keep_blobs(keep_blobs), &reference, &registry, bar).map(|_| ()),
        ImageCmd::Push { name, destination, registry } => store.push(&name, &destination, &registry.options()).map(|d| outln!("pushed {name} to {destination} (manifest {d})")),
        ImageCmd::Export { name, dest, format } => {
            let f = if format == "oci" { cagette::ExportFormat::Oci } else { cagette::ExportFormat::DockerArchive };
            store.export(&name, &dest, f).map(|()| outln!("exported {name} to {} ({format})", dest.display()))
        }
        ImageCmd::Login { registry, username, password_stdin: _, authfile } => {
            let mut password = String::new();
            if std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), 1 << 16), &mut password).is_err() {
                die("--password-stdin: cannot read standard input");
            }
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                die("--password-stdin: no password on standard input");
            }
            cagette::login(&registry, &username, password, authfile.as_deref()).map(|file| outln!("credentials for {registry} stored in {}", file.display()))
        }
        ImageCmd::Import { dir: src, name, keep_blobs, bar } => {
            let store = store.clone().keep_blobs(keep_blobs);
            with_progress(bar, |p| store.import_with(&src, &name, p)).map(|i| outln!("imported {}", summary(&i)))
        }
        ImageCmd::Ls { json } => store.list().map(|l| list_images(&l, json)),
        ImageCmd::Unpack { name, dest } => store.unpack(&name, &dest).map(|notes| {
            for n in notes {
                errln!("cagette: note: {n}");
            }
        }),
        ImageCmd::Rm { name } => store.remove(&name),
        ImageCmd::Gc => store.gc().map(|n| outln!("removed {n} unused layers")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("cagette: {e}");
            ExitCode::from(125)
        }
    }
}

/// A command-line error: printed; --help and --version are not errors, a usage error is
/// cagette's own failure (125).
fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() { ExitCode::from(125) } else { ExitCode::SUCCESS }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        return match RunOnly::try_parse() {
            Ok(RunOnly { cmd: RunCmd::Run(a) }) => run(&a),
            Err(e) => usage_error(e),
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cli.cmd {
        Cmd::Run(a) => run(&a),
        Cmd::Build(a) => build(&a),
        Cmd::Exec(a) => exec(&a),
        Cmd::Ps { json } => ps(json),
        Cmd::Image { cmd, store } => image(cmd, store),
        Cmd::Images { store, json } => image(ImageCmd::Ls { json }, store),
        Cmd::Probe { json } => {
            print_probe(json);
            ExitCode::SUCCESS
        }
        Cmd::Version { json } => {
            let v = env!("CARGO_PKG_VERSION");
            if json {
                outln!("{}", serde_json::json!({ "version": v }));
            } else {
                outln!("cagette {v}");
            }
            ExitCode::SUCCESS
        }
    }
}
