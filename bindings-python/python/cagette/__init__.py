"""cagette: run commands in Linux sandboxes, shaped like :mod:`subprocess`.

>>> import cagette
>>> r = cagette.run(["echo", "hi"], capture_output=True, network="none", memory="256M", timeout=10)
>>> r.returncode, r.stdout, r.verdict
(0, b'hi\\n', 'exited')

Keyword arguments that are not :mod:`subprocess` ones (``memory``, ``network``, ``hostname``,
``mounts``, ``rootfs``, ``cpus``, ``pids``, ...) are fields of cagette's one sandbox description
(``SandboxSpec`` in the Rust core): they are passed through unchanged and checked there, so a
bad key raises :class:`TypeError` and a bad value :class:`ValueError`, both naming it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import selectors
import signal as _signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, Iterable, List, Literal, Mapping, NoReturn, Optional, Sequence, Tuple, TypedDict, Union

from . import _native

__version__: str = _native.__version__

__all__ = [
    "PIPE",
    "DEVNULL",
    "STDOUT",
    "run",
    "run_async",
    "Sandbox",
    "Process",
    "CompletedProcess",
    "Usage",
    "Error",
    "SetupError",
    "LimitUnsupported",
    "CommandNotFound",
    "CommandNotExecutable",
    "ImageError",
    "BuildError",
    "CalledProcessError",
    "TimeoutExpired",
    "bind",
    "tmpfs",
    "overlay",
    "probe",
    "validate",
    "ImageStore",
    "ImportProgress",
    "BuildEvent",
    "BuildStep",
    "BuildCached",
    "BuildPulling",
    "BuildDone",
    "login",
    "list_sandboxes",
    "SandboxEntry",
]

PIPE: int = subprocess.PIPE
DEVNULL: int = subprocess.DEVNULL
STDOUT: int = subprocess.STDOUT

StrPath = Union[str, "os.PathLike[str]"]
Stream = Union[None, int, IO[Any]]
Args = Sequence[StrPath]


# ----------------------------------------------------------------------------------------------
# Exceptions


class Error(Exception):
    """Base of cagette's own errors."""


class SetupError(Error):
    """The sandbox could not be set up (nothing is left running).

    ``step`` names the step that failed (``"exec"``, ``"mount"``, ``"cgroup"``, ...), ``errno``
    the error number (or None), ``path`` the path involved (or None), ``hint`` what to do.
    """

    def __init__(self, message: str, step: str, errno: Optional[int], path: Optional[str], hint: Optional[str]) -> None:
        super().__init__(message if not hint else f"{message} (hint: {hint})")
        self.message = message
        self.step = step
        self.errno = errno
        self.path = path
        self.hint = hint


class LimitUnsupported(SetupError):
    """A resource limit was asked for and cannot be applied on this host (never dropped)."""


class CommandNotFound(SetupError, FileNotFoundError):
    """The command was not found inside the sandbox. Also a :class:`FileNotFoundError`, as
    :mod:`subprocess` raises (``errno``, ``strerror``, ``filename``), with cagette's details."""

    def __init__(self, message: str, step: str, errno: Optional[int], path: Optional[str], hint: Optional[str]) -> None:
        SetupError.__init__(self, message, step, errno, path, hint)
        self.strerror = os.strerror(errno) if errno else message
        self.filename = path

    def __str__(self) -> str:
        return f"[Errno {self.errno}] {self.strerror}: {self.filename!r} (in the sandbox: {self.message}; hint: {self.hint})"


class CommandNotExecutable(SetupError, PermissionError):
    """The command could not be executed inside the sandbox (permissions, a noexec mount). Also a
    :class:`PermissionError`, as :mod:`subprocess` raises, with cagette's details."""

    def __init__(self, message: str, step: str, errno: Optional[int], path: Optional[str], hint: Optional[str]) -> None:
        SetupError.__init__(self, message, step, errno, path, hint)
        self.strerror = os.strerror(errno) if errno else message
        self.filename = path

    def __str__(self) -> str:
        return f"[Errno {self.errno}] {self.strerror}: {self.filename!r} (in the sandbox: {self.message}; hint: {self.hint})"


class ImageError(Error):
    """An OCI image could not be read, verified or unpacked."""


