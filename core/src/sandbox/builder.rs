//! The builder: a chainable way to fill a [`SandboxSpec`].

use crate::security::caps::Capability;
use crate::sandbox::child::Child;
use crate::error::Result;
use crate::sandbox::spec::{CgroupMode, IdMap, Mount, Network, NsMode, OomPolicy, PassFd, Rlimit, RlimitResource, SandboxSpec, Seccomp, Stdio, UsernsMode};
use crate::sandbox::units::Size;
use crate::sandbox::verdict::{Outcome, Output};
use std::path::PathBuf;
use std::time::Duration;

/// Builds and runs sandboxes. Every method edits the underlying [`SandboxSpec`]; a `Sandbox` can be
/// reused to spawn many jobs.
///
/// ```
/// use cagette::{Mount, Network, Sandbox, Verdict};
/// let out = Sandbox::new()
///     .network(Network::None)
///     .hostname("box")
///     .mount(Mount::bind("/usr", "/opt/usr").read_only())
///     .command("sh")
///     .args(["-c", "hostname; test -d /opt/usr/bin"])
///     .output()
///     .unwrap();
/// assert_eq!(out.status, Verdict::Exited(0));
/// assert_eq!(out.stdout, b"box\n");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sandbox {
    spec: SandboxSpec,
}

impl Sandbox {
    /// A sandbox with every namespace new, no network, the host's `/` read-only as root.
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    /// A sandbox from a complete spec (as the CLI and the bindings build it).
    pub fn from_spec(spec: SandboxSpec) -> Sandbox {
        Sandbox { spec }
    }

    /// The spec built so far.
    pub fn spec(&self) -> &SandboxSpec {
        &self.spec
    }

    /// The spec, for editing fields that have no builder method.
    pub fn spec_mut(&mut self) -> &mut SandboxSpec {
        &mut self.spec
    }

    /// Sets the command (argv\[0\]), clearing previous arguments.
    pub fn command(mut self, program: impl Into<String>) -> Sandbox {
        self.spec.argv = vec![program.into()];
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Sandbox {
        self.spec.argv.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Sandbox
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Sandbox {
        self.spec.env.insert(key.into(), value.into());
        self
    }

    /// Starts from the host's environment instead of the minimal default.
    pub fn inherit_env(mut self, yes: bool) -> Sandbox {
        self.spec.inherit_env = yes;
        self
    }

    /// Sets the working directory inside the sandbox.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Sandbox {
        self.spec.cwd = Some(dir.into());
        self
    }

    /// Registers the sandbox under `name` while it runs: [`crate::list_sandboxes`] lists it and
    /// [`exec_in`](Self::exec_in) runs more commands in it.
    ///
    /// ```no_run
    /// let mut web = cagette::Sandbox::new().name("web").command("httpd").args(["-f"]).spawn()?;
    /// let ps = cagette::Sandbox::new().exec_in("web").command("ps").output()?;
    /// # Ok::<(), cagette::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Sandbox {
        self.spec.name = Some(name.into());
        self
    }

    /// Runs the command in the running sandbox `name` instead of a new one (as `docker exec`;
    /// see [`SandboxSpec::exec_in`](crate::SandboxSpec::exec_in)).
    pub fn exec_in(mut self, name: impl Into<String>) -> Sandbox {
        self.spec.exec_in = Some(name.into());
        self
    }

    /// Sets the hostname.
    pub fn hostname(mut self, name: impl Into<String>) -> Sandbox {
        self.spec.hostname = Some(name.into());
        self
    }

    /// Sets the network.
    pub fn network(mut self, n: Network) -> Sandbox {
        self.spec.network = n;
        self
    }

    /// With [`Network::Private`]: forwards host ports into the sandbox.
    ///
    /// ```no_run
    /// use cagette::{Network, Sandbox};
    /// let child = Sandbox::new().network(Network::Private).publish(["8080:80".parse().unwrap()]).command("httpd").args(["-f", "-p", "80"]).spawn();
    /// ```
    pub fn publish(mut self, ports: impl IntoIterator<Item = crate::sandbox::spec::Publish>) -> Sandbox {
        self.spec.publish.extend(ports);
        self
    }

    /// With [`Network::Private`]: the name servers of the sandbox's `/etc/resolv.conf`.
    pub fn dns(mut self, servers: impl IntoIterator<Item = std::net::IpAddr>) -> Sandbox {
        self.spec.dns.extend(servers);
        self
    }

    /// With [`Network::Private`]: an extra `/etc/hosts` line.
    pub fn add_host(mut self, name: impl Into<String>, ip: std::net::IpAddr) -> Sandbox {
        self.spec.add_hosts.push(crate::sandbox::spec::HostEntry { name: name.into(), ip });
        self
    }

