//! A bundle's `config.json` (the OCI runtime spec, read with the `oci-spec` crate) translated
//! into cagette's one description of a sandbox ([`SandboxSpec`]) plus what only a runtime
//! needs: hooks, sysctls, device nodes, the OOM score, the cgroup's path, annotations.
//!
//! Every field is honoured or refused with an error naming it; none is dropped silently.
//! (Unknown properties are ignored, as the runtime spec requires of runtimes.)

use crate::error::RtError;
use cagette::{Atime, Capability, DeviceRule, MountFlags, Propagation, CgroupMode, IdMap, Mount, Network, NsMode, OciSeccomp, Rlimit, RlimitResource, SandboxSpec, Seccomp, SeccompMode, Size, Stdio, UsernsMode};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType, Spec};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The most a config.json may weigh (a bundle is untrusted input).
pub const MAX_CONFIG: u64 = 4 << 20;

/// What `create` needs beyond the sandbox itself.
#[derive(Debug)]
pub struct Translated {
    pub sandbox: SandboxSpec,
    pub hooks: oci_spec::runtime::Hooks,
    /// Namespaced sysctls, written inside the container's namespaces before it starts.
    pub sysctl: Vec<(String, String)>,
    pub oom_score_adj: Option<i32>,
    /// Device nodes made in the container's /dev before it starts.
    pub devices: Vec<LinuxDevice>,
    /// Devices the device cgroup allows beyond the standard ones: `linux.resources.devices`'
    /// allow rules in their order, then the device nodes.
    pub allow_devices: Vec<DeviceRule>,
    /// The cgroup's own name (its parent is the sandbox's `cgroup_parent`).
    pub cgroup_name: String,
    pub terminal: bool,
    pub annotations: BTreeMap<String, String>,
}

fn refuse(field: &str, why: impl std::fmt::Display) -> RtError {
    RtError::Config(format!("{field}: {why}"))
}

/// Reads and parses `<bundle>/config.json` (bounded; a FIFO or device is refused).
pub fn load(bundle: &Path) -> Result<Spec, RtError> {
    let path = bundle.join("config.json");
    let bytes = read_bounded(&path, MAX_CONFIG).map_err(|e| RtError::Bundle(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| RtError::Bundle(format!("{}: {e}", path.display())))?;
    // The error names the field (process.args: invalid type ...).
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize::<_, Spec>(de).map_err(|e| {
        let path = e.path().to_string();
        RtError::Config(if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) })
    })
}

/// Reads a file the runtime is told to read (config.json, `exec --process`, `update -r`, a
/// container's state): at most `max` bytes, never through a symlink at its last component, never
/// blocking on a FIFO (opened non-blocking, then anything but a regular file is refused).
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let f = std::fs::File::options().read(true).custom_flags_nofollow().open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) { Error::new(ErrorKind::InvalidInput, "a symlink: give the file itself") } else { e }
    })?;
    if !f.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(Error::new(ErrorKind::InvalidInput, format!("larger than {max} bytes")));
    }
    Ok(buf)
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
    }
}

fn caps(set: &Option<oci_spec::runtime::Capabilities>) -> Result<Vec<Capability>, RtError> {
    let mut v = Vec::new();
    for c in set.iter().flatten() {
        let name = c.to_string();
        v.push(name.parse::<Capability>().map_err(|e| refuse("process.capabilities", e))?);
    }
    v.sort_by_key(|c| c.to_string());
    v.dedup();
    Ok(v)
}

fn rlimit(t: oci_spec::runtime::PosixRlimitType) -> RlimitResource {
    use oci_spec::runtime::PosixRlimitType as T;
    match t {
        T::RlimitCpu => RlimitResource::Cpu,
        T::RlimitFsize => RlimitResource::Fsize,
        T::RlimitData => RlimitResource::Data,
        T::RlimitStack => RlimitResource::Stack,
        T::RlimitCore => RlimitResource::Core,
        T::RlimitRss => RlimitResource::Rss,
        T::RlimitNproc => RlimitResource::Nproc,
        T::RlimitNofile => RlimitResource::Nofile,
        T::RlimitMemlock => RlimitResource::Memlock,
        T::RlimitAs => RlimitResource::As,
        T::RlimitLocks => RlimitResource::Locks,
        T::RlimitSigpending => RlimitResource::Sigpending,
        T::RlimitMsgqueue => RlimitResource::Msgqueue,
        T::RlimitNice => RlimitResource::Nice,
        T::RlimitRtprio => RlimitResource::Rtprio,
        T::RlimitRttime => RlimitResource::Rttime,
    }
}

