//! The one description of a sandbox. The Rust builder ([`crate::Sandbox`]), the CLI flags and the
//! Python and Node bindings all produce a [`SandboxSpec`]; it (de)serializes with serde, so a
//! binding maps its keyword arguments or option objects onto it without re-declaring options.
//!
//! ```
//! let spec: cagette::SandboxSpec = serde_json::from_value(serde_json::json!({
//!     "argv": ["sh", "-c", "echo hi"],
//!     "network": "none",
//!     "hostname": "box",
//!     "mounts": [{"type": "bind", "source": "/usr", "destination": "/opt/usr", "read_only": true}],
//!     "timeout": "10s",
//! })).unwrap();
//! assert_eq!(spec.hostname.as_deref(), Some("box"));
//! ```

use crate::security::caps::Capability;
use crate::sandbox::units::{Size, duration_opt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that defines a sandbox and the command run in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSpec {
    /// The command and its arguments. A name without `/` is searched in the sandbox's `PATH`.
    pub argv: Vec<String>,
    /// Environment variables for the payload, on top of the defaults (`PATH`, `HOME`, `TERM`) or,
    /// with `inherit_env`, on top of the host's environment.
    pub env: BTreeMap<String, String>,
    /// Start from the host process's environment instead of the minimal default one.
    pub inherit_env: bool,
    /// Working directory inside the sandbox (default `/`). Never a host directory — unless
    /// `cwd_host` says so.
    pub cwd: Option<PathBuf>,
    /// `cwd` names a host directory (as `subprocess` and `child_process` mean it; the Python and
    /// Node bindings set this): when it is one, it is bound read-write at the same path inside
    /// (the caller asked to work there), unless a mount of the spec already targets it. A path
    /// that is no host directory stays a path inside the sandbox.
    pub cwd_host: bool,
    /// Hostname inside the sandbox (needs a new UTS namespace).
    pub hostname: Option<String>,
    /// Which namespaces are new, shared with the host, or joined.
    pub namespaces: Namespaces,
    /// Network: `none` (a new network namespace with only `lo`, up), `private` (a namespace of
    /// its own with a way out through a user-mode stack, never to the host's loopback), `host`,
    /// or `{"join": path}`.
    pub network: Network,
    /// With `network: private`: ports of the sandbox forwarded from the host, as
    /// `[HOST_IP:]HOST_PORT:SANDBOX_PORT[/tcp|/udp]` (the host side binds 127.0.0.1 unless an
    /// address is given).
    pub publish: Vec<Publish>,
    /// With `network: private`: the name servers written to the sandbox's `/etc/resolv.conf`
    /// (default: the user-mode stack's forwarder, 10.0.2.3, which asks the host's resolvers).
    pub dns: Vec<std::net::IpAddr>,
    /// With `network: private`: extra `/etc/hosts` lines, as `NAME:IP` (Docker's `--add-host`).
    pub add_hosts: Vec<HostEntry>,
    /// With `network: private`: let the sandbox reach the host's loopback (as 10.0.2.2) and
    /// link-local addresses (cloud metadata services). Off by default.
    pub allow_host_loopback: bool,
    /// How ids map in a new user namespace when `uid_map` and `gid_map` are empty: `auto` (the
    /// default: as root, a private range of 65536 host ids that no host user owns, so the
    /// sandbox's root has no rights over the host's files, sockets and devices; as another user,
    /// your own id is 0 inside) or `host` (uid 0 inside is your own uid outside: as root that is
    /// host root over every file the sandbox can reach — unsafe, for compatibility).
    pub userns: UsernsMode,
    /// uid mappings of a new user namespace. Empty: see `userns`.
    pub uid_map: Vec<IdMap>,
    /// gid mappings of a new user namespace. Empty: see `userns`.
    pub gid_map: Vec<IdMap>,
    /// The uid the payload runs as, inside the sandbox (default 0).
    pub user: Option<u32>,
    /// The gid the payload runs as, inside the sandbox (default 0).
    pub group: Option<u32>,
    /// Supplementary groups inside the sandbox (only where setgroups is allowed, i.e. as root).
    pub supplementary_groups: Vec<u32>,
    /// A directory to use as the root file system (pivot_root). `None`: the host's `/`,
    /// read-only, with a fresh `/proc`, a minimal `/dev` and a tmpfs `/tmp`.
    pub rootfs: Option<PathBuf>,
    /// Leave the rootfs writable (default: read-only; add tmpfs or overlay mounts for scratch).
    pub rootfs_writable: bool,
    /// Propagation of the root mount inside the sandbox (default private).
    pub rootfs_propagation: Option<Propagation>,
    /// The payload's file mode creation mask (default: the host process's, usually 022).
    pub umask: Option<u32>,
    /// Run from this image of the store (`name:tag`): its layers are the root (overlayfs, with an
    /// ephemeral upper layer: the job may write, the store never changes), and its config's
    /// Entrypoint, Cmd, Env, WorkingDir and User are the defaults.
    pub image: Option<String>,
    /// The image store (default: [`crate::ImageStore::default_dir`]).
    pub image_store: Option<PathBuf>,
    /// With `image`: keep what the job writes to its root in this host directory (the root
    /// overlay's upper layer: new and changed files, and overlayfs whiteouts for removed ones),
    /// instead of an ephemeral one; [`crate::write_layer`] makes a layer of it. Needs
    /// `image_work`, an empty directory on the same file system (neither inside the other).
    #[serde(default)]
    pub image_upper: Option<PathBuf>,
    /// The overlay work directory that goes with `image_upper`.
    #[serde(default)]
    pub image_work: Option<PathBuf>,
    /// With an image: replaces its Entrypoint (an empty list clears it), as `docker run
    /// --entrypoint` does; `argv` then replaces its Cmd as usual.
    pub entrypoint: Option<Vec<String>>,
    /// Extra mounts, applied in order after the default ones.
    pub mounts: Vec<Mount>,
    /// Follow symlinks in host paths (the rootfs, bind sources, overlay directories). Off by
    /// default: a host path that crosses a symlink is refused, because a sandbox that could write
    /// there could have planted it to redirect a later job's mount.
    pub follow_symlinks: bool,
    /// Host device nodes the payload may use besides the standard ones (null, zero, full, random,
    /// urandom, tty, its own pty), e.g. `/dev/fuse`: bound into its `/dev` and allowed by the
    /// job's device cgroup. Opening one still needs the host's permissions for the sandbox's ids.
    pub devices: Vec<PathBuf>,
    /// Mount a fresh `/proc` (default true).
    pub proc: bool,
    /// Mount a minimal `/dev` (default true).
    pub dev: bool,
    /// Mount a tmpfs on `/tmp` unless a mount in `mounts` targets `/tmp` (default true).
    pub tmp: bool,
    /// Mount `/sys` read-only (default true): a fresh sysfs with `network: none`, else the host's.
    pub sys: bool,
    /// Paths made unreadable; `None` means [`DEFAULT_MASKED_PATHS`].
    pub masked_paths: Option<Vec<String>>,
    /// Paths made read-only; `None` means [`DEFAULT_READONLY_PATHS`].
    pub readonly_paths: Option<Vec<String>>,
    /// Resource limits (setrlimit) for the payload.
    pub rlimits: Vec<Rlimit>,
    /// The capabilities the payload keeps; `None` means [`crate::DEFAULT_CAPABILITIES`].
    pub capabilities: Option<Vec<Capability>>,
    /// Capabilities added to `capabilities` (or to the default set).
    pub cap_add: Vec<Capability>,
    /// Capabilities removed from `capabilities` (or from the default set).
    pub cap_drop: Vec<Capability>,
    /// Also raise the kept capabilities as *ambient* ones, so that a payload running as a
    /// non-zero uid keeps them across exec (off by default).
    pub ambient_capabilities: bool,
    /// Set `no_new_privs` (default true): setuid binaries and file capabilities grant nothing.
    pub no_new_privs: bool,
    /// System-call filter: `"default"` (cagette's profile, with the effect of Docker's default),
    /// `"none"`, or an OCI `linux.seccomp` object.
    pub seccomp: Seccomp,
    /// System calls allowed although the default profile denies them.
    pub seccomp_allow: Vec<String>,
    /// System calls denied on top of the profile.
    pub seccomp_deny: Vec<String>,
    /// Kill the process on a denied system call (SIGSYS) instead of failing it with EPERM.
    pub seccomp_kill: bool,
    /// Let the payload create user namespaces (the default profile refuses them: they are the
    /// usual way to regain capabilities inside).
    pub allow_user_namespaces: bool,
    /// Landlock file-system rules, enforced on top of the mounts (fails closed when the kernel
    /// has no Landlock).
    pub landlock: Option<Landlock>,
    /// Give the payload a terminal of its own: a pty of the sandbox's devpts is its stdin, stdout
    /// and stderr and its controlling terminal; the host gets the master ([`crate::Child::pty`]).
    /// The sandbox never gets the caller's terminal as its controlling one.
    pub tty: bool,
    /// Standard input of the payload (default `inherit`).
    pub stdin: Stdio,
    /// Standard output of the payload (default `inherit`).
    pub stdout: Stdio,
    /// Standard error of the payload (default `inherit`).
    pub stderr: Stdio,
    /// Host file descriptors passed to the payload, and the numbers they get inside.
    pub pass_fds: Vec<PassFd>,
    /// Wall-clock limit: the whole sandbox is killed when it runs out (verdict `timed_out`).
    #[serde(with = "duration_opt")]
    pub timeout: Option<Duration>,
    /// CPU-time limit (user + system of the whole job, from its cgroup): killed when it runs
    /// out (verdict `timed_out`, limit `cpu`).
    #[serde(with = "duration_opt")]
    pub cpu_time: Option<Duration>,
    /// Memory limit of the whole job (cgroup memory.max / memory.limit_in_bytes). Going over it
    /// gets the job OOM-killed (verdict `oom_killed`). At least [`crate::MIN_MEMORY`].
    pub memory: Option<Size>,
    /// What an OOM kill of one process of the job does: `kill_job` (the default: the whole job is
    /// killed, verdict `oom_killed`) or `continue` (the others go on; the report counts the kills).
    pub oom_policy: OomPolicy,
    /// Memory high mark: the job is throttled and reclaimed above it (cgroup v2 only).
    pub memory_high: Option<Size>,
    /// Swap the job may use on top of `memory`.
    pub memory_swap: Option<Size>,
    /// CPU quota as a number of CPUs (0.5 = half of one CPU).
    pub cpus: Option<f64>,
    /// The CPU quota's period (default 100 ms), for `cpus`.
    #[serde(with = "duration_opt")]
    pub cpu_period: Option<Duration>,
    /// CPU weight, 1 to 10000 (default 100), relative to other cgroups.
    pub cpu_weight: Option<u32>,
    /// Maximum number of processes and threads in the job.
    pub pids: Option<u64>,
    /// CPUs the job may run on ("0-1", "3").
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the job may use ("0").
    pub cpuset_mems: Option<String>,
    /// I/O weight, 1 to 10000 (default 100).
    pub io_weight: Option<u32>,
    /// Per-device I/O limits (bytes and operations per second).
    pub io_max: Vec<IoMax>,
    /// When the job gets a cgroup: `auto` (when a limit is set), `always` (also for the usage
    /// report), `never` (asking for a limit is then an error).
    pub cgroup: CgroupMode,
    /// Parent cgroup for the job (v2: a directory of the cgroup2 tree; v1: a directory holding
    /// one subdirectory per controller). Default: `/sys/fs/cgroup/cagette` as root (v2),
    /// `/sys/fs/cgroup/<controller>/cagette` (v1), or the caller's delegated cgroup.
    pub cgroup_parent: Option<PathBuf>,
    /// Registers the sandbox under this name while it runs (letters, digits, `_.-`, at most 64;
    /// unique among the caller's running sandboxes): [`crate::list_sandboxes`] and `cagette ps`
    /// list it, and `exec_in` (`cagette exec NAME`) runs more commands in it.
    pub name: Option<String>,
    /// Runs the command inside the running sandbox of this name instead of a new one, as `docker
    /// exec` does: in its namespaces, root, cgroup, and with its user, capabilities, seccomp,
    /// Landlock and environment; `user`, `group`, `cwd`, `env`, `tty` and the streams of this
    /// spec apply on top. Everything that shapes a sandbox (root, mounts, limits, namespaces)
    /// belongs to the sandbox and is refused here. The command's leftovers stay in the sandbox
    /// (they end with it); its report is the command's own (no cgroup figures).
    pub exec_in: Option<String>,
}

/// The system-call filter.
///
/// Serialized as `"default"`, `"none"`, or an OCI `linux.seccomp` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Seccomp {
    /// A named profile.
    Mode(SeccompMode),
    /// An OCI runtime-spec `linux.seccomp` profile.
    Profile(OciSeccomp),
}

