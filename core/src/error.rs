//! Errors. Setup failures carry the step, the errno, the path involved and a hint; they are the
//! same value whether the parent caught them while planning or the child hit them after clone.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// The step of sandbox setup that failed. Serialized in snake case (`"mount"`, `"exec"`), as in
/// the CLI's `--report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reading or checking the sandbox description.
    Spec,
    /// Creating the sandbox process (clone3/clone with its namespaces).
    Clone,
    /// Writing the user namespace's uid/gid maps.
    IdMap,
    /// Joining or creating a namespace after clone.
    Namespace,
    /// Creating the job's cgroup or applying a limit.
    Cgroup,
    /// Setting the hostname.
    Hostname,
    /// Setting up the network (loopback).
    Network,
    /// Finding the image and its layers in the store.
    Image,
    /// Creating or attaching a mount (including the root).
    Mount,
    /// Masking a path.
    Mask,
    /// Making a path read-only.
    ReadonlyPath,
    /// Switching to the new root (pivot_root).
    PivotRoot,
    /// Applying a resource limit.
    Rlimit,
    /// Setting up standard streams and passed file descriptors.
    Stdio,
    /// Changing to the working directory.
    Cwd,
    /// Switching to the payload's user and groups.
    User,
    /// Dropping capabilities.
    Capabilities,
    /// Setting no_new_privs.
    NoNewPrivs,
    /// Compiling or loading the seccomp filter.
    Seccomp,
    /// Applying the Landlock rules.
    Landlock,
    /// Executing the command.
    Exec,
    /// Starting the sandbox's init.
    Init,
}

impl Step {
    /// The snake-case name used in reports.
    pub fn name(self) -> &'static str {
        use Step::*;
        match self {
            Spec => "spec",
            Clone => "clone",
            IdMap => "id_map",
            Namespace => "namespace",
            Cgroup => "cgroup",
            Hostname => "hostname",
            Network => "network",
            Image => "image",
            Mount => "mount",
            Mask => "mask",
            ReadonlyPath => "readonly_path",
            PivotRoot => "pivot_root",
            Rlimit => "rlimit",
            Stdio => "stdio",
            Cwd => "cwd",
            User => "user",
            Capabilities => "capabilities",
            NoNewPrivs => "no_new_privs",
            Seccomp => "seccomp",
            Landlock => "landlock",
            Exec => "exec",
            Init => "init",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a sandbox could not be set up: which step, on which path, the errno, and what to do.
///
/// ```
/// let err = cagette::Sandbox::new().command("/no/such/program").status().unwrap_err();
/// let f = err.setup_failure().unwrap();
/// assert_eq!(f.step, cagette::Step::Exec);
/// assert_eq!(f.errno, Some(libc::ENOENT));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupFailure {
    /// The step that failed.
    pub step: Step,
    /// The errno the kernel returned, if the failure came from a system call.
    pub errno: Option<i32>,
    /// The path involved, if any (host path for sources, sandbox path for destinations).
    pub path: Option<PathBuf>,
    /// What was being done, and what went wrong.
    pub message: String,
    /// How to fix it, when there is a likely fix.
    pub hint: Option<String>,
}

impl SetupFailure {
    pub(crate) fn new(step: Step, errno: Option<i32>, path: Option<PathBuf>, what: &str) -> SetupFailure {
        let message = match errno {
            Some(e) => format!("{what}: {}", io::Error::from_raw_os_error(e)),
            None => what.to_string(),
        };
        SetupFailure { step, errno, path, message, hint: None }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> SetupFailure {
        self.hint = Some(hint.into());
        self
    }

    /// The exit status the CLI uses for this failure: 127 when the command was not found, 126
    /// when it could not be executed, 125 otherwise (docker's conventions).
    pub fn exit_code(&self) -> i32 {
        match (self.step, self.errno) {
            (Step::Exec, Some(libc::ENOENT)) | (Step::Exec, Some(libc::ENOTDIR)) => 127,
            (Step::Exec, Some(_)) => 126,
            _ => 125,
        }
    }
}

impl fmt::Display for SetupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sandbox setup failed at step {}: {}", self.step, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SetupFailure {}

/// Every error cagette returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sandbox could not be set up; nothing is left running.
    #[error(transparent)]
    Setup(#[from] SetupFailure),
    /// Waiting for, signalling or talking to a running sandbox failed.
    #[error("{context}: {source}")]
    Io {
        /// What cagette was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The call does not apply in the child's current state (e.g. a stream that is not piped).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The setup failure, if this is one.
    pub fn setup_failure(&self) -> Option<&SetupFailure> {
        match self {
            Error::Setup(f) => Some(f),
            _ => None,
        }
    }

    /// What the Python and Node bindings raise for this error, as (kind, JSON payload):
    /// `("setup", the SetupFailure)` or `("error", {"message": ...})`; their exception classes
    /// are chosen by kind.
    ///
    /// ```no_run
    /// if let Err(e) = cagette::Sandbox::new().command("/no/such/program").output() {
    ///     let (kind, payload) = e.binding_payload();
    ///     eprintln!("{kind}: {payload}");
    /// }
    /// ```
    pub fn binding_payload(&self) -> (&'static str, serde_json::Value) {
        match self.setup_failure() {
            Some(f) => ("setup", serde_json::to_value(f).unwrap_or_default()),
            None => ("error", serde_json::json!({ "message": self.to_string() })),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn last_os(context: impl Into<String>) -> Error {
        Error::io(context, io::Error::last_os_error())
    }
}

/// `Result` with cagette's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
