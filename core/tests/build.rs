//! `ImageStore::build` (issue 18): Dockerfiles built into images of the store, as root.
mod common;
use cagette::{BuildError, BuildEvent, BuildOptions, ImageStore, Sandbox, Verdict};
use common::oci::*;
use common::*;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// One build test at a time: each checks that no step directory of this process is left.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: building images needs root");
    false
}

/// A store with the busybox image `busybox:1` (blobs kept, as a build's base must have).
fn store_with_base(d: &Path, name: &str) -> (PathBuf, ImageStore) {
    let dir = d.join(name);
    let lay = layout(&d.join(format!("{name}-layout")), &[busybox_layer()], &["/bin/sh"]);
    let store = ImageStore::open(&dir).unwrap().keep_blobs(true);
    store.import(&lay, "busybox:1").unwrap();
    let store = ImageStore::open(&dir).unwrap();
    (dir, store)
}

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// Builds and returns the image and the events seen.
fn build(store: &ImageStore, ctx: &Path, opts: &BuildOptions) -> (Result<cagette::ImageInfo, BuildError>, Vec<BuildEvent>) {
    let mut ev = Vec::new();
    let r = store.build(ctx, opts, &mut |e| {
        ev.push(e.clone());
        ControlFlow::Continue(())
    });
    (r, ev)
}

fn tagged(tag: &str) -> BuildOptions {
    let mut o = BuildOptions::default();
    o.tag = Some(tag.into());
    o.network_host = false;
    o
}

fn run_in(store_dir: &Path, image: &str, argv: &[&str]) -> cagette::Output {
    let mut spec = Sandbox::new().image(image).stdout(cagette::Stdio::Piped).stderr(cagette::Stdio::Piped).spec().clone();
    spec.image_store = Some(store_dir.to_path_buf());
    // The image's own /tmp (what a RUN step left there), not a fresh tmpfs.
    spec.tmp = false;
    if !argv.is_empty() {
        spec.argv = argv.iter().map(|s| s.to_string()).collect();
    }
    Sandbox::from_spec(spec).output().unwrap()
}

fn config_of(store_dir: &Path, info: &cagette::ImageInfo) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(store_dir.join("blobs/sha256").join(&info.config_digest[7..])).unwrap()).unwrap()
}

fn leftovers() -> Vec<PathBuf> {
    let base = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| "/var/tmp".into());
    std::fs::read_dir(base).map(|d| d.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("cagette-build-run-{}-", std::process::id())) || n.to_string_lossy().starts_with(&format!("cagette-build-copy-{}-", std::process::id())))).collect()).unwrap_or_default()
}