impl Default for Seccomp {
    fn default() -> Self {
        Seccomp::Mode(SeccompMode::Default)
    }
}

/// Named seccomp profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// cagette's default profile (see [`crate::DEFAULT_DENIED_SYSCALLS`]).
    Default,
    /// No filter.
    None,
}

/// An OCI `linux.seccomp` profile (runtime-spec `config-linux.md`).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSeccomp {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<OciSyscall>,
}

/// One rule of an OCI seccomp profile.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<OciSyscallArg>,
}

/// An argument condition of an OCI seccomp rule.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSyscallArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// Landlock rules: everything is read-only (and executable) except the `writable` paths.
///
/// ```
/// let l: cagette::Landlock = serde_json::from_str(r#"{"writable": ["/tmp", "/out"]}"#).unwrap();
/// assert_eq!(l.writable.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Landlock {
    /// Paths inside the sandbox where writing is allowed (with everything else).
    pub writable: Vec<String>,
}

/// I/O limits on one block device.
///
/// ```
/// let l: cagette::IoMax = serde_json::from_str(r#"{"device": "/dev/vda", "rbps": "10M"}"#).unwrap();
/// assert_eq!(l.rbps.unwrap().bytes(), 10 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoMax {
    /// The device: a path (`/dev/vda`) or `MAJOR:MINOR`.
    pub device: String,
    /// Read bytes per second.
    #[serde(default)]
    pub rbps: Option<Size>,
    /// Write bytes per second.
    #[serde(default)]
    pub wbps: Option<Size>,
    /// Read operations per second.
    #[serde(default)]
    pub riops: Option<u64>,
    /// Write operations per second.
    #[serde(default)]
    pub wiops: Option<u64>,
}

