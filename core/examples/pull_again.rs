//! Times pulls of an image whose layers are all in the store, from one process (the library's
//! steady state: the reference grammar's regex is compiled once per process).
//!
//! `cargo run --release --features registry --example pull_again -- STORE REFERENCE [N]`
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(reference)) = (args.next(), args.next()) else {
        eprintln!("usage: pull_again STORE REFERENCE [N]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);
    let store = cagette::ImageStore::open(store).expect("open the store");
    let opts = cagette::PullOptions::default();
    store.pull(&reference, &opts).expect("first pull");
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = std::time::Instant::now();
            store.pull(&reference, &opts).expect("pull");
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    println!("median {:.1} ms, min {:.1} ms, max {:.1} ms over {n} pulls", t[n / 2], t[0], t[n - 1]);
}
