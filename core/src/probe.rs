//! What this host supports, found by trying (in a throwaway child) rather than guessing.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The cgroup hierarchy in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    /// Only the unified cgroup2 hierarchy is mounted.
    V2,
    /// Controllers are on cgroup v1 hierarchies (a cgroup2 mount may exist without controllers).
    V1,
    /// No cgroup file system was found.
    None,
}

/// What this host supports. Everything is found by trying; see [`probe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// Whether the caller is root (euid 0).
    pub root: bool,
    /// A new user namespace (with every other namespace) can be created by this process.
    pub user_namespaces: bool,
    /// clone3 is available (else cagette falls back to clone).
    pub clone3: bool,
    /// pidfds (CLONE_PIDFD / pidfd_open) are available.
    pub pidfd: bool,
    /// The new mount API (open_tree, move_mount, fsopen, mount_setattr) is available.
    pub mount_api: bool,
    /// overlayfs is registered (or loadable).
    pub overlayfs: bool,
    /// seccomp filters can be installed.
    pub seccomp: bool,
    /// Landlock's ABI version, if Landlock is enabled.
    pub landlock_abi: Option<u32>,
    /// The cgroup version in use.
    pub cgroup: CgroupVersion,
    /// Controllers cagette can use for jobs (v2: the root's cgroup.controllers; v1: the mounted
    /// controller hierarchies).
    pub cgroup_controllers: Vec<String>,
    /// The user-mode network stack `network: private` uses (`slirp4netns`), if installed and
    /// usable: its path. `None` with the reason in `private_network_problem`.
    pub private_network: Option<std::path::PathBuf>,
    /// Why `network: private` cannot work here, when it cannot (no slirp4netns, or /dev/net/tun
    /// not usable by this user).
    pub private_network_problem: Option<String>,
    /// Whether `network: bridge` can work here: root, `ip` and `nft` installed, IPv4 forwarding
    /// on. (Whether nftables accepts cagette's table is known at the first bridge job.)
    pub bridge_network: bool,
    /// Why `network: bridge` cannot work here, when it cannot.
    pub bridge_network_problem: Option<String>,
}

fn cgroup_version() -> CgroupVersion {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        CgroupVersion::V2
    } else if ["memory", "pids", "cpu", "cpuacct", "freezer"].iter().any(|c| base.join(c).join("cgroup.procs").exists()) {
        CgroupVersion::V1
    } else {
        CgroupVersion::None
    }
}

/// Whether the kernel has system call `nr`, by calling it with arguments it refuses (ENOSYS
/// means it does not exist; anything else that it does).
fn syscall_exists(nr: libc::c_long, args: [usize; 3]) -> bool {
    // SAFETY: every call made here passes arguments the kernel rejects before acting (a null
    // or invalid pointer with a size of 0, an invalid fd or flags): nothing is read, written or
    // created in this process.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// Probes the host. Cheap enough to call at startup (one short-lived sandbox is spawned to test
/// user namespaces).
///
/// ```
/// let p = cagette::probe();
/// println!("user namespaces: {}, cgroup: {:?}", p.user_namespaces, p.cgroup);
/// ```
pub fn probe() -> Probe {
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let cgroup = cgroup_version();
    let cgroup_controllers = crate::limits::cgroup::usable_controllers();
    // clone3 with an invalid size answers EINVAL when it exists, ENOSYS when it does not.
    let clone3 = syscall_exists(libc::SYS_clone3, [0, 0, 0]);
    let pidfd = syscall_exists(libc::SYS_pidfd_open, [usize::MAX, 0, 0]);
    let mount_api = syscall_exists(libc::SYS_mount_setattr, [usize::MAX, 0, 0]) && syscall_exists(libc::SYS_fsopen, [0, 0, 0]);
    let overlayfs = std::fs::read_to_string("/proc/filesystems").map(|s| s.lines().any(|l| l.ends_with("\toverlay"))).unwrap_or(false)
        || Path::new("/sys/module/overlay").exists();
    let seccomp = std::fs::read_to_string("/proc/self/status").map(|s| s.lines().any(|l| l.starts_with("Seccomp:"))).unwrap_or(false);
    // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) returns the ABI version.
    let ll = crate::host::landlock_abi();
    let landlock_abi = if ll > 0 { Some(ll as u32) } else { None };
    // A minimal sandbox with every namespace: no mounts beyond the root, no streams.
    let spec = crate::SandboxSpec {
        argv: vec!["true".into()],
        proc: false,
        dev: false,
        sys: false,
        tmp: false,
        masked_paths: Some(vec![]),
        readonly_paths: Some(vec![]),
        stdin: crate::Stdio::Null,
        stdout: crate::Stdio::Null,
        stderr: crate::Stdio::Null,
        ..Default::default()
    };
    let user_namespaces = crate::Sandbox::from_spec(spec).status().map(|o| o.success()).unwrap_or(false);
    let (private_network, private_network_problem) = match crate::net::helper_path() {
        None => (None, Some("slirp4netns is not installed".to_string())),
        Some(p) => match nix::unistd::access("/dev/net/tun", nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK) {
            Ok(()) => (Some(p), None),
            Err(e) => (None, Some(format!("/dev/net/tun is not usable by this user ({e})"))),
        },
    };
    let bridge_network_problem = crate::net::bridge::check_host().err().map(|f| f.message);
    Probe {
        kernel,
        root: crate::host::euid() == 0,
        user_namespaces,
        clone3,
        pidfd,
        mount_api,
        overlayfs,
        seccomp,
        landlock_abi,
        cgroup,
        cgroup_controllers,
        private_network,
        private_network_problem,
        bridge_network: bridge_network_problem.is_none(),
        bridge_network_problem,
    }
}