#[test]
fn a_dockerfile_builds_runs_and_rebuilds_from_the_cache() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let d = TempDir::new("build");
    let (store_dir, store) = store_with_base(d.path(), "store");
    let ctx = d.path().join("ctx");
    write(&ctx.join("src/a.txt"), "hello\n");
    write(&ctx.join("src/sub/b.txt"), "deep\n");
    write(&ctx.join("src/debug.log"), "noise\n");
    write(&ctx.join("src/keep.log"), "kept\n");
    write(&ctx.join(".dockerignore"), "**/*.log\n!src/keep.log\n");
    write(&ctx.join("Dockerfile"), r#"FROM busybox:1
ARG V=1
ENV GREETING="hi there" \
    N=$V
WORKDIR /app
COPY src/ ./src/
ENV LATE=late
RUN echo "v=$V n=$N $LATE $(pwd)" > /app/built && rm /bin/true && echo tmp > /tmp/left
USER 1000:1000
CMD ["cat", "/app/built"]
"#);
    let mut o = tagged("app:1");
    o.build_args.insert("V".into(), "2".into());
    let (r, ev) = build(&store, &ctx, &o);
    let info = r.unwrap();
    assert_eq!(ev.iter().filter(|e| matches!(e, BuildEvent::Step { .. })).count(), 9, "{ev:?}");
    assert!(!ev.contains(&BuildEvent::Cached));
    assert!(matches!(ev.last(), Some(BuildEvent::Done(m)) if *m == info.manifest));
    assert_eq!(info.layers.len(), 3, "the base's, COPY's and RUN's");
    // It runs: CMD, the ARG seen by RUN, ENV kept, USER applied, RUN's changes in its layer.
    let out = run_in(&store_dir, "app:1", &[]);
    assert_eq!(out.status, Verdict::Exited(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "v=2 n=2 late /app\n", "the step sees the ENV and WORKDIR before it");
    let out = run_in(&store_dir, "app:1", &["sh", "-c", "id -u; echo $GREETING; echo ${V:-unset}; cat /tmp/left; ls /bin/true 2>/dev/null || echo no-true; find /app/src | sort; stat -c '%a %u:%g %Y' /app/src/a.txt"]);
    assert_eq!(stdout(&out), "1000\nhi there\nunset\ntmp\nno-true\n/app/src\n/app/src/a.txt\n/app/src/keep.log\n/app/src/sub\n/app/src/sub/b.txt\n644 0:0 0\n", "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = config_of(&store_dir, &info);
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    assert_eq!(cfg["config"]["User"], "1000:1000");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["cat", "/app/built"]));
    assert!(cfg["config"]["Env"].as_array().unwrap().contains(&serde_json::json!("N=2")));
    assert_eq!(cfg["created"], "1970-01-01T00:00:00Z");
    // Not in the list: the steps' records (the build cache).
    let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["app:1", "busybox:1"]);
    // Nothing changed: no step runs, the same image.
    let (r, ev) = build(&store, &ctx, &o);
    assert_eq!(r.unwrap().manifest, info.manifest);
    assert_eq!(ev.iter().filter(|e| **e == BuildEvent::Cached).count(), 2, "{ev:?}");
    // An ignored file changes: still cached. A copied file changes: COPY and RUN run again.
    write(&ctx.join("src/debug.log"), "other noise\n");
    let (_, ev) = build(&store, &ctx, &o);
    assert_eq!(ev.iter().filter(|e| **e == BuildEvent::Cached).count(), 2);
    write(&ctx.join("src/a.txt"), "changed\n");
    let (r, ev) = build(&store, &ctx, &o);
    let changed = r.unwrap();
    assert_ne!(changed.manifest, info.manifest);
    assert_eq!(ev.iter().filter(|e| **e == BuildEvent::Cached).count(), 0);
    // Another build argument: its ENV changes the config, so the steps after it run again.
    o.build_args.insert("V".into(), "3".into());
    let (r, ev) = build(&store, &ctx, &o);
    assert_eq!(ev.iter().filter(|e| **e == BuildEvent::Cached).count(), 0);
    assert_eq!(stdout(&run_in(&store_dir, &r.unwrap().name, &[])), "v=3 n=3 late /app\n");
    // Reproducible: without the cache, and in another store (another machine), the same digest.
    o.build_args.insert("V".into(), "2".into());
    o.no_cache = true;
    let (r, ev) = build(&store, &ctx, &o);
    assert_eq!(r.unwrap().manifest, changed.manifest);
    assert!(!ev.contains(&BuildEvent::Cached));
    let (_, other) = store_with_base(d.path(), "other");
    let (r, _) = build(&other, &ctx, &o);
    assert_eq!(r.unwrap().manifest, changed.manifest);
    // gc drops the build cache: the next build runs every step, to the same image.
    store.gc().unwrap();
    o.no_cache = false;
    let (r, ev) = build(&store, &ctx, &o);
    assert_eq!(r.unwrap().manifest, changed.manifest);
    assert!(!ev.contains(&BuildEvent::Cached));
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