/// How ids map in a new user namespace without explicit maps (see [`SandboxSpec::userns`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernsMode {
    /// As root, a private range of unprivileged host ids; otherwise your own id as 0.
    #[default]
    Auto,
    /// Your own id as 0 (as root: host root).
    Host,
}

/// What an OOM kill of one of the job's processes does (see [`SandboxSpec::oom_policy`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OomPolicy {
    /// The whole job is killed; the verdict is `oom_killed`.
    #[default]
    KillJob,
    /// Only the process the kernel chose dies; the job goes on (the report counts the kills).
    Continue,
}

/// When a job gets a cgroup of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// When a resource limit is set.
    #[default]
    Auto,
    /// Always (the usage report then comes from the cgroup).
    Always,
    /// Never; a resource limit is then an error.
    Never,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            argv: Vec::new(),
            env: BTreeMap::new(),
            inherit_env: false,
            cwd: None,
            cwd_host: false,
            hostname: None,
            namespaces: Namespaces::default(),
            network: Network::None,
            publish: Vec::new(),
            dns: Vec::new(),
            add_hosts: Vec::new(),
            allow_host_loopback: false,
            userns: UsernsMode::Auto,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            user: None,
            group: None,
            supplementary_groups: Vec::new(),
            rootfs: None,
            rootfs_writable: false,
            rootfs_propagation: None,
            umask: None,
            image: None,
            image_store: None,
            image_upper: None,
            image_work: None,
            entrypoint: None,
            mounts: Vec::new(),
            follow_symlinks: false,
            devices: Vec::new(),
            proc: true,
            dev: true,
            tmp: true,
            sys: true,
            masked_paths: None,
            readonly_paths: None,
            rlimits: Vec::new(),
            capabilities: None,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            ambient_capabilities: false,
            no_new_privs: true,
            seccomp: Seccomp::Mode(SeccompMode::Default),
            seccomp_allow: Vec::new(),
            seccomp_deny: Vec::new(),
            seccomp_kill: false,
            allow_user_namespaces: false,
            landlock: None,
            tty: false,
            name: None,
            exec_in: None,
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            pass_fds: Vec::new(),
            timeout: None,
            cpu_time: None,
            memory: None,
            oom_policy: OomPolicy::KillJob,
            memory_high: None,
            memory_swap: None,
            cpus: None,
            cpu_period: None,
            cpu_weight: None,
            pids: None,
            cpuset_cpus: None,
            cpuset_mems: None,
            io_weight: None,
            io_max: Vec::new(),
            cgroup: CgroupMode::Auto,
            cgroup_parent: None,
        }
    }
}

