//! A multi-threaded host: many threads spawning at once. One test in this binary, so the leak
//! checks (fds, children) see only its own work.
mod common;
use cagette::{Sandbox, Stdio, Verdict};
use common::*;

#[test]
fn eight_threads_spawning_two_hundred_sandboxes_each() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    // Warm-up: the init memfd is created once per process.
    Sandbox::new().command("true").status().unwrap();
    let fds = fd_count();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..PER_THREAD {
                    let code = ((t * PER_THREAD + i) % 200) as i32;
                    let o = Sandbox::new()
                        .command("/bin/sh")
                        .args(["-c", &format!("exit {code}")])
                        .stdout(Stdio::Null)
                        .stderr(if i % 2 == 0 { Stdio::Piped } else { Stdio::Null })
                        .output()
                        .expect("spawn");
                    assert_eq!(o.status, Verdict::Exited(code));
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(total, THREADS * PER_THREAD);
    assert_eq!(fd_count(), fds, "fds leaked");
    assert!(!has_children(), "an unreaped child (zombie) remains");
}
