//! The file system of a sandbox: its root ([`root`]), its mounts ([`mounts`]) and /dev ([`dev`]),
//! planned from host paths resolved once by the parent ([`hostpath`]); and the files cagette
//! itself reads and writes on the host ([`hostfile`]). `--bind`, `--tmpfs`, `--overlay`,
//! `--rootfs` and the masked paths are applied here.

pub(crate) mod dev;
pub(crate) mod hostfile;
pub(crate) mod hostpath;
pub(crate) mod mounts;
pub(crate) mod root;
