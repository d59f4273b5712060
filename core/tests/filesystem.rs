//! The sandbox's file system: read-only root, binds, tmpfs, overlay, masks, and containment of
//! symlinks that try to redirect mounts to the host.
mod common;
use cagette::{Mount, Sandbox, Size, Verdict};
use common::*;

#[test]
fn host_root_is_read_only_and_tmp_is_private() {
    let o = sh("touch /usr/cagette-x 2>&1; echo $?; echo hi > /tmp/f && cat /tmp/f");
    let out = stdout(&o);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.ends_with("hi\n"), "{out}");
    assert!(!std::path::Path::new("/usr/cagette-x").exists());
}

#[test]
fn read_only_bind_refuses_writes_and_rw_bind_writes_through() {
    let d = TempDir::new("bind");
    std::fs::write(d.path().join("in"), "data").unwrap();
    let o = Sandbox::new()
        .mount(Mount::bind(d.path(), "/ro").read_only())
        .command("sh")
        .args(["-c", "cat /ro/in; echo x > /ro/new 2>&1 || echo refused"])
        .output()
        .unwrap();
    let out = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    assert!(out.starts_with("data"), "{out}");
    assert!(out.contains("Read-only file system") && out.contains("refused"), "{out}");
    assert!(!d.path().join("new").exists());

    let o = Sandbox::new().mount(Mount::bind(d.path(), "/rw")).command("sh").args(["-c", "echo written > /rw/new"]).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert_eq!(std::fs::read_to_string(d.path().join("new")).unwrap(), "written\n");
}

#[test]
fn bind_of_a_single_file_under_a_read_only_host_directory() {
    // /etc exists on the host and is read-only in the sandbox: cagette binds /etc's entries one by
    // one into a directory of its own so the new file can be mounted, without touching the host.
    let d = TempDir::new("bindfile");
    let f = d.path().join("conf");
    std::fs::write(&f, "k=v\n").unwrap();
    let name = format!("cagette-test-{}.conf", std::process::id());
    let o = Sandbox::new()
        .mount(Mount::bind(&f, format!("/etc/{name}")).read_only())
        .command("sh")
        .args(["-c", &format!("cat /etc/{name}; test -f /etc/passwd && echo passwd-still-there")])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "k=v\npasswd-still-there\n", "{o:?}");
    assert!(!std::path::Path::new(&format!("/etc/{name}")).exists(), "the host's /etc was modified");
}

#[test]
fn mount_point_under_a_read_only_bind_is_refused() {
    // A missing mount point inside a read-only bind cannot be created: a clear EROFS error at
    // step mount, and nothing is created in the bind's source.
    let d = TempDir::new("rofs");
    let ro = d.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let o = Sandbox::new()
        .mount(Mount::bind(&ro, "/ro").read_only())
        .mount(Mount::tmpfs("/ro/sub"))
        .command("true")
        .status();
    let e = o.unwrap_err();
    let f = e.setup_failure().unwrap();
    assert_eq!((f.step, f.errno), (cagette::Step::Mount, Some(libc::EROFS)), "{f:?}");
    assert!(f.hint.as_deref().unwrap_or("").contains("read-only"), "{f:?}");
    assert!(!ro.join("sub").exists());
}

#[test]
fn tmpfs_size_is_enforced() {
    let o = Sandbox::new()
        .mount(Mount::tmpfs("/small").size(Size(1 << 20)))
        .command("sh")
        .args(["-c", "dd if=/dev/zero of=/small/f bs=64k count=64 2>&1; echo rc=$?; du -k /small/f"])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    let kb: u64 = out.lines().last().unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(kb <= 1024, "wrote {kb} KiB into a 1 MiB tmpfs");
}

#[test]
fn masked_and_read_only_paths() {
    // /proc/timer_list and /proc/interrupts are masked (empty), /sys/firmware is an empty dir,
    // /proc/sys is read-only even for root inside.
    let o = sh("wc -c < /proc/timer_list; wc -c < /proc/interrupts; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/domainname 2>&1 || echo refused");
    let out = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = out.lines().collect();
    if std::path::Path::new("/proc/timer_list").exists() {
        assert_eq!(lines[0].trim(), "0", "{out}");
    }
    assert_eq!(lines[1].trim(), "0", "{out}");
    assert_eq!(lines[2].trim(), "0", "{out}");
    assert!(out.contains("Read-only file system") && out.contains("refused"), "{out}");
}

