//! Spawn-to-exit of /bin/true in a sandbox, in the configurations the issue asks for:
//! namespaces only; a busybox rootfs with /proc and /dev; that plus an overlay; the default
//! host root; and the rootfs case again from a host process that has touched 1 GiB of heap.
//!
//! `cargo bench -p cagette-benches` (needs busybox-static for the rootfs).
use cagette::{Mount, NsMode, Sandbox, SandboxSpec, Size, Stdio};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn rootfs() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-rootfs");
    if !dir.join("bin/busybox").exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/make-busybox-rootfs.sh");
        assert!(Command::new("sh").arg(script).arg(&dir).status().unwrap().success());
    }
    dir
}

fn quiet(mut spec: SandboxSpec) -> Sandbox {
    spec.stdin = Stdio::Null;
    spec.stdout = Stdio::Null;
    spec.stderr = Stdio::Null;
    Sandbox::from_spec(spec)
}

fn run(sb: &Sandbox) {
    let o = sb.status().expect("spawn");
    assert!(o.success(), "{o:?}");
}

fn cases() -> Vec<(&'static str, Sandbox)> {
    let root = rootfs();
    let ns_only = {
        let mut s = SandboxSpec { argv: vec!["/bin/true".into()], ..Default::default() };
        s.namespaces.mount = NsMode::Host;
        quiet(s)
    };
    let busybox = quiet(SandboxSpec {
        argv: vec!["/bin/true".into()],
        rootfs: Some(root.clone()),
        tmp: false,
        sys: false,
        ..Default::default()
    });
    let overlay_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-lower");
    std::fs::create_dir_all(&overlay_dir).unwrap();
    let overlay = quiet(SandboxSpec {
        argv: vec!["/bin/true".into()],
        rootfs: Some(root.clone()),
        tmp: false,
        sys: false,
        mounts: vec![Mount::overlay([overlay_dir], "/work")],
        ..Default::default()
    });
    let host_root = quiet(SandboxSpec { argv: vec!["/bin/true".into()], ..Default::default() });
    let limits = quiet(SandboxSpec {
        argv: vec!["/bin/true".into()],
        rootfs: Some(root.clone()),
        tmp: false,
        sys: false,
        memory: Some(Size(256 << 20)),
        pids: Some(64),
        cpus: Some(1.0),
        ..Default::default()
    });
    let no_seccomp = quiet(SandboxSpec {
        argv: vec!["/bin/true".into()],
        rootfs: Some(root.clone()),
        tmp: false,
        sys: false,
        seccomp: cagette::Seccomp::Mode(cagette::SeccompMode::None),
        ..Default::default()
    });
    // The same busybox tree imported as an image (a plain layer tar): the job runs on the
    // store's layer as an overlay lower with an ephemeral upper.
    let store = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-store");
    let layer = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-busybox-layer.tar");
    assert!(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&layer).arg(".").status().unwrap().success());
    cagette::ImageStore::open(&store).unwrap().import(&layer, "bench-busybox:1").unwrap();
    let image = quiet(SandboxSpec {
        argv: vec!["/bin/true".into()],
        image: Some("bench-busybox:1".into()),
        image_store: Some(store),
        tmp: false,
        sys: false,
        ..Default::default()
    });
    vec![
        ("namespaces_only", ns_only),
        ("busybox_image", image),
        ("busybox_rootfs_proc_dev", busybox),
        ("busybox_rootfs_overlay", overlay),
        ("host_root_defaults", host_root),
        ("busybox_rootfs_memory_pids_cpu_limits", limits),
        ("busybox_rootfs_without_seccomp", no_seccomp),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_to_exit");
    g.measurement_time(Duration::from_secs(8)).sample_size(100);
    let cases = cases();
    for (name, sb) in &cases {
        g.bench_function(*name, |b| b.iter(|| run(sb)));
    }
    // After 200 ms of idle (not timed): attaching to a cgroup can be slow when cold (cgroup v1
    // waits for an RCU grace period on the threadgroup lock); spawning in a loop hides that.
    for (name, idx) in [("busybox_rootfs_after_idle", 1), ("busybox_rootfs_limits_after_idle", 4)] {
        let sb = &cases[idx].1;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    std::thread::sleep(Duration::from_millis(200));
                    let t = std::time::Instant::now();
                    run(sb);
                    total += t.elapsed();
                }
                total
            })
        });
    }
    // The same from a host with 1 GiB of touched heap: the cost must not grow with the host.
    let mut heap = vec![0u8; 1 << 30];
    for i in (0..heap.len()).step_by(4096) {
        heap[i] = 1;
    }
    let (_, busybox) = &cases[1];
    g.bench_function("busybox_rootfs_proc_dev_1GiB_host", |b| b.iter(|| run(busybox)));
    std::hint::black_box(&heap);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
