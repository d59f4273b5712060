//! A running sandbox: wait for it, signal it, talk to it. Dropping a [`Child`] that was not waited
//! for kills its whole process tree and reaps it.

use crate::limits::cgroup::JobCgroup;
use crate::error::{Error, Result};
use crate::sandbox::verdict::{Outcome, Output, TimeLimit, Usage, Verdict};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// A running sandbox.
///
/// `pid()` is the host pid of the sandbox's init (pid 1 inside when the pid namespace is new);
/// signals sent with [`Child::kill`] go to the init, which forwards SIGTERM, SIGINT, SIGHUP,
/// SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH and SIGCONT to the payload; SIGKILL kills the whole tree.
///
/// ```
/// use cagette::{Sandbox, Stdio, Verdict};
/// use std::io::Read;
/// let mut child = Sandbox::new().command("echo").arg("hello").stdout(Stdio::Piped).spawn().unwrap();
/// let mut s = String::new();
/// child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
/// assert_eq!(s, "hello\n");
/// assert_eq!(child.wait().unwrap().verdict, Verdict::Exited(0));
/// ```
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: OwnedFd,
    status: OwnedFd,
    /// The payload's standard input, when it was [`crate::Stdio::Piped`].
    pub stdin: Option<File>,
    /// The payload's standard output, when it was [`crate::Stdio::Piped`].
    pub stdout: Option<File>,
    /// The payload's standard error, when it was [`crate::Stdio::Piped`].
    pub stderr: Option<File>,
    started: Instant,
    deadline: Option<Instant>,
    pid_ns: bool,
    timed_out: Option<TimeLimit>,
    outcome: Option<Outcome>,
    cgroup: Option<JobCgroup>,
    /// The payload's host pid, kept when seccomp kills (to find its audit record).
    payload_pid: Option<i32>,
    /// The master of the sandbox's terminal, when it has one ([`crate::SandboxSpec::tty`]):
    /// what the payload writes to its terminal is read here, what is written here is its input.
    pub pty: Option<File>,
    /// The id range the job runs in (held until the job is gone).
    pub(crate) id_range: Option<crate::security::idrange::IdRange>,
    pub(crate) oom_policy: crate::sandbox::spec::OomPolicy,
    /// The job's memory cgroup reported an OOM (v1, kill_job) and the job was killed for it.
    oom_seen: bool,
    /// The network helper of a private network (killed and reaped with the job).
    pub(crate) net: Option<crate::net::NetHelper>,
    /// The network helper ended while the job ran (the job was killed for it).
    net_lost: bool,
    /// A named sandbox's registration (removed when the child is reaped or dropped).
    pub(crate) live: Option<crate::sandbox::live::Registration>,
    /// Handed over as a [`crate::Detached`]: dropping this value leaves the sandbox running.
    detached: bool,
}

/// The end-of-job record init writes (init.c): wait status and flags, then the CPU time and peak
/// RSS of every process init reaped.
#[derive(Clone, Copy, Debug)]
struct InitRecord {
    status: Option<i32>,
    /// Init ended the job on the kernel's OOM event (cgroup v1, kill_job).
    oom: bool,
    cpu_user: Duration,
    cpu_system: Duration,
    max_rss_bytes: u64,
}

impl InitRecord {
    const SIZE: usize = 32;

    fn parse(b: &[u8; Self::SIZE]) -> InitRecord {
        let w = |i: usize| i64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let first = w(0);
        InitRecord {
            status: ((first >> 32) & 1 == 1).then_some(first as i32),
            oom: (first >> 33) & 1 == 1,
            cpu_user: Duration::from_micros(w(1).max(0) as u64),
            cpu_system: Duration::from_micros(w(2).max(0) as u64),
            max_rss_bytes: (w(3).max(0) as u64).saturating_mul(1024),
        }
    }
}

/// Reads what is buffered on a socket, up to `buf.len()` bytes, without blocking.
fn recv_all(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    use nix::sys::socket::{MsgFlags, recv};
    let mut got = 0;
    while got < buf.len() {
        match recv(fd.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    got
}

/// Makes a stream non-blocking (for reading or writing without a deadlock).
fn set_nonblocking(f: &File) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(fl) = fcntl(f, FcntlArg::F_GETFL) {
        let _ = fcntl(f, FcntlArg::F_SETFL(OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK));
    }
}

/// How often a CPU-time limit is checked.
const CPU_CHECK: Duration = Duration::from_millis(20);

/// How the process behind a pidfd ended, with its rusage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reaped {
    /// It exited (else it was killed by a signal).
    pub exited: bool,
    /// The exit code or the signal number.
    pub status: i32,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
}