#[test]
fn masks_of_a_kind_share_one_source_and_stay_empty_and_read_only() {
    // Three masked directories get clones of one read-only tmpfs (one superblock), two masked
    // files clones of one /dev/null bind; each is still empty and refuses writes, and no mask
    // is a peer of another (a mount under one must not show under the others).
    let d = TempDir::new("masks");
    let root = busybox_rootfs_copy(d.path());
    for dir in ["m1", "m2", "m3"] {
        std::fs::create_dir(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join("secret"), "s").unwrap();
    }
    std::fs::write(root.join("f1"), "secret").unwrap();
    std::fs::write(root.join("f2"), "secret").unwrap();
    let mut sb = Sandbox::new();
    sb.spec_mut().masked_paths = Some(["/m1", "/f1", "/m2", "/missing", "/f2", "/m3"].map(String::from).to_vec());
    sb.spec_mut().rootfs_propagation = Some(cagette::Propagation::Rshared);
    let o = sb
        .rootfs(&root)
        .command("/bin/sh")
        .args(["-c", "ls -A /m1 /m2 /m3; wc -c < /f1; wc -c < /f2; touch /m2/x 2>&1; mkdir /m3/y 2>&1; grep -E ' /(m[123]|f[12]) ' /proc/self/mountinfo"])
        .output()
        .unwrap();
    let out = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status, Verdict::Exited(0), "{out}");
    assert!(!out.contains("secret"), "a mask shows what it hides: {out}");
    assert_eq!(out.lines().filter(|l| l.trim() == "0").count(), 2, "masked files not empty: {out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "a masked dir took a write: {out}");
    let mounts: Vec<Vec<&str>> = out.lines().filter(|l| l.contains(" - ")).map(|l| l.split(' ').collect()).collect();
    assert_eq!(mounts.len(), 5, "{out}");
    let dev_of = |m: &str| mounts.iter().find(|f| f[4] == m).map(|f| f[2]).unwrap_or_else(|| panic!("{m} not mounted: {out}"));
    assert!(dev_of("/m1") == dev_of("/m2") && dev_of("/m2") == dev_of("/m3"), "the masked dirs are not one tmpfs: {out}");
    assert_eq!(dev_of("/f1"), dev_of("/f2"), "{out}");
    for f in &mounts {
        assert!(f[5].split(',').any(|o| o == "ro"), "mask {} is not read-only: {out}", f[4]);
        // Shared (the root's propagation), each in a peer group of its own.
        let groups: Vec<&&str> = f.iter().filter(|x| x.starts_with("shared:")).collect();
        assert!(groups.len() <= 1, "{out}");
    }
    let groups: Vec<&str> = mounts.iter().flat_map(|f| f.iter().filter(|x| x.starts_with("shared:")).copied()).collect();
    let mut unique = groups.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), groups.len(), "two masks are peers: {out}");
}

#[test]
fn missing_mount_points_are_created_inside_the_root() {
    // Mount points that do not exist are made (every missing directory on the way, then the
    // file or directory itself), also through a symlink of the rootfs, which resolves inside it.
    let d = TempDir::new("mkpoints");
    let root = busybox_rootfs_copy(d.path());
    std::fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink("/real", root.join("lnk")).unwrap();
    let src = d.path().join("src.txt");
    std::fs::write(&src, "bound\n").unwrap();
    let o = Sandbox::new()
        .rootfs(&root)
        .mount(Mount::bind(&src, "/a/b/c/file").read_only())
        .mount(Mount::tmpfs("/x/y"))
        .mount(Mount::bind(&src, "/lnk/sub/f").read_only())
        .command("/bin/sh")
        .args(["-c", "cat /a/b/c/file /real/sub/f; touch /x/y/ok && echo tmpfs-ok"])
        .output()
        .unwrap();
    let out = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status, Verdict::Exited(0), "{out}");
    assert_eq!(out, "bound\nbound\ntmpfs-ok\n");
    // Made in the rootfs, as plain directories and an empty file; nothing outside it.
    assert!(root.join("a/b/c").is_dir() && std::fs::read(root.join("a/b/c/file")).unwrap().is_empty());
    assert!(root.join("x/y").is_dir() && root.join("real/sub/f").is_file());
    assert!(!std::path::Path::new("/real").exists());
}

#[test]
fn minimal_dev() {
    let o = sh("ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; test -c /dev/pts/ptmx && echo pts-ok");
    let out = stdout(&o);
    for name in ["null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin", "stdout", "stderr"] {
        assert!(out.lines().next().unwrap().split(' ').any(|n| n == name), "/dev lacks {name}: {out}");
    }
    assert!(out.contains("\n4\nnull-ok\npts-ok"), "{out}");
}

#[test]
fn busybox_rootfs_with_pivot_root() {
    let root = busybox_rootfs();
    let o = Sandbox::new().rootfs(&root).command("/bin/sh").args(["-c", "ls /; cat /proc/1/cmdline | head -c 12; echo; exit 3"]).output().unwrap();
    assert_eq!(o.status, Verdict::Exited(3), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("bin\n") && out.contains("proc\n") && !out.contains("usr\n"), "{out}");
    assert!(out.contains("cagette-init"), "{out}");
    // The rootfs is read-only unless asked.
    let o = Sandbox::new().rootfs(&root).command("/bin/sh").args(["-c", "touch /x 2>&1"]).output().unwrap();
    assert!(stdout(&o).contains("Read-only"), "{o:?}");
}