/// The cgroup path of a config: (parent, name), from the hierarchy's root; `cgroupsPath`
/// absolute or relative (both from the root, never below the runtime's own cgroup), the systemd
/// form `slice:prefix:name` (as the cgroupfs path `/slice/prefix-name.scope`), or, when empty,
/// `/cagette-runtime/<id>`.
pub fn cgroup_path(path: Option<&Path>, id: &str, systemd: bool) -> Result<(PathBuf, String), RtError> {
    let bad = |why: &str| refuse("linux.cgroupsPath", why);
    let p = match path.map(|p| p.to_string_lossy().into_owned()).filter(|p| !p.is_empty()) {
        None => format!("/cagette-runtime/{id}"),
        Some(s) if systemd || (s.matches(':').count() == 2 && !s.contains('/')) => {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() != 3 {
                return Err(bad("with --systemd-cgroup, give slice:prefix:name"));
            }
            let slice = if parts[0].is_empty() { "system.slice" } else { parts[0] };
            let name = if parts[1].is_empty() { format!("{}.scope", parts[2]) } else { format!("{}-{}.scope", parts[1], parts[2]) };
            format!("/{slice}/{name}")
        }
        Some(s) => s,
    };
    let rel = Path::new(&p);
    let comps: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::RootDir | Component::CurDir => None,
            Component::Normal(n) => Some(n.to_str().ok_or(()).map_err(|_| ())),
            _ => Some(Err(())),
        })
        .collect::<Result<_, ()>>()
        .map_err(|_| bad("only plain names, no '..'"))?;
    let Some((name, parent)) = comps.split_last() else { return Err(bad("the root cgroup cannot hold a container")) };
    if name.starts_with("job-") {
        return Err(bad("names starting with job- are cagette's own jobs'"));
    }
    Ok((PathBuf::from("/").join(parent.iter().collect::<PathBuf>()), name.to_string()))
}

