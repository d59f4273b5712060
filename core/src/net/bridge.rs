//! `network: bridge` (root only): the sandbox's own network namespace joined to the host by a
//! veth pair, routed and masqueraded by the host's kernel. Bulk traffic runs at the speed of the
//! kernel's own forwarding (no user-mode stack in the way), at the price of state on the host:
//!
//! - one veth pair per job: `cagbrN` on the host with 10.217.x.y/30, `eth0` inside with the next
//!   address and a default route through the host's end. The pair is created with its inside end
//!   already in the sandbox's namespace, so the kernel removes both when that namespace ends:
//!   nothing is left on the host even if the caller is killed. `N` is a slot of the pool
//!   10.217.0.0/16 (16,384 /30 networks); the interface's name is the lock (the kernel refuses a
//!   second `cagbrN`), so concurrent callers in different processes never share a slot.
//! - one nftables table, `inet cagette`, the same for every job (its rules match the `cagbr*`
//!   interfaces, not one job), checked before every job and written when it differs: a sandbox's connections to the host
//!   itself (any of its addresses, not only loopback), to another sandbox and to link-local or
//!   loopback addresses are refused at once (ICMP administratively prohibited); packets with a
//!   forged source address, IPv6, and new connections from elsewhere into a sandbox are dropped
//!   (the host itself may connect to a sandbox's address); what leaves for elsewhere is
//!   masqueraded.
//!
//! cagette never changes the host's settings: IPv4 forwarding must already be on (docker and
//! podman turn it on), else the job fails with that hint.

use super::fail;
use crate::error::SetupFailure;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pool the per-sandbox /30 networks come from.
pub(crate) const POOL: &str = "10.217.0.0/16";
const POOL_BASE: u32 = u32::from_be_bytes([10, 217, 0, 0]);
const SLOTS: u32 = 1 << 14;
/// The host ends of the pairs: `cagbr<slot>`.
pub(crate) const HOST_PREFIX: &str = "cagbr";
/// How many slots a start tries before it gives up (each taken slot is one failed `ip link add`).
const TRIES: u32 = 32;
const TOOLS_HINT: &str = "install iproute2 and nftables (Debian/Ubuntu: apt install iproute2 nftables), or use network \"private\"";

/// The host's and the sandbox's address in a slot's /30.
pub(crate) fn addresses(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let net = POOL_BASE + 4 * (slot % SLOTS);
    (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2))
}

fn find(tool: &str) -> Option<PathBuf> {
    super::find_executable(tool, &["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
}

/// What a bridge needs on this host: root, `ip`, `nft`, and IPv4 forwarding already on.
/// Returns the paths of `ip` and `nft`.
pub(crate) fn check_host() -> Result<(PathBuf, PathBuf), SetupFailure> {
    if crate::host::euid() != 0 {
        return Err(fail(Some(libc::EPERM), None, "network \"bridge\" needs root (it adds a veth pair and firewall rules on the host)").hint("use network \"private\", which works for every user"));
    }
    let ip = find("ip").ok_or_else(|| fail(Some(libc::ENOENT), Some("ip".into()), "network \"bridge\" needs the ip command (iproute2), which is not installed").hint(TOOLS_HINT))?;
    let nft = find("nft").ok_or_else(|| fail(Some(libc::ENOENT), Some("nft".into()), "network \"bridge\" needs the nft command (nftables), which is not installed").hint(TOOLS_HINT))?;
    let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
    let on = crate::fs::hostfile::read_host_file(fwd, 64).map_err(|e| fail(e.raw_os_error(), Some(fwd.into()), "read whether the host forwards IPv4"))?;
    if String::from_utf8_lossy(&on).trim() != "1" {
        return Err(fail(None, Some(fwd.into()), "network \"bridge\" needs IPv4 forwarding on the host, which is off (cagette does not change the host's settings)")
            .hint("turn it on (sysctl -w net.ipv4.ip_forward=1, as docker and podman do), or use network \"private\""));
    }
    if let Some(taken) = pool_in_use(&String::from_utf8_lossy(&crate::fs::hostfile::read_host_file(Path::new("/proc/net/route"), 1 << 20).unwrap_or_default())) {
        return Err(fail(None, None, &format!("network \"bridge\" takes its addresses from {POOL}, which this host already routes ({taken}): its sandboxes would take that network's place")).hint("use network \"private\" on this host"));
    }
    Ok((ip, nft))
}

/// A route of the host (from `/proc/net/route`) into the pool that is not one of ours: "IFACE
/// ADDR/BITS". The default route does not count.
fn pool_in_use(routes: &str) -> Option<String> {
    let pool_mask = u32::MAX << 16;
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dest), Some(mask)) = (f.first(), f.get(1), f.get(7)) else { continue };
        let parse = |h: &str| u32::from_str_radix(h, 16).ok().map(|v| u32::from_be_bytes(v.to_le_bytes()));
        let (Some(dest), Some(mask)) = (parse(dest), parse(mask)) else { continue };
        if mask == 0 || iface.starts_with(HOST_PREFIX) {
            continue;
        }
        let both = mask & pool_mask;
        if dest & both == POOL_BASE & both {
            return Some(format!("{iface} {}/{}", Ipv4Addr::from(dest), mask.count_ones()));
        }
    }
    None
}

