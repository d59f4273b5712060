//! Setup errors: each gives a typed failure naming the step and the path, and leaves nothing
//! behind (no process, no mount, no fd). One test binary, run serially, so the leak checks see
//! only their own work.
mod common;
use cagette::{IdMap, Mount, Sandbox, Step};
use common::*;
use std::path::PathBuf;

/// Held by each test of this file: the leak checks count the whole process's fds and children.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_clean<T>(f: impl FnOnce() -> T) -> T {
    let mounts = host_mounts();
    let fds = fd_count();
    let r = f();
    assert_eq!(host_mounts(), mounts, "a mount leaked onto the host");
    assert_eq!(fd_count(), fds, "an fd leaked");
    assert!(!has_children(), "a child process was left behind");
    r
}

fn failure(sb: Sandbox) -> cagette::SetupFailure {
    let e = sb.status().expect_err("setup must fail");
    e.setup_failure().cloned().unwrap_or_else(|| panic!("not a setup failure: {e}"))
}

#[test]
fn setup_errors_are_typed_and_leave_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Warm up once: the init memfd is created on first use and kept for the process.
    Sandbox::new().command("true").status().unwrap();

    check_clean(|| {
        let f = failure(Sandbox::new().command("/no/such/binary"));
        assert_eq!((f.step, f.errno), (Step::Exec, Some(libc::ENOENT)));
        assert_eq!(f.path, Some(PathBuf::from("/no/such/binary")));
        assert_eq!(f.exit_code(), 127);
        assert!(f.hint.is_some());
    });

    let d = TempDir::new("noexec");
    std::fs::write(d.path().join("data"), "not a program").unwrap();
    check_clean(|| {
        // Mode 0644: not executable.
        let f = failure(Sandbox::new().mount(Mount::bind(d.path(), "/d").read_only()).command("/d/data"));
        assert_eq!((f.step, f.errno), (Step::Exec, Some(libc::EACCES)));
        assert_eq!(f.exit_code(), 126);
    });

    check_clean(|| {
        let f = failure(Sandbox::new().rootfs("/no/such/rootfs").command("/bin/sh"));
        assert_eq!((f.step, f.errno), (Step::Mount, Some(libc::ENOENT)));
        assert_eq!(f.path, Some(PathBuf::from("/no/such/rootfs")));
        assert_eq!(f.exit_code(), 125);
    });

    check_clean(|| {
        let f = failure(Sandbox::new().mount(Mount::bind("/no/such/source", "/src")).command("true"));
        assert_eq!((f.step, f.errno), (Step::Mount, Some(libc::ENOENT)));
        assert_eq!(f.path, Some(PathBuf::from("/no/such/source")));
        assert!(f.message.contains("/src"), "{f:?}");
    });

    check_clean(|| {
        let f = failure(Sandbox::new().hostname("bad host!").command("true"));
        assert_eq!(f.step, Step::Hostname);
        assert!(f.message.contains("bad host!"));
    });

    check_clean(|| {
        // Overlapping ranges: the kernel refuses the map after clone.
        let f = failure(
            Sandbox::new()
                .uid_map([IdMap { inside: 0, outside: 100000, count: 10 }, IdMap { inside: 5, outside: 200000, count: 10 }])
                .command("true"),
        );
        assert_eq!(f.step, Step::IdMap);
        assert!(f.errno.is_some());
        assert!(f.path.as_ref().unwrap().to_string_lossy().ends_with("/uid_map"), "{f:?}");
    });

    check_clean(|| {
        let f = failure(Sandbox::new().cwd("/no/such/dir").command("true"));
        assert_eq!((f.step, f.errno), (Step::Cwd, Some(libc::ENOENT)));
    });

    check_clean(|| {
        let f = failure(Sandbox::new().mount(Mount::tmpfs("relative/path")).command("true"));
        assert_eq!(f.step, Step::Mount);
        let f = failure(Sandbox::new().mount(Mount::tmpfs("/a/../b")).command("true"));
        assert_eq!(f.step, Step::Mount);
    });

    check_clean(|| {
        // No command, or an empty one: a spec error (125), not an exec failure (126).
        for sb in [Sandbox::new(), Sandbox::new().command("")] {
            let f = failure(sb);
            assert_eq!(f.step, Step::Spec);
            assert_eq!(f.exit_code(), 125);
        }
    });

    check_clean(|| {
        let f = failure(Sandbox::new().pass_fd(9999, 5).command("true"));
        assert_eq!((f.step, f.errno), (Step::Stdio, Some(libc::EBADF)));
    });

    // The failure renders as a readable message with its hint.
    let f = failure(Sandbox::new().command("/no/such/binary"));
    let text = f.to_string();
    assert!(text.contains("step exec") && text.contains("No such file or directory") && text.contains("hint:"), "{text}");
}

#[test]
fn what_execve_cannot_take_is_a_spec_error_before_any_setup() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (sb, want) in [
        (Sandbox::new().command("echo").arg("a\0b"), "argv: \"a\\0b\" contains a NUL byte"),
        (Sandbox::new().command("true").env("A=B", "1"), "env: the variable name \"A=B\""),
        (Sandbox::new().command("true").env("", "1"), "env: the variable name \"\""),
        (Sandbox::new().command("true").env("A", "x\0y"), "env: the value of A contains a NUL byte"),
    ] {
        let spec = sb.spec().clone();
        let e = spec.validate().expect_err("validate() must refuse it");
        assert!(e.message.contains(want), "{}", e.message);
        let f = check_clean(|| failure(sb));
        assert_eq!(f.step, Step::Spec, "{f:?}");
        assert!(f.message.contains(want), "{}", f.message);
    }
}
