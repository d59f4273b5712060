//! The runtime's errors: each says what failed and why; the wording of "does not exist" and
//! "permission denied" follows runc's, which engines match on.

/// A failed runtime command.
#[derive(Debug, thiserror::Error)]
pub enum RtError {
    /// The bundle or its config.json cannot be read.
    #[error("bundle: {0}")]
    Bundle(String),
    /// A config.json field that is wrong or not supported.
    #[error("config.json: {0}")]
    Config(String),
    /// No container of that id.
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    /// A container of that id exists already.
    #[error("container with id exists: {0}")]
    Exists(String),
    /// The command does not apply to the container's state.
    #[error("{0}")]
    State(String),
    /// A bad command line.
    #[error("{0}")]
    Usage(String),
    /// The sandbox could not be made (cagette's setup failure: step, errno, path, hint).
    #[error("{0}")]
    Sandbox(#[from] cagette::Error),
    /// A hook failed.
    #[error("{0}")]
    Hook(String),
    /// A system call or file operation failed.
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

impl RtError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RtError {
        let what = what.into();
        move |err| RtError::Io { what, err }
    }
}