/// A spec given as JSON that does not fit: an unknown key (`unknown_key`) or a bad value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// True for a key the spec does not have (a type error in the bindings' terms), false for
    /// a bad value.
    pub unknown_key: bool,
    /// What is wrong, naming the key or value (without serde's line/column position).
    pub message: String,
}

impl SpecError {
    /// What the Python and Node bindings raise for it, as (kind, JSON payload): kind
    /// `spec_key` (a TypeError there) or `spec_value` (a ValueError).
    pub fn binding_payload(&self) -> (&'static str, serde_json::Value) {
        (if self.unknown_key { "spec_key" } else { "spec_value" }, serde_json::json!({ "message": self.message }))
    }
}

impl SandboxSpec {
    /// Whether the sandbox's file system is built (a rootfs, an image or mounts), as opposed to
    /// running in the mount namespace it joins or shares as it is.
    pub(crate) fn builds_root(&self) -> bool {
        self.rootfs.is_some() || !self.mounts.is_empty() || self.image.is_some()
    }

    /// Parses a spec from JSON, as the bindings and `cagette run --spec` give it.
    ///
    /// ```
    /// let e = cagette::SandboxSpec::from_json(r#"{"memry": "1G"}"#).unwrap_err();
    /// assert!(e.unknown_key && e.message.contains("memry") && e.message.contains("did you mean `memory`?"));
    /// assert!(cagette::SandboxSpec::from_json(r#"{"memory": "1G"}"#).is_ok());
    /// ```
    pub fn from_json(json: &str) -> Result<SandboxSpec, SpecError> {
        let spec: SandboxSpec = serde_json::from_str(json).map_err(|e| {
            // serde_json appends " at line L column C": meaningless for keyword arguments.
            let full = e.to_string();
            let mut message = full.rfind(" at line ").map(|i| full[..i].to_string()).unwrap_or(full);
            let unknown_key = message.starts_with("unknown field");
            if let Some(s) = unknown_key.then(|| suggestion(&message)).flatten() {
                let head = message.split(", expected").next().unwrap_or_default().to_string();
                message = format!("{head}: did you mean `{s}`?");
            }
            SpecError { unknown_key, message }
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every value that can be checked without the host (ids, durations, sizes, counts,
    /// modes); every spawn does it too, before anything is set up.
    ///
    /// ```
    /// let mut spec = cagette::SandboxSpec { argv: vec!["true".into()], ..Default::default() };
    /// spec.user = Some(u32::MAX);
    /// assert!(spec.validate().unwrap_err().message.contains("out of range"));
    /// ```
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::sandbox::validate::values(self).map_err(|f| SpecError {
            unknown_key: false,
            message: match &f.hint {
                Some(h) => format!("{} (hint: {h})", f.message),
                None => f.message,
            },
        })
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`": the expected name closest to `x`
/// (by edit distance, at most a third of its length away).
fn suggestion(message: &str) -> Option<String> {
    let mut parts = message.split('`');
    let got = parts.nth(1)?.to_string();
    let expected: Vec<&str> = message.split_once("expected")?.1.split('`').skip(1).step_by(2).collect();
    let dist = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + usize::from(a[i - 1] != b[j - 1]));
            }
            prev = cur;
        }
        prev[b.len()]
    };
    let (best, d) = expected.iter().map(|e| (*e, dist(&got, e))).min_by_key(|(_, d)| *d)?;
    (d > 0 && d <= got.chars().count().max(3) / 3 + 1).then(|| best.to_string())
}