/// The firewall of every bridge sandbox, replaced as a whole in one nftables transaction (the
/// same text each time, so concurrent writers agree).
fn ruleset() -> String {
    let p = HOST_PREFIX;
    format!(
        "table inet cagette {{}}\n\
         delete table inet cagette\n\
         table inet cagette {{\n\
         \x20 chain bridge_input {{\n\
         \x20   type filter hook input priority filter - 5; policy accept;\n\
         \x20   iifname \"{p}*\" ct state established,related accept\n\
         \x20   iifname \"{p}*\" reject with icmpx admin-prohibited\n\
         \x20 }}\n\
         \x20 chain bridge_forward {{\n\
         \x20   type filter hook forward priority filter - 5; policy accept;\n\
         \x20   iifname \"{p}*\" fib saddr . iif oif missing drop\n\
         \x20   iifname \"{p}*\" oifname \"{p}*\" reject with icmpx admin-prohibited\n\
         \x20   iifname \"{p}*\" ip daddr {{ 127.0.0.0/8, 169.254.0.0/16 }} reject with icmpx admin-prohibited\n\
         \x20   iifname \"{p}*\" meta nfproto ipv6 drop\n\
         \x20   oifname \"{p}*\" ct state established,related accept\n\
         \x20   oifname \"{p}*\" drop\n\
         \x20 }}\n\
         \x20 chain bridge_postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {POOL} oifname != \"{p}*\" masquerade\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Runs `tool -batch -` (ip) or `tool -f -` (nft) with `script` on its standard input; its
/// standard error on failure.
fn run_script(tool: &Path, args: &[&str], script: &str) -> Result<(), String> {
    let mut c = Command::new(tool).args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(script.as_bytes());
    }
    let out = c.wait_with_output().map_err(|e| format!("{}: {e}", tool.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; "))
    }
}

/// Whether the table in the kernel has every rule line of ours, as `nft list` prints them (a
/// version of nft that prints them otherwise only costs a rewrite).
fn firewall_in_place(nft: &Path) -> bool {
    let Ok(out) = Command::new(nft).args(["list", "table", "inet", "cagette"]).stdin(Stdio::null()).stderr(Stdio::null()).output() else { return false };
    if !out.status.success() {
        return false;
    }
    let norm = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut have: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(norm).filter(|l| !l.is_empty()).collect();
    let want = ruleset();
    let body = want.split_once("delete table inet cagette\n").map_or("", |(_, b)| b);
    let mut lines: Vec<String> = body.lines().map(norm).filter(|l| !l.is_empty()).collect();
    // The same lines, no more (no rule of someone else's added to the table), in any order.
    have.sort();
    lines.sort();
    have == lines
}

/// Writes the firewall unless it is in place. Checked for every job, not once per process: a
/// table someone removed since (`nft flush ruleset` when a firewall service reloads) would
/// leave the host open to the sandboxes. Checking costs one `nft list` (~3 ms here); writing, a
/// transaction the kernel commits in ~19 ms.
pub(crate) fn ensure_firewall(nft: &Path) -> Result<(), SetupFailure> {
    if firewall_in_place(nft) {
        return Ok(());
    }
    run_script(nft, &["-f", "-"], &ruleset()).map_err(|e| fail(None, Some(nft.into()), &format!("write the bridge's firewall (nftables table inet cagette): {e}")).hint("nftables must be usable here (a kernel with nf_tables; `nft list ruleset` shows it)"))?;
    Ok(())
}

/// Creates the pair for the sandbox whose setup child is `pid` (waiting for the host's go in
/// its new network namespace) and configures both ends. Nothing to undo at the end: the kernel
/// removes the pair with the sandbox's network namespace.
pub(crate) fn attach(ip: &Path, pid: i32) -> Result<(), SetupFailure> {
    // The namespace is opened once, here, and checked to be another than ours; `ip` and the
    // thread below use this very file (`/proc/OUR_PID/fd/N`), never the pid again, which could
    // name another process by then.
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path).map_err(|e| fail(e.raw_os_error(), Some(ns_path.clone().into()), "open the sandbox's network namespace"))?;
    let id = |m: std::fs::Metadata| (std::os::unix::fs::MetadataExt::dev(&m), std::os::unix::fs::MetadataExt::ino(&m));
    let theirs = ns.metadata().map(id).map_err(|e| fail(e.raw_os_error(), Some(ns_path.clone().into()), "inspect the sandbox's network namespace"))?;
    let ours = std::fs::metadata("/proc/self/ns/net").map(id).map_err(|e| fail(e.raw_os_error(), None, "inspect our network namespace"))?;
    if theirs == ours {
        return Err(fail(None, Some(ns_path.into()), "the sandbox has no network namespace of its own: refusing to configure the host's"));
    }
    let ns_file = format!("/proc/{}/fd/{}", std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&ns));
    // A slot to start from that differs between processes and jobs; the kernel decides.
    let start = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_i32(pid);
        (h.finish() % SLOTS as u64) as u32
    };
    let mut last = String::new();
    for k in 0..TRIES {
        let slot = (start + k) % SLOTS;
        let name = format!("{HOST_PREFIX}{slot}");
        let (host, sandbox) = addresses(slot);
        let script = format!("link add {name} type veth peer name eth0 netns {ns_file}\naddr add {host}/30 dev {name}\nlink set {name} up\n");
        if let Err(e) = run_script(ip, &["-batch", "-"], &script) {
            // `ip -batch` names the line that failed: after the first, the pair exists and is
            // removed again.
            let line = e.rsplit_once("Command failed -:").and_then(|(_, n)| n.trim().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse::<u32>().ok()));
            if line != Some(1) {
                let _ = run_script(ip, &["-batch", "-"], &format!("link del {name}\n"));
            }
            if e.contains("File exists") && matches!(line, Some(1 | 2)) {
                // Another job's slot (its name, or its address on another interface): next.
                last = e;
                continue;
            }
            return Err(fail(None, Some(ip.into()), &format!("create the veth pair {name} for the sandbox: {e}")).hint(TOOLS_HINT));
        }
        // The inside: from a thread of ours that joined the sandbox's network namespace (setns
        // moves that thread only), whose `ip` is born there.
        let inside = format!("addr add {sandbox}/30 dev eth0\nlink set eth0 up\nroute add default via {host} dev eth0\n");
        let ip2 = ip.to_path_buf();
        let configured = std::thread::scope(|sc| {
            std::thread::Builder::new()
                .name("cagette-bridge".into())
                .spawn_scoped(sc, || -> Result<(), String> {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("join {ns_path}: {e}"))?;
                    run_script(&ip2, &["-batch", "-"], &inside)
                })
                .map_err(|e| e.to_string())
                .and_then(|t| t.join().unwrap_or_else(|_| Err("the thread configuring the sandbox's end panicked".into())))
        });
        if let Err(e) = configured {
            let _ = run_script(ip, &["-batch", "-"], &format!("link del {name}\n"));
            return Err(fail(None, Some(ns_path.clone().into()), &format!("configure the sandbox's end of {name}: {e}")));
        }
        return Ok(());
    }
    Err(fail(Some(libc::EEXIST), None, &format!("no free slot in the bridge pool {POOL} after {TRIES} tries: {last}")).hint("too many bridge sandboxes at once, or stale cagbr* interfaces (ip link show)"))
}

