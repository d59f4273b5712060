//! The sandbox's root: the host's `/` read-only (each entry bound into a tmpfs, with `/run`
//! hidden and cagette's store masked), a rootfs, or an image's layers; then the mounts in order,
//! the masked and read-only paths, and pivot_root. Host paths of the spec come resolved by the
//! parent (`hostpath.rs`).

use crate::error::{SetupFailure, Step};
use crate::fs::hostpath::HostPath;
use crate::plan::compile::Compiler;
use crate::plan::ops::*;
use crate::child::sys::{self, AT_RECURSIVE, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE};
use crate::sandbox::spec::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, IdMap, Mount, NsMode};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const STAGING_CANDIDATES: &[&str] = &["/tmp", "/mnt", "/run", "/var/tmp", "/media", "/opt", "/srv"];

/// The slots of the spec's host paths (same shape as [`HostPaths`]).
#[derive(Default)]
pub(crate) struct HostSlots {
    pub rootfs: Option<usize>,
    pub mounts: Vec<Vec<usize>>,
    pub layers: Vec<usize>,
    /// The parent of the image root's persistent upper and work directories.
    pub image_upper: Option<usize>,
}

pub(crate) enum TopKind {
    Exploded,
    Dir,
    File,
    Link(PathBuf),
}

impl Compiler<'_> {
    pub(crate) fn filesystem(&mut self, fds: &Fds) -> Result<(), SetupFailure> {
        let spec = self.spec;
        // Without a mount namespace of its own (an OCI config without one; a detached sandbox
        // only): the root is a bind of the rootfs onto itself in the host's namespace, entered
        // with chroot; its runtime unmounts it (and all below) at delete.
        let in_host_ns = spec.namespaces.mount == NsMode::Host;
        if !in_host_ns {
            self.plan.op(Op::MakePrivate, Step::Mount, "make the mount tree private", None);
        }

        // The host directory where the new root is assembled, in our private mount namespace.
        let staging = STAGING_CANDIDATES
            .iter()
            .find(|p| std::fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false))
            .ok_or_else(|| fail(Step::Mount, None, "no staging directory for the new root").hint("create /tmp on the host"))?;
        self.staging = staging;
        // Every host path of the spec is opened first, before anything is mounted over the
        // staging directory (a bind source may well be under /tmp).
        let hs = self.open_host_paths(fds)?;
        // Overlay layers are attached under a scratch tmpfs there first: overlayfs takes layers
        // by path, and a layer the parent mounted (id-mapped) must be attached to be used.
        let overlays = !fds.host.layers.is_empty() || spec.mounts.iter().any(|m| matches!(m, Mount::Overlay { .. }));
        if overlays {
            let scratch = self.slot();
            self.fs_new("tmpfs", &[("mode", Some("0700")), ("size", Some("64k"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, scratch, Step::Mount, "create the scratch tmpfs for overlay layers", None)?;
            let sp = self.plan.cs(staging)?;
            self.plan.op(Op::AttachAt { slot: scratch, path: sp }, Step::Mount, format!("attach the scratch tmpfs at {staging} (private to the sandbox)"), Some(Path::new(staging)));
            self.scratch = Some(scratch);
        }

        // Sources first, while every host path is still reachable.
        let host_root = spec.rootfs.is_none() && fds.host.layers.is_empty();
        let root = if fds.host.layers.is_empty() {
            self.slot()
        } else {
            // An image: its layers under an ephemeral upper layer (the store never changes).
            let slot = self.slot();
            let lowers: Vec<(usize, &HostPath)> = hs.layers.iter().copied().zip(fds.host.layers.iter()).collect();
            // A persistent upper (image_upper): what the job writes stays on the host.
            let upper_work = match (hs.image_upper, fds.host.image_upper.as_slice()) {
                (Some(ps), [parent, u, w]) => {
                    let rel = |p: &HostPath| p.path.strip_prefix(&parent.path).map(Path::to_path_buf).unwrap_or_default();
                    Some((ps, parent, rel(u), rel(w)))
                }
                _ => None,
            };
            self.overlay_mount(&lowers, upper_work, slot, "/", Path::new("/"))?;
            slot
        };
        self.root_slot = root;
        let mut top_level: Vec<(Vec<String>, TopKind, usize)> = Vec::new();
        if !fds.host.layers.is_empty() {
            // The overlay root was planned above.
        } else if let Some(s) = hs.rootfs {
            self.plan.op(Op::Move { from: s, to: root }, Step::Mount, "use the rootfs as the root", None);
        } else {
            self.fs_new("tmpfs", &[("mode", Some("0755")), ("size", Some("4m"))], sys::MOUNT_ATTR_NODEV, root, Step::Mount, "create the root tmpfs", None)?;
            // The host's tree, read-only: each entry of / is bound on its own, so mount points
            // can be created in the tmpfs. A directory on the way to a destination that does not
            // exist on the host is "exploded" the same way (its entries bound one by one).
            let mut explode: Vec<Vec<String>> = Vec::new();
            let mut wanted: Vec<String> = spec.mounts.iter().map(|m| m.destination().to_string()).collect();
            wanted.extend(self.hidden_ipc_dirs());
            // Every directory on the way to a mount point is exploded too, so the path to it is
            // a tmpfs directory the sandbox can search even where the host's is not (a bind
            // below /root, which the sandbox's root, not the host's, may not enter).
            for dest in &wanted {
                let comps = sandbox_components(dest, Step::Mount)?;
                // A destination that exists on the host, with no symlink on the way, below
                // directories the sandbox may search: mounted over where it is, inside the
                // read-only bind of its top-level directory (nothing to create, nothing to explode:
                // exploding /etc for /etc/hosts costs ~200 binds).
                let full = PathBuf::from("/").join(comps.join("/"));
                let no_links = full.ancestors().all(|a| std::fs::symlink_metadata(a).is_ok_and(|m| !m.file_type().is_symlink()));
                if comps.len() > 1 && no_links && full.parent().is_some_and(|p| self.sandbox_can_search(p)) {
                    continue;
                }
                let mut host = PathBuf::from("/");
                for (k, c) in comps.iter().enumerate() {
                    host.push(c);
                    match std::fs::symlink_metadata(&host) {
                        Ok(md) if md.is_dir() => {
                            if k + 1 < comps.len() {
                                explode.push(comps[..=k].to_vec());
                            }
                        }
                        Ok(_) => break, // a symlink or file: resolved inside the root as it is
                        Err(_) => {
                            for j in 1..=k {
                                explode.push(comps[..j].to_vec());
                            }
                            break;
                        }
                    }
                }
            }
            explode.sort();
            explode.dedup();
            self.host_dir(&[], &explode, &mut top_level)?;
        }

        // Mounts to make, in order: the defaults, then the user's.
        let user_targets: Vec<Vec<String>> = spec
            .mounts
            .iter()
            .map(|m| sandbox_components(m.destination(), Step::Mount))
            .collect::<Result<_, _>>()?;
        let user_has = |p: &str| user_targets.iter().any(|t| t.len() == 1 && t[0] == p);
        let mut mounts: Vec<(Mount, Vec<String>, Option<usize>)> = Vec::new();
        if spec.proc && !user_has("proc") {
            // A fresh procfs needs a pid namespace of the sandbox's own; with the host's, bind
            // the host's /proc (the same view a fresh one would give).
            let m = if spec.namespaces.pid != NsMode::Host { Mount::proc("/proc") } else { Mount::bind("/proc", "/proc") };
            mounts.push((m, vec!["proc".into()], None));
        }
        if spec.sys && !user_has("sys") {
            // A network namespace of our own gets its own sysfs (its /sys/class/net shows only
            // lo); otherwise the host's, read-only.
            let m = if spec.network.own_namespace() { Mount::Sysfs { destination: "/sys".into() } } else { Mount::bind("/sys", "/sys").read_only() };
            mounts.push((m, vec!["sys".into()], None));
        }
        if spec.dev && !user_has("dev") {
            mounts.push((Mount::dev("/dev"), vec!["dev".into()], None));
        }
        if spec.tmp && !user_has("tmp") {
            mounts.push((Mount::tmpfs("/tmp"), vec!["tmp".into()], None));
        }
        if host_root {
            // The host's IPC endpoints (sockets, FIFOs, lock files under /run) stay out of reach.
            for d in self.hidden_ipc_dirs() {
                let comps = sandbox_components(&d, Step::Mount)?;
                if !user_targets.contains(&comps) {
                    mounts.push((Mount::Tmpfs { destination: d.clone(), size: Some(crate::Size(1 << 20)), mode: Some(0o755), flags: Default::default(), source: None }, comps, None));
                }
            }
            // With the host's network, its resolver configuration, where /etc/resolv.conf points
            // into /run (systemd-resolved, NetworkManager), is bound back read-only.
            if !spec.network.own_namespace()
                && let Ok(target) = std::fs::canonicalize("/etc/resolv.conf")
                    && target.starts_with("/run/") && target.is_file()
                        && let Some(dest) = target.to_str() {
                            let comps = sandbox_components(dest, Step::Mount)?;
                            mounts.push((Mount::bind(&target, dest).read_only(), comps, None));
                        }
        }
        for (i, (m, t)) in spec.mounts.iter().zip(user_targets).enumerate() {
            mounts.push((m.clone(), t, Some(i)));
        }

        // Clone every host source that must be cloned now (cagette's own binds, overlays'
        // layers, recursive binds of a directory above the staging one); the others (new file
        // systems, binds opened as O_PATH) are made just before they are attached, so that
        // /proc/self/mountinfo lists them in the spec's order (it is sorted by mount id, given
        // at creation).
        let mut sources: Vec<Option<usize>> = Vec::with_capacity(mounts.len());
        for (m, _, index) in &mounts {
            let lazy = index.and_then(|i| hs.mounts.get(i)).and_then(|v| v.first()).is_some_and(|s| self.lazy_binds.contains(s));
            let host = matches!(m, Mount::Bind { .. } | Mount::Overlay { .. }) && !lazy;
            sources.push(if host { Some(self.source(m, *index, fds, &hs)?) } else { None });
        }

        if let (true, Some(r)) = (in_host_ns, &fds.host.rootfs) {
            // On the rootfs itself, then private: what is mounted in it propagates nowhere.
            let target = self.slot();
            let p = self.plan.cs(r.path.as_os_str().as_bytes())?;
            self.plan.op(Op::OpenPathChecked { path: p, dev: r.dev, ino: r.ino, slot: target }, Step::Mount, format!("open the rootfs {}", r.path.display()), Some(&r.path));
            self.plan.op(Op::MoveMount { from: root, to: target }, Step::Mount, format!("attach the new root on {} (the host's mount namespace)", r.path.display()), Some(&r.path));
            self.plan.op(Op::Close { slot: target }, Step::Mount, "close", None);
            self.plan.op(Op::MakeSlotPrivate { slot: root }, Step::Mount, "make the new root private", Some(&r.path));
        } else {
            // Attach the root at the staging directory (in our private mount namespace).
            let sp = self.plan.cs(staging)?;
            self.plan.op(Op::AttachAt { slot: root, path: sp }, Step::Mount, format!("attach the new root at {staging} (private to the sandbox)"), Some(Path::new(staging)));
        }

        if host_root {
            for (comps, kind, s) in top_level {
                let dest = format!("/{}", comps.join("/"));
                let dpath = PathBuf::from(&dest);
                match kind {
                    TopKind::Link(target) => {
                        let (name, parent) = comps.split_last().expect("a path has a name");
                        let t = self.plan.cs(target.as_os_str().as_bytes())?;
                        let n = self.plan.cs(name)?;
                        let dir = if parent.is_empty() { root } else { self.resolve_dir(parent, &dpath)? };
                        self.plan.op(Op::Symlink { target: t, dir, name: n }, Step::Mount, format!("link {dest} -> {}", target.display()), Some(&dpath));
                        if dir != root {
                            self.plan.op(Op::Close { slot: dir }, Step::Mount, "close", None);
                        }
                    }
                    TopKind::Exploded => {
                        let d = self.resolve_dir(&comps, &dpath)?;
                        self.plan.op(Op::Close { slot: d }, Step::Mount, "close", None);
                    }
                    TopKind::Dir | TopKind::File => {
                        let leaf = if matches!(kind, TopKind::Dir) { Leaf::Dir } else { Leaf::File };
                        let t = self.attach(s, &comps, leaf, &format!("bind the host's {dest} read-only"), &dpath)?;
                        self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
                    }
                }
            }
        }

        for ((m, comps, index), src) in mounts.iter().zip(sources) {
            let leaf = match (m, index) {
                (Mount::Bind { .. }, Some(i)) if fds.host.mounts.get(*i).and_then(|v| v.first()).is_some_and(|h| !h.is_dir) => Leaf::File,
                (Mount::Bind { source, .. }, None) if std::fs::metadata(source).map(|md| !md.is_dir()).unwrap_or(false) => Leaf::File,
                _ => Leaf::Dir,
            };
            let src = match src {
                Some(s) => s,
                None => self.source(m, *index, fds, &hs)?,
            };
            self.mount(m, comps, src, leaf, fds)?;
        }

        // Masked and read-only paths.
        let mut masked: Vec<String> = match &spec.masked_paths {
            Some(v) => v.clone(),
            None => DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
        };
        if host_root {
            // cagette's own image store (its layers hold setuid files and, as root, device nodes).
            masked.extend(fds.hidden_store.iter().filter_map(|p| p.to_str().map(str::to_string)));
        }
        // The masks' sources, shared by all the masks of a kind (closed with the other slots at
        // pivot_root). The tree is private by now and propagation is applied after the masks,
        // so the clones are not peers of each other.
        let (dirs, files) = (self.slot(), self.slot());
        for p in masked {
            let rel = sandbox_components(&p, Step::Mask)?.join("/");
            let rp = self.plan.cs(&rel)?;
            let devnull = self.devnull;
            self.plan.op(Op::Mask { root, path: rp, devnull, dirs, files }, Step::Mask, format!("mask {p}"), Some(Path::new(&p)));
        }
        let readonly: Vec<String> = match &spec.readonly_paths {
            Some(v) => v.clone(),
            None => DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        };
        for p in readonly {
            let rel = sandbox_components(&p, Step::ReadonlyPath)?.join("/");
            let rp = self.plan.cs(&rel)?;
            self.plan.op(Op::ReadOnly { root, path: rp }, Step::ReadonlyPath, format!("make {p} read-only"), Some(Path::new(&p)));
        }

        // The root: never a device node reachable through it; read-only unless asked.
        let mut attrs = sys::MOUNT_ATTR_NODEV;
        if host_root || (fds.host.layers.is_empty() && !spec.rootfs_writable) {
            attrs |= sys::MOUNT_ATTR_RDONLY;
        }
        self.plan.op(Op::SetAttr { slot: root, set: attrs, recursive: false }, Step::Mount, if attrs & sys::MOUNT_ATTR_RDONLY != 0 { "make the root read-only and nodev" } else { "make the root nodev" }, None);
        if in_host_ns {
            self.plan.op(Op::Chroot { root }, Step::PivotRoot, "switch to the new root (chroot: no mount namespace of the sandbox's own)", spec.rootfs.as_deref());
        } else {
            self.plan.op(Op::Pivot { root }, Step::PivotRoot, "switch to the new root (pivot_root)", spec.rootfs.as_deref());
        }
        // Propagation, asked for the root or a mount: set in place once everything is attached.
        let mut props: Vec<(String, crate::sandbox::spec::Propagation)> = spec.rootfs_propagation.map(|p| ("/".to_string(), p)).into_iter().collect();
        for m in &spec.mounts {
            let f = match m {
                Mount::Bind { flags, .. } | Mount::Tmpfs { flags, .. } | Mount::Dev { flags, .. } => flags.propagation,
                _ => None,
            };
            if let Some(p) = f {
                props.push((m.destination().to_string(), p));
            }
        }
        for (path, p) in props {
            let cp = self.plan.cs(&path)?;
            self.plan.op(Op::Propagate { path: cp, flags: p.flags() }, Step::Mount, format!("make {path} {p:?} (propagation)"), Some(Path::new(&path)));
        }
        Ok(())
    }

    /// Directories of the host root that hold IPC endpoints: replaced by empty tmpfs mounts.
    fn hidden_ipc_dirs(&self) -> Vec<String> {
        let mut v = vec!["/run".to_string()];
        // Where /var/run is a directory of its own (not the usual symlink to /run).
        if std::fs::symlink_metadata("/var/run").map(|m| m.is_dir()).unwrap_or(false) {
            v.push("/var/run".into());
        }
        v
    }

    /// Plans the mounts of every host path of the spec (see `host_source`), each in a slot.
    fn open_host_paths(&mut self, fds: &Fds) -> Result<HostSlots, SetupFailure> {
        let mut hs = HostSlots::default();
        if let Some(r) = &fds.host.rootfs {
            let s = self.slot();
            self.host_source(r, true, s, "open the rootfs")?;
            hs.rootfs = Some(s);
        }
        for (m, paths) in self.spec.mounts.iter().zip(&fds.host.mounts) {
            let mut v = Vec::new();
            for (j, h) in paths.iter().enumerate() {
                let s = self.slot();
                match m {
                    // Opened now, while every host path is reachable; its mount tree is cloned when
                    // it is attached (mount ids, hence mountinfo's order, are given at the clone),
                    // unless a recursive clone then would take in the new root at the staging
                    // directory below it.
                    Mount::Bind { recursive, destination, .. } if h.mount_fd().is_none() && !(*recursive && Path::new(self.staging).starts_with(&h.path)) => {
                        let p = self.plan.cs(h.path.as_os_str().as_bytes())?;
                        self.plan.op_hint(
                            Op::OpenPathChecked { path: p, dev: h.dev, ino: h.ino, slot: s },
                            Step::Mount,
                            format!("open the bind source for {destination}: {}", h.path.display()),
                            Some(&h.path),
                            "host paths are opened without following symlinks, and must still be the file the host resolved (ESTALE: it was replaced meanwhile)",
                        );
                        self.lazy_binds.push(s);
                    }
                    Mount::Bind { recursive, destination, .. } => self.host_source(h, *recursive, s, &format!("open the bind source for {destination}:"))?,
                    Mount::Overlay { lower, destination, .. } if j < lower.len() => self.host_source(h, false, s, &format!("open an overlay layer for {destination}:"))?,
                    Mount::Overlay { lower, destination, .. } if j == lower.len() => self.host_source(h, false, s, &format!("open the parent of the overlay's upper and work directories for {destination}:"))?,
                    // The upper and work directories themselves are opened below that parent.
                    _ => {}
                }
                v.push(s);
            }
            hs.mounts.push(v);
        }
        for l in &fds.host.layers {
            let s = self.slot();
            self.host_source(l, false, s, "open an image layer")?;
            hs.layers.push(s);
        }
        if let Some(parent) = fds.host.image_upper.first() {
            let s = self.slot();
            self.host_source(parent, false, s, "open the parent of the image root's upper and work directories:")?;
            hs.image_upper = Some(s);
        }
        Ok(hs)
    }

    /// Plans: the mount of a host path the parent resolved, into `slot` (the parent's detached
    /// mount when it made one, else a clone made here after checking it is the same inode).
    fn host_source(&mut self, h: &HostPath, recursive: bool, slot: usize, what: &str) -> Result<(), SetupFailure> {
        match h.mount_fd() {
            Some(fd) => self.plan.op(Op::UseFd { fd, slot }, Step::Mount, format!("{what} {} (mounted by the host, id-mapped)", h.path.display()), Some(&h.path)),
            None => {
                let p = self.plan.cs(h.path.as_os_str().as_bytes())?;
                let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
                if recursive {
                    flags |= AT_RECURSIVE;
                }
                self.plan.op_hint(
                    Op::OpenTreeChecked { path: p, flags, dev: h.dev, ino: h.ino, slot },
                    Step::Mount,
                    format!("{what} {}", h.path.display()),
                    Some(&h.path),
                    "host paths are opened without following symlinks, and must still be the file the host resolved (ESTALE: it was replaced meanwhile)",
                );
            }
        }
        Ok(())
    }

    /// Plans the read-only binds of the host directory `rel` (components from /), recursing into
    /// directories listed in `explode`.
    fn host_dir(&mut self, rel: &[String], explode: &[Vec<String>], out: &mut Vec<(Vec<String>, TopKind, usize)>) -> Result<(), SetupFailure> {
        let dir = PathBuf::from("/").join(rel.join("/"));
        let skip: &[&str] = if rel.is_empty() { &["proc", "dev", "tmp", "sys"] } else { &[] };
        // A directory the sandbox's ids could not enter on the host (like /root, for a private id
        // range) shows none of its entries: only the mount points the spec puts below it.
        if !rel.is_empty() && !self.sandbox_can_search(&dir) {
            for e in explode.iter().filter(|e| e.len() == rel.len() + 1 && e.starts_with(rel)) {
                out.push((e.clone(), TopKind::Exploded, 0));
                self.host_dir(e, explode, out)?;
            }
            return Ok(());
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| SetupFailure::new(Step::Mount, e.raw_os_error(), Some(dir.clone()), "list a directory of the host's root"))?;
        let mut names: Vec<(String, std::fs::FileType)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.file_type().ok()?)))
            .filter(|(n, _)| !skip.contains(&n.as_str()))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in names {
            let host_path = dir.join(&name);
            let mut comps = rel.to_vec();
            comps.push(name);
            if ft.is_dir() && explode.contains(&comps) {
                out.push((comps.clone(), TopKind::Exploded, 0));
                self.host_dir(&comps, explode, out)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host_path).map_err(|e| SetupFailure::new(Step::Mount, e.raw_os_error(), Some(host_path.clone()), "read a symlink of the host's root"))?;
                out.push((comps, TopKind::Link(target), 0));
            } else if ft.is_dir() || ft.is_file() {
                let s = self.slot();
                let p = self.plan.cs(host_path.as_os_str().as_bytes())?;
                self.plan.op(Op::OpenTree { path: p, flags: OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE, slot: s }, Step::Mount, format!("open the host's {}", host_path.display()), Some(&host_path));
                let attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
                self.plan.op(Op::SetAttr { slot: s, set: attrs, recursive: true }, Step::Mount, format!("make the host's {} read-only, nosuid and nodev", host_path.display()), Some(&host_path));
                out.push((comps, if ft.is_dir() { TopKind::Dir } else { TopKind::File }, s));
            }
        }
        Ok(())
    }

    /// Whether the sandbox's root (the host ids its uid and gid 0 map to) may search a host
    /// directory and those above it, by their owners and modes (host root may search all).
    fn sandbox_can_search(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let outside = |maps: &[IdMap], fallback: u32| maps.iter().find(|m| m.inside == 0).map_or(fallback, |m| m.outside);
        let (uid, gid) = if self.plan.user_ns { (outside(&self.uid_map, 0), outside(&self.gid_map, 0)) } else { (crate::host::euid(), crate::host::egid()) };
        if uid == 0 {
            return true;
        }
        // The directory and every one above it (the child reaches entries by their path).
        dir.ancestors().all(|d| {
            std::fs::metadata(d).is_ok_and(|md| (md.uid() == uid && md.mode() & 0o100 != 0) || (md.gid() == gid && md.mode() & 0o010 != 0) || md.mode() & 0o001 != 0)
        })
    }
}
