//! Mounts: binds, tmpfs, proc, sysfs, overlays (their layers attached under a scratch tmpfs,
//! their upper ephemeral or a host directory), each resolved inside the new root.

use crate::error::{SetupFailure, Step};
use crate::fs::hostpath::HostPath;
use crate::fs::root::HostSlots;
use crate::plan::compile::Compiler;
use crate::plan::ops::*;
use crate::child::sys::{self, AT_RECURSIVE, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE};
use crate::sandbox::spec::Mount;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An overlay option's value.
enum OptValue {
    Str(String),
    Flag,
    /// "/proc/self/fd/<fd of this slot>/<suffix>", rendered by the child.
    Fd(usize, String),
}

impl Compiler<'_> {
    /// Plans: find or create `comps` inside the root (RESOLVE_IN_ROOT; missing directories and a
    /// `Leaf::File` leaf are created); returns the slot of its O_PATH fd.
    pub(crate) fn resolve(&mut self, comps: &[String], leaf: Leaf, what: &str, dest: &Path) -> Result<usize, SetupFailure> {
        let slot = self.slot();
        let fullp = self.plan.cs(comps.join("/"))?;
        let mut prefixes = Vec::with_capacity(comps.len());
        let mut names = Vec::with_capacity(comps.len());
        for i in 0..comps.len() {
            prefixes.push(self.plan.cs(comps[..=i].join("/"))?);
            names.push(self.plan.cs(&comps[i])?);
        }
        let n = comps.len();
        let prefixes = self.plan.arr(prefixes);
        let names = self.plan.arr(names);
        let root = self.root_slot;
        self.plan.op(Op::Resolve { root, path: fullp, prefixes, names, n, leaf, slot }, Step::Mount, format!("{what}: find or create {}", dest.display()), Some(dest));
        Ok(slot)
    }

    pub(crate) fn resolve_dir(&mut self, comps: &[String], dest: &Path) -> Result<usize, SetupFailure> {
        self.resolve(comps, Leaf::Dir, "create a directory", dest)
    }

    /// Plans a new file system (fsopen/fsconfig/fsmount) into `slot`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fs_new(&mut self, fstype: &str, opts: &[(&str, Option<&str>)], attrs: u64, slot: usize, step: Step, what: &str, path: Option<&Path>) -> Result<(), SetupFailure> {
        let ctx = self.slot();
        let t = self.plan.cs(fstype)?;
        self.plan.op(Op::FsOpen { fstype: t, slot: ctx }, step, format!("{what} (fsopen {fstype})"), path);
        // The mount's source as mountinfo shows it: the file system's name, as mount(8) and
        // runc give (tools match on it), unless the caller names one.
        let default_source = [("source", Some(fstype))];
        let opts: Vec<(&str, Option<&str>)> = if opts.iter().any(|(k, _)| *k == "source") || fstype == "overlay" { opts.to_vec() } else { default_source.iter().chain(opts).copied().collect() };
        for (k, v) in &opts {
            let kp = self.plan.cs(k)?;
            match v {
                Some(v) => {
                    let vp = self.plan.cs(v)?;
                    self.plan.op(Op::FsString { slot: ctx, key: kp, value: vp }, step, format!("{what} (option {k}={v})"), path);
                }
                None => self.plan.op(Op::FsFlag { slot: ctx, key: kp }, step, format!("{what} (option {k})"), path),
            }
        }
        self.plan.op(Op::FsMount { ctx, attrs, slot }, step, what.to_string(), path);
        Ok(())
    }

    /// Plans the source of a mount (before the root is attached); returns its slot. `index` is
    /// the mount's place in the spec (None for cagette's own default mounts).
    pub(crate) fn source(&mut self, m: &Mount, index: Option<usize>, fds: &Fds, hs: &HostSlots) -> Result<usize, SetupFailure> {
        let mut slot = self.slot();
        let dest = m.destination().to_string();
        let dpath = PathBuf::from(&dest);
        let host = index.and_then(|i| fds.host.mounts.get(i));
        let host_slots = index.and_then(|i| hs.mounts.get(i));
        match m {
            Mount::Bind { source, read_only, recursive, flags, .. } => {
                match host_slots.and_then(|v| v.first()) {
                    Some(&s) => {
                        slot = s;
                        if self.lazy_binds.contains(&s) {
                            let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
                            if *recursive {
                                flags |= AT_RECURSIVE;
                            }
                            self.plan.op(Op::CloneTree { flags, slot }, Step::Mount, format!("bind {} at {dest}", source.display()), Some(source));
                        }
                    }
                    None => {
                        // cagette's own binds of the host's /proc and /sys.
                        let p = self.plan.cs(source.as_os_str().as_bytes())?;
                        let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
                        if *recursive {
                            flags |= AT_RECURSIVE;
                        }
                        self.plan.op(Op::OpenTree { path: p, flags, slot }, Step::Mount, format!("bind the host's {}", source.display()), Some(source));
                    }
                }
                let mut attrs = sys::MOUNT_ATTR_NODEV | flags.attrs();
                if *read_only {
                    attrs |= sys::MOUNT_ATTR_RDONLY;
                }
                self.plan.op(Op::SetAttr { slot, set: attrs, recursive: *recursive }, Step::Mount, format!("make the bind at {dest} nodev{}", if *read_only { " and read-only" } else { "" }), Some(&dpath));
            }
            Mount::Tmpfs { size, mode, flags, source, .. } => {
                let mode = format!("{:o}", mode.unwrap_or(0o1777));
                let size = size.map(|s| s.bytes().to_string());
                let mut opts: Vec<(&str, Option<&str>)> = vec![("mode", Some(&mode))];
                if let Some(s) = source {
                    opts.push(("source", Some(s)));
                }
                if let Some(s) = &size {
                    opts.push(("size", Some(s)));
                }
                self.fs_new("tmpfs", &opts, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | flags.attrs(), slot, Step::Mount, &format!("create a tmpfs for {dest}"), Some(&dpath))?;
            }
            Mount::Sysfs { .. } => {
                self.fs_new("sysfs", &[], sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, slot, Step::Mount, &format!("create a sysfs for {dest}"), Some(&dpath))?;
            }
            Mount::Cgroup { read_only, .. } => {
                let base = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;
                if self.spec.namespaces.cgroup != crate::sandbox::spec::NsMode::New {
                    return Err(fail(Step::Mount, Some(&dpath), format!("cgroup mount at {dest}: it needs a cgroup namespace of the sandbox's own (else it shows every cgroup of the host)")).hint("set namespaces.cgroup = new"));
                }
                if self.cgroup_v1().is_empty() {
                    // Its root is the cgroup namespace's: the job's cgroups joined first.
                    self.join_late();
                    let ro = if *read_only { sys::MOUNT_ATTR_RDONLY } else { 0 };
                    self.fs_new("cgroup2", &[], base | ro, slot, Step::Mount, &format!("create a cgroup2 file system for {dest}"), Some(&dpath))?;
                } else {
                    self.fs_new("tmpfs", &[("mode", Some("0755")), ("size", Some("64k"))], base, slot, Step::Mount, &format!("create the tmpfs for the cgroup hierarchies at {dest}"), Some(&dpath))?;
                }
            }
            Mount::Mqueue { .. } => {
                self.fs_new("mqueue", &[], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, slot, Step::Mount, &format!("create an mqueue file system for {dest}"), Some(&dpath))?;
            }
            Mount::Proc { .. } => {
                self.fs_new("proc", &[], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, slot, Step::Mount, &format!("create a procfs for {dest}"), Some(&dpath))?;
            }
            Mount::Dev { size, flags, .. } => {
                let size = size.map_or_else(|| "64k".to_string(), |s| s.bytes().to_string());
                self.fs_new("tmpfs", &[("mode", Some("0755")), ("size", Some(&size))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC | flags.attrs(), slot, Step::Mount, &format!("create the tmpfs for {dest}"), Some(&dpath))?;
            }
            Mount::Overlay { lower, upper, work, .. } => {
                if lower.is_empty() {
                    return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest} has no lower directory")));
                }
                let (Some(h), Some(hsl)) = (host, host_slots) else {
                    return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: its host directories were not resolved")));
                };
                let n = lower.len();
                let lowers: Vec<(usize, &HostPath)> = hsl.iter().copied().zip(h.iter()).take(n).collect();
                let upper_work = match (upper, work) {
                    (Some(_), Some(_)) => {
                        let (Some(parent), Some(&ps)) = (h.get(n), hsl.get(n)) else {
                            return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: upper and work were not resolved")));
                        };
                        let rel = |p: &HostPath| p.path.strip_prefix(&parent.path).map(Path::to_path_buf).unwrap_or_default();
                        let (u, w) = (h.get(n + 1).map(rel).unwrap_or_default(), h.get(n + 2).map(rel).unwrap_or_default());
                        Some((ps, parent, u, w))
                    }
                    (None, None) => None,
                    _ => return Err(fail(Step::Mount, Some(&dpath), format!("overlay at {dest}: give both upper and work, or neither"))),
                };
                self.overlay_mount(&lowers, upper_work, slot, &dest, &dpath)?;
            }
        }
        Ok(slot)
    }

    /// Plans an overlay of `lowers` (topmost first) into `slot`: each layer is attached under
    /// the scratch tmpfs and named by that path; the upper layer is a persistent host directory
    /// (`upper_work`: their common parent, and upper and work relative to it) or an ephemeral tmpfs.
    pub(crate) fn overlay_mount(&mut self, lowers: &[(usize, &HostPath)], upper_work: Option<(usize, &HostPath, PathBuf, PathBuf)>, slot: usize, dest: &str, dpath: &Path) -> Result<(), SetupFailure> {
        let scratch = self.scratch.ok_or_else(|| fail(Step::Mount, Some(dpath), "overlay without a scratch tmpfs"))?;
        let mut opts: Vec<(String, OptValue)> = Vec::new();
        let mut layer_paths = Vec::new();
        for &(s, l) in lowers {
            let name = self.layer_name();
            let np = self.plan.cs(&name)?;
            self.plan.op(Op::MkdirIn { dir: scratch, name: np, mode: 0o700 }, Step::Mount, format!("create the scratch directory for layer {}", l.path.display()), Some(&l.path));
            self.plan.op(Op::MoveInto { from: s, dir: scratch, name: np }, Step::Mount, format!("attach overlay layer {} for {dest}", l.path.display()), Some(&l.path));
            self.plan.op(Op::Close { slot: s }, Step::Mount, "close", None);
            layer_paths.push(format!("{}/{name}", self.staging));
        }
        if crate::host::kernel_at_least(6, 8) {
            // One option per layer: any path works.
            opts.extend(layer_paths.into_iter().map(|l| ("lowerdir+".to_string(), OptValue::Str(l))));
        } else {
            opts.push(("lowerdir".into(), OptValue::Str(layer_paths.join(":"))));
        }
        match upper_work {
            Some((s, parent, u, w)) => {
                let name = self.layer_name();
                let np = self.plan.cs(&name)?;
                self.plan.op(Op::MkdirIn { dir: scratch, name: np, mode: 0o700 }, Step::Mount, format!("create the scratch directory for {}", parent.path.display()), Some(&parent.path));
                self.plan.op(Op::MoveInto { from: s, dir: scratch, name: np }, Step::Mount, format!("attach {} for the overlay at {dest}", parent.path.display()), Some(&parent.path));
                // upper and work, opened below it without following symlinks, named by fd.
                for (key, rel) in [("upperdir", u), ("workdir", w)] {
                    let rs = self.slot();
                    let relp = self.plan.cs(rel.as_os_str().as_bytes())?;
                    self.plan.op(Op::OpenBeneath { dir: s, path: relp, slot: rs }, Step::Mount, format!("open the overlay's {key} {} for {dest}", parent.path.join(&rel).display()), Some(&parent.path.join(&rel)));
                    opts.push((key.to_string(), OptValue::Fd(rs, String::new())));
                }
            }
            None => {
                // An ephemeral upper: a tmpfs of its own, reached through /proc/self/fd.
                let t = self.slot();
                self.fs_new("tmpfs", &[("mode", Some("0755"))], 0, t, Step::Mount, &format!("create the ephemeral upper tmpfs for {dest}"), Some(dpath))?;
                let upper_name = self.plan.cs("upper")?;
                let work_name = self.plan.cs("work")?;
                self.plan.op(Op::MkdirIn { dir: t, name: upper_name, mode: 0o755 }, Step::Mount, format!("create the overlay upper directory for {dest}"), Some(dpath));
                self.plan.op(Op::MkdirIn { dir: t, name: work_name, mode: 0o755 }, Step::Mount, format!("create the overlay work directory for {dest}"), Some(dpath));
                opts.push(("upperdir".into(), OptValue::Fd(t, "upper".into())));
                opts.push(("workdir".into(), OptValue::Fd(t, "work".into())));
            }
        }
        if self.plan.user_ns {
            // Mounted in a user namespace: overlayfs can only use user.overlay.* xattrs.
            opts.push(("userxattr".into(), OptValue::Flag));
        }
        let ctx = self.slot();
        let t = self.plan.cs("overlay")?;
        self.plan.op_hint(Op::FsOpen { fstype: t, slot: ctx }, Step::Mount, format!("create an overlay for {dest}"), Some(dpath), "overlayfs must be available (modprobe overlay)");
        for (k, v) in &opts {
            let kp = self.plan.cs(k)?;
            match v {
                OptValue::Fd(dir, suffix) => {
                    // The child renders /proc/self/fd/<fd of slot>/<suffix>.
                    let sp = self.plan.cs(suffix)?;
                    let buf = self.plan.buf();
                    self.plan.op(Op::FsStringFdPath { slot: ctx, key: kp, dir: *dir, suffix: sp, buf }, Step::Mount, format!("set overlay {k} for {dest}"), Some(dpath));
                }
                OptValue::Flag => self.plan.op(Op::FsFlag { slot: ctx, key: kp }, Step::Mount, format!("set overlay option {k} for {dest}"), Some(dpath)),
                OptValue::Str(v) => {
                    let vp = self.plan.cs(v)?;
                    self.plan.op(Op::FsString { slot: ctx, key: kp, value: vp }, Step::Mount, format!("set overlay {k}={v} for {dest}"), Some(Path::new(v)));
                }
            }
        }
        self.plan.op(Op::FsMount { ctx, attrs: sys::MOUNT_ATTR_NODEV, slot }, Step::Mount, format!("create the overlay for {dest}"), Some(dpath));
        Ok(())
    }

    /// A fresh name for a directory of the scratch tmpfs.
    fn layer_name(&mut self) -> String {
        self.layers += 1;
        format!("{}", self.layers - 1)
    }

    /// cgroup v1: each controller's hierarchy under the tmpfs at `dest` (seen from the sandbox's
    /// cgroup namespace), links for the co-mounted ones (cpu -> cpu,cpuacct), then the tmpfs
    /// made read-only. Nothing on a v2 host.
    fn populate_cgroup_v1(&mut self, comps: &[String], dest: &str, read_only: bool) -> Result<(), SetupFailure> {
        let hier = self.cgroup_v1();
        if hier.is_empty() {
            return Ok(());
        }
        let ro = if read_only { sys::MOUNT_ATTR_RDONLY } else { 0 };
        let mut links = Vec::new();
        for (name, controllers) in &hier {
            let s = self.slot();
            let p = PathBuf::from(format!("{dest}/{name}"));
            let opts: Vec<(&str, Option<&str>)> = controllers.iter().map(|c| (c.as_str(), None)).collect();
            self.fs_new("cgroup", &opts, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC | ro, s, Step::Mount, &format!("create the cgroup hierarchy {name} for {}", p.display()), Some(&p))?;
            let mut c = comps.to_vec();
            c.push(name.clone());
            let t = self.attach(s, &c, Leaf::Dir, &format!("mount the cgroup hierarchy {name} at {}", p.display()), &p)?;
            self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
            if controllers.len() > 1 {
                links.extend(controllers.iter().filter(|c| !hier.iter().any(|(n, _)| n == *c)).map(|c| (c.clone(), name.clone())));
            }
        }
        let dir = self.resolve_dir(comps, Path::new(dest))?;
        for (link, target) in links {
            let tp = self.plan.cs(&target)?;
            let np = self.plan.cs(&link)?;
            self.plan.op(Op::Symlink { target: tp, dir, name: np }, Step::Mount, format!("link {dest}/{link} -> {target}"), Some(Path::new(&format!("{dest}/{link}"))));
        }
        if read_only {
            self.plan.op(Op::SetAttr { slot: dir, set: sys::MOUNT_ATTR_RDONLY, recursive: false }, Step::Mount, format!("make the tmpfs at {dest} read-only"), Some(Path::new(dest)));
        }
        self.plan.op(Op::Close { slot: dir }, Step::Mount, "close", None);
        Ok(())
    }

    /// Plans: resolve (creating) `comps` inside the root, move the mount in `src` onto it.
    pub(crate) fn attach(&mut self, src: usize, comps: &[String], leaf: Leaf, what: &str, dest: &Path) -> Result<usize, SetupFailure> {
        let target = self.resolve(comps, leaf, what, dest)?;
        self.plan.op(Op::MoveMount { from: src, to: target }, Step::Mount, what.to_string(), Some(dest));
        self.plan.op(Op::Close { slot: src }, Step::Mount, what.to_string(), Some(dest));
        Ok(target)
    }

    pub(crate) fn mount(&mut self, m: &Mount, comps: &[String], src: usize, leaf: Leaf, fds: &Fds) -> Result<(), SetupFailure> {
        let dest = m.destination().to_string();
        let dpath = PathBuf::from(&dest);
        let what = match m {
            Mount::Bind { source, read_only, .. } => format!("bind {} at {dest}{}", source.display(), if *read_only { " (read-only)" } else { "" }),
            Mount::Tmpfs { .. } => format!("mount a tmpfs at {dest}"),
            Mount::Proc { .. } => format!("mount proc at {dest}"),
            Mount::Sysfs { .. } => format!("mount sysfs at {dest}"),
            Mount::Mqueue { .. } => format!("mount mqueue at {dest}"),
            Mount::Cgroup { .. } => format!("mount the cgroups at {dest}"),
            Mount::Dev { .. } => format!("mount a minimal /dev at {dest}"),
            Mount::Overlay { .. } => format!("mount an overlay at {dest}"),
        };
        let target = self.attach(src, comps, leaf, &what, &dpath)?;
        if let Mount::Dev { .. } = m {
            self.populate_dev(comps, &dest, fds)?;
        }
        if let Mount::Cgroup { read_only, .. } = m {
            // The hierarchies' roots are the cgroup namespace's: the job's cgroups joined first.
            self.join_late();
            self.populate_cgroup_v1(comps, &dest, *read_only)?;
        }
        self.plan.op(Op::Close { slot: target }, Step::Mount, what, Some(&dpath));
        Ok(())
    }
}
