//! Times `cagette::write_layer` of a directory (to a discarding writer): the tar, its hash, gzip
//! and the blob's hash, as a build's RUN step pays them.
//!
//!     cargo run --release --example write_layer DIR [RUNS]
fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: write_layer DIR [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        match cagette::write_layer(dir.as_ref(), 0, std::io::sink()) {
            Ok(l) => last = Some(l),
            Err(e) => {
                eprintln!("write_layer: {e}");
                std::process::exit(1);
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let l = last.expect("at least one run");
    println!("median {:.1} ms (min {:.1}, max {:.1}) over {runs} runs; {} bytes of gzip, {}", times[runs / 2], times[0], times[runs - 1], l.size, l.digest);
}
