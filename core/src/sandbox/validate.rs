//! Checks of a spec's values that need no host: ids, durations, sizes, counts and modes in their
//! ranges. Run by [`crate::SandboxSpec::from_json`] (the bindings and `--spec`) and by every spawn,
//! before anything is set up, so a bad value is a clear error and never a panic, a hang, a
//! silently different sandbox (uid 4294967295 is "no change" to the kernel: it would run as root)
//! or a host process killed (a memory limit too small for the sandbox to start).

use crate::error::{SetupFailure, Step};
use crate::sandbox::spec::{IdMap, Mount, SandboxSpec};
use std::time::Duration;

/// The smallest memory limit a sandbox can start with. The sandbox's setup (namespaces, mounts,
/// its init) is charged to the job's memory cgroup; a limit below this could OOM-kill it while it
/// still shares the host's memory.
pub const MIN_MEMORY: u64 = 8 << 20;

/// The longest timeout or CPU-time limit (about 100 years): longer ones are surely mistakes, and
/// deadlines past it overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The largest id (2^32 - 2): 2^32 - 1 means "no change" to the kernel's set*id calls.
pub const MAX_ID: u32 = u32::MAX - 1;

fn bad(what: String) -> SetupFailure {
    SetupFailure::new(Step::Spec, None, None, &what)
}

fn id(name: &str, v: u32) -> Result<(), SetupFailure> {
    if v > MAX_ID {
        return Err(bad(format!("{name} {v} is out of range: ids go from 0 to {MAX_ID} ({v} would mean \"no change\" to the kernel)")));
    }
    Ok(())
}

fn maps(name: &str, m: &[IdMap]) -> Result<(), SetupFailure> {
    for r in m {
        if r.count == 0 {
            return Err(bad(format!("{name} {} {} {} has a count of 0", r.inside, r.outside, r.count)));
        }
        for (side, start) in [("inside", r.inside), ("outside", r.outside)] {
            if u64::from(start) + u64::from(r.count) - 1 > u64::from(MAX_ID) {
                return Err(bad(format!("{name} {} {} {}: the {side} range ends past the largest id {MAX_ID}", r.inside, r.outside, r.count)));
            }
        }
    }
    Ok(())
}

fn duration(name: &str, d: Option<Duration>) -> Result<(), SetupFailure> {
    match d {
        Some(d) if d.is_zero() => Err(bad(format!("{name} must be more than 0"))),
        Some(d) if d > MAX_DURATION => Err(bad(format!("{name} of {} s is longer than the largest ({} s, about 100 years)", d.as_secs(), MAX_DURATION.as_secs()))),
        _ => Ok(()),
    }
}

/// Checks a spec about to run: a command, and every value (see [`values`]).
pub(crate) fn spec(s: &SandboxSpec) -> Result<(), SetupFailure> {
    if s.image.is_none() && s.argv.first().is_none_or(|a| a.is_empty()) {
        return Err(bad("no command given".into()).hint("pass the command and its arguments (argv)"));
    }
    values(s)
}

