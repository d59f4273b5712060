//! The library's spawn→exit of `/bin/true` (all defaults, on a rootfs) against the floor
//! (`../shared/bench/floor.c`, built static: the least a full-isolation start can do, run as a
//! process), alternating job by job so that the machine's drift falls on both (issue 19's goal:
//! the library within 1.15× the floor).
//!
//! `cc -O2 -static -o /tmp/floor ../shared/bench/floor.c`, then, as root,
//! `cargo run --release --example spawn_vs_floor -- /tmp/floor ROOTFS [JOBS]`
use cagette::{Sandbox, SandboxSpec, Stdio};
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(floor), Some(rootfs)) = (args.next(), args.next()) else {
        eprintln!("usage: spawn_vs_floor FLOOR ROOTFS [JOBS]");
        std::process::exit(2);
    };
    let jobs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500).max(1);
    let spec = SandboxSpec { argv: vec!["/bin/true".into()], rootfs: Some(rootfs.clone().into()), stdin: Stdio::Null, stdout: Stdio::Null, stderr: Stdio::Null, ..Default::default() };
    let sb = Sandbox::from_spec(spec);
    let floor_job = || {
        let ok = std::process::Command::new(&floor).args([rootfs.as_str(), "/bin/true"]).status().is_ok_and(|s| s.success());
        assert!(ok, "{floor} {rootfs} /bin/true failed");
    };
    let lib_job = || {
        let o = sb.status().expect("spawn");
        assert!(o.success(), "{o:?}");
    };
    for _ in 0..20 {
        lib_job();
        floor_job();
    }
    let (mut lib, mut fl, mut ratio) = (Vec::with_capacity(jobs), Vec::with_capacity(jobs), Vec::with_capacity(jobs));
    for _ in 0..jobs {
        let t = Instant::now();
        lib_job();
        let l = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        floor_job();
        let f = t.elapsed().as_secs_f64() * 1e3;
        lib.push(l);
        fl.push(f);
        ratio.push(l / f);
    }
    let (l, f, r) = (median(&mut lib), median(&mut fl), median(&mut ratio));
    println!("library spawn→exit  median {l:.3} ms");
    println!("floor (a process)   median {f:.3} ms");
    println!("library / floor     {:.2}× (medians), {r:.2}× (median of the {jobs} paired ratios)", l / f);
}