    /// With [`Network::Private`]: lets the sandbox reach the host's loopback (as 10.0.2.2) and
    /// link-local addresses.
    pub fn allow_host_loopback(mut self, yes: bool) -> Sandbox {
        self.spec.allow_host_loopback = yes;
        self
    }

    /// Sets the user namespace mode.
    pub fn user_namespace(mut self, m: NsMode) -> Sandbox {
        self.spec.namespaces.user = m;
        self
    }

    /// Sets the pid namespace mode.
    pub fn pid_namespace(mut self, m: NsMode) -> Sandbox {
        self.spec.namespaces.pid = m;
        self
    }

    /// Maps uids of a new user namespace.
    pub fn uid_map(mut self, maps: impl IntoIterator<Item = IdMap>) -> Sandbox {
        self.spec.uid_map = maps.into_iter().collect();
        self
    }

    /// Maps gids of a new user namespace.
    pub fn gid_map(mut self, maps: impl IntoIterator<Item = IdMap>) -> Sandbox {
        self.spec.gid_map = maps.into_iter().collect();
        self
    }

    /// Runs the payload as `uid` (inside).
    pub fn user(mut self, uid: u32) -> Sandbox {
        self.spec.user = Some(uid);
        self
    }

    /// Runs the payload with primary group `gid` (inside).
    pub fn group(mut self, gid: u32) -> Sandbox {
        self.spec.group = Some(gid);
        self
    }

    /// Uses `dir` as the root file system.
    pub fn rootfs(mut self, dir: impl Into<PathBuf>) -> Sandbox {
        self.spec.rootfs = Some(dir.into());
        self
    }

    /// Leaves the rootfs writable.
    pub fn rootfs_writable(mut self, yes: bool) -> Sandbox {
        self.spec.rootfs_writable = yes;
        self
    }

    /// Adds a mount.
    pub fn mount(mut self, m: Mount) -> Sandbox {
        self.spec.mounts.push(m);
        self
    }

    /// Adds a resource limit.
    pub fn rlimit(mut self, resource: RlimitResource, soft: u64, hard: u64) -> Sandbox {
        self.spec.rlimits.push(Rlimit { resource, soft, hard });
        self
    }

    /// Sets the capabilities the payload keeps (replacing the default set).
    pub fn capabilities(mut self, caps: impl IntoIterator<Item = Capability>) -> Sandbox {
        self.spec.capabilities = Some(caps.into_iter().collect());
        self
    }

    /// Sets the payload's stdin.
    pub fn stdin(mut self, s: Stdio) -> Sandbox {
        self.spec.stdin = s;
        self
    }

    /// Sets the payload's stdout.
    pub fn stdout(mut self, s: Stdio) -> Sandbox {
        self.spec.stdout = s;
        self
    }

    /// Sets the payload's stderr.
    pub fn stderr(mut self, s: Stdio) -> Sandbox {
        self.spec.stderr = s;
        self
    }

    /// Passes host fd `host` to the payload as fd `inside` (3 or more).
    pub fn pass_fd(mut self, host: i32, inside: i32) -> Sandbox {
        self.spec.pass_fds.push(PassFd { host, sandbox: inside });
        self
    }

    /// Sets the wall-clock timeout.
    pub fn timeout(mut self, t: Duration) -> Sandbox {
        self.spec.timeout = Some(t);
        self
    }

    /// Limits the whole job's memory (a cgroup): over it the job is OOM-killed. At least
    /// [`crate::MIN_MEMORY`].
    ///
    /// ```
    /// let sb = cagette::Sandbox::new().memory("256M".parse().unwrap()).cpus(0.5).pids(64);
    /// assert_eq!(sb.spec().memory.unwrap().bytes(), 256 << 20);
    /// ```
    pub fn memory(mut self, bytes: Size) -> Sandbox {
        self.spec.memory = Some(bytes);
        self
    }

    /// Limits the job's CPU use to this many CPUs (0.5 = half of one).
    pub fn cpus(mut self, cpus: f64) -> Sandbox {
        self.spec.cpus = Some(cpus);
        self
    }

    /// Limits the number of processes and threads of the job.
    pub fn pids(mut self, max: u64) -> Sandbox {
        self.spec.pids = Some(max);
        self
    }

    /// Kills the job once it has used this much CPU time (user + system, every process).
    pub fn cpu_time_limit(mut self, t: Duration) -> Sandbox {
        self.spec.cpu_time = Some(t);
        self
    }

    /// What an OOM kill of one of the job's processes does (default: the whole job ends).
    pub fn oom_policy(mut self, p: OomPolicy) -> Sandbox {
        self.spec.oom_policy = p;
        self
    }

    /// Gives the job a cgroup even without limits (for its usage report), or never one.
    pub fn cgroup(mut self, mode: CgroupMode) -> Sandbox {
        self.spec.cgroup = mode;
        self
    }

