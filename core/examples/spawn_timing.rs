//! Prints the median spawn-to-exit time of /bin/true for a few sandbox shapes (a quick check;
//! the real benchmarks are in benches/).
use cagette::{Network, NsMode, Sandbox, SandboxSpec, Stdio};
use std::time::Instant;

fn median(spec: &SandboxSpec) -> f64 {
    let sb = Sandbox::from_spec(spec.clone());
    let mut v: Vec<f64> = (0..300)
        .map(|_| {
            let t = Instant::now();
            assert!(sb.status().unwrap().success());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut base = SandboxSpec { argv: vec!["/bin/true".into()], ..Default::default() };
    base.stdin = Stdio::Null;
    base.stdout = Stdio::Null;
    base.stderr = Stdio::Null;
    let rootfs = std::env::args().nth(1);
    if let Some(r) = &rootfs {
        base.rootfs = Some(r.into());
    } else {
        base.namespaces.mount = NsMode::Host;
    }
    let variants: Vec<(&str, Box<dyn Fn(&mut SandboxSpec)>)> = vec![
        ("all defaults", Box::new(|_| {})),
        ("  without net", Box::new(|s| s.network = Network::Host)),
        ("  without user", Box::new(|s| s.namespaces.user = NsMode::Host)),
        ("  without pid", Box::new(|s| s.namespaces.pid = NsMode::Host)),
        ("  without time+cgroup", Box::new(|s| { s.namespaces.time = NsMode::Host; s.namespaces.cgroup = NsMode::Host; })),
        ("  without masks and read-only paths", Box::new(|s| { s.masked_paths = Some(vec![]); s.readonly_paths = Some(vec![]); })),
        ("  without /sys", Box::new(|s| s.sys = false)),
        ("  without /dev", Box::new(|s| s.dev = false)),
        ("  without /tmp", Box::new(|s| s.tmp = false)),
        ("  without /proc", Box::new(|s| { s.proc = false; s.masked_paths = Some(vec![]); s.readonly_paths = Some(vec![]); })),
        ("no namespaces at all", Box::new(|s| { s.rootfs = None; s.network = Network::Host; let n = &mut s.namespaces; n.user = NsMode::Host; n.pid = NsMode::Host; n.time = NsMode::Host; n.cgroup = NsMode::Host; n.ipc = NsMode::Host; n.uts = NsMode::Host; n.mount = NsMode::Host; })),
    ];
    for (name, f) in variants {
        let mut s = base.clone();
        f(&mut s);
        println!("{name:40} {:.3} ms", median(&s));
    }
}
