//! Jobs per second of the library: `JOBS` sandboxes of a JSON spec run from `THREADS` threads
//! (for benches/throughput.sh).
//!
//! `cargo run --release --example throughput -- '{"argv":["/bin/true"]}' 1000 2`
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let spec: cagette::SandboxSpec = serde_json::from_str(&args.next().unwrap_or_else(|| r#"{"argv":["/bin/true"]}"#.into())).expect("a JSON SandboxSpec");
    let jobs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let sb = cagette::Sandbox::from_spec(spec);
    sb.status().expect("spawn");
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    let o = sb.status().expect("spawn");
                    assert!(o.success(), "{o:?}");
                }
            });
        }
    });
    println!("{:.1}", jobs as f64 / start.elapsed().as_secs_f64());
}