/// The nameservers of the host's `/etc/resolv.conf` that a bridge sandbox can reach: not the
/// host's loopback (a local resolver such as systemd-resolved's 127.0.0.53) — the sandbox
/// reaches nothing on the host.
pub(crate) fn host_nameservers() -> Vec<std::net::IpAddr> {
    let text = crate::fs::hostfile::read_host_file(Path::new("/etc/resolv.conf"), 1 << 16).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|a| a.is_ipv4() && !a.is_loopback())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_slash_30s_inside_the_pool() {
        assert_eq!(addresses(0), (Ipv4Addr::new(10, 217, 0, 1), Ipv4Addr::new(10, 217, 0, 2)));
        assert_eq!(addresses(1), (Ipv4Addr::new(10, 217, 0, 5), Ipv4Addr::new(10, 217, 0, 6)));
        assert_eq!(addresses(SLOTS - 1), (Ipv4Addr::new(10, 217, 255, 253), Ipv4Addr::new(10, 217, 255, 254)));
        assert_eq!(addresses(SLOTS), addresses(0));
    }

    #[test]
    fn a_host_route_into_the_pool_is_found() {
        let head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        // The default route and 192.0.2.0/24: not in the pool.
        let ok = format!("{head}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(pool_in_use(&ok), None);
        // One of ours (cagbr7, 10.217.0.28/30): not a conflict.
        let ours = format!("{ok}cagbr7\t1C00D90A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n");
        assert_eq!(pool_in_use(&ours), None);
        // 10.0.0.0/8 on another interface covers the pool; 10.217.5.0/24 lies inside it.
        let wide = format!("{ok}ens4\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n");
        assert_eq!(pool_in_use(&wide).as_deref(), Some("ens4 10.0.0.0/8"));
        let inside = format!("{ok}ens5\t0005D90A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(pool_in_use(&inside).as_deref(), Some("ens5 10.217.5.0/24"));
        // 10.216.0.0/16: next to it, not in it.
        let next = format!("{ok}ens6\t0000D80A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
        assert_eq!(pool_in_use(&next), None);
    }

    #[test]
    fn the_ruleset_names_only_our_interfaces_and_pool() {
        let r = ruleset();
        assert!(r.contains("delete table inet cagette") && r.contains("masquerade"));
        assert!(r.lines().filter(|l| l.contains("iifname") || l.contains("oifname")).all(|l| l.contains("\"cagbr*\"")), "{r}");
    }
}
