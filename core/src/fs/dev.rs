//! The sandbox's minimal /dev: the standard nodes and the spec's devices bound from the host
//! (mknod is not allowed in a user namespace), a private devpts, /dev/shm and the usual links.

use crate::error::{SetupFailure, Step};
use crate::plan::compile::Compiler;
use crate::plan::ops::*;
use crate::child::sys::{self, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE};
use std::path::{Path, PathBuf};

impl Compiler<'_> {
    /// Device nodes (bound from the host: mknod is not allowed in a user namespace), a private
    /// devpts, /dev/shm and the usual links.
    pub(crate) fn populate_dev(&mut self, comps: &[String], dest: &str, fds: &Fds) -> Result<(), SetupFailure> {
        let mut nodes: Vec<(String, String)> = ["null", "zero", "full", "random", "urandom", "tty"].iter().map(|d| (format!("/dev/{d}"), d.to_string())).collect();
        // Devices the spec adds (checked by the parent: character or block devices under /dev).
        nodes.extend(fds.devices.iter().map(|(host, name)| (host.display().to_string(), name.clone())));
        for (host, dev) in nodes {
            if std::fs::symlink_metadata(&host).is_err() {
                continue;
            }
            let s = self.slot();
            let hp = self.plan.cs(&host)?;
            self.plan.op(Op::OpenTree { path: hp, flags: OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, slot: s }, Step::Mount, format!("open the host's {host}"), Some(Path::new(&host)));
            let mut c = comps.to_vec();
            c.extend(dev.split('/').map(str::to_string));
            let t = self.attach(s, &c, Leaf::File, &format!("bind {host} at {dest}/{dev}"), Path::new(&format!("{dest}/{dev}")))?;
            self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
        }
        // The spec's own mounts at /dev/pts or /dev/shm (an OCI config's, with their options)
        // take their place.
        let spec_has = |name: &str| self.spec.mounts.iter().any(|m| m.destination().trim_end_matches('/') == format!("{}/{name}", dest.trim_end_matches('/')));
        if !spec_has("pts") {
            let pts = self.slot();
            let pts_path = PathBuf::from(format!("{dest}/pts"));
            self.fs_new("devpts", &[("newinstance", None), ("ptmxmode", Some("0666")), ("mode", Some("0620"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC, pts, Step::Mount, &format!("create a devpts for {dest}/pts"), Some(&pts_path))?;
            let mut c = comps.to_vec();
            c.push("pts".into());
            let t = self.attach(pts, &c, Leaf::Dir, &format!("mount devpts at {dest}/pts"), &pts_path)?;
            self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
        }
        if !spec_has("shm") {
            let shm = self.slot();
            let shm_path = PathBuf::from(format!("{dest}/shm"));
            self.fs_new("tmpfs", &[("source", Some("shm")), ("mode", Some("1777"))], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, shm, Step::Mount, &format!("create a tmpfs for {dest}/shm"), Some(&shm_path))?;
            let mut c = comps.to_vec();
            c.push("shm".into());
            let t = self.attach(shm, &c, Leaf::Dir, &format!("mount a tmpfs at {dest}/shm"), &shm_path)?;
            self.plan.op(Op::Close { slot: t }, Step::Mount, "close", None);
        }

        // Links, created in the /dev tmpfs (resolved again: the target slot was closed).
        let devdir = self.resolve_dir(comps, Path::new(dest))?;
        for (name, target) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("core", "/proc/kcore"),
        ] {
            let tp = self.plan.cs(target)?;
            let np = self.plan.cs(name)?;
            self.plan.op(Op::Symlink { target: tp, dir: devdir, name: np }, Step::Mount, format!("link {dest}/{name} -> {target}"), Some(Path::new(&format!("{dest}/{name}"))));
        }
        self.plan.op(Op::Close { slot: devdir }, Step::Mount, "close", None);
        Ok(())
    }
}