/// Paths masked by default, as runc does: a file is covered with `/dev/null`, a directory with an
/// empty read-only tmpfs. Paths that do not exist are skipped.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths made read-only by default, as runc does. Paths that do not exist are skipped.
pub const DEFAULT_READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// How one namespace is set up.
///
/// Serialized as `"new"`, `"host"` or `{"join": "/proc/1234/ns/net"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsMode {
    /// A fresh namespace (the default for every kind).
    #[default]
    New,
    /// Stay in the host process's namespace.
    Host,
    /// Join the namespace at this path (e.g. `/proc/PID/ns/net` or a bind-mounted ns file).
    Join(PathBuf),
}

/// The namespaces of a sandbox (the network namespace is set by [`Network`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Namespaces {
    /// User namespace: uid 0 inside maps to an unprivileged or chosen id outside.
    pub user: NsMode,
    /// Pid namespace: a tiny init is pid 1; the host's processes are invisible. Joined: the
    /// init is born in the joined namespace (a thread of the caller joins it to clone).
    pub pid: NsMode,
    /// Mount namespace: needed for any file-system setup. Joined with a rootfs or mounts: the
    /// root is built and pivoted there (never in the caller's own). `Host` with a rootfs: only
    /// for a detached sandbox (an OCI runtime's), whose root is the rootfs bound onto itself in
    /// the host's mount namespace and entered with chroot; its caller unmounts it at the end.
    pub mount: NsMode,
    /// UTS namespace: hostname.
    pub uts: NsMode,
    /// IPC namespace: System V IPC and POSIX message queues.
    pub ipc: NsMode,
    /// Cgroup namespace: the job's cgroup appears as the root.
    pub cgroup: NsMode,
    /// Time namespace: own monotonic and boot-time clocks.
    pub time: NsMode,
}

/// The sandbox's network.
///
/// Serialized as `"none"`, `"private"`, `"bridge"`, `"host"` or `{"join": "/run/netns/test"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A new network namespace with only the loopback interface, up.
    #[default]
    None,
    /// A new network namespace with a default route out through a user-mode network stack
    /// (`slirp4netns`, a helper process that is part of the job): egress works, the host's
    /// loopback and link-local addresses are refused (see `allow_host_loopback`), ports are
    /// forwarded with `publish`, and `/etc/resolv.conf` and `/etc/hosts` are the sandbox's own.
    Private,
    /// Root only: a new network namespace joined to the host by a veth pair (`eth0` inside, an
    /// address from 10.217.0.0/16), routed and masqueraded by the host's kernel — bulk traffic
    /// at the kernel's speed. The host itself, other sandboxes, loopback and link-local addresses
    /// are refused by an nftables table of cagette's; IPv4 forwarding must be on. No `publish`.
    Bridge,
    /// The host's network.
    Host,
    /// Join an existing network namespace.
    Join(PathBuf),
}

impl Network {
    /// Whether the sandbox gets a network namespace of its own (`none`, `private`, `bridge`).
    pub fn own_namespace(&self) -> bool {
        matches!(self, Network::None | Network::Private | Network::Bridge)
    }

    /// Whether the job has a way out that cagette sets up (`private` and `bridge`).
    pub fn routed(&self) -> bool {
        matches!(self, Network::Private | Network::Bridge)
    }
}