/// Translates a config. `bundle` is absolute; `id` names the cgroup when the config has none.
pub fn translate(spec: &Spec, bundle: &Path, id: &str, systemd_cgroup: bool) -> Result<Translated, RtError> {
    if !spec.version().starts_with("1.") {
        return Err(refuse("ociVersion", format!("{:?} is not a 1.x version of the runtime spec", spec.version())));
    }
    for (field, present) in [("solaris", spec.solaris().is_some()), ("windows", spec.windows().is_some()), ("vm", spec.vm().is_some()), ("zos", spec.zos().is_some())] {
        if present {
            return Err(refuse(field, "not a Linux container: refused"));
        }
    }
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(refuse("domainname", "setting the NIS domain name is not supported"));
    }
    let mut s = SandboxSpec::default();
    s.inherit_env = false;
    s.proc = false;
    s.dev = false;
    s.tmp = false;
    s.sys = false;
    s.cgroup = CgroupMode::Always;
    s.userns = UsernsMode::Host;
    s.stdin = Stdio::Inherit;
    s.stdout = Stdio::Inherit;
    s.stderr = Stdio::Inherit;
    s.follow_symlinks = false;

    // root
    let root = spec.root().as_ref().ok_or_else(|| refuse("root", "missing"))?;
    let rp = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let md = std::fs::symlink_metadata(&rp).map_err(|e| refuse("root.path", format!("{}: {e}", rp.display())))?;
    if !md.is_dir() {
        return Err(refuse("root.path", format!("{} is not a directory", rp.display())));
    }
    s.rootfs = Some(rp);
    s.rootfs_writable = !root.readonly().unwrap_or(false);

    // process
    let p = spec.process().as_ref().ok_or_else(|| refuse("process", "missing (this runtime runs a process in every container)"))?;
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(refuse("process.args", "empty"));
    }
    if p.command_line().is_some() {
        return Err(refuse("process.commandLine", "Windows only"));
    }
    s.argv = args;
    for kv in p.env().iter().flatten() {
        let (k, v) = kv.split_once('=').ok_or_else(|| refuse("process.env", format!("{kv:?} is not KEY=VALUE")))?;
        s.env.insert(k.to_string(), v.to_string());
    }
    if !p.cwd().is_absolute() {
        return Err(refuse("process.cwd", format!("{} is not absolute", p.cwd().display())));
    }
    s.cwd = Some(p.cwd().clone());
    let u = p.user();
    s.user = Some(u.uid());
    s.group = Some(u.gid());
    s.supplementary_groups = u.additional_gids().clone().unwrap_or_default();
    if let Some(m) = u.umask() {
        if m > 0o777 {
            return Err(refuse("process.user.umask", format!("{m:o} is not a permission mask")));
        }
        s.umask = Some(m);
    }
    if u.username().as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(refuse("process.user.username", "Windows only"));
    }
    let terminal = p.terminal().unwrap_or(false);
    s.tty = terminal;
    match p.capabilities() {
        None => s.capabilities = Some(Vec::new()),
        Some(c) => {
            let bounding = caps(c.bounding())?;
            let effective = caps(c.effective())?;
            let permitted = caps(c.permitted())?;
            let inheritable = caps(c.inheritable())?;
            let ambient = caps(c.ambient())?;
            let with_ambient = !ambient.is_empty();
            // A user other than root without ambient capabilities holds none once it runs (the
            // kernel clears its effective and permitted sets at exec): only the bounding set
            // stays. That is what podman sends for an image's non-root USER (the bounding set,
            // empty effective and permitted ones), and what cagette does for a non-root user.
            let non_root_bounding_only = u.uid() != 0 && !with_ambient && effective == permitted && effective.iter().all(|c| bounding.contains(c));
            if !non_root_bounding_only && (effective != bounding || permitted != bounding) {
                return Err(refuse("process.capabilities", "the bounding, effective and permitted sets must be equal (this runtime keeps one set)"));
            }
            // The kernel raises an ambient capability only if it is inheritable too: with an
            // empty inheritable set (runc's and crun's `spec`), the ambient ones are made
            // inheritable as well.
            if with_ambient && (ambient != bounding || !(inheritable.is_empty() || inheritable == bounding)) {
                return Err(refuse("process.capabilities", "ambient capabilities must equal the other sets (inheritable: the same, or none)"));
            }
            if !with_ambient && !inheritable.is_empty() {
                return Err(refuse("process.capabilities.inheritable", "inheritable capabilities without ambient ones are not supported"));
            }
            s.capabilities = Some(bounding);
            s.ambient_capabilities = with_ambient;
        }
    }
    for r in p.rlimits().iter().flatten() {
        s.rlimits.push(Rlimit { resource: rlimit(r.typ()), soft: r.soft(), hard: r.hard() });
    }
    s.no_new_privs = p.no_new_privileges().unwrap_or(false);
    if p.apparmor_profile().as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(refuse("process.apparmorProfile", "AppArmor profiles are not supported by this runtime"));
    }
    if p.selinux_label().as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(refuse("process.selinuxLabel", "SELinux labels are not supported by this runtime"));
    }
    if p.io_priority().is_some() {
        return Err(refuse("process.ioPriority", "not supported"));
    }
    if p.scheduler().is_some() {
        return Err(refuse("process.scheduler", "not supported"));
    }
    if p.exec_cpu_affinity().is_some() {
        return Err(refuse("process.execCPUAffinity", "not supported"));
    }

    // hostname
    s.hostname = spec.hostname().clone().filter(|h| !h.is_empty());

    let linux = spec.linux().clone().unwrap_or_default();
    // namespaces
    let mut ns = cagette::Namespaces { user: NsMode::Host, pid: NsMode::Host, mount: NsMode::Host, uts: NsMode::Host, ipc: NsMode::Host, cgroup: NsMode::Host, time: NsMode::Host };
    let mut net = Network::Host;
    let mut seen = Vec::new();
    for n in linux.namespaces().iter().flatten() {
        if seen.contains(&n.typ()) {
            return Err(refuse("linux.namespaces", format!("{:?} is given twice", n.typ())));
        }
        seen.push(n.typ());
        let mode = match n.path() {
            None => NsMode::New,
            Some(p) if p.is_absolute() => NsMode::Join(p.clone()),
            Some(p) => return Err(refuse("linux.namespaces.path", format!("{} is not absolute", p.display()))),
        };
        match n.typ() {
            LinuxNamespaceType::User => ns.user = mode,
            LinuxNamespaceType::Pid => ns.pid = mode,
            LinuxNamespaceType::Mount => ns.mount = mode,
            LinuxNamespaceType::Uts => ns.uts = mode,
            LinuxNamespaceType::Ipc => ns.ipc = mode,
            LinuxNamespaceType::Cgroup => ns.cgroup = mode,
            LinuxNamespaceType::Time => ns.time = mode,
            LinuxNamespaceType::Network => {
                net = match mode {
                    NsMode::New => Network::None,
                    NsMode::Join(p) => Network::Join(p),
                    NsMode::Host => Network::Host,
                }
            }
        }
    }
    if s.hostname.is_some() && ns.uts == NsMode::Host {
        return Err(refuse("hostname", "setting a hostname needs a UTS namespace of the container's own (new or joined)"));
    }
    s.namespaces = ns;
    s.network = net;
    let idmap = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> { v.iter().flatten().map(|m| IdMap { inside: m.container_id(), outside: m.host_id(), count: m.size() }).collect() };
    s.uid_map = idmap(linux.uid_mappings());
    s.gid_map = idmap(linux.gid_mappings());
    if (!s.uid_map.is_empty() || !s.gid_map.is_empty()) && s.namespaces.user != NsMode::New {
        return Err(refuse("linux.uidMappings", "id mappings need a new user namespace"));
    }
    if s.namespaces.user == NsMode::New && (s.uid_map.is_empty() || s.gid_map.is_empty()) {
        return Err(refuse("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings"));
    }

    // mounts, in the config's order
    for m in spec.mounts().iter().flatten() {
        translate_mount(m, bundle, &mut s)?;
    }
    s.masked_paths = Some(linux.masked_paths().clone().unwrap_or_default());
    s.readonly_paths = Some(linux.readonly_paths().clone().unwrap_or_default());
    s.rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => None,
        Some(o) => Some(serde_json::from_value(serde_json::Value::String(o.to_string())).map_err(|_| refuse("linux.rootfsPropagation", format!("{o:?}: give shared, slave, private or unbindable (r-prefixed for the whole tree)")))?),
    };
    if linux.mount_label().as_deref().is_some_and(|l| !l.is_empty()) {
        return Err(refuse("linux.mountLabel", "SELinux labels are not supported"));
    }
    for (field, present) in [
        ("linux.intelRdt", linux.intel_rdt().is_some()),
        ("linux.personality", linux.personality().is_some()),
        ("linux.timeOffsets", linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty())),
        ("linux.netDevices", linux.net_devices().as_ref().is_some_and(|t| !t.is_empty())),
        ("linux.memoryPolicy", linux.memory_policy().is_some()),
    ] {
        if present {
            return Err(refuse(field, "not supported"));
        }
    }

    // seccomp: the OCI profile as cagette reads it (the same JSON shape).
    s.seccomp = Seccomp::Mode(SeccompMode::None);
    if let Some(sc) = linux.seccomp() {
        if sc.flags().as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(refuse("linux.seccomp.flags", "not supported"));
        }
        if sc.listener_path().is_some() {
            return Err(refuse("linux.seccomp.listenerPath", "seccomp notification is not supported"));
        }
        let v = serde_json::to_value(sc).map_err(|e| refuse("linux.seccomp", e))?;
        let prof: OciSeccomp = serde_json::from_value(v).map_err(|e| refuse("linux.seccomp", e))?;
        s.seccomp = Seccomp::Profile(prof);
    }

    // devices: made in /dev once the sandbox is built; allowed in the device cgroup.
    let mut devices = Vec::new();
    let mut node_rules = Vec::new();
    for d in linux.devices().iter().flatten() {
        let path = d.path();
        if !path.is_absolute() || !path.starts_with("/dev") || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(refuse("linux.devices.path", format!("{} is not a path under /dev", path.display())));
        }
        let t = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::P => 'p',
            LinuxDeviceType::A => return Err(refuse("linux.devices.type", "\"a\" is not a device type")),
        };
        if t != 'p' {
            let (maj, min) = (u32::try_from(d.major()), u32::try_from(d.minor()));
            let (Ok(maj), Ok(min)) = (maj, min) else { return Err(refuse("linux.devices", format!("{}: bad major/minor", path.display()))) };
            node_rules.push(DeviceRule::rwm(t, maj, min));
        }
        devices.push(d.clone());
    }

    // resources
    let sysctl = linux.sysctl().clone().unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>().into_iter().collect::<Vec<_>>();
    for (k, _) in &sysctl {
        let namespaced = k.starts_with("net.") || k.starts_with("kernel.shm") || k.starts_with("kernel.msg") || k == "kernel.sem" || k.starts_with("fs.mqueue.");
        if !namespaced {
            return Err(refuse("linux.sysctl", format!("{k} is not a namespaced sysctl (only net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")));
        }
        if k.starts_with("net.") && s.network == Network::Host {
            return Err(refuse("linux.sysctl", format!("{k} needs a network namespace of the container's own")));
        }
        if !k.starts_with("net.") && s.namespaces.ipc != NsMode::New {
            return Err(refuse("linux.sysctl", format!("{k} needs an IPC namespace of the container's own")));
        }
        if k.contains("..") || k.contains('/') {
            return Err(refuse("linux.sysctl", format!("{k:?} is not a sysctl name")));
        }
    }
    let mut allow_devices = Vec::new();
    if let Some(r) = linux.resources() {
        translate_resources(r, &mut s, &mut allow_devices)?;
    }
    // A node is allowed rwm unless a rule of linux.resources.devices names it (that rule decides).
    for r in node_rules {
        if !allow_devices.iter().any(|a| (a.kind, a.major, a.minor) == (r.kind, r.major, r.minor)) {
            allow_devices.push(r);
        }
    }
    let (cgroup_parent, cgroup_name) = cgroup_path(linux.cgroups_path().as_deref(), id, systemd_cgroup)?;
    s.cgroup_parent = Some(cgroup_parent);

    let hooks = spec.hooks().clone().unwrap_or_default();
    for (field, v) in [("hooks.createContainer", hooks.create_container()), ("hooks.startContainer", hooks.start_container())] {
        if v.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(refuse(field, "hooks run inside the container are not supported"));
        }
    }
    let annotations = spec.annotations().clone().unwrap_or_default().into_iter().collect();
    Ok(Translated { sandbox: s, hooks, sysctl, oom_score_adj: p.oom_score_adj(), devices, allow_devices, cgroup_name, terminal, annotations })
}

