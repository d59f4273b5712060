//! Prints the median spawn-to-exit time of a sandbox given as a JSON spec (for the side-by-side
//! benchmarks of the bindings: benches/bindings.sh).
//!
//! `cargo run --release --example spawn_median -- '{"argv":["/bin/true"]}' 500`
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let spec: cagette::SandboxSpec = serde_json::from_str(&args.next().unwrap_or_else(|| r#"{"argv":["/bin/true"]}"#.into())).expect("a JSON SandboxSpec");
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(500);
    let sb = cagette::Sandbox::from_spec(spec);
    for _ in 0..20 {
        sb.status().expect("spawn");
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            sb.status().expect("spawn");
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    println!("{:.4}", t[n / 2]);
}