/// A port of a private-network sandbox forwarded from the host: `[HOST_IP:]HOST_PORT:SANDBOX_PORT[/tcp|/udp]`.
///
/// ```
/// let p: cagette::Publish = "8080:80".parse().unwrap();
/// assert_eq!((p.host_port, p.sandbox_port, p.udp), (8080, 80, false));
/// assert_eq!(p.host_ip.to_string(), "127.0.0.1");
/// assert!("80".parse::<cagette::Publish>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Publish {
    /// The host address to listen on (default 127.0.0.1).
    pub host_ip: std::net::Ipv4Addr,
    /// The host port.
    pub host_port: u16,
    /// The port inside the sandbox.
    pub sandbox_port: u16,
    /// UDP instead of TCP.
    pub udp: bool,
}

impl std::str::FromStr for Publish {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("publish {s:?}: {why} (expected [HOST_IP:]HOST_PORT:SANDBOX_PORT[/tcp|/udp], e.g. 8080:80)");
        let (ports, udp) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, false),
            Some((p, "udp")) => (p, true),
            Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
            None => (s, false),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, inside) = match parts.as_slice() {
            [h, i] => (None, *h, *i),
            [a, h, i] => (Some(*a), *h, *i),
            _ => return Err(bad("wrong number of fields")),
        };
        let port = |p: &str, which: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(&format!("{which} port {p:?} is not a number from 1 to 65535"))),
            Ok(n) => Ok(n),
        };
        let host_ip = match ip {
            Some(a) => a.parse().map_err(|_| bad(&format!("host address {a:?} is not an IPv4 address")))?,
            None => std::net::Ipv4Addr::LOCALHOST,
        };
        Ok(Publish { host_ip, host_port: port(host, "host")?, sandbox_port: port(inside, "sandbox")?, udp })
    }
}

impl TryFrom<String> for Publish {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Publish> for String {
    fn from(p: Publish) -> String {
        format!("{}:{}:{}/{}", p.host_ip, p.host_port, p.sandbox_port, if p.udp { "udp" } else { "tcp" })
    }
}

/// An extra `/etc/hosts` line of a private-network sandbox: `NAME:IP`.
///
/// ```
/// let h: cagette::HostEntry = "db:10.0.2.2".parse().unwrap();
/// assert_eq!(h.name, "db");
/// assert!("db".parse::<cagette::HostEntry>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostEntry {
    /// The host name.
    pub name: String,
    /// Its address.
    pub ip: std::net::IpAddr,
}

impl std::str::FromStr for HostEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("add_host {s:?}: {why} (expected NAME:IP, e.g. db:10.0.2.2)");
        let (name, ip) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let valid = !name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') && !name.starts_with(['-', '.']);
        if !valid {
            return Err(bad("the name must be letters, digits, '-' and '.'"));
        }
        let ip = ip.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad(&format!("{ip:?} is not an IP address")))?;
        Ok(HostEntry { name: name.to_string(), ip })
    }
}

impl TryFrom<String> for HostEntry {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<HostEntry> for String {
    fn from(h: HostEntry) -> String {
        format!("{}:{}", h.name, h.ip)
    }
}

/// One range of a uid or gid mapping: ids `inside..inside+count` in the sandbox are
/// `outside..outside+count` on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// First id inside the sandbox.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// Where a standard stream of the payload goes.
///
/// Serialized as `"inherit"`, `"null"`, `"piped"` or `{"fd": 5}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stdio {
    /// The host process's own stream.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe to the [`crate::Child`] (`stdin`, `stdout`, `stderr` fields).
    Piped,
    /// A host file descriptor (duplicated; the caller keeps its own).
    Fd(i32),
}

/// A host file descriptor handed to the payload as `sandbox`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassFd {
    /// The descriptor in the host process.
    pub host: i32,
    /// The number it gets in the payload (3 or more).
    pub sandbox: i32,
}

/// A resource limit (setrlimit) for the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// Which resource.
    pub resource: RlimitResource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Resources that [`Rlimit`] can limit; names as in `ulimit`/prlimit(1), lower case.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RlimitResource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl RlimitResource {
    pub(crate) fn number(self) -> i32 {
        use RlimitResource::*;
        (match self {
            As => libc::RLIMIT_AS,
            Core => libc::RLIMIT_CORE,
            Cpu => libc::RLIMIT_CPU,
            Data => libc::RLIMIT_DATA,
            Fsize => libc::RLIMIT_FSIZE,
            Locks => libc::RLIMIT_LOCKS,
            Memlock => libc::RLIMIT_MEMLOCK,
            Msgqueue => libc::RLIMIT_MSGQUEUE,
            Nice => libc::RLIMIT_NICE,
            Nofile => libc::RLIMIT_NOFILE,
            Nproc => libc::RLIMIT_NPROC,
            Rss => libc::RLIMIT_RSS,
            Rtprio => libc::RLIMIT_RTPRIO,
            Rttime => libc::RLIMIT_RTTIME,
            Sigpending => libc::RLIMIT_SIGPENDING,
            Stack => libc::RLIMIT_STACK,
        }) as i32
    }
}