fn translate_mount(m: &oci_spec::runtime::Mount, bundle: &Path, s: &mut SandboxSpec) -> Result<(), RtError> {
    let dest = m.destination().to_string_lossy().into_owned();
    let field = format!("mounts[{dest}]");
    if !dest.starts_with('/') {
        return Err(refuse(&field, "the destination must be absolute"));
    }
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(refuse(&field, "id-mapped mounts are not supported"));
    }
    let opts = m.options().clone().unwrap_or_default();
    let typ = m.typ().clone().unwrap_or_default();
    let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
    let mut read_only = false;
    let mut recursive = false;
    let mut size = None;
    let mut mode = None;
    let mut flags = MountFlags::default();
    for o in &opts {
        match o.as_str() {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "bind" => recursive = false,
            "rbind" => recursive = true,
            "nosuid" => flags.nosuid = true,
            "noexec" => flags.noexec = true,
            "suid" | "exec" => {}
            "relatime" => flags.atime = Atime::Relatime,
            "strictatime" => flags.atime = Atime::Strictatime,
            "noatime" => flags.atime = Atime::Noatime,
            "nodiratime" => flags.atime = Atime::Nodiratime,
            // cagette's mounts are nodev (but /dev's).
            "nodev" => {}
            "private" => flags.propagation = Some(Propagation::Private),
            "rprivate" => flags.propagation = Some(Propagation::Rprivate),
            "shared" => flags.propagation = Some(Propagation::Shared),
            "rshared" => flags.propagation = Some(Propagation::Rshared),
            "slave" => flags.propagation = Some(Propagation::Slave),
            "rslave" => flags.propagation = Some(Propagation::Rslave),
            "unbindable" => flags.propagation = Some(Propagation::Unbindable),
            "runbindable" => flags.propagation = Some(Propagation::Runbindable),
            // Options of the file systems cagette makes itself (/dev's devpts).
            "newinstance" | "ptmxmode=0666" | "mode=0620" | "gid=5" if typ == "devpts" => {}
            o if o.starts_with("size=") && typ == "tmpfs" => {
                size = Some(o[5..].parse::<Size>().map_err(|e| refuse(&field, format!("option {o}: {e}")))?);
            }
            o if o.starts_with("mode=") && typ == "tmpfs" => {
                mode = Some(u32::from_str_radix(&o[5..], 8).map_err(|_| refuse(&field, format!("option {o}: not an octal mode")))?);
            }
            // File system data options: a bind mount takes none (mount(2) ignores them with
            // MS_BIND, as runc passes them), so they change nothing there.
            o if is_bind && (o.starts_with("mode=") || o.starts_with("size=")) => {}
            o => return Err(refuse(&field, format!("mount option {o:?} is not supported"))),
        }
    }
    let fixed = |what: &str| -> Result<(), RtError> {
        // proc, sysfs, mqueue, cgroup: always nosuid, nodev, noexec, relatime, private here.
        if flags.atime != Atime::Relatime {
            return Err(refuse(&field, format!("{what} takes no access-time option here")));
        }
        if !matches!(flags.propagation, None | Some(Propagation::Private) | Some(Propagation::Rprivate)) {
            return Err(refuse(&field, format!("{what} is always private here")));
        }
        Ok(())
    };
    if is_bind {
        let src = m.source().clone().ok_or_else(|| refuse(&field, "a bind mount needs a source"))?;
        let src = if src.is_absolute() { src } else { bundle.join(src) };
        s.mounts.push(Mount::Bind { source: src, destination: dest, read_only, recursive, flags });
        return Ok(());
    }
    match (typ.as_str(), dest.as_str()) {
        ("proc", _) => {
            fixed("proc")?;
            s.mounts.push(Mount::Proc { destination: dest })
        }
        // cagette's /dev: a tmpfs with the standard nodes, a private devpts and /dev/shm.
        ("tmpfs", "/dev") => {
            if read_only || mode.is_some_and(|m| m != 0o755) {
                return Err(refuse(&field, "/dev is a mode 0755, writable tmpfs here"));
            }
            s.mounts.push(Mount::Dev { destination: dest, size, flags })
        }
        ("devpts", "/dev/pts") if s.mounts.iter().any(|m| m.destination() == "/dev") => {}
        ("devpts", _) => return Err(refuse(&field, "devpts is mounted at /dev/pts with /dev only")),
        ("tmpfs", _) => {
            if read_only {
                return Err(refuse(&field, "a read-only tmpfs is not supported"));
            }
            s.mounts.push(Mount::Tmpfs { destination: dest, size, mode, flags, source: m.source().as_ref().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty() && !s.contains('\0')) })
        }
        ("cgroup", _) | ("cgroup2", _) => {
            fixed("cgroup")?;
            // Only the container's own cgroups are shown: with the host's cgroup namespace the
            // mount would show every cgroup of the host, so the container gets one of its own
            // (podman's default on cgroup v2; documented in docs/oci-runtime.md).
            if s.namespaces.cgroup == NsMode::Host {
                s.namespaces.cgroup = NsMode::New;
            } else if s.namespaces.cgroup != NsMode::New {
                return Err(refuse(&field, "a cgroup mount with a joined cgroup namespace is not supported"));
            }
            s.mounts.push(Mount::Cgroup { destination: dest, read_only })
        }
        ("mqueue", _) => {
            fixed("mqueue")?;
            s.mounts.push(Mount::Mqueue { destination: dest })
        }
        ("sysfs", _) => {
            fixed("sysfs")?;
            // The kernel mounts a sysfs only for the owner of the network namespace: with the
            // host's network, only without a user namespace (it then shows the host's devices).
            if s.network == Network::Host && s.namespaces.user != NsMode::Host {
                return Err(refuse(&field, "sysfs with the host's network needs the host's user namespace too (or a network namespace of the container's own)"));
            }
            s.mounts.push(Mount::Sysfs { destination: dest })
        }
        (t, _) => return Err(refuse(&field, format!("file system type {t:?} is not supported"))),
    }
    Ok(())
}

