//! The smallest useful sandbox: no network, its own hostname, the host's files read-only.
//!
//! Run: `cargo run --example hello -- sh -c 'id; hostname; ls /'`
use cagette::{Network, Sandbox};

fn main() -> Result<(), cagette::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv = if args.is_empty() { vec!["sh".into(), "-c".into(), "id; hostname; echo $$".into()] } else { args };
    let out = Sandbox::new()
        .network(Network::None)
        .hostname("box")
        .args(argv)
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!("verdict: {:?}\nusage: {:?}", out.status, out.usage);
    Ok(())
}