    /// The cgroup path under which the job's cgroup is made (`/ci/jobs`).
    pub fn cgroup_parent(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.spec.cgroup_parent = Some(path.into());
        self
    }

    /// Runs from an image of the store (`name:tag`).
    pub fn image(mut self, name: impl Into<String>) -> Sandbox {
        self.spec.image = Some(name.into());
        self
    }

    /// With [`image`](Self::image): keeps what the job writes to the root in `upper` (the root
    /// overlay's upper layer; `work` is its work directory, an empty one on the same file
    /// system). [`crate::write_layer`] makes a layer of `upper`.
    ///
    /// ```no_run
    /// let o = cagette::Sandbox::new().image("busybox:1").image_upper("/tmp/b/upper", "/tmp/b/work")
    ///     .command("sh").args(["-c", "echo hi > /greeting"]).output()?;
    /// assert!(o.status.success());
    /// let layer = cagette::write_layer("/tmp/b/upper".as_ref(), 0, std::fs::File::create("/tmp/b/layer.tar.gz")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn image_upper(mut self, upper: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Sandbox {
        self.spec.image_upper = Some(upper.into());
        self.spec.image_work = Some(work.into());
        self
    }

    /// Gives the payload a terminal of its own ([`crate::Child::pty`], [`crate::Child::interact`]).
    pub fn tty(mut self, yes: bool) -> Sandbox {
        self.spec.tty = yes;
        self
    }

    /// Adds capabilities to the default set (or to the one set with [`Sandbox::capabilities`]).
    pub fn cap_add(mut self, caps: impl IntoIterator<Item = Capability>) -> Sandbox {
        self.spec.cap_add.extend(caps);
        self
    }

    /// Removes capabilities from the default set.
    pub fn cap_drop(mut self, caps: impl IntoIterator<Item = Capability>) -> Sandbox {
        self.spec.cap_drop.extend(caps);
        self
    }

    /// Sets the system-call filter (`Seccomp::Mode(SeccompMode::None)` for none).
    pub fn seccomp(mut self, s: Seccomp) -> Sandbox {
        self.spec.seccomp = s;
        self
    }

    /// Sets the host-id mode of a new user namespace (see [`UsernsMode`]).
    pub fn userns(mut self, mode: UsernsMode) -> Sandbox {
        self.spec.userns = mode;
        self
    }

    /// Follows symlinks in host paths (rootfs, bind sources, overlay directories).
    pub fn follow_symlinks(mut self, yes: bool) -> Sandbox {
        self.spec.follow_symlinks = yes;
        self
    }

    /// Adds a host device node the payload may use (`/dev/fuse`).
    pub fn device(mut self, path: impl Into<PathBuf>) -> Sandbox {
        self.spec.devices.push(path.into());
        self
    }

    /// Starts the sandbox. Returns once the payload has been executed, or with a
    /// [`crate::SetupFailure`] naming the step that failed (nothing is left running then).
    pub fn spawn(&self) -> Result<Child> {
        crate::sandbox::spawn::spawn(&self.spec)
    }

    /// Starts a sandbox that outlives this process (for OCI runtimes; see
    /// [`DetachOptions`](crate::DetachOptions)): returns once it is built (with a start FIFO:
    /// waiting for `start`) or its payload runs. No timeout, private network, name or allocated
    /// id range: nothing of this process may be needed once it is gone.
    ///
    /// ```no_run
    /// # fn main() -> cagette::Result<()> {
    /// let d = cagette::Sandbox::new().command("sleep").arg("60").spawn_detached(Default::default())?;
    /// assert!(d.pid > 0);
    /// # Ok(()) }
    /// ```
    pub fn spawn_detached(&self, opts: crate::DetachOptions) -> Result<crate::Detached> {
        crate::sandbox::spawn::spawn_detached(&self.spec, opts)
    }

    /// Runs the command and waits for it to end (its output goes where the spec says).
    pub fn status(&self) -> Result<Outcome> {
        self.spawn()?.wait()
    }

    /// Runs to the end, capturing stdout and stderr (those left at `inherit` become piped; stdin
    /// left at `inherit` becomes `/dev/null`), as `std::process::Command::output` does.
    pub fn output(&self) -> Result<Output> {
        let mut spec = self.spec.clone();
        if spec.stdin == Stdio::Inherit {
            spec.stdin = Stdio::Null;
        }
        if spec.stdout == Stdio::Inherit {
            spec.stdout = Stdio::Piped;
        }
        if spec.stderr == Stdio::Inherit {
            spec.stderr = Stdio::Piped;
        }
        crate::sandbox::spawn::spawn(&spec)?.wait_with_output()
    }
}