#[test]
fn symlinks_in_a_rootfs_cannot_redirect_mounts_to_the_host() {
    let d = TempDir::new("evil");
    let root = busybox_rootfs_copy(d.path());
    std::os::unix::fs::symlink("/", root.join("mnt")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc/../..", root.join("abs")).unwrap();
    let marker = format!("cagette-escape-{}", std::process::id());
    let o = Sandbox::new()
        .rootfs(&root)
        .mount(Mount::tmpfs(format!("/mnt/{marker}-a")))
        .mount(Mount::tmpfs(format!("/up/{marker}-b")))
        .mount(Mount::tmpfs(format!("/abs/{marker}-c")))
        .command("/bin/sh")
        .args(["-c", "grep -c cagette-escape /proc/self/mountinfo"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "3", "{o:?}");
    // Every mount point was created inside the rootfs, none on the host.
    for s in ["a", "b", "c"] {
        assert!(!std::path::Path::new(&format!("/{marker}-{s}")).exists(), "escaped to the host: /{marker}-{s}");
        assert!(root.join(format!("{marker}-{s}")).is_dir(), "mount point {s} inside the root");
    }
}

#[test]
fn overlay_with_ephemeral_upper_leaves_lowers_untouched() {
    let d = TempDir::new("ovl");
    let (l1, l2) = (d.path().join("l1"), d.path().join("l2"));
    std::fs::create_dir_all(&l1).unwrap();
    std::fs::create_dir_all(&l2).unwrap();
    std::fs::write(l1.join("a"), "top").unwrap();
    std::fs::write(l2.join("a"), "bottom").unwrap();
    std::fs::write(l2.join("b"), "b").unwrap();
    let o = Sandbox::new()
        .mount(Mount::overlay([&l1, &l2], "/work"))
        .command("sh")
        .args(["-c", "cat /work/a; echo; echo new > /work/c; rm /work/b; ls /work | tr '\\n' ' '"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "top\na c ", "{o:?}");
    assert!(l2.join("b").exists() && !l1.join("c").exists() && !l2.join("c").exists());
}

#[test]
fn overlay_with_persistent_upper() {
    let d = TempDir::new("ovlp");
    for s in ["lower", "upper", "work"] {
        std::fs::create_dir_all(d.path().join(s)).unwrap();
    }
    std::fs::write(d.path().join("lower/a"), "a").unwrap();
    let o = Sandbox::new()
        .mount(Mount::overlay([d.path().join("lower")], "/data").upper(d.path().join("upper"), d.path().join("work")))
        .command("sh")
        .args(["-c", "echo changed > /data/a"])
        .output()
        .unwrap();
    assert_eq!(o.status, Verdict::Exited(0), "{o:?}");
    assert_eq!(std::fs::read_to_string(d.path().join("upper/a")).unwrap(), "changed\n");
    assert_eq!(std::fs::read_to_string(d.path().join("lower/a")).unwrap(), "a");
}

#[test]
fn cwd_is_inside_the_sandbox() {
    let o = Sandbox::new().cwd("/usr").command("pwd").output().unwrap();
    assert_eq!(stdout(&o), "/usr\n");
    // Default: /, never the host's cwd.
    let o = Sandbox::new().command("pwd").output().unwrap();
    assert_eq!(stdout(&o), "/\n");
}

#[test]
fn mountinfo_lists_binds_and_new_file_systems_in_the_specs_order() {
    // OCI asks for mounts in the listed order; mountinfo is sorted by mount id, given when a
    // bind's tree is cloned or a file system is made. (Without a user namespace, as an OCI
    // runtime's containers mostly are: with one, a root caller's binds are id-mapped mounts the
    // parent makes, listed before the sandbox's own.)
    let d = TempDir::new("order");
    std::fs::write(d.path().join("in"), "data").unwrap();
    let o = Sandbox::new()
        .user_namespace(cagette::NsMode::Host)
        .mount(Mount::tmpfs("/tmp/m1"))
        .mount(Mount::bind(d.path(), "/tmp/m2"))
        .mount(Mount::tmpfs("/tmp/m3"))
        .mount(Mount::bind(d.path(), "/tmp/m4").read_only())
        .command("sh")
        .args(["-c", "awk '$5 ~ \"^/tmp/m\" {print $5}' /proc/self/mountinfo | tr '\\n' ' '; cat /tmp/m4/in"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "/tmp/m1 /tmp/m2 /tmp/m3 /tmp/m4 data", "{o:?}");
}

#[test]
fn a_recursive_bind_above_the_staging_directory_holds_the_hosts_tree_not_the_new_root() {
    // The new root is assembled at /tmp (in the child's mount namespace): a recursive bind of
    // /tmp is cloned before that, so it shows the host's /tmp, not the sandbox's root.
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("above");
    std::fs::write(d.path().join("in"), "data").unwrap();
    let name = d.path().file_name().unwrap().to_string_lossy().to_string();
    let host_tmp = std::fs::metadata("/tmp").unwrap().ino();
    for userns in [cagette::NsMode::New, cagette::NsMode::Host] {
        let o = Sandbox::new()
            .user_namespace(userns.clone())
            .mount(Mount::bind("/tmp", "/tmp/ht").read_only())
            .command("sh")
            .args(["-c", &format!("cat /tmp/ht/{name}/in; echo; stat -c %i /tmp/ht")])
            .output()
            .unwrap();
        assert_eq!(stdout(&o), format!("data\n{host_tmp}\n"), "{userns:?}: {o:?}");
    }
}
