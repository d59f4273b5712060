//! How a job ended ([`Verdict`]), what it used ([`Usage`]), and the JSON report the CLI and the
//! bindings share ([`Report`]).

use crate::error::{Error, SetupFailure};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which limit a timed-out job ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    /// The wall-clock timeout.
    Wall,
    /// The CPU-time limit.
    Cpu,
}

/// The one verdict on a job, the same in Rust, the CLI report and the bindings.
///
/// ```
/// use cagette::{Sandbox, Verdict};
/// let out = Sandbox::new().command("sh").args(["-c", "exit 3"]).status().unwrap();
/// assert_eq!(out.verdict, Verdict::Exited(3));
/// assert_eq!(out.verdict.name(), "exited");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The payload exited with this code.
    Exited(i32),
    /// The payload was killed by this signal.
    Signaled(i32),
    /// The job ran out of time and was killed with its whole process tree.
    TimedOut(TimeLimit),
    /// The kernel's OOM killer killed the payload: the job went over its memory limit. (A
    /// SIGKILL from anyone else is `Signaled(9)`.)
    OomKilled,
    /// The seccomp filter killed the payload (SIGSYS, with `seccomp_kill`); `syscall` is the
    /// denied system call's name where the kernel tells it (its audit record, readable by root).
    SeccompKilled {
        /// The system call, when known.
        syscall: Option<String>,
    },
    /// The job's network helper (`network: private`) ended while the job ran: the job was
    /// killed rather than left silently offline.
    NetworkLost,
    /// The sandbox could not be set up (only in reports: the API returns it as an error).
    SetupFailed(SetupFailure),
}

impl Verdict {
    /// The report's name: `exited`, `signaled`, `oom_killed`, `seccomp_killed`, `timed_out`,
    /// `network_lost` or `setup_failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Exited(_) => "exited",
            Verdict::Signaled(_) => "signaled",
            Verdict::TimedOut(_) => "timed_out",
            Verdict::OomKilled => "oom_killed",
            Verdict::SeccompKilled { .. } => "seccomp_killed",
            Verdict::NetworkLost => "network_lost",
            Verdict::SetupFailed(_) => "setup_failed",
        }
    }

    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        *self == Verdict::Exited(0)
    }

    /// The exit code, when the payload exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            Verdict::Exited(c) => Some(*c),
            _ => None,
        }
    }

    /// The signal that killed the payload, when one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            Verdict::Signaled(s) => Some(*s),
            Verdict::SeccompKilled { .. } => Some(libc::SIGSYS),
            _ => None,
        }
    }

    /// The shell-style status the CLI exits with: the code; 128+N for signal N (137 for an OOM
    /// kill and for `network_lost`); 124 on timeout;
    /// 125, 126 or 127 for setup failures (see [`SetupFailure::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Exited(c) => *c,
            Verdict::Signaled(s) => 128 + s,
            Verdict::TimedOut(_) => 124,
            Verdict::OomKilled => 128 + libc::SIGKILL,
            Verdict::SeccompKilled { .. } => 128 + libc::SIGSYS,
            Verdict::NetworkLost => 128 + libc::SIGKILL,
            Verdict::SetupFailed(f) => f.exit_code(),
        }
    }
}

/// What a job used — the job's own figures, never the host's.
///
/// - CPU times: from the job's cgroup when it has one (every process, reaped or not), else the
///   rusage of every process the sandbox's init reaped (with a pid namespace, init kills and
///   reaps everything left when the command ends, so nothing is missed).
/// - `memory_peak_bytes`: the cgroup's peak (the whole job's memory, page cache included), only
///   when the job has a cgroup.
/// - `max_rss_bytes`: the peak resident size of the *largest single process* of the job (what
///   `time -v` and isolate's `max-rss` show), from the rusage init collects of the processes it
///   reaped. `None` when init could not report it (the job was killed as a whole, e.g. by an
///   OOM kill or its timeout). The payload is forked by init from init's own small address
///   space, so this is never the host's peak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// From spawn to the moment the end was observed.
    pub wall_time: Duration,
    /// User CPU time of the whole job.
    pub cpu_user: Duration,
    /// System CPU time of the whole job.
    pub cpu_system: Duration,
    /// Peak resident set of the largest process, in bytes (see above for when it is unknown).
    pub max_rss_bytes: Option<u64>,
    /// Peak memory of the whole job (cgroup), in bytes.
    pub memory_peak_bytes: Option<u64>,
    /// Peak number of processes and threads (cgroup).
    pub pids_peak: Option<u64>,
    /// Bytes read from block devices (cgroup).
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices (cgroup).
    pub io_write_bytes: Option<u64>,
    /// How many times the OOM killer killed a process of the job.
    pub oom_kills: u64,
    /// Pressure stall totals (cgroup v2 with PSI).
    pub pressure: Option<Pressure>,
}

/// Pressure stall information of a job: total time some (or all) of its tasks were stalled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pressure {
    /// Some task waited for CPU.
    pub cpu_some: Duration,
    /// Some task waited for memory.
    pub memory_some: Duration,
    /// All tasks waited for memory.
    pub memory_full: Duration,
    /// Some task waited for I/O.
    pub io_some: Duration,
    /// All tasks waited for I/O.
    pub io_full: Duration,
}