/// Reaps the process behind `pidfd` (blocking), returning how it ended and its rusage.
pub(crate) fn reap_raw(pidfd: BorrowedFd<'_>) -> Option<Reaped> {
    const P_PIDFD: libc::c_int = 3;
    loop {
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: waitid(P_PIDFD, …) with the rusage argument (which nix and rustix do not
        // expose) writes into the two zeroed buffers, which live for the call; zeroed, they are
        // valid values of these plain C structs either way, and on success si_status is the
        // field of the CLD_* siginfo the kernel filled.
        let done = unsafe {
            let r = libc::syscall(libc::SYS_waitid, P_PIDFD, pidfd.as_raw_fd(), info.as_mut_ptr(), libc::WEXITED | libc::__WALL, ru.as_mut_ptr());
            (r == 0).then(|| (info.assume_init(), ru.assume_init())).map(|(i, r)| (i.si_code, i.si_status(), r))
        };
        if let Some((code, status, ru)) = done {
            return Some(Reaped { exited: code == libc::CLD_EXITED, status, cpu_user: tv(ru.ru_utime), cpu_system: tv(ru.ru_stime) });
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Sends signal `sig` (1 to 64) to the process behind `pidfd`, such as a sandbox's init
/// ([`Child::pidfd`]). A pidfd names one process for good: the signal can never reach another
/// process that got the same pid later. A process that has ended gives `ESRCH`; signal 0 sends
/// nothing and only checks that it has not ended (as `kill(pid, 0)`); negative numbers and
/// numbers above 64 give `EINVAL`. For callers that keep their own copy of the pidfd (the Python and
/// Node bindings signal a job while another thread waits for it).
///
/// ```no_run
/// let child = cagette::Sandbox::new().command("sleep").arg("60").spawn()?;
/// let pidfd = child.pidfd().try_clone_to_owned()?;
/// // ... on another thread, while `child` is waited for:
/// match cagette::send_signal(std::os::fd::AsFd::as_fd(&pidfd), libc::SIGTERM) {
///     Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // it had ended
///     r => r?,
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    use rustix::process::Signal;
    if sig == 0 {
        // A pidfd turns readable when its process ends.
        let ended = poll_fds(&[(pidfd, nix::poll::PollFlags::POLLIN)], Some(Duration::ZERO))?;
        return match ended.first() {
            Some(r) if r.contains(nix::poll::PollFlags::POLLIN) => Err(io::Error::from_raw_os_error(libc::ESRCH)),
            _ => Ok(()),
        };
    }
    let s = match Signal::from_named_raw(sig) {
        Some(s) => s,
        // SAFETY: a real-time signal number; an invalid one is refused by the kernel (EINVAL).
        None if (1..=64).contains(&sig) => unsafe { Signal::from_raw_unchecked(sig) },
        None => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    rustix::process::pidfd_send_signal(pidfd, s).map_err(io::Error::from)
}

/// Polls `fds` (fd, events) for up to `timeout` (None: forever), retrying on EINTR; returns
/// each fd's revents.
pub(crate) fn poll_fds(fds: &[(BorrowedFd<'_>, nix::poll::PollFlags)], timeout: Option<Duration>) -> io::Result<Vec<nix::poll::PollFlags>> {
    use nix::poll::{PollFd, PollTimeout, poll};
    let ms = timeout.map(|d| d.as_millis().min(i32::MAX as u128 - 1) as i32 + i32::from(d.subsec_nanos() % 1_000_000 != 0));
    let t = ms.map_or(PollTimeout::NONE, |m| PollTimeout::try_from(m).unwrap_or(PollTimeout::MAX));
    loop {
        let mut p: Vec<PollFd<'_>> = fds.iter().map(|(fd, ev)| PollFd::new(*fd, *ev)).collect();
        match poll(&mut p, t) {
            Ok(_) => return Ok(p.iter().map(|f| f.revents().unwrap_or(nix::poll::PollFlags::empty())).collect()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The syscall of the kernel's audit record of a seccomp kill of `pid` (type 1326), if the log
/// is readable (root) and has it.
fn seccomp_audit_syscall(pid: i32) -> Option<String> {
    use std::io::Read;
    let mut f = File::options().read(true).custom_flags_nonblock().open("/dev/kmsg").ok()?;
    let needle = format!(" pid={pid} ");
    let mut found = None;
    let mut buf = vec![0u8; 8192];
    // Each read returns one record; EAGAIN at the end.
    while let Ok(n) = f.read(&mut buf) {
        let rec = String::from_utf8_lossy(&buf[..n]);
        if rec.contains("type=1326") && rec.contains(&needle) && rec.contains(" sig=31 ") {
            found = rec.split_whitespace().find_map(|w| w.strip_prefix("syscall=")?.parse::<u32>().ok());
        }
    }
    let nr = found?;
    Some(crate::security::seccomp::name(nr).map(str::to_string).unwrap_or_else(|| format!("#{nr}")))
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000)
}

impl Child {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(pid: i32, pidfd: OwnedFd, status: OwnedFd, ends: [Option<File>; 3], started: Instant, timeout: Option<Duration>, pid_ns: bool, cgroup: Option<JobCgroup>) -> Child {
        let [stdin, stdout, stderr] = ends;
        // Durations were bounded by validation; checked anyway (a deadline past the clock's end is none).
        let deadline = timeout.and_then(|t| started.checked_add(t));
        Child { pid, pidfd, status, stdin, stdout, stderr, started, deadline, pid_ns, timed_out: None, outcome: None, cgroup, payload_pid: None, pty: None, id_range: None, oom_policy: crate::sandbox::spec::OomPolicy::KillJob, oom_seen: false, live: None, net: None, net_lost: false, detached: false }
    }

    /// Remembers the payload's host pid (the init's only child right after spawn), so that a
    /// seccomp kill can be matched with the kernel's audit record.
    pub(crate) fn track_payload(&mut self) {
        let p = format!("/proc/{0}/task/{0}/children", self.pid);
        self.payload_pid = std::fs::read_to_string(p).ok().and_then(|s| s.split_whitespace().next()?.parse().ok());
    }

    /// Whether the job has a cgroup of its own (then killing it kills every process of the job,
    /// with or without a pid namespace).
    pub fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The host pid of the sandbox's init.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the sandbox's init: readable when the sandbox has ended, for event loops.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether the sandbox has a pid namespace of its own (then init is pid 1 and killing it kills
    /// every process of the job).
    pub fn has_pid_namespace(&self) -> bool {
        self.pid_ns
    }

    /// Sends `signal` to the sandbox's init (see the type's docs for what it forwards). Sending
    /// to a sandbox that has already ended is not an error.
    pub fn kill(&mut self, signal: i32) -> Result<()> {
        if self.outcome.is_some() {
            return Ok(());
        }
        if signal == libc::SIGKILL
            && let Some(cg) = &self.cgroup {
                cg.kill();
            }
        match send_signal(self.pidfd.as_fd(), signal) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(Error::io(format!("send signal {signal} to the sandbox (pid {})", self.pid), e)),
            _ => Ok(()),
        }
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// How long until a limit must be checked again (None: no limit pending).
    fn next_check(&self) -> Option<Duration> {
        if self.timed_out.is_some() {
            return None;
        }
        let cpu = self.cgroup.as_ref().and_then(|c| c.cpu_time_limit()).map(|_| CPU_CHECK);
        match (self.remaining(), cpu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits up to `timeout` for the sandbox to end (true) or its OOM event (handled here).
    fn poll_end(&mut self, timeout: Duration) -> io::Result<bool> {
        use nix::poll::PollFlags;
        let oom = self.cgroup.as_ref().and_then(|c| c.oom_event());
        let helper = self.net.as_ref().filter(|_| !self.net_lost).and_then(|n| n.pidfd());
        let mut fds = vec![(self.pidfd.as_fd(), PollFlags::POLLIN)];
        let oom_at = oom.map(|f| {
            fds.push((f, PollFlags::POLLIN));
            fds.len() - 1
        });
        let helper_at = helper.map(|f| {
            fds.push((f, PollFlags::POLLIN));
            fds.len() - 1
        });
        let ready = poll_fds(&fds, Some(timeout))?;
        let fired = |i: Option<usize>| i.and_then(|i| ready.get(i)).is_some_and(|r| !r.is_empty());
        let ended = ready.first().is_some_and(|r| !r.is_empty());
        if fired(oom_at) {
            self.check_oom();
        }
        if fired(helper_at) && !ended {
            self.network_lost();
        }
        Ok(ended)
    }

    /// With oom_policy = kill_job on cgroup v1: when the job's memory cgroup reported an OOM,
    /// kill the whole job (v2 does it in the kernel: memory.oom.group).
    fn check_oom(&mut self) {
        let Some(fd) = self.cgroup.as_ref().and_then(|c| c.oom_event()) else { return };
        let mut count = [0u8; 8];
        let n = nix::unistd::read(fd, &mut count).unwrap_or(0);
        if n == 8 && u64::from_ne_bytes(count) > 0 {
            self.oom_seen = true;
            if let Some(cg) = &self.cgroup {
                cg.kill();
            }
        }
    }

    /// The network helper ended while the job runs: a job without its network is killed, not
    /// left silently offline.
    fn network_lost(&mut self) {
        self.net_lost = true;
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        let _ = send_signal(self.pidfd.as_fd(), libc::SIGKILL);
    }

    /// Kills the job if its wall-clock or CPU-time limit has run out (or, see `check_oom`, when
    /// one of its processes was OOM-killed).
    fn enforce_limits(&mut self) -> Result<()> {
        self.check_oom();
        if self.timed_out.is_some() {
            return Ok(());
        }
        if self.remaining() == Some(Duration::ZERO) {
            return self.time_out(TimeLimit::Wall);
        }
        if let Some(cg) = &self.cgroup
            && let (Some(limit), Some(used)) = (cg.cpu_time_limit(), cg.cpu_used())
                && used >= limit {
                    return self.time_out(TimeLimit::Cpu);
                }
        Ok(())
    }

    fn time_out(&mut self, limit: TimeLimit) -> Result<()> {
        self.timed_out = Some(limit);
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        // Ask init to kill and reap everything (so their CPU time is accounted); if it cannot
        // be asked, or does not finish promptly, SIGKILL it.
        use nix::sys::socket::{MsgFlags, send};
        let asked = send(self.status.as_raw_fd(), b"K", MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT).is_ok_and(|n| n == 1);
        if asked && poll_fds(&[(self.pidfd.as_fd(), nix::poll::PollFlags::POLLIN)], Some(Duration::from_millis(500))).is_ok_and(|r| !r[0].is_empty()) {
            return Ok(());
        }
        self.kill(libc::SIGKILL)
    }

    /// Returns the outcome if the sandbox has ended, without blocking. Enforces the timeout.
    pub fn try_wait(&mut self) -> Result<Option<Outcome>> {
        if let Some(o) = &self.outcome {
            return Ok(Some(o.clone()));
        }
        self.enforce_limits()?;
        if self.poll_end(Duration::ZERO).map_err(|e| Error::io("poll the sandbox's pidfd", e))? {
            return self.reap().map(Some);
        }
        Ok(None)
    }

    /// Waits at most `limit` for the sandbox to end (never past its own timeout, which kills it).
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<Outcome>> {
        if let Some(o) = &self.outcome {
            return Ok(Some(o.clone()));
        }
        // A limit too far off for the clock (Duration::MAX) is no limit.
        let until = Instant::now().checked_add(limit);
        loop {
            let mut step = until.map_or(Duration::from_secs(3600), |u| u.saturating_duration_since(Instant::now()));
            if let Some(c) = self.next_check() {
                step = step.min(c);
            }
            if self.poll_end(step).map_err(|e| Error::io("poll the sandbox's pidfd", e))? {
                return self.reap().map(Some);
            }
            self.enforce_limits()?;
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
        }
    }

    /// Waits for the sandbox to end (killing it when its timeout runs out) and returns the
    /// verdict and usage. Closes the payload's stdin first if it is piped, as std does.
    pub fn wait(&mut self) -> Result<Outcome> {
        drop(self.stdin.take());
        loop {
            if let Some(o) = self.wait_timeout(Duration::from_secs(3600))? {
                return Ok(o);
            }
        }
    }

    fn reap(&mut self) -> Result<Outcome> {
        let reaped = reap_raw(self.pidfd.as_fd()).ok_or_else(|| Error::last_os(format!("reap the sandbox (pid {})", self.pid)))?;
        let wall = self.started.elapsed();
        let mut rec = [0u8; InitRecord::SIZE];
        let got = recv_all(self.status.as_fd(), &mut rec);
        let record = (got == InitRecord::SIZE).then(|| InitRecord::parse(&rec));
        let helper_cpu = self.net.as_ref().map(|n| n.cpu()).unwrap_or_default();
        let mut cg = self.cgroup.as_ref().map(|c| c.usage()).unwrap_or_default();
        if self.oom_seen || record.is_some_and(|r| r.oom) {
            // We ended the job on the kernel's OOM event, maybe before its OOM killer acted.
            cg.oom_kills = cg.oom_kills.max(1);
        }
        let mut verdict = if let Some(limit) = self.timed_out {
            Verdict::TimedOut(limit)
        } else if self.net_lost {
            Verdict::NetworkLost
        } else if record.is_some_and(|r| r.oom) {
            Verdict::OomKilled
        } else if let Some(ws) = record.and_then(|r| r.status) {
            if libc::WIFEXITED(ws) {
                Verdict::Exited(libc::WEXITSTATUS(ws))
            } else if libc::WIFSIGNALED(ws) {
                Verdict::Signaled(libc::WTERMSIG(ws))
            } else {
                Verdict::Exited(ws)
            }
        } else if reaped.exited {
            Verdict::Exited(reaped.status)
        } else {
            Verdict::Signaled(reaped.status)
        };
        // An OOM kill in the job: with kill_job (the default) the job was killed for it whatever
        // its command did next; with continue, a SIGKILL of the payload while the cgroup counted
        // an OOM kill is the OOM killer's.
        if self.timed_out.is_none() && cg.oom_kills > 0 {
            let payload_killed = verdict == Verdict::Signaled(libc::SIGKILL);
            if self.oom_policy == crate::sandbox::spec::OomPolicy::KillJob || payload_killed {
                verdict = Verdict::OomKilled;
            }
        }
        if verdict == Verdict::Signaled(libc::SIGSYS)
            && let Some(pid) = self.payload_pid {
                verdict = Verdict::SeccompKilled { syscall: seccomp_audit_syscall(pid) };
            }
        // CPU: the cgroup's (every process), else what init reaped. Init's own rusage is not used
        // for memory: it started as a process sharing the host's memory, whose peak it inherits.
        let usage = Usage {
            wall_time: wall,
            cpu_user: cg.cpu_user.or(record.map(|r| r.cpu_user)).unwrap_or(reaped.cpu_user) + helper_cpu.0,
            cpu_system: cg.cpu_system.or(record.map(|r| r.cpu_system)).unwrap_or(reaped.cpu_system) + helper_cpu.1,
            max_rss_bytes: record.map(|r| r.max_rss_bytes).filter(|&b| b > 0),
            memory_peak_bytes: cg.memory_peak,
            pids_peak: cg.pids_peak,
            io_read_bytes: cg.io_read,
            io_write_bytes: cg.io_write,
            oom_kills: cg.oom_kills,
            pressure: cg.psi,
        };
        self.net = None; // the helper ends with the job (before its cgroup goes)
        if let Some(mut c) = self.cgroup.take() {
            c.remove().map_err(|e| Error::io("remove the job's cgroup", e))?;
        }
        let o = Outcome { verdict, usage };
        self.outcome = Some(o.clone());
        self.live = None; // a named sandbox is no longer listed
        Ok(o)
    }

    /// Feeds `input` to a piped stdin, collects piped stdout and stderr without deadlock, and
    /// waits (killing the sandbox when its timeout runs out).
    pub fn communicate(&mut self, input: Option<&[u8]>) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdin = self.stdin.take();
        if input.is_none() {
            stdin = None;
        }
        if let Some(f) = &stdin {
            set_nonblocking(f);
        }
        let mut stdout = self.stdout.take();
        let mut stderr = self.stderr.take();
        // With a terminal, what the payload prints is read from the pty, and the input typed into it.
        if let Some(p) = &self.pty {
            if stdout.is_none() {
                stdout = p.try_clone().ok();
            }
            if stdin.is_none() && input.is_some() {
                stdin = p.try_clone().ok();
                if let Some(f) = &stdin {
                    let _ = nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NONBLOCK));
                }
            }
        }
        let mut input = input.unwrap_or(&[]);
        let mut ended = false;
        while stdout.is_some() || stderr.is_some() || stdin.is_some() {
            use nix::poll::PollFlags;
            let mut pfds: Vec<(BorrowedFd<'_>, PollFlags)> = Vec::with_capacity(5);
            let mut kinds = Vec::with_capacity(5);
            for (k, f) in [(1, &stdout), (2, &stderr)] {
                if let Some(f) = f {
                    pfds.push((f.as_fd(), PollFlags::POLLIN));
                    kinds.push(k);
                }
            }
            if let Some(f) = &stdin {
                pfds.push((f.as_fd(), PollFlags::POLLOUT));
                kinds.push(0);
            }
            let oom = self.cgroup.as_ref().and_then(|c| c.oom_event());
            if !ended {
                pfds.push((self.pidfd.as_fd(), PollFlags::POLLIN));
                kinds.push(3);
                if let Some(fd) = oom {
                    pfds.push((fd, PollFlags::POLLIN));
                    kinds.push(4);
                }
                if let Some(fd) = self.net.as_ref().filter(|_| !self.net_lost).and_then(|n| n.pidfd()) {
                    pfds.push((fd, PollFlags::POLLIN));
                    kinds.push(5);
                }
            }
            let ready = poll_fds(&pfds, self.next_check().map(|d| d + Duration::from_millis(1))).map_err(|e| Error::io("poll the sandbox's streams", e))?;
            drop(pfds);
            if ready.iter().all(|r| r.is_empty()) {
                self.enforce_limits()?;
                continue;
            }
            let mut buf = [0u8; 65536];
            for (r, k) in ready.iter().zip(kinds) {
                if r.is_empty() {
                    continue;
                }
                match k {
                    0 => {
                        if let Some(f) = &mut stdin {
                            match f.write(input) {
                                Ok(n) => input = &input[n..],
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => input = &[], // the payload closed its stdin
                            }
                        }
                        if input.is_empty() {
                            stdin = None;
                        }
                    }
                    1 | 2 => {
                        let (slot, sink) = if k == 1 { (&mut stdout, &mut out) } else { (&mut stderr, &mut err) };
                        if let Some(f) = slot {
                            match f.read(&mut buf) {
                                Ok(0) => *slot = None,
                                Ok(n) => sink.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => *slot = None,
                            }
                        }
                    }
                    3 => ended = true,
                    5 => self.network_lost(),
                    _ => self.check_oom(),
                }
            }
            if ended {
                // Init is gone, and with a pid namespace so is every process of the job: drain
                // what is buffered and stop (without one, an escaped descendant could hold the
                // pipes open forever).
                stdin = None;
                for (slot, sink) in [(&mut stdout, &mut out), (&mut stderr, &mut err)] {
                    if let Some(f) = slot.take() {
                        set_nonblocking(&f);
                        let mut f = f;
                        loop {
                            match f.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => sink.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
        }
        Ok((out, err))
    }

    /// Sets the size of the sandbox's terminal (rows, columns), as a terminal window does when it
    /// is resized: the payload gets SIGWINCH. No-op without a terminal.
    pub fn resize_tty(&self, rows: u16, cols: u16) -> Result<()> {
        if let Some(p) = &self.pty {
            let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            rustix::termios::tcsetwinsize(p, ws).map_err(|e| Error::io("set the size of the sandbox's terminal", e.into()))?;
        }
        Ok(())
    }

    /// Connects the sandbox's terminal ([`crate::SandboxSpec::tty`]) to this process's own: what
    /// the payload prints goes to our stdout; with `forward_input`, what is typed on our stdin goes
    /// to it, with our terminal in raw mode meanwhile (so Ctrl-C reaches the payload as a
    /// character, as with `docker run -it`), restored afterwards. Our terminal's size is followed.
    /// `signals`, a signalfd the caller made, has its signals forwarded to the payload (SIGWINCH
    /// resizes the sandbox's terminal). Waits for the end, like [`Child::wait`].
    ///
    /// ```no_run
    /// let mut spec = cagette::SandboxSpec { argv: vec!["sh".into()], tty: true, ..Default::default() };
    /// let mut child = cagette::Sandbox::from_spec(spec).spawn()?;
    /// let outcome = child.interact(true, None)?;
    /// # Ok::<(), cagette::Error>(())
    /// ```
    pub fn interact(&mut self, forward_input: bool, signals: Option<BorrowedFd<'_>>) -> Result<Outcome> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let Some(master) = self.pty.as_ref().and_then(|p| p.try_clone().ok()) else {
            return Err(Error::Usage("interact() needs a sandbox with a terminal (tty = true)".into()));
        };
        let stdin = io::stdin();
        let stdout_fd = io::stdout();
        let _raw = if forward_input { RawMode::enter(stdin.as_fd()) } else { None };
        let host_tty = || -> Option<(u16, u16)> {
            rustix::termios::tcgetwinsize(io::stdin().as_fd()).or_else(|_| rustix::termios::tcgetwinsize(io::stdout().as_fd())).ok().map(|w| (w.ws_row, w.ws_col))
        };
        let mut size = host_tty();
        let mut input_open = forward_input;
        let mut output_open = true;
        let mut buf = [0u8; 16384];
        loop {
            let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN), PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            if input_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            let sig_at = fds.len();
            if let Some(s) = signals {
                fds.push(PollFd::new(s, PollFlags::POLLIN));
            }
            let wait = self.next_check().unwrap_or(Duration::from_millis(250)).min(Duration::from_millis(250));
            match poll(&mut fds, PollTimeout::try_from(wait.as_millis() as i32 + 1).unwrap_or(PollTimeout::MAX)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::io("poll the sandbox's terminal", e.into())),
                Ok(_) => {}
            }
            let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
            let (out_ready, ended, in_ready, sig_ready) = (ready(0), ready(1), input_open && ready(2), signals.is_some() && ready(sig_at));
            drop(fds);
            if out_ready && output_open {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => output_open = false,
                    Ok(n) => {
                        let _ = (&stdout_fd).write_all(&buf[..n]).and_then(|_| (&stdout_fd).flush());
                    }
                    Err(_) => {}
                }
            }
            if in_ready {
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) => input_open = false,
                    Ok(n) => {
                        let _ = (&master).write_all(&buf[..n]);
                    }
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                    Err(_) => input_open = false,
                }
            }
            if sig_ready
                && let Some(s) = signals {
                    let mut info = [0u8; 128];
                    while nix::unistd::read(s, &mut info).is_ok_and(|n| n == 128) {
                        let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                        if signo == libc::SIGWINCH {
                            size = None; // re-read below
                        } else {
                            self.kill(signo)?;
                        }
                    }
                }
            let now = host_tty();
            if now != size {
                if let Some((r, c)) = now {
                    let _ = self.resize_tty(r, c);
                }
                size = now;
            }
            if ended {
                // Print what is still buffered in the terminal, then the outcome.
                let _ = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NONBLOCK));
                while output_open {
                    match nix::unistd::read(&master, &mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = (&stdout_fd).write_all(&buf[..n]);
                        }
                        _ => output_open = false,
                    }
                }
                let _ = (&stdout_fd).flush();
                return self.wait();
            }
            self.enforce_limits()?;
        }
    }

    /// Collects piped output and waits: [`Child::communicate`] without input, then [`Child::wait`].
    pub fn wait_with_output(mut self) -> Result<Output> {
        let (stdout, stderr) = self.communicate(None)?;
        let o = self.wait()?;
        Ok(Output { status: o.verdict, stdout, stderr, usage: o.usage })
    }
}

/// Our terminal in raw mode until dropped (restored as it was).
struct RawMode {
    fd: std::os::fd::OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd: fd.try_clone_to_owned().ok()?, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

impl Child {
    /// Lets the sandbox run on without this value (`spawn_detached`): its pid, terminal and
    /// cgroup (kept, no longer removed here).
    pub(crate) fn detach(mut self) -> crate::Detached {
        self.detached = true;
        crate::Detached { pid: self.pid, pty: self.pty.take(), cgroup: self.cgroup.take().map(crate::sandbox::detach::DetachedCgroup::from_job) }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.outcome.is_none() && !self.detached {
            let _ = send_signal(self.pidfd.as_fd(), libc::SIGKILL);
            reap_raw(self.pidfd.as_fd());
        }
    }
}
