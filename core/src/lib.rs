//! # cagette — container isolation as a library
//!
//! cagette runs a command in a sandbox made of Linux namespaces, a private root file system (the
//! host's, read-only; a rootfs; or an OCI image of its store) and cgroup limits, from inside your
//! process: no daemon, no setuid helper, no CLI to shell out to. It returns one [`Verdict`]
//! (exited, signaled, oom_killed, seccomp_killed, timed_out, or setup failed at a named [`Step`])
//! and a [`Usage`] report of the job's own figures.
//!
//! ```
//! use cagette::{Network, Sandbox, Verdict};
//!
//! let out = Sandbox::new()
//!     .memory("256M".parse().unwrap())
//!     .network(Network::None)
//!     .hostname("box")
//!     .command("sh")
//!     .args(["-c", "hostname; id -u"])
//!     .output()?;
//! assert_eq!(out.status, Verdict::Exited(0));
//! assert_eq!(String::from_utf8_lossy(&out.stdout), "box\n0\n");
//! # Ok::<(), cagette::Error>(())
//! ```
//!
//! ## How a spawn works
//! The parent compiles the [`SandboxSpec`] into a flat plan (every path, argv and fd ready), then
//! clones a setup child with `CLONE_VM` and every new namespace. The child only runs raw system
//! calls from the plan: it starts a new session, waits while the parent writes the id maps,
//! builds the root with the new mount API (every destination resolved inside the root with
//! `RESOLVE_IN_ROOT`), pivots, and executes cagette's tiny init from a sealed memfd. The init is
//! pid 1: it forks the payload from its own small address space and runs the payload's part of
//! the plan there (user, capabilities, Landlock, seccomp, fds, exec), reaps orphans, forwards
//! signals, reports the payload's status and usage, and takes the whole sandbox down if the host
//! process dies. A failing step comes back as (phase, step, errno) and becomes a
//! [`SetupFailure`].
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod child;
mod error;

// The README's Rust examples run as doc tests (its other blocks are not Rust).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
mod fs;
mod host;
mod image;
mod limits;
mod net;
mod plan;
mod probe;
mod sandbox;
mod security;

pub use security::caps::{Capability, DEFAULT_CAPABILITIES, UnknownCapability};
pub use sandbox::child::{Child, send_signal};
pub use sandbox::detach::{DetachOptions, Detached, DetachedCgroup, DeviceRule};
pub use sandbox::spawn::exec_into;
pub use sandbox::live::{list_sandboxes, SandboxEntry};
pub use error::{Error, Result, SetupFailure, Step};
pub use fs::hostfile::{read_host_file, write_host_file};
pub use image::{BuildError, BuildEvent, BuildOptions, ExportFormat, OptionsError, ImageError, ImageInfo, ImageStore, Limits as ImageLimits, Progress as ImportProgress, RunConfig, write_layer, WrittenLayer};
#[cfg(feature = "registry")]
pub use image::{credentials_for, login, ImageReference, PullOptions, RegistriesConf};
#[doc(hidden)]
pub use image::fuzz_apply_layer;
pub use probe::{CgroupVersion, Probe, probe};
pub use sandbox::builder::Sandbox;
pub use sandbox::spec::{
    Atime, CgroupMode, MountFlags, Propagation, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, IdMap, IoMax, Landlock, OciSeccomp,
    OciSyscall, OciSyscallArg, Seccomp, SeccompMode, SpecError, Mount, Namespaces, Network, NsMode, Publish, HostEntry,
    OomPolicy, PassFd, Rlimit, RlimitResource, SandboxSpec, Stdio, UsernsMode,
};
pub use plan::compile::DEFAULT_HOSTNAME;
pub use sandbox::validate::{MAX_DURATION, MAX_ID, MIN_MEMORY};
pub use security::seccomp::DEFAULT_DENIED as DEFAULT_DENIED_SYSCALLS;
pub use sandbox::units::{ParseUnitError, Size, parse_duration};
pub use sandbox::verdict::{Outcome, Output, Pressure, Report, TimeLimit, Usage, Verdict};