/// Checks every value of `spec` that can be checked without the host (a spec without a command
/// yet, as the bindings build one, is fine).
pub(crate) fn values(s: &SandboxSpec) -> Result<(), SetupFailure> {
    match (&s.image_upper, &s.image_work) {
        (None, None) => {}
        (Some(_), Some(_)) if s.image.is_some() => {}
        (Some(_), Some(_)) => return Err(bad("image_upper needs an image (it keeps what the job writes to the image's root)".into()).hint("add image, or use a mount of kind overlay with upper and work")),
        _ => return Err(bad("give both image_upper and image_work, or neither".into()).hint("image_work: an empty directory on the same file system as image_upper")),
    }
    // What the kernel's execve cannot take: found here, before any setup, not at the exec.
    if let Some(a) = s.argv.iter().find(|a| a.contains('\0')) {
        return Err(bad(format!("argv: {a:?} contains a NUL byte")));
    }
    for (k, v) in &s.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(bad(format!("env: the variable name {k:?} is empty or contains '=' or a NUL byte")));
        }
        if v.contains('\0') {
            return Err(bad(format!("env: the value of {k} contains a NUL byte")));
        }
    }
    if let Some(u) = s.user {
        id("user", u)?;
    }
    if let Some(g) = s.group {
        id("group", g)?;
    }
    for g in &s.supplementary_groups {
        id("supplementary group", *g)?;
    }
    maps("uid_map", &s.uid_map)?;
    maps("gid_map", &s.gid_map)?;
    duration("timeout", s.timeout)?;
    duration("cpu_time", s.cpu_time)?;
    if let Some(m) = s.memory {
        if m.bytes() == 0 {
            return Err(bad("memory must be more than 0".into()).hint("leave memory unset for no limit"));
        }
        if m.bytes() < MIN_MEMORY {
            return Err(bad(format!("memory {} bytes is below the {} MiB a sandbox needs to start", m.bytes(), MIN_MEMORY >> 20)).hint(format!("give at least {}M", MIN_MEMORY >> 20)));
        }
    }
    if let Some(m) = s.memory_high
        && m.bytes() < MIN_MEMORY {
            return Err(bad(format!("memory_high {} bytes is below the {} MiB a sandbox needs to start", m.bytes(), MIN_MEMORY >> 20)));
        }
    if let Some(c) = s.cpus {
        if !(c.is_finite() && c > 0.0 && c <= 1_000_000.0) {
            return Err(bad(format!("cpus must be a positive number of CPUs (like 0.5 or 2), got {c}")));
        }
        if c < 0.01 {
            return Err(bad(format!("cpus {c} is below the smallest quota (0.01 of a CPU)")));
        }
    }
    if let Some(p) = s.cpu_period {
        if s.cpus.is_none() {
            return Err(bad("cpu_period needs cpus (the quota it is the period of)".to_string()));
        }
        if p < Duration::from_millis(1) || p > Duration::from_secs(1) {
            return Err(bad(format!("cpu_period must be between 1ms and 1s (the kernel's bounds), got {p:?}")));
        }
    }
    if let Some(m) = s.umask
        && m > 0o777 {
            return Err(bad(format!("umask {m:o} is not a permission mask (at most 777)")));
        }
    if let Some(p) = s.pids
        && p < 2 {
            return Err(bad(format!("pids must be at least 2 (the sandbox's init and the command), got {p}")));
        }
    for (name, w) in [("cpu_weight", s.cpu_weight), ("io_weight", s.io_weight)] {
        if let Some(w) = w
            && !(1..=10000).contains(&w) {
                return Err(bad(format!("{name} must be from 1 to 10000, got {w}")));
            }
    }
    if s.network != crate::sandbox::spec::Network::Private {
        let bridge = s.network == crate::sandbox::spec::Network::Bridge;
        let asked = [("publish", !s.publish.is_empty()), ("dns", !s.dns.is_empty() && !bridge), ("add_hosts", !s.add_hosts.is_empty() && !bridge), ("allow_host_loopback", s.allow_host_loopback)];
        if let Some((name, _)) = asked.iter().find(|(_, set)| *set) {
            // dns and add_hosts are asked for here only without a bridge.
            let needs = if matches!(*name, "dns" | "add_hosts") { "network \"private\" or \"bridge\"" } else { "network \"private\"" };
            return Err(bad(format!("{name} needs {needs} (the network is {:?})", s.network)).hint("add network=\"private\" (CLI: --net private)"));
        }
    }
    for (i, p) in s.publish.iter().enumerate() {
        if let Some(q) = s.publish[..i].iter().find(|q| q.host_port == p.host_port && q.udp == p.udp && (q.host_ip == p.host_ip || q.host_ip.is_unspecified() || p.host_ip.is_unspecified())) {
            return Err(bad(format!("publish {} and {} use the same host port", String::from(*q), String::from(*p))));
        }
    }
    for r in &s.rlimits {
        if r.soft > r.hard {
            return Err(bad(format!("rlimit {:?}: soft limit {} is above hard limit {}", r.resource, r.soft, r.hard)));
        }
    }
    for m in &s.mounts {
        match m {
            Mount::Bind { source, destination, .. } if source.as_os_str().is_empty() => {
                return Err(bad(format!("the bind mount at {destination} has an empty source")).hint("give the host path to bind (relative paths start from the current directory)"));
            }
            Mount::Tmpfs { destination, mode: Some(mode), .. } if *mode > 0o7777 => {
                return Err(bad(format!("the tmpfs at {destination} has mode {mode:o}: a mode has at most 4 octal digits (like 1777)")));
            }
            Mount::Tmpfs { destination, size: Some(size), .. } if size.bytes() == 0 => {
                return Err(bad(format!("the tmpfs at {destination} has a size of 0")).hint("leave size unset for the kernel's default (half of RAM)"));
            }
            Mount::Overlay { lower, destination, .. } if lower.iter().any(|l| l.as_os_str().is_empty()) => {
                return Err(bad(format!("the overlay at {destination} has an empty lower directory")));
            }
            _ => {}
        }
    }
    for (what, n) in [("name", &s.name), ("exec_in", &s.exec_in)] {
        if let Some(n) = n {
            crate::sandbox::live::check_name(n).map_err(|why| bad(format!("{what} {n:?}: {why}")))?;
        }
    }
    if s.exec_in.is_some() {
        // What shapes a sandbox belongs to the sandbox, not to a command run in it.
        let d = SandboxSpec::default();
        let shaped: [(&str, bool); 16] = [
            ("rootfs", s.rootfs.is_some()),
            ("image", s.image.is_some()),
            ("mounts", !s.mounts.is_empty()),
            ("namespaces", s.namespaces != d.namespaces),
            ("network", s.network != d.network),
            ("hostname", s.hostname.is_some()),
            ("memory", s.memory.is_some()),
            ("pids", s.pids.is_some()),
            ("cpus", s.cpus.is_some()),
            ("cpu_time", s.cpu_time.is_some()),
            ("uid_map", !s.uid_map.is_empty()),
            ("gid_map", !s.gid_map.is_empty()),
            ("name", s.name.is_some()),
            ("devices", !s.devices.is_empty()),
            ("cgroup_parent", s.cgroup_parent.is_some()),
            ("cwd_host", s.cwd_host),
        ];
        if let Some((field, _)) = shaped.iter().find(|(_, set)| *set) {
            return Err(bad(format!("{field} cannot be set with exec_in: it shapes the sandbox, which is already running")).hint("set it on the sandbox when it starts; exec_in takes the command, user, group, cwd, env, tty and streams"));
        }
    }
    if let Some(r) = &s.rootfs
        && r.as_os_str().is_empty() {
            return Err(bad("rootfs is empty".into()).hint("give the directory holding the sandbox's files, or leave rootfs unset for the host's root (read-only)"));
        }
    for p in &s.pass_fds {
        if p.host < 0 {
            return Err(bad(format!("passed fd {} is not a file descriptor", p.host)));
        }
        if p.sandbox < 3 {
            return Err(bad(format!("passed fd {} must get a number of 3 or more inside (got {})", p.host, p.sandbox)));
        }
    }
    for (name, st) in [("stdin", s.stdin), ("stdout", s.stdout), ("stderr", s.stderr)] {
        if let crate::sandbox::spec::Stdio::Fd(fd) = st
            && fd < 0 {
                return Err(bad(format!("{name} fd {fd} is not a file descriptor")));
            }
    }
    Ok(())
}