/// The verdict and usage of a finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub verdict: Verdict,
    /// What it used.
    pub usage: Usage,
}

impl Outcome {
    /// True when the payload exited with 0.
    pub fn success(&self) -> bool {
        self.verdict.success()
    }
}

/// A finished job with its captured output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: Verdict,
    /// Captured standard output (empty unless stdout was piped).
    pub stdout: Vec<u8>,
    /// Captured standard error (empty unless stderr was piped).
    pub stderr: Vec<u8>,
    /// What it used.
    pub usage: Usage,
}

/// The JSON report of one job (`cagette run --report`), also what the bindings expose.
///
/// ```
/// use cagette::{Report, Sandbox};
/// let outcome = Sandbox::new().command("true").status();
/// let report = Report::from_result(&outcome);
/// assert_eq!(report.verdict, "exited");
/// assert_eq!(report.exit_code, Some(0));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `exited`, `signaled`, `oom_killed`, `seccomp_killed`, `timed_out` or `setup_failed`.
    pub verdict: String,
    /// The exit code, when the payload exited.
    pub exit_code: Option<i32>,
    /// The signal number, when the payload was killed by one.
    pub signal: Option<i32>,
    /// Which limit ran out, when timed out (`wall` or `cpu`).
    pub limit: Option<TimeLimit>,
    /// For `seccomp_killed`: the denied system call, when the kernel told it.
    pub syscall: Option<String>,
    /// Wall time in seconds.
    pub wall_time_s: f64,
    /// User CPU seconds.
    pub cpu_user_s: f64,
    /// System CPU seconds.
    pub cpu_system_s: f64,
    /// Peak memory in bytes: the job's cgroup peak when it has a cgroup, else the largest
    /// process's peak RSS; null when neither is known (see [`Usage`]).
    pub memory_peak_bytes: Option<u64>,
    /// Peak resident set of the largest single process, in bytes (null when unknown).
    pub max_rss_bytes: Option<u64>,
    /// Peak number of processes and threads (cgroup only).
    pub pids_peak: Option<u64>,
    /// Bytes read from block devices (cgroup only).
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices (cgroup only).
    pub io_write_bytes: Option<u64>,
    /// OOM kills in the job.
    pub oom_kill_count: u64,
    /// Pressure stall totals in seconds (cgroup v2 with PSI): cpu_some, memory_some,
    /// memory_full, io_some, io_full.
    pub pressure: Option<std::collections::BTreeMap<String, f64>>,
    /// For setup failures: the step.
    pub step: Option<String>,
    /// For setup failures: the message.
    pub error: Option<String>,
    /// For setup failures: the errno, when there is one.
    pub errno: Option<i32>,
    /// For setup failures: the path involved.
    pub path: Option<String>,
    /// For setup failures: how to fix it.
    pub hint: Option<String>,
}

impl Report {
    /// The report of a finished job.
    pub fn new(verdict: &Verdict, usage: &Usage) -> Report {
        let mut r = Report {
            verdict: verdict.name().to_string(),
            exit_code: verdict.code(),
            signal: verdict.signal(),
            limit: match verdict {
                Verdict::TimedOut(l) => Some(*l),
                _ => None,
            },
            syscall: match verdict {
                Verdict::SeccompKilled { syscall } => syscall.clone(),
                _ => None,
            },
            wall_time_s: usage.wall_time.as_secs_f64(),
            cpu_user_s: usage.cpu_user.as_secs_f64(),
            cpu_system_s: usage.cpu_system.as_secs_f64(),
            memory_peak_bytes: usage.memory_peak_bytes.or(usage.max_rss_bytes),
            max_rss_bytes: usage.max_rss_bytes,
            pids_peak: usage.pids_peak,
            io_read_bytes: usage.io_read_bytes,
            io_write_bytes: usage.io_write_bytes,
            oom_kill_count: usage.oom_kills,
            pressure: usage.pressure.map(|p| {
                [("cpu_some", p.cpu_some), ("memory_some", p.memory_some), ("memory_full", p.memory_full), ("io_some", p.io_some), ("io_full", p.io_full)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.as_secs_f64()))
                    .collect()
            }),
            step: None,
            error: None,
            errno: None,
            path: None,
            hint: None,
        };
        if let Verdict::SetupFailed(f) = verdict {
            r.step = Some(f.step.name().to_string());
            r.error = Some(f.message.clone());
            r.errno = f.errno;
            r.path = f.path.as_ref().map(|p| p.display().to_string());
            r.hint = f.hint.clone();
        }
        r
    }

    /// The report of `Sandbox::status()` or `Child::wait()`'s result; an error that is not a
    /// setup failure becomes `setup_failed` at step `spec`/`init` with its message.
    pub fn from_result(result: &Result<Outcome, Error>) -> Report {
        match result {
            Ok(o) => Report::new(&o.verdict, &o.usage),
            Err(e) => Report::new(&Verdict::SetupFailed(error_as_failure(e)), &Usage::default()),
        }
    }
}

/// Any error as a setup failure (for reports).
pub(crate) fn error_as_failure(e: &Error) -> SetupFailure {
    match e {
        Error::Setup(f) => f.clone(),
        other => SetupFailure::new(crate::Step::Init, None, None, &other.to_string()),
    }
}