class BuildError(Error):
    """An image could not be built (:meth:`ImageStore.build`); nothing was tagged.

    ``reason`` says what failed: ``"parse"`` (the Dockerfile), ``"instruction"`` (one that
    cannot be carried out as written), ``"step"`` (a ``RUN`` step did not exit 0),
    ``"sandbox"`` (a step's sandbox could not be set up), ``"image"`` (the store),
    ``"io"``, ``"cancelled"`` (the progress callback returned ``False``) or ``"other"``.
    ``file`` and ``line`` (1-based) name the Dockerfile's line when there is one. For a failed
    ``RUN`` step: ``command``, ``verdict`` (``"exited with status 3"``, ...), ``returncode``
    (its exit status, None when it did not exit) and ``output`` (what it wrote, stdout then
    stderr, the last 8 KiB), which the message shows too.
    """

    def __init__(self, message: str, reason: str, file: Optional[str] = None, line: Optional[int] = None, column: Optional[int] = None,
                 command: Optional[str] = None, verdict: Optional[str] = None, returncode: Optional[int] = None, output: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.file = file
        self.line = line
        self.column = column
        self.command = command
        self.verdict = verdict
        self.returncode = returncode
        self.output = output


class CalledProcessError(Error, subprocess.CalledProcessError):
    """``check=True`` and the command did not exit with 0. Also a subprocess.CalledProcessError."""

    def __init__(self, returncode: int, cmd: Any, output: Any = None, stderr: Any = None, verdict: str = "exited", usage: Optional["Usage"] = None) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.verdict = verdict
        self.usage = usage

    def __str__(self) -> str:
        if self.verdict == "oom_killed":
            return f"Command {self.cmd!r} was OOM-killed (over its memory limit)."
        return subprocess.CalledProcessError.__str__(self)


class TimeoutExpired(Error, subprocess.TimeoutExpired):
    """The timeout ran out. Also a subprocess.TimeoutExpired.

    From :func:`run`, the whole sandbox has been killed (verdict ``timed_out``) and ``usage``
    tells what it used; from :meth:`Process.wait`, it still runs.
    """

    def __init__(self, cmd: Any, timeout: float, output: Any = None, stderr: Any = None, usage: Optional["Usage"] = None, limit: Optional[str] = None) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.usage = usage
        self.limit = limit

    def __str__(self) -> str:
        if self.limit == "cpu":
            return f"Command {self.cmd!r} used up its CPU-time limit."
        return subprocess.TimeoutExpired.__str__(self)


def _raise_native(e: "_native.NativeError") -> NoReturn:
    kind, payload_json = e.args
    payload = json.loads(payload_json)
    if kind == "spec_key":
        raise TypeError(f"invalid cagette option: {payload['message']}") from None
    if kind == "spec_value":
        raise ValueError(f"invalid cagette option value: {payload['message']}") from None
    if kind == "setup":
        cls: type = LimitUnsupported if payload.get("step") == "cgroup" else SetupError
        if payload.get("step") == "exec" and payload.get("errno") in (errno.ENOENT, errno.ENOTDIR):
            cls = CommandNotFound
        elif payload.get("step") == "exec" and payload.get("errno") is not None:
            cls = CommandNotExecutable
        path = payload.get("path")
        raise cls(payload["message"], payload["step"], payload.get("errno"), None if path is None else str(path), payload.get("hint")) from None
    if kind == "image":
        raise ImageError(payload["message"]) from None
    if kind == "build":
        raise BuildError(payload["message"], payload["reason"], payload.get("file"), payload.get("line"), payload.get("column"),
                         payload.get("command"), payload.get("verdict"), payload.get("exit_status"), payload.get("output")) from None
    raise Error(payload.get("message", str(e))) from None


# ----------------------------------------------------------------------------------------------
# Mounts (the core's Mount variants, as dicts)


def bind(source: StrPath, destination: str, *, read_only: bool = False, recursive: bool = True) -> Dict[str, Any]:
    """A host path seen at ``destination`` inside the sandbox."""
    return {"type": "bind", "source": os.fspath(source), "destination": destination, "read_only": read_only, "recursive": recursive}


def tmpfs(destination: str, *, size: Union[int, str, None] = None, mode: Optional[int] = None) -> Dict[str, Any]:
    """A fresh tmpfs at ``destination`` (``size`` like ``"64M"``)."""
    return {"type": "tmpfs", "destination": destination, "size": size, "mode": mode}


def overlay(lower: Iterable[StrPath], destination: str, *, upper: Optional[StrPath] = None, work: Optional[StrPath] = None) -> Dict[str, Any]:
    """An overlay of ``lower`` directories (first on top); the upper layer is ephemeral unless
    ``upper`` and ``work`` are given."""
    return {
        "type": "overlay",
        "destination": destination,
        "lower": [os.fspath(p) for p in lower],
        "upper": None if upper is None else os.fspath(upper),
        "work": None if work is None else os.fspath(work),
    }


# ----------------------------------------------------------------------------------------------
# Results


class Usage:
    """What a job used (see the README for which memory number is which)."""

    wall_time: float
    cpu_user: float
    cpu_system: float
    memory_peak_bytes: Optional[int]
    max_rss_bytes: Optional[int]
    pids_peak: Optional[int]
    io_read_bytes: Optional[int]
    io_write_bytes: Optional[int]
    oom_kill_count: int
    pressure: Optional[Dict[str, float]]

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.wall_time = float(report["wall_time_s"])
        self.cpu_user = float(report["cpu_user_s"])
        self.cpu_system = float(report["cpu_system_s"])
        peak = report.get("memory_peak_bytes")
        rss = report.get("max_rss_bytes")
        self.memory_peak_bytes = None if peak is None else int(peak)
        self.max_rss_bytes = None if rss is None else int(rss)
        self.pids_peak = report.get("pids_peak")
        self.io_read_bytes = report.get("io_read_bytes")
        self.io_write_bytes = report.get("io_write_bytes")
        self.oom_kill_count = int(report.get("oom_kill_count", 0))
        self.pressure = report.get("pressure")

    @property
    def cpu_time(self) -> float:
        """User plus system CPU seconds."""
        return self.cpu_user + self.cpu_system

    def __repr__(self) -> str:
        return (
            f"Usage(wall_time={self.wall_time:.3f}, cpu_user={self.cpu_user:.3f}, cpu_system={self.cpu_system:.3f}, "
            f"memory_peak_bytes={self.memory_peak_bytes}, pids_peak={self.pids_peak})"
        )


class CompletedProcess(subprocess.CompletedProcess):  # type: ignore[type-arg]
    """subprocess.CompletedProcess plus ``verdict`` and ``usage``.

    ``verdict`` is one of ``"exited"``, ``"signaled"``, ``"oom_killed"``, ``"seccomp_killed"``,
    ``"timed_out"``, ``"network_lost"`` (the
    same strings as ``cagette run --report``); ``returncode`` is negative for a signal, as in
    subprocess (-9 for an OOM kill).
    """

    verdict: str
    usage: Usage
    report: Dict[str, Any]

    def __init__(self, args: Any, returncode: int, stdout: Any, stderr: Any, report: Dict[str, Any]) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.verdict = str(report["verdict"])
        self.usage = Usage(report)
        self.report = report

    def check_returncode(self) -> None:
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr, self.verdict, self.usage)