/// A mount inside the sandbox. Destinations are absolute paths inside the sandbox, resolved inside
/// its root (a symlink in the root can never redirect a mount to the host); missing directories
/// are created.
///
/// ```
/// use cagette::Mount;
/// let m = Mount::bind("./src", "/src").read_only();
/// let t = Mount::tmpfs("/scratch").size("64M".parse().unwrap());
/// assert_eq!(m.destination(), "/src");
/// # let _ = t;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mount {
    /// A host file or directory seen at `destination`.
    Bind {
        /// Host path (relative paths are taken from the host process's cwd at spawn).
        source: PathBuf,
        /// Path inside the sandbox.
        destination: String,
        /// Refuse writes (applied to every mount below it too).
        #[serde(default)]
        read_only: bool,
        /// Include the mounts below `source` (default true).
        #[serde(default = "yes")]
        recursive: bool,
        /// nosuid, noexec and access-time flags (nodev is always set).
        #[serde(default)]
        flags: MountFlags,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Path inside the sandbox.
        destination: String,
        /// Size limit (default: the kernel's, half of RAM).
        #[serde(default)]
        size: Option<Size>,
        /// Mode of its root directory (default 0o1777).
        #[serde(default)]
        mode: Option<u32>,
        /// noexec and access-time flags (nosuid and nodev are always set).
        #[serde(default)]
        flags: MountFlags,
        /// Its source as /proc/self/mountinfo shows it (default "tmpfs").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// A fresh procfs of the sandbox's pid namespace.
    Proc {
        /// Path inside the sandbox.
        destination: String,
    },
    /// A fresh, read-only sysfs (needs a network namespace of the sandbox's own).
    Sysfs {
        /// Path inside the sandbox.
        destination: String,
    },
    /// A fresh POSIX message queue file system (of the sandbox's IPC namespace).
    Mqueue {
        /// Path inside the sandbox.
        destination: String,
    },
    /// The sandbox's cgroups: cgroup2 on a v2 host; on a v1 host a tmpfs with each controller's
    /// hierarchy mounted below it. Needs a cgroup namespace of the sandbox's own (then only the
    /// job's own cgroup is seen).
    Cgroup {
        /// Path inside the sandbox.
        destination: String,
        /// Refuse writes (default true).
        #[serde(default = "yes")]
        read_only: bool,
    },
    /// A minimal /dev: null, zero, full, random, urandom, tty, a private devpts with ptmx, shm,
    /// and the fd, stdin, stdout, stderr links.
    Dev {
        /// Path inside the sandbox.
        destination: String,
        /// The tmpfs's size limit (default 64 KiB: it holds device nodes and links).
        #[serde(default)]
        size: Option<Size>,
        /// Access-time flags (it is always nosuid and noexec).
        #[serde(default)]
        flags: MountFlags,
    },
    /// An overlay of read-only `lower` directories (first is topmost) with a writable upper layer:
    /// `upper`/`work` on the host, or, when `upper` is `None`, an ephemeral tmpfs discarded with
    /// the sandbox.
    Overlay {
        /// Path inside the sandbox.
        destination: String,
        /// Lower directories on the host, topmost first.
        lower: Vec<PathBuf>,
        /// Persistent upper directory on the host.
        #[serde(default)]
        upper: Option<PathBuf>,
        /// Work directory on the host (same file system as `upper`).
        #[serde(default)]
        work: Option<PathBuf>,
    },
}

fn yes() -> bool {
    true
}

/// Flags of a mount beyond those cagette always sets (every mount but /dev is nodev; tmpfs,
/// proc, sysfs and /dev are nosuid).
///
/// ```
/// let f: cagette::MountFlags = serde_json::from_str(r#"{"noexec": true, "atime": "strictatime"}"#).unwrap();
/// assert!(f.noexec && !f.nosuid);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountFlags {
    /// Ignore set-user-id and set-group-id bits and file capabilities.
    pub nosuid: bool,
    /// Refuse to execute files.
    pub noexec: bool,
    /// How access times are updated.
    pub atime: Atime,
    /// Mount propagation inside the sandbox's mount namespace (default private; the host never
    /// shares with it either way: the sandbox's mount tree is a private copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

/// Mount propagation (mount(8)'s --make-* options), within the sandbox's mount namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// Neither receives nor sends mount events.
    Private,
    /// Private, with every mount below it.
    Rprivate,
    /// Shares mount events with its peers (in the sandbox).
    Shared,
    /// Shared, with every mount below it.
    Rshared,
    /// Receives its master's mount events, sends none.
    Slave,
    /// Slave, with every mount below it.
    Rslave,
    /// Private, and cannot be bind-mounted.
    Unbindable,
    /// Unbindable, with every mount below it.
    Runbindable,
}