/// The limits of a `linux.resources` object alone (for `update`); device rules are refused.
pub fn resources_spec(r: &oci_spec::runtime::LinuxResources) -> Result<SandboxSpec, RtError> {
    let mut s = SandboxSpec::default();
    let mut allow = Vec::new();
    translate_resources(r, &mut s, &mut allow)?;
    if !allow.is_empty() {
        return Err(refuse("linux.resources.devices", "device rules cannot be changed by update"));
    }
    Ok(s)
}

fn translate_resources(r: &oci_spec::runtime::LinuxResources, s: &mut SandboxSpec, allow: &mut Vec<DeviceRule>) -> Result<(), RtError> {
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit().filter(|l| *l > 0) {
            s.memory = Some(Size(l as u64));
        }
        if let Some(sw) = m.swap().filter(|l| *l > 0) {
            let total = sw as u64;
            let mem = s.memory.map(|m| m.bytes()).ok_or_else(|| refuse("linux.resources.memory.swap", "needs a memory limit"))?;
            s.memory_swap = Some(Size(total.saturating_sub(mem)));
        }
        for (f, v) in [("reservation", m.reservation().filter(|v| *v > 0)), ("kernel", m.kernel().filter(|v| *v > 0)), ("kernelTCP", m.kernel_tcp().filter(|v| *v > 0))] {
            if v.is_some() {
                return Err(refuse(&format!("linux.resources.memory.{f}"), "not supported"));
            }
        }
        if m.swappiness().is_some_and(|v| v <= 100) {
            return Err(refuse("linux.resources.memory.swappiness", "not supported"));
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(refuse("linux.resources.memory.disableOOMKiller", "not supported (a job over its memory is killed)"));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(sh) = c.shares().filter(|v| *v > 0) {
            s.cpu_weight = Some((sh.saturating_mul(100) / 1024).clamp(1, 10000) as u32);
        }
        match (c.quota().filter(|q| *q > 0), c.period()) {
            (Some(q), p) => {
                let p = p.filter(|p| *p > 0).unwrap_or(100_000);
                s.cpus = Some(q as f64 / p as f64);
                s.cpu_period = Some(std::time::Duration::from_micros(p));
            }
            (None, _) => {}
        }
        s.cpuset_cpus = c.cpus().clone().filter(|v| !v.is_empty());
        s.cpuset_mems = c.mems().clone().filter(|v| !v.is_empty());
        if c.realtime_runtime().is_some_and(|v| v != 0) || c.realtime_period().is_some_and(|v| v != 0) || c.idle().is_some_and(|v| v != 0) || c.burst().is_some_and(|v| v != 0) {
            return Err(refuse("linux.resources.cpu", "realtime, idle and burst are not supported"));
        }
    }
    if let Some(p) = r.pids()
        && p.limit() > 0 {
            s.pids = Some(p.limit() as u64);
        }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            s.io_weight = Some(u32::from(w));
        }
        let any = |v: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>| v.as_ref().is_some_and(|v| !v.is_empty());
        if b.weight_device().as_ref().is_some_and(|v| !v.is_empty()) || any(b.throttle_read_bps_device()) || any(b.throttle_write_bps_device()) || any(b.throttle_read_iops_device()) || any(b.throttle_write_iops_device()) || b.leaf_weight().is_some() {
            return Err(refuse("linux.resources.blockIO", "only weight is supported"));
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(refuse("linux.resources.hugepageLimits", "not supported"));
    }
    if r.network().is_some() {
        return Err(refuse("linux.resources.network", "not supported"));
    }
    if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(refuse("linux.resources.rdma", "not supported"));
    }
    if r.unified().as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(refuse("linux.resources.unified", "not supported"));
    }
    // Device rules: cagette's allow-list is "deny all, allow the standard devices and these".
    for (i, d) in r.devices().iter().flatten().enumerate() {
        let t = d.typ().map(|t| match t {
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::P => 'p',
            LinuxDeviceType::A => 'a',
        });
        let whole = matches!(t, None | Some('a')) && d.major().is_none() && d.minor().is_none();
        match (d.allow(), whole) {
            (false, true) if i == 0 => {} // deny all: where cagette starts
            (true, false) => {
                // Access: letters of "rwm", each at most once; none given means all three.
                let access = d.access().clone().unwrap_or_else(|| "rwm".into());
                let (read, write, mknod) = (access.contains('r'), access.contains('w'), access.contains('m'));
                if access.is_empty() || access.len() != usize::from(read) + usize::from(write) + usize::from(mknod) {
                    return Err(refuse(&format!("linux.resources.devices[{i}].access"), format!("{access:?} is not a combination of r, w and m")));
                }
                // The ptys (c 136:*) are in cagette's standard list already.
                if t == Some('c') && d.major() == Some(136) && d.minor().is_none() && access == "rwm" {
                    continue;
                }
                let (Some(t), Some(maj), Some(min)) = (t, d.major(), d.minor()) else {
                    return Err(refuse("linux.resources.devices", "an allow rule needs a type, major and minor (wildcards other than c 136:* are not supported)"));
                };
                if t == 'p' {
                    return Err(refuse(&format!("linux.resources.devices[{i}].type"), "a FIFO is not a device the device cgroup controls"));
                }
                let (Ok(major), Ok(minor)) = (u32::try_from(maj), u32::try_from(min)) else {
                    return Err(refuse(&format!("linux.resources.devices[{i}]"), format!("bad major/minor {maj}:{min}")));
                };
                let rule = DeviceRule { kind: t, major, minor, read, write, mknod };
                if !allow.contains(&rule) {
                    allow.push(rule);
                }
            }
            (true, true) => return Err(refuse("linux.resources.devices", "allowing every device is not supported")),
            _ => return Err(refuse("linux.resources.devices", "only \"deny all\" first, then allow rules, are supported")),
        }
    }
    Ok(())
}