def _returncode(report: Mapping[str, Any]) -> int:
    v = report["verdict"]
    if v == "exited":
        return int(report["exit_code"])
    if v in ("signaled", "seccomp_killed"):
        return -int(report["signal"])
    return -_signal.SIGKILL  # oom_killed, timed_out, network_lost: killed with SIGKILL


# ----------------------------------------------------------------------------------------------
# Spec building

_SUBPROCESS_ONLY = {"shell", "preexec_fn", "close_fds", "start_new_session", "executable"}


def _spec(args: Args, spec: Mapping[str, Any], *, env: Optional[Mapping[str, str]], cwd: Optional[StrPath], timeout: Optional[float]) -> Dict[str, Any]:
    if isinstance(args, (str, bytes)):
        raise TypeError("args must be a sequence of strings (cagette does not run a shell): use ['sh', '-c', command]")
    for k in spec:
        if k in _SUBPROCESS_ONLY:
            raise TypeError(f"cagette does not support the subprocess argument {k!r}")
    d: Dict[str, Any] = dict(spec)
    mounts = d.get("mounts")
    if mounts is not None:
        d["mounts"] = [dict(m) for m in mounts]
    for key in ("rootfs", "cgroup_parent", "image_store", "image_upper", "image_work"):
        if d.get(key) is not None:
            d[key] = os.fspath(d[key])
    d["argv"] = [os.fspath(a) for a in args]
    if env is not None:
        d["env"] = {str(k): str(v) for k, v in env.items()}
    if d.get("pass_fds") is not None:
        # As subprocess takes it (fds kept at the same number), or the spec's host/sandbox pairs.
        d["pass_fds"] = [{"host": f, "sandbox": f} if isinstance(f, int) else dict(f) for f in d["pass_fds"]]
    if cwd is not None and d.get("exec_in") is not None:
        # In a running sandbox: a directory there (its mounts are its own).
        d["cwd"] = os.fspath(cwd)
    elif cwd is not None:
        # As subprocess means it: a host directory (bound read-write at the same path); a path
        # that is no host directory is one inside the sandbox.
        d["cwd"] = os.path.abspath(os.fspath(cwd))
        if not os.path.isdir(d["cwd"]):
            d["cwd"] = os.fspath(cwd)
        d["cwd_host"] = True
    if timeout is not None:
        d["timeout"] = timeout
    return d


def validate(**spec: Any) -> Dict[str, Any]:
    """Checks sandbox options without running anything; returns the complete spec (defaults
    filled in). Raises TypeError for an unknown option, ValueError for a bad value."""
    try:
        return dict(json.loads(_native.validate(json.dumps(spec))))
    except _native.NativeError as e:
        _raise_native(e)


class SandboxEntry(TypedDict):
    """A running named sandbox (``name=`` when it started), as :func:`list_sandboxes` gives it."""

    name: str
    pid: int
    host_pid: int
    started: int
    argv: List[str]
    memory_bytes: Optional[int]
    cpu_s: Optional[float]


def list_sandboxes() -> List[SandboxEntry]:
    """The caller's running named sandboxes (started with ``name=``, or ``cagette run --name``),
    oldest first: name, pid (of its init), host_pid, started (Unix time), argv, and memory_bytes
    and cpu_s from its cgroup (``None`` without one). Also ``cagette.list()``. Run more commands
    in one with ``cagette.run([...], exec_in=name)``.

    >>> with cagette.Sandbox(name="web") as box:
    ...     p = box.popen(["sleep", "10"])
    ...     [s["name"] for s in cagette.list()]
    ['web']
    """
    try:
        entries: List[SandboxEntry] = json.loads(_native.list_sandboxes())
        return entries
    except _native.NativeError as e:
        _raise_native(e)


