//! A running sandbox: wait for it, signal it, talk to it. Dropping a [`Child`] that was not waited
//! for kills its whole process tree and reaps it.

use crate::error::{Error, Result};
use crate::verdict::{Outcome, Output, TimeLimit, Usage, Verdict};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
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
    timed_out: bool,
    outcome: Option<Outcome>,
}

/// Reaps the process behind `pidfd` (blocking), returning its siginfo and rusage.
pub(crate) fn reap_raw(pidfd: RawFd) -> Option<(libc::siginfo_t, libc::rusage)> {
    const P_PIDFD: libc::c_int = 3;
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::syscall(libc::SYS_waitid, P_PIDFD, pidfd, &mut info as *mut libc::siginfo_t, libc::WEXITED | libc::__WALL, &mut ru as *mut libc::rusage)
        };
        if r == 0 {
            return Some((info, ru));
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

fn poll_one(fd: RawFd, events: libc::c_short, timeout: Option<Duration>) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    let ms = timeout.map(|d| d.as_millis().min(i32::MAX as u128) as i32 + i32::from(d.subsec_nanos() % 1_000_000 != 0)).unwrap_or(-1);
    loop {
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000)
}

impl Child {
    pub(crate) fn new(pid: i32, pidfd: OwnedFd, status: OwnedFd, ends: [Option<File>; 3], started: Instant, timeout: Option<Duration>, pid_ns: bool) -> Child {
        let [stdin, stdout, stderr] = ends;
        Child { pid, pidfd, status, stdin, stdout, stderr, started, deadline: timeout.map(|t| started + t), pid_ns, timed_out: false, outcome: None }
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
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), signal, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::io(format!("send signal {signal} to the sandbox (pid {})", self.pid), e));
            }
        }
        Ok(())
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn time_out(&mut self) -> Result<()> {
        self.timed_out = true;
        self.kill(libc::SIGKILL)
    }

    /// Returns the outcome if the sandbox has ended, without blocking. Enforces the timeout.
    pub fn try_wait(&mut self) -> Result<Option<Outcome>> {
        if let Some(o) = &self.outcome {
            return Ok(Some(o.clone()));
        }
        if self.remaining() == Some(Duration::ZERO) && !self.timed_out {
            self.time_out()?;
        }
        if poll_one(self.pidfd.as_raw_fd(), libc::POLLIN, Some(Duration::ZERO)).map_err(|e| Error::io("poll the sandbox's pidfd", e))? {
            return self.reap().map(Some);
        }
        Ok(None)
    }

    /// Waits at most `limit` for the sandbox to end (never past its own timeout, which kills it).
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<Outcome>> {
        if let Some(o) = &self.outcome {
            return Ok(Some(o.clone()));
        }
        let until = Instant::now() + limit;
        loop {
            let now = Instant::now();
            let mut step = until.saturating_duration_since(now);
            let mut by_deadline = false;
            if let Some(r) = self.remaining().filter(|_| !self.timed_out) {
                if r <= step {
                    step = r;
                    by_deadline = true;
                }
            }
            if poll_one(self.pidfd.as_raw_fd(), libc::POLLIN, Some(step)).map_err(|e| Error::io("poll the sandbox's pidfd", e))? {
                return self.reap().map(Some);
            }
            if by_deadline && self.remaining() == Some(Duration::ZERO) {
                self.time_out()?;
                continue;
            }
            if Instant::now() >= until {
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
        let (info, ru) = reap_raw(self.pidfd.as_raw_fd()).ok_or_else(|| Error::last_os(format!("reap the sandbox (pid {})", self.pid)))?;
        let wall = self.started.elapsed();
        let mut st = [0u8; 4];
        let got = unsafe { libc::recv(self.status.as_raw_fd(), st.as_mut_ptr() as *mut libc::c_void, 4, libc::MSG_DONTWAIT) };
        let verdict = if got == 4 {
            let ws = i32::from_ne_bytes(st);
            if libc::WIFEXITED(ws) {
                Verdict::Exited(libc::WEXITSTATUS(ws))
            } else if libc::WIFSIGNALED(ws) {
                Verdict::Signaled(libc::WTERMSIG(ws))
            } else {
                Verdict::Exited(ws)
            }
        } else if self.timed_out {
            Verdict::TimedOut(TimeLimit::Wall)
        } else {
            let status = unsafe { info.si_status() };
            match info.si_code {
                libc::CLD_EXITED => Verdict::Exited(status),
                _ => Verdict::Signaled(status),
            }
        };
        let usage = Usage {
            wall_time: wall,
            cpu_user: tv(ru.ru_utime),
            cpu_system: tv(ru.ru_stime),
            max_rss_bytes: (ru.ru_maxrss.max(0) as u64) * 1024,
        };
        let o = Outcome { verdict, usage };
        self.outcome = Some(o.clone());
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
            unsafe {
                let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        let mut input = input.unwrap_or(&[]);
        let mut stdout = self.stdout.take();
        let mut stderr = self.stderr.take();
        let mut ended = false;
        while stdout.is_some() || stderr.is_some() || stdin.is_some() {
            let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(4);
            let mut kinds = Vec::with_capacity(4);
            for (k, f) in [(1, &stdout), (2, &stderr)] {
                if let Some(f) = f {
                    pfds.push(libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                    kinds.push(k);
                }
            }
            if let Some(f) = &stdin {
                pfds.push(libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
                kinds.push(0);
            }
            if !ended {
                pfds.push(libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                kinds.push(3);
            }
            let timeout = match self.remaining() {
                Some(r) if !self.timed_out => r.as_millis().min(i32::MAX as u128) as i32 + 1,
                _ => -1,
            };
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("poll the sandbox's streams", e));
            }
            if r == 0 {
                if self.remaining() == Some(Duration::ZERO) && !self.timed_out {
                    self.time_out()?;
                }
                continue;
            }
            let mut buf = [0u8; 65536];
            for (p, k) in pfds.iter().zip(kinds) {
                if p.revents == 0 {
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
                    _ => ended = true,
                }
            }
            if ended {
                // Init is gone, and with a pid namespace so is every process of the job: drain
                // what is buffered and stop (without one, an escaped descendant could hold the
                // pipes open forever).
                stdin = None;
                for (slot, sink) in [(&mut stdout, &mut out), (&mut stderr, &mut err)] {
                    if let Some(f) = slot.take() {
                        unsafe {
                            let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
                        }
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

    /// Collects piped output and waits: [`Child::communicate`] without input, then [`Child::wait`].
    pub fn wait_with_output(mut self) -> Result<Output> {
        let (stdout, stderr) = self.communicate(None)?;
        let o = self.wait()?;
        Ok(Output { status: o.verdict, stdout, stderr, usage: o.usage })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, 0, 0) };
            reap_raw(self.pidfd.as_raw_fd());
        }
    }
}