#[test]
fn stages_scratch_copy_from_and_the_config_instructions() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let d = TempDir::new("build-stages");
    let (store_dir, store) = store_with_base(d.path(), "store");
    let ctx = d.path().join("ctx");
    write(&ctx.join("Dockerfile"), r#"# syntax=docker/dockerfile:1
ARG BASE=busybox:1
FROM $BASE AS builder
RUN mkdir -p /out && echo compiled > /out/bin.txt && ln -s bin.txt /out/link
FROM scratch AS final
COPY --from=builder /out/ /
COPY --from=0 --chmod=0755 /bin/busybox /bin/sh
SHELL ["/bin/sh", "-ec"]
LABEL org.example.v="1" other=two
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --retries=2 CMD ["/bin/sh", "-c", "true"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /bin.txt; readlink /link"]
"#);
    let (r, _) = build(&store, &ctx, &tagged("final:1"));
    let info = r.unwrap();
    assert_eq!(info.layers.len(), 2, "scratch: only the two COPY layers");
    let out = run_in(&store_dir, "final:1", &[]);
    assert_eq!(stdout(&out), "compiled\nbin.txt\n", "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = config_of(&store_dir, &info)["config"].clone();
    assert_eq!(cfg["Labels"], serde_json::json!({"org.example.v": "1", "other": "two"}));
    assert_eq!(cfg["ExposedPorts"], serde_json::json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(cfg["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(cfg["StopSignal"], "SIGTERM");
    assert_eq!(cfg["Healthcheck"], serde_json::json!({"Test": ["CMD", "/bin/sh", "-c", "true"], "Interval": 30_000_000_000u64, "Retries": 2}));
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    // --target: the first stage only.
    let mut o = tagged("builder:1");
    o.target = Some("builder".into());
    let (r, _) = build(&store, &ctx, &o);
    let b = r.unwrap();
    assert_eq!(b.layers.len(), 2);
    assert_eq!(stdout(&run_in(&store_dir, "builder:1", &["cat", "/out/bin.txt"])), "compiled\n");
    // The built image exports as a docker archive that podman loads with its config.
    let archive = d.path().join("final.tar");
    store.export("final:1", &archive, cagette::ExportFormat::DockerArchive).unwrap();
    if std::process::Command::new("podman").arg("--version").output().is_ok() {
        let p = d.path().join("podman");
        let podman = |args: &[&str]| {
            let o = std::process::Command::new("podman").args(["--root", &p.join("root").to_string_lossy(), "--runroot", &p.join("run").to_string_lossy(), "--storage-driver", "vfs", "--events-backend", "file"]).args(args).output().unwrap();
            assert!(o.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        podman(&["load", "-i", &archive.to_string_lossy()]);
        let seen = podman(&["image", "inspect", "localhost/final:1", "--format", "{{.Config.Entrypoint}} {{.Config.Cmd}} {{.Config.StopSignal}}"]);
        assert_eq!(seen.trim(), "[/bin/sh -c] [cat /bin.txt; readlink /link] SIGTERM");
        // And it runs there (with runc: crun 1.8 refuses a hybrid cgroup host like this one;
        // this VM lacks CAP_SYS_RESOURCE, hence the ulimits).
        // Its cgroups go under a parent of this test's own (podman's default parent,
        // /libpod_parent, would stay behind in every v1 hierarchy), removed by the guard.
        struct CgroupParent(String);
        impl Drop for CgroupParent {
            fn drop(&mut self) {
                for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                    let dir = e.path().join(self.0.trim_start_matches('/'));
                    let _ = std::fs::remove_dir(dir.join("conmon"));
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        let parent = CgroupParent(format!("/cagette-test-build-{}", std::process::id()));
        let ran = podman(&["run", "--rm", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--cgroup-parent", &parent.0, "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", "localhost/final:1"]);
        assert_eq!(ran, "compiled\nbin.txt\n");
        podman(&["system", "reset", "-f"]);
    } else {
        eprintln!("podman missing: the archive's load was not checked");
    }
}

#[test]
fn bad_input_is_a_clear_error_and_nothing_is_tagged() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let d = TempDir::new("build-bad");
    let (store_dir, store) = store_with_base(d.path(), "store");
    let ctx = d.path().join("ctx");
    write(&ctx.join("ok.txt"), "ok\n");
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("out-link")).unwrap();
    nix::unistd::mkfifo(&ctx.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A base imported without its blobs cannot be named by a built image's manifest.
    let lay = layout(&d.path().join("noblobs"), &[busybox_layer()], &["/bin/true"]);
    store.import(&lay, "noblobs:1").unwrap();
    let cases: &[(&str, &str)] = &[
        ("FROM busybox:1\nCOPY ../x /x\n", "Dockerfile:2: COPY: ../x is outside the build context"),
        ("FROM busybox:1\nCOPY out-link /x\n", "out-link leads outside the build context"),
        ("FROM busybox:1\nCOPY fifo /x\n", "fifo is not a file, directory or symlink"),
        ("FROM busybox:1\nCOPY missing /x\n", "missing: no such file in the build context"),
        ("FROM busybox:1\nADD https://example.com/x /x\n", "downloading is not supported"),
        ("FROM busybox:1\nCOPY ok.txt fifo /x\n", "the destination must be a directory"),
        ("FROM busybox:1\n\nFROBNICATE x\n", "Dockerfile:3:1: unknown instruction"),
        ("FROM nothere:1\n", "FROM nothere:1: no image named"),
        ("FROM noblobs:1\nRUN true\n", "has not kept its manifest"),
        ("FROM busybox:1\nRUN --mount=type=secret,id=x true\n", "type=secret: not supported"),
        ("FROM busybox:1\nRUN --mount=type=bind,source=../x,target=/x true\n", "leads outside the build context"),
        ("FROM busybox:1\nRUN --mount=type=bind,target=/x,rw true\n", "read-only here"),
        ("FROM busybox:1\nRUN --mount=type=cache,target=relative true\n", "an absolute path"),
        ("FROM busybox:1\nRUN --security=insecure true\n", "RUN --security: not supported"),
        ("FROM busybox:1\nEXPOSE eighty\n", "EXPOSE eighty: expected PORT"),
        ("FROM busybox:1\nCOPY --chown=nobody-here ok.txt /x\n", "--chown=nobody-here: no such user"),
        ("FROM busybox:1\nENV A=\"unclosed\n", "unmatched quote"),
        ("FROM busybox:1\nONBUILD RUN true\n", "ONBUILD is not supported"),
        // A symlink a step planted is never followed by the build itself (here to the host's /etc).
        ("FROM busybox:1\nRUN ln -s /etc /planted\nCOPY ok.txt /planted/x\n", "/planted is not a directory in the image"),
        // After the command only in a shell-form RUN; elsewhere the document's lines are read
        // as instructions, and the error says why.
        ("FROM busybox:1\nCOPY ok.txt /x <<EOF\nhello\nEOF\n", "read for RUN in shell form only"),
        // A document that never ends.
        ("FROM busybox:1\nRUN cat <<EOF > /f\nhello\n", "read for RUN in shell form only"),
    ];
    for (text, want) in cases {
        write(&ctx.join("Dockerfile"), text);
        let (r, _) = build(&store, &ctx, &tagged("bad:1"));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(store.get("bad:1").is_err(), "{text:?} tagged an image");
    }
    // A failing RUN: its exit code and its output (captured) in the error; nothing tagged.
    write(&ctx.join("Dockerfile"), "FROM busybox:1\nCOPY ok.txt /ok.txt\nRUN echo before-failing; cat /ok.txt; exit 3\n");
    let (r, _) = build(&store, &ctx, &tagged("bad:1"));
    match r.unwrap_err() {
        BuildError::Step { line, verdict, output, .. } => {
            assert_eq!(line, 3);
            assert_eq!(verdict, "exited with status 3");
            assert_eq!(output, "before-failing\nok\n");
        }
        e => panic!("{e}"),
    }
    assert!(store.get("bad:1").is_err());
    // A cancelled build: nothing tagged either.
    write(&ctx.join("Dockerfile"), "FROM busybox:1\nRUN true\n");
    let r = store.build(&ctx, &tagged("bad:1"), &mut |e| if matches!(e, BuildEvent::Step { n: 2, .. }) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) });
    assert!(matches!(r, Err(BuildError::Image(cagette::ImageError::Cancelled))), "{r:?}");
    assert!(store.get("bad:1").is_err());
    // A missing context and a missing Dockerfile.
    let e = build(&store, &d.path().join("nothing"), &tagged("bad:1")).0.unwrap_err().to_string();
    assert!(e.contains("the build context") && e.contains("nothing"), "{e}");
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    let e = build(&store, &ctx, &tagged("bad:1")).0.unwrap_err().to_string();
    assert!(e.contains("read the Dockerfile"), "{e}");
    // Nothing left: no step directory, no staging in the store.
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    assert_eq!(std::fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
}

// ---- the same Dockerfiles through buildah bud: the same trees and config ----

/// busybox as an OCI layout whose config has a history entry (buildah wants one per layer).
fn layout_with_history(dir: &Path) -> PathBuf {
    let l = layout(dir, &[busybox_layer()], &["/bin/sh"]);
    let blobs = l.join("blobs/sha256");
    let read = |d: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(blobs.join(&d[7..])).unwrap()).unwrap() };
    let mut index = serde_json::from_slice::<serde_json::Value>(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    config["history"] = serde_json::json!([{"created": "1970-01-01T00:00:00Z", "created_by": "busybox-static"}]);
    config["config"]["Env"] = serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    let (cd, cn) = put_blob(&blobs, config.to_string().as_bytes());
    manifest["config"]["digest"] = serde_json::json!(cd);
    manifest["config"]["size"] = serde_json::json!(cn);
    let (md, mn) = put_blob(&blobs, manifest.to_string().as_bytes());
    index["manifests"][0]["digest"] = serde_json::json!(md);
    index["manifests"][0]["size"] = serde_json::json!(mn);
    std::fs::write(l.join("index.json"), index.to_string()).unwrap();
    l
}

/// Every path of a tree with its type, mode, owner, size and content hash or link target (not
/// mtimes), sorted.
fn tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_file() {
                sha(&std::fs::read(&p).unwrap())[7..19].to_string()
            } else {
                String::new()
            };
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.push(format!("{rel} {:o} {}:{} {what}", md.mode(), md.uid(), md.gid()));
        }
    }
    out.sort();
    out
}

#[test]
fn the_same_dockerfiles_give_what_buildah_gives() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    assert!(std::process::Command::new("buildah").arg("--version").output().is_ok_and(|o| o.status.success()), "this test compares with buildah: apt-get install buildah");
    let d = TempDir::new("build-vs-buildah");
    let lay = layout_with_history(&d.path().join("base"));
    let store_dir = d.path().join("store");
    ImageStore::open(&store_dir).unwrap().keep_blobs(true).import(&lay, "localhost/busybox:1").unwrap();
    let store = ImageStore::open(&store_dir).unwrap();
    let broot = d.path().join("buildah");
    let buildah = |args: &[&str]| -> String {
        let o = std::process::Command::new("buildah").args(["--root", &broot.join("root").to_string_lossy(), "--runroot", &broot.join("run").to_string_lossy(), "--storage-driver", "vfs"]).args(args).output().unwrap();
        assert!(o.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let id = buildah(&["pull", "-q", &format!("oci:{}", lay.display())]);
    buildah(&["tag", &id, "localhost/busybox:1"]);
    let corpus: &[(&str, &[(&str, &str)], &str)] = &[
        // ARG, ENV, WORKDIR, COPY of a directory with .dockerignore, RUN (whiteout), USER, CMD.
        ("app", &[("src/a.txt", "hello\n"), ("src/sub/b.txt", "deep\n"), ("src/x.log", "no\n"), (".dockerignore", "**/*.log\n")], r#"FROM localhost/busybox:1
ARG V=1
ENV GREETING="hi there" N=$V
WORKDIR /app
COPY src/ ./src/
RUN echo "v=$V n=$N" > /app/built && rm /bin/true && mkdir -p /var/cache/x && echo c > /var/cache/x/f
USER 1000
CMD ["cat", "/app/built"]
"#),
        // COPY of single files, renamed, globs, --chown/--chmod; an opaque directory, metadata
        // changes of the base's files; WORKDIR and VOLUME directories made by the next RUN;
        // shell-form ENTRYPOINT. (Not SHELL: buildah ignores it for OCI images.)
        ("files", &[("a.txt", "A\n"), ("b.txt", "B\n"), ("c.md", "C\n"), ("tool.sh", "#!/bin/sh\necho tool\n")], r#"FROM localhost/busybox:1
COPY a.txt /renamed
COPY *.txt /dst/
COPY --chown=1000:1000 --chmod=0640 c.md /dst/c.md
COPY tool.sh /usr/local/bin/
RUN rm -rf /root && mkdir /root && echo only > /root/new && chown 7:7 /root && chmod 0700 /tmp && chown 7:7 /etc/passwd && ln -s ../renamed /dst/link && ln /renamed /hard
WORKDIR /new/deep
RUN pwd > /where
LABEL a=1 b="two words"
EXPOSE 80 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
ENTRYPOINT cat /where
RUN ls -d /data /new/deep > /made
"#),
        // Stages: scratch, COPY --from a named stage and by index.
        ("stages", &[("note", "n\n")], r#"FROM localhost/busybox:1 AS builder
RUN mkdir -p /out/sub && echo compiled > /out/bin.txt && ln -s bin.txt /out/link && chmod 0751 /out/sub
FROM scratch
COPY --from=builder /out/ /
COPY --from=0 /bin/busybox /bin/sh
COPY note /
CMD ["/bin/sh"]
"#),
    ];
    // Paths only buildah's RUN leaves: the mount points of its own /etc/hosts, /etc/hostname,
    // /etc/resolv.conf and /run (empty files and a directory).
    let buildah_only = |l: &String| ["etc/hosts ", "etc/hostname ", "etc/resolv.conf ", "run "].iter().any(|p| l.starts_with(p));
    for (name, files, dockerfile) in corpus {
        let ctx = d.path().join(format!("ctx-{name}"));
        for (f, text) in *files {
            write(&ctx.join(f), text);
        }
        std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(ctx.join(files[0].0)).unwrap().permissions(), 0o644);
        write(&ctx.join("Dockerfile"), dockerfile);
        let tag = format!("localhost/{name}:1");
        let (r, _) = build(&store, &ctx, &tagged(&tag));
        let info = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        buildah(&["bud", "-q", "--isolation", "chroot", "-t", &tag, &ctx.to_string_lossy()]);
        // The trees.
        let ours = d.path().join(format!("ours-{name}"));
        store.unpack(&tag, &ours).unwrap();
        let container = buildah(&["from", "-q", &tag]);
        let mnt = PathBuf::from(buildah(&["mount", &container]));
        let ours = tree(&ours);
        let theirs: Vec<String> = tree(&mnt).into_iter().filter(|l| !buildah_only(l) || ours.contains(l)).collect();
        buildah(&["umount", &container]);
        buildah(&["rm", &container]);
        let only_ours: Vec<_> = ours.iter().filter(|l| !theirs.contains(l)).collect();
        let only_theirs: Vec<_> = theirs.iter().filter(|l| !ours.contains(l)).collect();
        assert!(only_ours.is_empty() && only_theirs.is_empty(), "{name}: only in cagette's: {only_ours:#?}\nonly in buildah's: {only_theirs:#?}");
        // The config.
        let inspected: serde_json::Value = serde_json::from_str(&buildah(&["inspect", "--type", "image", &tag])).unwrap();
        let mut theirs = inspected["OCIv1"]["config"].clone();
        // buildah's own label.
        if let Some(l) = theirs.get_mut("Labels").and_then(|l| l.as_object_mut()) {
            l.remove("io.buildah.version");
        }
        let ours = config_of(&store_dir, &info)["config"].clone();
        for k in ["Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal"] {
            let empty = |v: &serde_json::Value| v.is_null() || v.as_str() == Some("") || v.as_object().is_some_and(|o| o.is_empty()) || v.as_array().is_some_and(|a| a.is_empty());
            let (a, b) = (&ours[k], &theirs[k]);
            assert!(a == b || empty(a) && empty(b), "{name}: config {k}: cagette {a}, buildah {b}");
        }
    }
    buildah(&["rmi", "-a", "-f"]);
}

/// A tar with these entries: (path, type, data or link target, uid).
fn archive(entries: &[(&str, tar::EntryType, &str, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, uid) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory { 0o750 } else { 0o640 });
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_mtime(1_000_000);
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_size(0);
                // Raw names: the tar crate would refuse to write some of the bad ones.
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_link_name(data).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn add_extracts_local_archives_and_runs_see_proxy_arguments() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let d = TempDir::new("build-add");
    let (store_dir, store) = store_with_base(d.path(), "store");
    let ctx = d.path().join("ctx");
    use tar::EntryType as T;
    let good = archive(&[("dir", T::Directory, "", 1234), ("dir/file", T::Regular, "inside\n", 1234), ("dir/link", T::Symlink, "file", 0), ("dir/hard", T::Link, "dir/file", 0), ("top.txt", T::Regular, "top\n", 0)]);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.tar.gz"), gzip(&good)).unwrap();
    std::fs::write(ctx.join("plain.tar"), &good).unwrap();
    write(&ctx.join("Dockerfile"), "FROM busybox:1\nADD a.tar.gz /opt/\nADD plain.tar /plain\nRUN echo \"proxy=$HTTP_PROXY\" > /proxy\n");
    let mut o = tagged("add:1");
    o.build_args.insert("HTTP_PROXY".into(), "http://proxy.example:3128".into());
    let (r, _) = build(&store, &ctx, &o);
    r.unwrap();
    let out = run_in(&store_dir, "add:1", &["sh", "-c", "cat /opt/dir/file /opt/dir/hard /plain/top.txt /proxy; readlink /opt/dir/link; stat -c '%n %a %u:%g' /opt/dir /opt/dir/file /plain/dir/file"]);
    assert_eq!(stdout(&out), "inside\ninside\ntop\nproxy=http://proxy.example:3128\nfile\n/opt/dir 750 1234:1234\n/opt/dir/file 640 1234:1234\n/plain/dir/file 640 1234:1234\n", "{}", String::from_utf8_lossy(&out.stderr));
    // Another proxy: the same steps from the cache (a proxy is not part of the key).
    o.build_args.insert("HTTP_PROXY".into(), "http://other:3128".into());
    let (_, ev) = build(&store, &ctx, &o);
    assert_eq!(ev.iter().filter(|e| **e == BuildEvent::Cached).count(), 3, "{ev:?}");
    // Archives that would escape, plant a whiteout or hold a device: refused, nothing tagged.
    for (bad, want) in [
        (archive(&[("../escape", T::Regular, "x", 0)]), "leads outside the destination"),
        (archive(&[("dir/.wh.file", T::Regular, "", 0)]), "whiteout name"),
        (archive(&[("fifo", T::Fifo, "", 0)]), "not extracted"),
        (archive(&[("hard", T::Link, "nothing", 0)]), "has not given before"),
    ] {
        std::fs::write(ctx.join("bad.tar"), bad).unwrap();
        write(&ctx.join("Dockerfile"), "FROM busybox:1\nADD bad.tar /x/\n");
        let e = build(&store, &ctx, &tagged("bad:1")).0.unwrap_err().to_string();
        assert!(e.contains("Dockerfile:2: ADD bad.tar: ") && e.contains(want), "{e}");
        assert!(store.get("bad:1").is_err());
    }
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

#[test]
fn here_documents_in_run_and_copy() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let d = TempDir::new("build-heredoc");
    let (store_dir, store) = store_with_base(d.path(), "store");
    let ctx = d.path().join("ctx");
    write(&ctx.join("Dockerfile"), &r#"FROM busybox:1
ARG WHO=world
RUN <<EOF
echo "hello $WHO" > /greeting
echo second >> /greeting
EOF
RUN <<'EOF' sh -x
echo "$HOME literal" > /stdin-fed
EOF
RUN <<EOF
#!/bin/sh -e
echo "from the #! line" > /shebang
EOF
COPY <<A <<B /docs/
first $WHO
A
second
B
COPY --chmod=0600 <<'EOT' /single
no $WHO expansion
EOT
RUN cat <<EOF > /late \
 && cat <<-'TABS' >> /late
late $WHO
EOF
<TAB>tabbed $WHO
<TAB>TABS
RUN echo "a <<NOT a heredoc" > /quoted && tr a-z A-Z <<X >> /quoted
upper
X
RUN --network=none cat <<EOF > /from
FROM scratch
EOF
"#.replace("<TAB>", "\t"));
    let (r, _) = build(&store, &ctx, &tagged("heredoc:1"));
    r.unwrap();
    let out = run_in(&store_dir, "heredoc:1", &["sh", "-c", "cat /greeting /stdin-fed /shebang /docs/A /docs/B /single; stat -c %a /single"]);
    assert_eq!(stdout(&out), "hello world\nsecond\n/root literal\nfrom the #! line\nfirst world\nsecond\nno $WHO expansion\n600\n", "{}", String::from_utf8_lossy(&out.stderr));
    // Documents after a RUN's command (`RUN cat <<EOF > f`): the shell reads them, tabs
    // stripped for `<<-`, quoted `<<` left alone, a body line that looks like an instruction
    // kept as text.
    let out = run_in(&store_dir, "heredoc:1", &["cat", "/late", "/quoted", "/from"]);
    assert_eq!(stdout(&out), "late world\ntabbed $WHO\na <<NOT a heredoc\nUPPER\nFROM scratch\n", "{}", String::from_utf8_lossy(&out.stderr));
    // Another value of the argument: the documents that expand it are built again.
    let mut o = tagged("heredoc:2");
    o.build_args.insert("WHO".into(), "you".into());
    let (r, _) = build(&store, &ctx, &o);
    r.unwrap();
    assert_eq!(stdout(&run_in(&store_dir, "heredoc:2", &["cat", "/greeting", "/docs/A", "/late"])), "hello you\nsecond\nfirst you\nlate you\ntabbed $WHO\n");
}

#[test]
fn run_mounts_cache_bind_and_tmpfs_stay_out_of_the_layer() {
    if !root() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let d = TempDir::new("build-mounts");
    let (store_dir, store) = store_with_base(d.path(), "store");
    let ctx = d.path().join("ctx");
    write(&ctx.join("src/a.txt"), "bound\n");
    write(&ctx.join("Dockerfile"), r#"FROM busybox:1
RUN --mount=type=cache,target=/var/cache/app,id=app sh -c 'echo run >> /var/cache/app/log; wc -l < /var/cache/app/log | tr -d " " > /count'
RUN --mount=type=bind,source=src,target=/mnt/src cat /mnt/src/a.txt > /from-bind
RUN --mount=type=tmpfs,target=/scratch --network=none sh -c 'echo x > /scratch/f && ls /scratch > /tmpfs-list'
"#);
    let (r, _) = build(&store, &ctx, &tagged("mounts:1"));
    r.unwrap();
    let look = "cat /count /from-bind /tmpfs-list; ls -d /var/cache/app /mnt/src /mnt /scratch 2>&1";
    let out = run_in(&store_dir, "mounts:1", &["sh", "-c", look]);
    assert_eq!(stdout(&out), "1\nbound\nf\nls: /var/cache/app: No such file or directory\nls: /mnt/src: No such file or directory\nls: /mnt: No such file or directory\nls: /scratch: No such file or directory\n", "the mount points are not in the image: {}", String::from_utf8_lossy(&out.stderr));
    // The cache outlives the build: a build without the layer cache sees the first run's line.
    let mut o = tagged("mounts:2");
    o.no_cache = true;
    let (r, _) = build(&store, &ctx, &o);
    r.unwrap();
    assert_eq!(stdout(&run_in(&store_dir, "mounts:2", &["cat", "/count"])), "2\n");
    // A bound file changes: that step runs again (its files are part of the key), not the first.
    write(&ctx.join("src/a.txt"), "changed\n");
    let (r, ev) = build(&store, &ctx, &tagged("mounts:3"));
    r.unwrap();
    assert_eq!(ev.iter().filter(|e| **e == BuildEvent::Cached).count(), 1, "{ev:?}");
    assert_eq!(stdout(&run_in(&store_dir, "mounts:3", &["cat", "/from-bind"])), "changed\n");
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}