def __getattr__(name: str) -> Callable[[], List[SandboxEntry]]:
    # ``cagette.list()``: a module attribute only (a global ``list`` would shadow the builtin
    # inside this module).
    if name == "list":
        return list_sandboxes
    raise AttributeError(f"module 'cagette' has no attribute {name!r}")


def login(registry: str, username: str, password: str, auth_file: Optional[StrPath] = None) -> str:
    """Stores credentials for ``registry`` (``host[:port]``) in a containers ``auth.json`` (the file
    podman and skopeo read: ``auth_file``, else ``$REGISTRY_AUTH_FILE``, else
    ``$XDG_RUNTIME_DIR/containers/auth.json``, else ``~/.config/containers/auth.json``), mode 0600;
    returns its path. The next :meth:`ImageStore.pull` from that registry uses them.

    >>> cagette.login("127.0.0.1:5000", "ci", os.environ["REGISTRY_TOKEN"])
    """
    try:
        return str(_native.login(registry, username, password, None if auth_file is None else os.fspath(auth_file)))
    except _native.NativeError as e:
        _raise_native(e)


def probe() -> Dict[str, Any]:
    """What this host supports: user namespaces, cgroup version and controllers, overlayfs, ..."""
    return dict(json.loads(_native.probe()))


# ----------------------------------------------------------------------------------------------
# Processes


def _stream(value: Stream, name: str, opened: List[int], for_parent: List[Optional[int]], index: int) -> Any:
    """Maps a subprocess-style stream to the spec's Stdio, creating pipes as needed."""
    if value is None:
        return "inherit"
    if value == DEVNULL:
        return "null"
    if value == PIPE:
        r, w = os.pipe()  # close-on-exec, as cagette wants its own fds
        mine, theirs = (w, r) if index == 0 else (r, w)
        for_parent[index] = mine
        opened.append(theirs)
        return {"fd": theirs}
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name}: unsupported value {value}")
        return {"fd": value}
    fileno = getattr(value, "fileno", None)
    if fileno is None:
        raise TypeError(f"{name} must be None, PIPE, DEVNULL, an fd or a file object with fileno()")
    return {"fd": int(fileno())}