impl Propagation {
    /// The mount(2) flags.
    pub(crate) fn flags(self) -> u64 {
        let (base, rec) = match self {
            Propagation::Private => (libc::MS_PRIVATE, false),
            Propagation::Rprivate => (libc::MS_PRIVATE, true),
            Propagation::Shared => (libc::MS_SHARED, false),
            Propagation::Rshared => (libc::MS_SHARED, true),
            Propagation::Slave => (libc::MS_SLAVE, false),
            Propagation::Rslave => (libc::MS_SLAVE, true),
            Propagation::Unbindable => (libc::MS_UNBINDABLE, false),
            Propagation::Runbindable => (libc::MS_UNBINDABLE, true),
        };
        base | if rec { libc::MS_REC } else { 0 }
    }
}

/// Access-time updates of a mount (mount(8)'s relatime, strictatime, noatime, nodiratime).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Atime {
    /// The kernel's default: updated when older than the modification time or a day.
    #[default]
    Relatime,
    /// Always updated.
    Strictatime,
    /// Never updated.
    Noatime,
    /// Not updated for directories (relatime for files).
    Nodiratime,
}

impl MountFlags {
    /// The MOUNT_ATTR_* bits these flags set.
    pub(crate) fn attrs(&self) -> u64 {
        let mut a = 0;
        if self.nosuid {
            a |= crate::child::sys::MOUNT_ATTR_NOSUID;
        }
        if self.noexec {
            a |= crate::child::sys::MOUNT_ATTR_NOEXEC;
        }
        a | match self.atime {
            Atime::Relatime => 0,
            Atime::Noatime => 0x10,
            Atime::Strictatime => 0x20,
            Atime::Nodiratime => 0x80,
        }
    }
}

impl Mount {
    /// Bind `source` (host) at `destination` (sandbox), read-write and recursive.
    pub fn bind(source: impl Into<PathBuf>, destination: impl Into<String>) -> Mount {
        Mount::Bind { source: source.into(), destination: destination.into(), read_only: false, recursive: true, flags: MountFlags::default() }
    }

    /// A tmpfs at `destination`.
    pub fn tmpfs(destination: impl Into<String>) -> Mount {
        Mount::Tmpfs { destination: destination.into(), size: None, mode: None, flags: MountFlags::default(), source: None }
    }

    /// A fresh procfs at `destination`.
    pub fn proc(destination: impl Into<String>) -> Mount {
        Mount::Proc { destination: destination.into() }
    }

    /// A minimal /dev at `destination`.
    pub fn dev(destination: impl Into<String>) -> Mount {
        Mount::Dev { destination: destination.into(), size: None, flags: MountFlags::default() }
    }

    /// An overlay of `lower` (topmost first) with an ephemeral upper layer.
    pub fn overlay<P: Into<PathBuf>>(lower: impl IntoIterator<Item = P>, destination: impl Into<String>) -> Mount {
        Mount::Overlay {
            destination: destination.into(),
            lower: lower.into_iter().map(Into::into).collect(),
            upper: None,
            work: None,
        }
    }

    /// Make a bind mount read-only (no effect on other kinds).
    pub fn read_only(mut self) -> Mount {
        if let Mount::Bind { read_only, .. } = &mut self {
            *read_only = true;
        }
        self
    }

    /// Bind only the mount at `source`, not those below it.
    pub fn non_recursive(mut self) -> Mount {
        if let Mount::Bind { recursive, .. } = &mut self {
            *recursive = false;
        }
        self
    }

    /// Set a tmpfs's size limit (no effect on other kinds).
    pub fn size(mut self, bytes: Size) -> Mount {
        if let Mount::Tmpfs { size, .. } = &mut self {
            *size = Some(bytes);
        }
        self
    }

    /// Set a tmpfs's root mode (no effect on other kinds).
    pub fn mode(mut self, m: u32) -> Mount {
        if let Mount::Tmpfs { mode, .. } = &mut self {
            *mode = Some(m);
        }
        self
    }

    /// Give an overlay a persistent upper and work directory (no effect on other kinds).
    pub fn upper(mut self, upper_dir: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Mount {
        if let Mount::Overlay { upper, work, .. } = &mut self {
            *upper = Some(upper_dir.into());
            *work = Some(work_dir.into());
        }
        self
    }

    /// The destination inside the sandbox.
    pub fn destination(&self) -> &str {
        match self {
            Mount::Bind { destination, .. }
            | Mount::Tmpfs { destination, .. }
            | Mount::Proc { destination }
            | Mount::Sysfs { destination }
            | Mount::Mqueue { destination }
            | Mount::Cgroup { destination, .. }
            | Mount::Dev { destination, .. }
            | Mount::Overlay { destination, .. } => destination,
        }
    }
}
