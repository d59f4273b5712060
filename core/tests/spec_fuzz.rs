//! A property test over `SandboxSpec` JSON: any spec a user or a binding can send — wrong types,
//! out-of-range numbers, NUL bytes, bogus paths and names — either is refused with an error or
//! runs, and in every case: no panic, no hang, the host process survives, and nothing is left
//! behind (no child, no fd, no mount, no job cgroup). One test in this binary, for the leak checks.
mod common;
use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn num() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(4095)),
        Just(json!(8 << 20)),
        Just(json!(64 << 20)),
        Just(json!(4294967295u64)),
        Just(json!(u64::MAX)),
        Just(json!(9.3e18)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!("256K")),
        Just(json!("1G")),
        Just(json!("12 apples")),
        Just(json!(null)),
        Just(json!([])),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("")),
        Just(json!("/")),
        Just(json!("..")),
        Just(json!("relative")),
        Just(json!("/a/../b")),
        Just(json!("/no/such/path")),
        Just(json!("a\u{0}b")),
        Just(json!("/tmp")),
        Just(json!("x".repeat(5000))),
        Just(json!("bad host!")),
        Just(json!(7)),
    ]
}

fn mount() -> impl Strategy<Value = Value> {
    (0..4usize, text(), text(), num()).prop_map(|(k, a, b, n)| match k {
        0 => json!({"type": "bind", "source": a, "destination": b}),
        1 => json!({"type": "tmpfs", "destination": b, "size": n, "mode": n}),
        2 => json!({"type": "overlay", "destination": b, "lower": [a]}),
        _ => json!({"type": "proc", "destination": b}),
    })
}

/// A spec: a harmless command plus any mix of fields with adversarial values.
fn spec() -> impl Strategy<Value = Value> {
    let fields = prop::collection::vec(
        (0..24usize, num(), text(), mount()).prop_map(|(k, n, t, m)| match k {
            0 => ("memory", n),
            1 => ("timeout", n),
            2 => ("cpu_time", n),
            3 => ("cpus", n),
            4 => ("pids", n),
            5 => ("user", n),
            6 => ("group", n),
            7 => ("hostname", t),
            8 => ("cwd", t),
            9 => ("rootfs", t),
            10 => ("mounts", json!([m])),
            11 => ("uid_map", json!([{"inside": n, "outside": 0, "count": n}])),
            12 => ("env", json!({"A": t, "": "x"})),
            13 => ("rlimits", json!([{"resource": "nofile", "soft": n, "hard": 1}])),
            14 => ("masked_paths", json!([t])),
            15 => ("seccomp_deny", json!([t])),
            16 => ("cap_add", json!([t])),
            17 => ("pass_fds", json!([{"host": n, "sandbox": n}])),
            18 => ("stdin", json!({"fd": n})),
            19 => ("network", json!({"join": t})),
            20 => ("memory_swap", n),
            21 => ("io_weight", n),
            22 => ("tty", json!(true)),
            _ => ("devices", json!([t])),
        }),
        0..5,
    );
    (prop_oneof![Just(json!(["true"])), Just(json!(["sh", "-c", "exit 3"])), Just(json!([])), Just(json!([""]))], fields).prop_map(|(argv, fields)| {
        let mut o = serde_json::Map::new();
        o.insert("argv".into(), argv);
        o.insert("stdout".into(), json!("null"));
        o.insert("stderr".into(), json!("null"));
        o.insert("stdin".into(), json!("null"));
        for (k, v) in fields {
            o.insert(k.into(), v);
        }
        Value::Object(o)
    })
}

#[test]
fn no_spec_value_panics_hangs_kills_the_host_or_leaks() {
    cagette::Sandbox::new().command("true").status().unwrap();
    let fds = fd_count();
    let mounts = host_mounts();
    let cases: u32 = std::env::var("CAGETTE_SPEC_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() });
    let (ran, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&spec(), |json| {
            let text = json.to_string();
            let started = Instant::now();
            let r = std::panic::catch_unwind(|| match cagette::SandboxSpec::from_json(&text) {
                Err(e) => {
                    assert!(!e.message.is_empty());
                    Err(())
                }
                Ok(mut s) => {
                    // Bound the run itself (a spec may ask for a very long timeout).
                    s.timeout = Some(s.timeout.map_or(Duration::from_secs(5), |t| t.min(Duration::from_secs(5))));
                    match cagette::Sandbox::from_spec(s).status() {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            assert!(!e.to_string().is_empty());
                            Err(())
                        }
                    }
                }
            });
            prop_assert!(r.is_ok(), "panicked on {text}");
            prop_assert!(started.elapsed() < Duration::from_secs(30), "{text} took {:?}", started.elapsed());
            let counter = if r.unwrap().is_ok() { &ran } else { &refused };
            counter.set(counter.get() + 1);
            prop_assert!(!has_children(), "a child was left by {text}");
            prop_assert_eq!(fd_count(), fds, "an fd leaked with {}", text);
            prop_assert_eq!(host_mounts(), mounts.clone(), "a mount leaked with {}", text);
            Ok(())
        })
        .unwrap();
    let (ran, refused) = (ran.get(), refused.get());
    eprintln!("{ran} specs ran, {refused} refused");
    assert!(ran > 0 && refused > 0, "the generator must produce both ({ran} ran, {refused} refused)");
    let mine = format!("job-{}-", std::process::id());
    let left: Vec<_> = ["/sys/fs/cgroup/cagette", "/sys/fs/cgroup/memory/cagette", "/sys/fs/cgroup/pids/cagette", "/sys/fs/cgroup/freezer/cagette"]
        .iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&mine))
        .collect();
    assert!(left.is_empty(), "job cgroups left: {left:?}");
}