class Process:
    """A running sandboxed command, shaped like :class:`subprocess.Popen`.

    ``stdin``, ``stdout`` and ``stderr`` are file objects when the stream was :data:`PIPE`.
    After it ended, ``returncode``, ``verdict`` and ``usage`` are set.
    """

    args: Any
    pid: int
    stdin: Optional[IO[Any]]
    stdout: Optional[IO[Any]]
    stderr: Optional[IO[Any]]
    returncode: Optional[int]
    verdict: Optional[str]
    usage: Optional[Usage]
    report: Optional[Dict[str, Any]]

    def __init__(self, args: Args, *, stdin: Stream = None, stdout: Stream = None, stderr: Stream = None, text: bool = False, env: Optional[Mapping[str, str]] = None, cwd: Optional[StrPath] = None, encoding: Optional[str] = None, errors: Optional[str] = None, universal_newlines: Optional[bool] = None, **spec: Any) -> None:
        timeout = spec.pop("timeout", None)
        if spec.get("tty"):
            # Its output would be the terminal's, which nothing here reads: the job could block.
            raise ValueError("invalid cagette option value: tty: only run() gives the command a terminal (Process and popen() do not)")
        # As subprocess: text mode with text, universal_newlines, encoding or errors.
        text = bool(text or universal_newlines or encoding is not None or errors is not None)
        self._encoding = encoding or "utf-8"
        self._errors = errors or "strict"
        d = _spec(args, spec, env=env, cwd=cwd, timeout=timeout)
        opened: List[int] = []
        parent: List[Optional[int]] = [None, None, None]
        try:
            d["stdin"] = _stream(stdin, "stdin", opened, parent, 0)
            d["stdout"] = _stream(stdout, "stdout", opened, parent, 1)
            if stderr == STDOUT:
                d["stderr"] = d["stdout"]  # the same pipe, fd or /dev/null
            else:
                d["stderr"] = _stream(stderr, "stderr", opened, parent, 2)
            try:
                self._native = _native.spawn(json.dumps(d))
            except _native.NativeError as e:
                for fd in parent:
                    if fd is not None:
                        os.close(fd)
                _raise_native(e)
        finally:
            for fd in opened:
                os.close(fd)
        self.args = args
        self.pid = self._native.pid
        self._text = text
        mode = ("w", "r", "r")
        files: List[Optional[IO[Any]]] = []
        for i, fd in enumerate(parent):
            if fd is None:
                files.append(None)
            elif text:
                files.append(open(fd, mode[i], encoding=self._encoding, errors=self._errors))
            else:
                files.append(open(fd, mode[i] + "b", buffering=0 if i == 0 else -1))
        self.stdin, self.stdout, self.stderr = files
        self._piped = (files[1] is not None, files[2] is not None)
        self.returncode = None
        self.verdict = None
        self.usage = None
        self.report = None
        self._timeout = timeout
        self._lock = threading.Lock()

    def _finish(self, report_json: str) -> int:
        report = json.loads(report_json)
        self.report = report
        self.verdict = str(report["verdict"])
        self.usage = Usage(report)
        self.returncode = _returncode(report)
        self._native.close()  # reaped: release the pidfd, the status socket and the cgroup now
        return self.returncode

    def poll(self) -> Optional[int]:
        """The return code if the command has ended, else None."""
        if self.returncode is not None:
            return self.returncode
        try:
            r = self._native.try_wait()
        except _native.NativeError as e:
            _raise_native(e)
        return None if r is None else self._finish(r)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the end (the GIL is released); raises :class:`TimeoutExpired` after
        ``timeout`` seconds, leaving it running."""
        if self.returncode is not None:
            return self.returncode
        if self.stdin is not None and not self.stdin.closed:
            try:
                self.stdin.close()
            except BrokenPipeError:
                pass
        try:
            r = self._native.wait(timeout)
        except _native.NativeError as e:
            _raise_native(e)
        if r is None:
            raise TimeoutExpired(self.args, timeout if timeout is not None else 0.0)
        return self._finish(r)

    async def wait_async(self) -> int:
        """Waits without blocking the event loop (the sandbox's pidfd is watched by the loop)."""
        loop = asyncio.get_running_loop()
        while self.returncode is None:
            fd = self._native.pidfd
            if fd < 0:
                return self.wait()
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, lambda: None if fut.done() else fut.set_result(None))
            try:
                if self._timeout is not None:
                    # The sandbox's timeout is enforced by polling; the loop stays free meanwhile.
                    await asyncio.wait([fut], timeout=0.05)
                else:
                    await fut
            finally:
                loop.remove_reader(fd)  # before poll(): taking the result closes the pidfd
            self.poll()
        return self.returncode

    def communicate(self, input: Any = None, timeout: Optional[float] = None) -> Tuple[Any, Any]:
        """Sends ``input`` to stdin, reads stdout and stderr to the end, waits. On
        ``timeout``, raises :class:`TimeoutExpired` (the command keeps running; call again)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not hasattr(self, "_out"):
            self._out: List[bytes] = []
            self._err: List[bytes] = []
            self._input: bytes = b"" if input is None else (input.encode(self._encoding, self._errors) if isinstance(input, str) else bytes(input))
        sel = selectors.DefaultSelector()
        try:
            if self.stdin is not None and not self.stdin.closed:
                if self._input:
                    sel.register(self.stdin, selectors.EVENT_WRITE)
                else:
                    self.stdin.close()
            for f, sink in ((self.stdout, self._out), (self.stderr, self._err)):
                if f is not None and not f.closed:
                    sel.register(f, selectors.EVENT_READ, sink)
            while sel.get_map():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutExpired(self.args, timeout or 0.0, self._joined(self._out) if self._piped[0] else None, self._joined(self._err) if self._piped[1] else None)
                if self._timeout is not None:
                    remaining = 0.05 if remaining is None else min(remaining, 0.05)
                    self.poll()  # enforces the sandbox's own limits
                for key, _ in sel.select(remaining):
                    fobj = key.fileobj
                    if fobj is self.stdin:
                        assert self.stdin is not None
                        try:
                            n = os.write(self.stdin.fileno(), self._input[:65536])
                            self._input = self._input[n:]
                        except BrokenPipeError:
                            self._input = b""
                        if not self._input:
                            sel.unregister(fobj)
                            self.stdin.close()
                    else:
                        data = os.read(key.fd, 65536)
                        if data:
                            key.data.append(data)
                        else:
                            sel.unregister(fobj)
                            fobj.close()  # type: ignore[union-attr]
        finally:
            sel.close()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(remaining)
        return (self._joined(self._out) if self._piped[0] else None, self._joined(self._err) if self._piped[1] else None)

    def _joined(self, chunks: List[bytes]) -> Any:
        data = b"".join(chunks)
        if self._text:
            # As subprocess: decoded, with universal newlines (\r\n and \r become \n).
            return data.decode(self._encoding, self._errors).replace("\r\n", "\n").replace("\r", "\n")
        return data

    def send_signal(self, sig: int) -> None:
        """Sends a signal (forwarded to the payload by the sandbox's init)."""
        if self.returncode is None:
            try:
                self._native.kill(int(sig))
            except _native.NativeError as e:
                _raise_native(e)

    def terminate(self) -> None:
        """Sends SIGTERM."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Kills the whole sandbox (SIGKILL)."""
        self.send_signal(_signal.SIGKILL)

    def close(self) -> None:
        """Kills the sandbox if it still runs and releases everything."""
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        self._native.close()

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            for f in (self.stdout, self.stderr):
                if f is not None:
                    f.close()
            if self.stdin is not None and not self.stdin.closed:
                try:
                    self.stdin.close()
                except BrokenPipeError:
                    pass
            if exc[0] is not None and self.returncode is None:
                self.kill()
            self.wait()
        finally:
            self._native.close()

    def __repr__(self) -> str:
        return f"<cagette.Process pid={self.pid} returncode={self.returncode} verdict={self.verdict}>"


def run(
    args: Args,
    *,
    input: Any = None,
    capture_output: bool = False,
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
    timeout: Optional[float] = None,
    check: bool = False,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[StrPath] = None,
    text: bool = False,
    **spec: Any,
) -> CompletedProcess:
    """Runs ``args`` in a sandbox and waits, like :func:`subprocess.run`.

    ``timeout`` (seconds) is enforced by cagette on the whole sandbox: when it runs out, every
    process is killed and :class:`TimeoutExpired` is raised (with ``usage``). Other keyword
    arguments describe the sandbox (``memory="256M"``, ``network="none"``, ``mounts=[...]``).
    """
    if spec.get("tty"):
        return _run_tty(args, input=input, capture_output=capture_output or stdout == PIPE, timeout=timeout, check=check, env=env, cwd=cwd, text=text, **spec)
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = PIPE
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = PIPE
    with Process(args, stdin=stdin, stdout=stdout, stderr=stderr, text=text, env=env, cwd=cwd, timeout=timeout, **spec) as p:
        out, err = p.communicate(input)
        assert p.report is not None
        report = p.report
    if report["verdict"] == "timed_out":
        raise TimeoutExpired(args, float(timeout or 0.0), out, err, Usage(report), report.get("limit"))
    result = CompletedProcess(args, _returncode(report), out, err, report)
    if check:
        result.check_returncode()
    return result


def _run_tty(args: Args, *, input: Any, capture_output: bool, timeout: Optional[float], check: bool, env: Optional[Mapping[str, str]], cwd: Optional[StrPath], text: bool, **spec: Any) -> CompletedProcess:
    """run() with ``tty=True``: the command gets a terminal of its own (a pty in the sandbox).
    Captured, its output is what it printed on that terminal (stdout and stderr together, with
    the terminal's CRLF line ends); otherwise the terminal is shown on ours, and what is typed on
    our stdin goes to it when our stdin is a terminal."""
    for k in ("encoding", "errors", "universal_newlines"):
        text = bool(text or spec.pop(k, None))
    d = _spec(args, spec, env=env, cwd=cwd, timeout=timeout)
    d["tty"] = True
    data = input.encode() if isinstance(input, str) else input
    try:
        report_json, out = _native.run_tty(json.dumps(d), capture_output, sys.stdin.isatty(), data)
    except _native.NativeError as e:
        _raise_native(e)
    report = json.loads(report_json)
    output: Any = (out.decode(errors="replace").replace("\r\n", "\n") if text else out) if capture_output else None
    if report["verdict"] == "timed_out":
        raise TimeoutExpired(args, float(timeout or 0.0), output, None, Usage(report), report.get("limit"))
    result = CompletedProcess(args, _returncode(report), output, None, report)
    if check:
        result.check_returncode()
    return result


async def run_async(args: Args, **kwargs: Any) -> CompletedProcess:
    """:func:`run` for asyncio: the event loop is never blocked (the work happens in a thread,
    which releases the GIL while it waits)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(run, args, **kwargs))


class Sandbox:
    """A reusable sandbox description; every run and popen starts a fresh sandbox from it.

    >>> with cagette.Sandbox(memory="1G", network="none") as box:
    ...     r = box.run(["true"])

    Leaving the ``with`` block kills whatever it started that still runs.
    """

    def __init__(self, **spec: Any) -> None:
        validate(**_spec(["true"], spec, env=None, cwd=None, timeout=None))
        self.spec: Dict[str, Any] = dict(spec)
        self._procs: List[Process] = []
        self._lock = threading.Lock()

    def _merged(self, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        merged = dict(self.spec)
        merged.update(kwargs)
        return merged

    def run(self, args: Args, **kwargs: Any) -> CompletedProcess:
        """:func:`run` with this sandbox's options (keyword arguments override them)."""
        return run(args, **self._merged(kwargs))

    async def run_async(self, args: Args, **kwargs: Any) -> CompletedProcess:
        """:func:`run_async` with this sandbox's options."""
        return await run_async(args, **self._merged(kwargs))

    def popen(self, args: Args, **kwargs: Any) -> Process:
        """A :class:`Process` with this sandbox's options."""
        p = Process(args, **self._merged(kwargs))
        with self._lock:
            self._procs.append(p)
        return p

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.close()


class ImportProgress(TypedDict):
    """How far an import is: layers to unpack and done, compressed bytes to read and read."""

    layers: int
    layers_done: int
    bytes: int
    bytes_done: int


class BuildStep(TypedDict):
    """A build step starts: ``n`` of ``total`` (1-based), its Dockerfile ``line`` and the
    instruction as written (its first line)."""

    kind: Literal["step"]
    n: int
    total: int
    line: int
    text: str


class BuildCached(TypedDict):
    """The step that just started came from the build cache (nothing ran)."""

    kind: Literal["cached"]


class BuildDone(TypedDict):
    """The image is recorded: its manifest digest."""

    kind: Literal["done"]
    manifest: str


class BuildPulling(TypedDict):
    """A ``FROM`` image the store lacks is being pulled (``pull=`` of :meth:`ImageStore.build`)."""

    kind: Literal["pulling"]
    reference: str


BuildEvent = Union[BuildStep, BuildCached, BuildPulling, BuildDone]
"""What :meth:`ImageStore.build` passes to its ``progress`` callback (tell them by ``kind``)."""


def _build_event(kind: str, n: int, total: int, line: int, text: str) -> BuildEvent:
    if kind == "step":
        return BuildStep(kind="step", n=n, total=total, line=line, text=text)
    if kind == "cached":
        return BuildCached(kind="cached")
    if kind == "pulling":
        return BuildPulling(kind="pulling", reference=text)
    return BuildDone(kind="done", manifest=text)


def _pull_options(
    platform: Optional[str] = None,
    insecure_registries: Sequence[str] = (),
    ca_files: Sequence[StrPath] = (),
    credentials: Optional[Tuple[str, str]] = None,
    auth_file: Optional[StrPath] = None,
    timeout: float = 30.0,
) -> Dict[str, Any]:
    """The pull options (:meth:`ImageStore.pull`'s keywords) as the native layer reads them."""
    return {
        "platform": platform,
        "insecure_registries": list(insecure_registries),
        "ca_files": [os.fspath(f) for f in ca_files],
        "credentials": list(credentials) if credentials is not None else None,
        "auth_file": None if auth_file is None else os.fspath(auth_file),
        "timeout": timeout,
    }


class ImageStore:
    """cagette's image store: import OCI image layouts or ``docker save`` archives (verified),
    pull, build from a Dockerfile, list, remove, garbage-collect, unpack. Run from an image with
    ``run(..., image="name:tag", image_store=store.path)``.

    >>> store = cagette.ImageStore("/var/lib/cagette")
    >>> store.import_image("./alpine-oci", "alpine:3")["layers"]
    """

    def __init__(self, path: Optional[StrPath] = None) -> None:
        self.path: Optional[str] = None if path is None else os.fspath(path)

    def _op(self, op: str, a: Optional[str] = None, b: Optional[str] = None) -> Any:
        try:
            return json.loads(_native.image(op, self.path, a, b))
        except _native.NativeError as e:
            _raise_native(e)

    def import_image(self, source: StrPath, name: str, progress: Optional[Callable[[ImportProgress], Optional[bool]]] = None, *, keep_blobs: bool = False) -> Dict[str, Any]:
        """Imports an OCI image layout directory, a docker-save archive or a plain layer tar
        (gzip, zstd or none) as ``name``. The result's ``notes`` list what could not be kept
        (device nodes without root, for example); ``user_ids`` is the config's User resolved
        against the image's own /etc/passwd.

        ``keep_blobs=True`` also keeps the manifest, config and compressed layers exactly as
        verified (an OCI layout only: an archive or a layer tar has no manifest to keep), as an
        image must have to be the base (``FROM``) of a :meth:`build`.

        ``progress``, if given, is called about ten times a second (and once at the end) with
        an :class:`ImportProgress`; returning ``False`` cancels the import (``ImageError``,
        nothing left in the store), and so does an exception in it or Ctrl-C, which propagate.

        >>> store.import_image("./alpine-oci", "alpine:3",
        ...     progress=lambda p: print(f"{p['bytes_done']}/{p['bytes']}"))
        """

        def call(layers: int, layers_done: int, nbytes: int, bytes_done: int) -> Optional[bool]:
            if progress is None:
                return None
            return progress(ImportProgress(layers=layers, layers_done=layers_done, bytes=nbytes, bytes_done=bytes_done))

        try:
            return dict(json.loads(_native.image_import(self.path, os.fspath(source), name, call, keep_blobs)))
        except _native.NativeError as e:
            _raise_native(e)

    def pull(
        self,
        reference: str,
        progress: Optional[Callable[[ImportProgress], Optional[bool]]] = None,
        *,
        platform: Optional[str] = None,
        insecure_registries: Sequence[str] = (),
        ca_files: Sequence[StrPath] = (),
        credentials: Optional[Tuple[str, str]] = None,
        auth_file: Optional[StrPath] = None,
        timeout: float = 30.0,
        keep_blobs: bool = False,
    ) -> Dict[str, Any]:
        """Pulls ``reference`` from its registry (``alpine:3.20`` is
        ``docker.io/library/alpine:3.20``; loopback registries are reached over plain HTTP, others
        over HTTPS unless named in ``insecure_registries``) into the store under that name. Layers
        are verified and unpacked while they download; layers the store has are not downloaded.
        Credentials: ``credentials=(user, password)``, else ``auth_file``, else the user's
        ``auth.json``/docker ``config.json`` (see :func:`login`). ``platform`` is ``os/arch[/variant]``
        (default: this host's). ``progress`` as for :meth:`import_image` (``bytes`` are compressed
        bytes to download); returning ``False`` or Ctrl-C cancels. ``keep_blobs`` as for
        :meth:`import_image` (a :meth:`build`'s base needs it). Raises :class:`ImageError`.

        >>> store.pull("127.0.0.1:5000/app:1", progress=print)
        """

        def call(layers: int, layers_done: int, nbytes: int, bytes_done: int) -> Optional[bool]:
            if progress is None:
                return None
            return progress(ImportProgress(layers=layers, layers_done=layers_done, bytes=nbytes, bytes_done=bytes_done))

        options = _pull_options(platform, insecure_registries, ca_files, credentials, auth_file, timeout)
        try:
            return dict(json.loads(_native.image_pull(self.path, reference, json.dumps(options), call, keep_blobs)))
        except _native.NativeError as e:
            _raise_native(e)

    def build(
        self,
        context: StrPath,
        tag: Optional[str] = None,
        *,
        dockerfile: Optional[StrPath] = None,
        build_args: Optional[Mapping[str, Any]] = None,
        target: Union[str, int, None] = None,
        network: str = "host",
        no_cache: bool = False,
        memory: Union[int, str, None] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        step_timeout: Optional[float] = None,
        pull: Union[bool, Mapping[str, Any]] = False,
        progress: Optional[Callable[[BuildEvent], Optional[bool]]] = None,
    ) -> Dict[str, Any]:
        """Builds an image from a Dockerfile (``dockerfile``, default ``CONTEXT/Dockerfile``) and
        the ``context`` directory into this store, as ``tag`` (``name:tag``; without one the
        image is known by its manifest digest only); returns the image, as :meth:`get` does.
        Each ``RUN`` step runs in a sandbox on the image so far (``network``
        ``"host"``, like Docker's default, or ``"none"``; ``memory`` like ``"256M"``, ``cpus``,
        ``pids`` and ``step_timeout`` in seconds limit each step), its output captured: a step
        that fails raises :class:`BuildError` with its exit status and output. ``FROM`` images
        must be in the store with their blobs kept (``keep_blobs=True`` on
        :meth:`import_image` or :meth:`pull`), unless ``pull`` is given: ``True``, or a mapping
        of :meth:`pull`'s keywords (``{"insecure_registries": ["127.0.0.1:5000"]}``), pulls a
        ``FROM`` image the store lacks (or holds without its blobs). Steps are cached: a rebuild with nothing changed
        runs none (``no_cache=True`` runs them all). ``build_args`` give the values of the
        Dockerfile's ``ARG`` instructions; ``target`` builds up to that stage (a name or an
        index). ``SOURCE_DATE_EPOCH`` sets the files' mtimes (default 0), so the same inputs
        give the same digest.

        ``progress``, if given, is called with each :data:`BuildEvent`: ``{"kind": "step", "n",
        "total", "line", "text"}`` as a step starts, ``{"kind": "cached"}`` when it came from
        the cache, ``{"kind": "pulling", "reference"}`` as a base is pulled, ``{"kind": "done",
        "manifest"}`` at the end. Returning ``False`` cancels the build at that event
        (:class:`BuildError`, reason ``"cancelled"``), and so does an exception in it, which
        propagates; nothing is tagged. Ctrl-C (``KeyboardInterrupt``) cancels at any time: a
        running ``RUN`` step is killed with its sandbox. At ``"done"`` the image is already
        recorded: an exception there still propagates, but the image stays.

        >>> store.build("./app", "app:1", build_args={"VERSION": "2"}, progress=print)["manifest"]
        """

        def call(kind: str, n: int, total: int, line: int, text: str) -> Optional[bool]:
            if progress is None:
                return None
            return progress(_build_event(kind, n, total, line, text))

        options = {
            "tag": tag,
            "dockerfile": None if dockerfile is None else os.fspath(dockerfile),
            "build_args": {str(k): str(v) for k, v in (build_args or {}).items()},
            "target": None if target is None else str(target),
            "network": network,
            "no_cache": no_cache,
            "memory": memory,
            "cpus": cpus,
            "pids": pids,
            "step_timeout": step_timeout,
            "pull": pull if isinstance(pull, bool) else _pull_options(**pull),
        }
        try:
            return dict(json.loads(_native.image_build(self.path, os.fspath(context), json.dumps(options), call)))
        except _native.NativeError as e:
            _raise_native(e)

    def list(self) -> List[Dict[str, Any]]:
        """The images: name, manifest, config_digest, layers, config (and user_ids, notes)."""
        return list(self._op("list"))

    def get(self, name: str) -> Dict[str, Any]:
        """One image (raises ImageError if there is none by that name)."""
        return dict(self._op("get", name))

    def remove(self, name: str) -> None:
        """Removes an image (its layers stay until gc)."""
        self._op("remove", name)

    def gc(self) -> int:
        """Removes unused layers; returns how many."""
        return int(self._op("gc"))

    def unpack(self, name: str, dest: StrPath) -> None:
        """Writes the image as one flat rootfs directory."""
        self._op("unpack", name, os.fspath(dest))