/// `spec`: a default config.json for a bundle (root `rootfs`, `sh`, the usual mounts).
pub fn example(rootless: bool) -> serde_json::Value {
    let mut ns = vec![serde_json::json!({"type": "pid"}), serde_json::json!({"type": "network"}), serde_json::json!({"type": "ipc"}), serde_json::json!({"type": "uts"}), serde_json::json!({"type": "mount"})];
    if rootless {
        ns.push(serde_json::json!({"type": "user"}));
    }
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut v = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "cagette",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": ns,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if rootless {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        v["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        v["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        v["linux"]["resources"] = serde_json::json!({});
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_resolve_from_the_root_never_below_the_caller() {
        assert_eq!(cgroup_path(Some(Path::new("/a/b/c")), "x", false).unwrap(), (PathBuf::from("/a/b"), "c".into()));
        assert_eq!(cgroup_path(Some(Path::new("a/b/c")), "x", false).unwrap(), (PathBuf::from("/a/b"), "c".into()));
        assert_eq!(cgroup_path(Some(Path::new("/cgrouptest")), "x", false).unwrap(), (PathBuf::from("/"), "cgrouptest".into()));
        assert_eq!(cgroup_path(None, "x", false).unwrap(), (PathBuf::from("/cagette-runtime"), "x".into()));
        assert_eq!(cgroup_path(Some(Path::new("machine.slice:libpod:abc")), "x", true).unwrap(), (PathBuf::from("/machine.slice"), "libpod-abc.scope".into()));
        assert!(cgroup_path(Some(Path::new("/a/../b")), "x", false).is_err());
        assert!(cgroup_path(Some(Path::new("/")), "x", false).is_err());
        assert!(cgroup_path(Some(Path::new("/job-1-2-3")), "x", false).is_err());
    }

    #[test]
    fn cpu_shares_become_a_weight_without_overflow() {
        let weight = |shares: u64| {
            let r: oci_spec::runtime::LinuxResources = serde_json::from_value(serde_json::json!({"cpu": {"shares": shares}})).unwrap();
            resources_spec(&r).unwrap().cpu_weight
        };
        assert_eq!(weight(1024), Some(100));
        assert_eq!(weight(2), Some(1));
        // The largest shares give the largest weight: `shares * 100` once wrapped to a weight of 1.
        assert_eq!(weight(184467440737095517), Some(10000));
        assert_eq!(weight(u64::MAX), Some(10000));
    }

    fn with_caps(uid: u32, caps: serde_json::Value) -> Result<Translated, RtError> {
        let mut c = example(false);
        c["process"]["user"]["uid"] = uid.into();
        c["process"]["capabilities"] = caps;
        let root = std::env::temp_dir().join(format!("cagette-rt-caps-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        c["root"]["path"] = root.to_string_lossy().into_owned().into();
        let spec: Spec = serde_json::from_value(c).unwrap();
        let t = translate(&spec, Path::new("/"), "t", false);
        let _ = std::fs::remove_dir(&root);
        t
    }

    #[test]
    fn a_non_root_user_keeps_the_bounding_set_only() {
        let b = serde_json::json!(["CAP_CHOWN", "CAP_KILL"]);
        // podman's config for an image's non-root USER: bounding set, nothing effective.
        let t = with_caps(1000, serde_json::json!({"bounding": b, "effective": [], "permitted": []})).unwrap();
        assert_eq!(t.sandbox.capabilities, Some(vec![Capability::CAP_CHOWN, Capability::CAP_KILL]));
        assert!(!t.sandbox.ambient_capabilities);
        // Root with unequal sets: still one set only, refused with the field named.
        let e = with_caps(0, serde_json::json!({"bounding": b, "effective": [], "permitted": []})).unwrap_err().to_string();
        assert!(e.contains("process.capabilities") && e.contains("must be equal"), "{e}");
        // A non-root effective capability outside the bounding set cannot be had.
        assert!(with_caps(1000, serde_json::json!({"bounding": ["CAP_KILL"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]})).is_err());
        // Inheritable without ambient: refused as before.
        assert!(with_caps(1000, serde_json::json!({"bounding": b, "effective": [], "permitted": [], "inheritable": b})).is_err());
    }
}
