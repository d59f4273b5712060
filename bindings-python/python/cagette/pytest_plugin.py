"""pytest plugin: run tests in fresh cagette sandboxes.

Loaded automatically when cagette is installed (entry point ``pytest11``), inert unless used:

    @pytest.mark.sandbox(memory="512M", network="none", timeout=30)
    def test_heavy():
        ...

or, for a whole suite, ``pytest --cagette`` (options with ``--cagette-memory=1G``,
``--cagette-network=none``, ``--cagette-timeout=60``, ``--cagette-option KEY=VALUE``, or the ini
keys ``cagette = true`` and ``cagette_options = memory=1G network=none``).

A sandboxed test runs in a pytest worker inside a sandbox made from the options (those of
:func:`cagette.run`, plus ``isolation``): its whole protocol — fixtures' setup and teardown, the
call — runs there. One worker sandbox per set of options imports and collects the tests once;
then, by ``isolation``:

- ``"test"`` (the default): a fresh process forked for each test, in a session of its own and a
  subreaper: whatever the test started is killed when it ends, and nothing it changed in the
  interpreter leaks into the next test. Module- and session-scoped fixtures are set up per test.
- ``"module"``: one such process per module: its tests share fixtures and interpreter state, as
  in an unsandboxed run.
- ``"session"``: one process for all the tests with these options.
- ``"sandbox"``: a fresh sandbox per test (its own /tmp, namespaces and cgroup), at the cost of a
  new Python that imports and collects again (about 0.3 s per test).

Tests run one at a time, so the limits (memory, pids, CPU) bound each test (plus the worker's
own memory: the modules it imported); a test that goes over the memory limit or its time is
killed with the whole worker, and the next test starts a new one. The worker's reports come back
to this pytest as they are, so outcomes are those of an unsandboxed run (pass, fail with the
traceback, skip, xfail, xpass, errors in setup or teardown, captured output, ``-x``). Going over
the memory limit fails the test with "OOM-killed at 512M"; running out of time fails it with
"timed out". Classes (``unittest.TestCase`` ones too) work the same.

``--cagette-report`` adds each sandboxed test's usage (peak memory, CPU) to the terminal summary
and, as properties, to the JUnit XML. The ``sandbox`` fixture gives a :class:`cagette.Sandbox`
for running commands from a test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple

import pytest

import cagette

_WORKER_OPT = "--cagette-worker"
_ISOLATIONS = ("test", "module", "session", "sandbox")
_SERVE_OPT = "--cagette-serve"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cagette")
    group.addoption("--cagette", action="store_true", default=None, help="run every test in a fresh cagette sandbox (options: --cagette-memory etc., or the sandbox marker's)")
    group.addoption("--cagette-memory", default=None, help="memory limit of each sandboxed test (e.g. 1G)")
    group.addoption("--cagette-timeout", default=None, type=float, help="time limit of each sandboxed test, in seconds")
    group.addoption("--cagette-network", default=None, help="network of each sandboxed test: none, private or host")
    group.addoption("--cagette-isolation", default=None, choices=_ISOLATIONS, help="a fresh process per test (test, the default), per module, per session, or a fresh sandbox per test")
    group.addoption("--cagette-option", action="append", default=[], metavar="KEY=VALUE", help="any other option of cagette.run for each sandboxed test (value as JSON, else a string)")
    group.addoption("--cagette-report", action="store_true", default=False, help="report the usage (peak memory, CPU) of sandboxed tests in the summary and the JUnit XML")
    group.addoption(_WORKER_OPT, default=None, help="(internal) run as a sandboxed worker writing its reports to this file")
    group.addoption(_SERVE_OPT, default=None, help="(internal) run as a sandboxed worker serving test requests through the FIFOs in this directory")
    parser.addini("cagette", "run every test in a fresh cagette sandbox", type="bool", default=False)
    parser.addini("cagette_options", "options of cagette.run for every sandboxed test (KEY=VALUE, separated by spaces)", type="args", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(**options): run the test in a fresh cagette sandbox; options as for cagette.run (memory, network, timeout, mounts, ...)")
    config.stash[_USAGE] = []
    path = config.getoption("cagette_worker")
    if path:
        config.pluginmanager.register(_Worker(str(path), config), "cagette-worker")
    serve = config.getoption("cagette_serve")
    if serve:
        config.pluginmanager.register(_Server(str(serve), config), "cagette-server")


_USAGE = pytest.StashKey[List[Tuple[str, Dict[str, Any]]]]()


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _suite_options(config: pytest.Config) -> Optional[Dict[str, Any]]:
    """The options of every test with --cagette (or the ini key), else None."""
    on = config.getoption("cagette")
    if on is None:
        on = bool(config.getini("cagette"))
    if not on:
        return None
    opts: Dict[str, Any] = {}
    for kv in list(config.getini("cagette_options")) + list(config.getoption("cagette_option")):
        k, sep, v = str(kv).partition("=")
        if not sep:
            raise pytest.UsageError(f"--cagette-option {kv!r}: expected KEY=VALUE")
        opts[k.strip()] = _value(v)
    for k in ("memory", "timeout", "network", "isolation"):
        v = config.getoption(f"cagette_{k}")
        if v is not None:
            opts[k] = v
    return opts


def _options(item: pytest.Item) -> Optional[Dict[str, Any]]:
    """The sandbox options of `item`: its marker's over the suite's, or None when it runs here."""
    suite = _suite_options(item.config)
    marker = item.get_closest_marker("sandbox")
    if marker is None and suite is None:
        return None
    opts = dict(suite or {})
    if marker is not None:
        opts.update(marker.kwargs)
    return opts


class _Worker:
    """In a sandboxed worker (isolation="sandbox"): records every report and warning, serialized,
    for the host."""

    def __init__(self, path: str, config: pytest.Config) -> None:
        self.path = path
        self.config = config
        self.seen = _Seen()
        config.pluginmanager.register(self.seen)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        reports = [self.config.hook.pytest_report_to_serializable(config=self.config, report=rep) for rep in self.seen.reports]
        with open(self.path, "w") as f:
            json.dump({"reports": reports, "warnings": self.seen.warnings}, f)


@pytest.fixture
def sandbox() -> Iterator[cagette.Sandbox]:
    """A :class:`cagette.Sandbox` (default options) for running commands; whatever it started
    is killed at the end of the test."""
    with cagette.Sandbox() as box:
        yield box


def _fail_message(result: Dict[str, Any], options: Dict[str, Any]) -> Optional[str]:
    verdict = result.get("verdict")
    if verdict == "oom_killed":
        return f"OOM-killed at {options.get('memory', 'its memory limit')} (in the sandbox)"
    if verdict == "timed_out":
        return f"timed out after {options.get('timeout')}s (in the sandbox)"
    return None


def _mounts(item: pytest.Item, extra: List[Any]) -> List[Any]:
    """Bind in, read-only at the same paths, the test files and the Python installation: the
    sandbox has its own /tmp, /dev and /run, and (as root) its own unprivileged ids, which may not
    enter where they live (a pyenv under /root, say)."""
    config = item.config
    mounts = list(extra)
    seen: List[str] = []
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(cagette.__file__)))
    candidates = [str(config.rootpath), str(item.path.parent), sys.prefix, sys.base_prefix, package_dir, os.path.dirname(os.path.realpath(sys.executable))]
    candidates += [p for p in sys.path if p and os.path.isdir(p)]
    for p in sorted({os.path.realpath(c) for c in candidates}, key=len):
        if p != "/" and not any(p == q or p.startswith(q + "/") for q in seen):
            seen.append(p)
            mounts.append(cagette.bind(p, p, read_only=True))
    return mounts


def _verbosity(config: pytest.Config) -> List[str]:
    """This pytest's verbosity, for a worker: what its terminal writes during a test (a unittest
    subtest's progress letter, say) ends up in the test's captured output, as it would here."""
    v = int(config.getoption("verbose") or 0)
    return [f"-{'v' * v}"] if v > 0 else [f"-{'q' * -v}"] if v < 0 else []


def _failure(item: pytest.Item, when: Literal["call", "teardown"], text: str) -> pytest.TestReport:
    return pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed", text, when, [])


def _run_in_sandbox(item: pytest.Item, options: Dict[str, Any]) -> Tuple[Dict[str, Any], str, bytes, bytes]:
    """isolation="sandbox": (result, verdict, stdout, stderr) of `item` run in a sandbox of its own."""
    config = item.config
    rootdir = str(config.rootpath)
    with tempfile.TemporaryDirectory(prefix="cagette-pytest-") as d:
        report_file = os.path.join(d, "result.json")
        spec = dict(options)
        timeout = spec.pop("timeout", None)
        mounts = _mounts(item, spec.pop("mounts", []))
        mounts.append(cagette.bind(d, d))  # the worker writes its reports here
        env = dict(os.environ)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        # The test by its file's absolute path: node ids are relative to a rootdir that
        # depends on how this pytest was invoked.
        rest = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name
        target = f"{item.path}::{rest}"
        argv = [
            sys.executable, "-m", "pytest", target,
            "-p", "no:cacheprovider", *_verbosity(config), "--no-header", "-rN",
            "--rootdir", rootdir, f"{_WORKER_OPT}={report_file}",
        ]
        if config.inipath is not None:
            argv += ["-c", str(config.inipath)]
        usage: Optional[cagette.Usage] = None
        verdict = "exited"
        try:
            capture = config.getoption("capture") != "no"
            if not capture:
                argv.append("-s")  # the test's output goes where this pytest's does
            r = cagette.run(argv, capture_output=capture, timeout=timeout, cwd=rootdir, env=env, mounts=mounts, **spec)
            out, err = r.stdout, r.stderr
            usage, verdict = r.usage, r.verdict
        except cagette.TimeoutExpired as e:
            out, err = e.output or b"", e.stderr or b""
            usage, verdict = e.usage, "timed_out"
        except cagette.Error as e:
            out, err, verdict = b"", f"{e}".encode(), "setup_failed"
        if config.getoption("cagette_report") and usage is not None:
            props = {"verdict": verdict, "memory_peak_bytes": usage.memory_peak_bytes, "cpu_s": round(usage.cpu_time, 3), "wall_s": round(usage.wall_time, 3)}
            config.stash[_USAGE].append((item.nodeid, props))
            for k, v in props.items():
                item.user_properties.append((f"cagette_{k}", v))
        result: Dict[str, Any] = {"verdict": verdict}
        if os.path.exists(report_file):
            with open(report_file) as f:
                result.update(json.load(f))
    return result, verdict, out or b"", err or b""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Optional[bool]:
    config = item.config
    if config.getoption("cagette_worker") or config.getoption("cagette_serve"):
        return None
    options = _options(item)
    if options is None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    isolation = options.get("isolation", "test")
    if isolation not in _ISOLATIONS:
        raise pytest.UsageError(f"{item.nodeid}: sandbox isolation {isolation!r}: expected one of {', '.join(map(repr, _ISOLATIONS))}")
    out: bytes = b""
    err: bytes = b""
    if isolation == "sandbox":
        result, verdict, out, err = _run_in_sandbox(item, {k: v for k, v in options.items() if k != "isolation"})
    else:
        import time

        started = time.monotonic()
        result, verdict, output = _run_in_worker(item, nextitem, options)
        err = output.encode()
        usage = result.get("usage") or {}
        if config.getoption("cagette_report"):
            props = {"verdict": verdict, "memory_peak_bytes": usage.get("max_rss_bytes"), "cpu_s": usage.get("cpu_s", 0.0), "wall_s": round(time.monotonic() - started, 3)}
            config.stash[_USAGE].append((item.nodeid, props))
            for k, v in props.items():
                item.user_properties.append((f"cagette_{k}", v))
    for w in result.get("warnings", []):
        _replay_warning(config, w)
    reports = [config.hook.pytest_report_from_serializable(config=config, data=d) for d in result.get("reports", [])]
    for rep in reports:
        if rep.skipped and isinstance(rep.longrepr, list):
            rep.longrepr = tuple(rep.longrepr)  # (path, line, reason): JSON made it a list
    msg = _fail_message(result, options)
    if msg or not reports:
        # The worker was killed (or never ran the test): one failure, with its output.
        text = msg or f"the sandboxed worker ran no test (verdict {verdict})"
        output = (out or b"").decode(errors="replace") + (err or b"").decode(errors="replace")
        if output.strip():
            text += "\n--- output of the sandboxed worker ---\n" + output
        calls = [rep for rep in reports if rep.when == "call"]
        reports = [rep for rep in reports if rep.when == "setup" and rep.passed] + [_failure(item, "call" if not calls else "teardown", text)]
    for rep in reports:
        rep.user_properties = list(item.user_properties) + [p for p in rep.user_properties if p not in item.user_properties]
        item.ihook.pytest_runtest_logreport(report=rep)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


# ----------------------------------------------------------------------------------------------
# isolation="test", "module", "session": a worker sandbox that forks a runner per group of tests


def _kill_descendants() -> None:
    """Kills every descendant of this process (a subreaper: orphans come back to it) and reaps
    them, until none is left."""
    me = os.getpid()
    for _ in range(100):
        kids: List[int] = []
        for t in os.listdir(f"/proc/{me}/task"):
            try:
                with open(f"/proc/{me}/task/{t}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
        if not kids:
            return
        for k in kids:
            try:
                os.kill(k, 9)
            except ProcessLookupError:
                pass
        for k in kids:
            try:
                os.waitpid(k, 0)
            except ChildProcessError:
                pass


def _key(path: Any, nodeid: str) -> str:
    """A test's name that does not depend on the rootdir: its file's absolute path and the rest
    of its node id."""
    rest = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
    return f"{os.path.realpath(str(path))}::{rest}"


def _read_line(fd: int) -> bytes:
    """One line from `fd` (blocking), or what came before the end of the stream."""
    chunks: List[bytes] = []
    while True:
        b = os.read(fd, 1)
        if not b or b == b"\n":
            return b"".join(chunks)
        chunks.append(b)


class _Seen:
    """What a test reports while it runs (subtests' reports and warnings too), for the host."""

    def __init__(self) -> None:
        self.reports: List[Any] = []
        self.warnings: List[Dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(report)

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        category = warning_message.category
        self.warnings.append({
            "message": str(warning_message.message), "category": category.__name__, "module": category.__module__,
            "filename": warning_message.filename, "lineno": warning_message.lineno, "when": when, "nodeid": nodeid,
        })


def _replay_warning(config: pytest.Config, w: Dict[str, Any]) -> None:
    """Records on the host a warning that a sandboxed test raised."""
    import builtins
    import importlib
    import warnings

    category: Any = UserWarning
    try:
        found = getattr(importlib.import_module(w["module"]), w["category"])
        if isinstance(found, type) and issubclass(found, Warning):
            category = found
    except Exception:  # noqa: BLE001 - a category this side cannot import stays a UserWarning
        category = getattr(builtins, w["category"], UserWarning)
    try:
        message = category(w["message"])
    except Exception:  # noqa: BLE001 - a category with an unusual constructor
        message = UserWarning(w["message"])
    wm = warnings.WarningMessage(message=message, category=type(message), filename=w["filename"], lineno=w["lineno"])
    config.hook.pytest_warning_recorded.call_historic(kwargs={"warning_message": wm, "when": w["when"], "nodeid": w["nodeid"], "location": None})


class _Runner:
    """In a sandboxed worker: a forked process (its own session, a subreaper) that runs one group
    of tests, one request at a time; when the group ends, it and everything it started is killed."""

    def __init__(self, group: str, items: Dict[str, pytest.Item], config: pytest.Config) -> None:
        import ctypes

        self.group = group
        req_r, self.req = os.pipe()
        resp_r, resp_w = os.pipe()
        self.pid = os.fork()
        if self.pid != 0:
            os.close(req_r)
            os.close(resp_w)
            self.resp = os.fdopen(resp_r, "rb")
            return
        code = 0
        try:
            os.close(self.req)
            os.close(resp_r)
            os.setsid()
            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
            self._serve(req_r, resp_w, items, config)
        except BaseException:  # noqa: BLE001 - the worker reports the runner's end
            code = 1
        finally:
            try:
                _kill_descendants()
            finally:
                os._exit(code)

    @staticmethod
    def _serve(req: int, resp: int, items: Dict[str, pytest.Item], config: pytest.Config) -> None:
        import resource

        while True:
            line = _read_line(req)
            if not line:
                return
            msg = json.loads(line)
            item = items[msg["test"]]
            nextitem = items.get(msg.get("next") or "")
            before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            try:
                seen = _Seen()
                config.pluginmanager.register(seen)
                try:
                    # Through the hook: other plugins' wrappers (warnings, say) see the test.
                    item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                finally:
                    config.pluginmanager.unregister(seen)
                data: Dict[str, Any] = {
                    "reports": [config.hook.pytest_report_to_serializable(config=config, report=rep) for rep in seen.reports],
                    "warnings": seen.warnings,
                }
            except BaseException as e:  # noqa: BLE001 - reported to the host
                data = {"error": f"{type(e).__name__}: {e}"}
            after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
            data["usage"] = {"cpu_s": round(cpu, 3), "max_rss_bytes": max(a.ru_maxrss for a in after) * 1024}
            out = json.dumps(data).encode() + b"\n"
            view = memoryview(out)
            while view:
                view = view[os.write(resp, view):]

    def run(self, line: bytes) -> bytes:
        """Sends one request; returns the runner's response line, or an error when it ended."""
        try:
            os.write(self.req, line + b"\n")
            out = self.resp.readline().rstrip(b"\n")
        except OSError:
            out = b""
        if out:
            return out
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
        return json.dumps({"error": f"the test's process ended (wait status {status}) before it reported", "sigkill": killed}).encode()

    def end(self) -> None:
        os.close(self.req)
        self.resp.close()
        if self.pid:
            os.waitpid(self.pid, 0)  # it kills what it started, then exits


class _Server:
    """In a sandboxed worker: collects once, then runs each requested test in the runner of its
    group (a fresh one per test for isolation="test")."""

    def __init__(self, directory: str, config: pytest.Config) -> None:
        self.dir = directory
        self.config = config
        self.collect_errors: List[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid}: {report.longreprtext}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = {_key(item.path, item.nodeid): item for item in session.items}
        runner: Optional[_Runner] = None
        with open(os.path.join(self.dir, "req"), "rb", buffering=0) as req, open(os.path.join(self.dir, "resp"), "wb", buffering=0) as resp:
            resp.write(b"ready\n")
            for line in open(req.fileno(), "rb", closefd=False):
                msg = json.loads(line)
                if msg["test"] not in items:
                    why = "".join("\n" + e for e in self.collect_errors) or " (it collected no such test)"
                    resp.write(json.dumps({"error": f"the sandboxed worker could not collect {msg['test']}:{why}"}).encode() + b"\n")
                    continue
                if runner is not None and runner.group != msg["group"]:
                    runner.end()
                    runner = None
                if runner is None:
                    runner = _Runner(msg["group"], items, self.config)
                out = runner.run(line.rstrip(b"\n"))
                if not msg.get("next") or runner.pid == 0:
                    runner.end()
                    runner = None
                resp.write(out + b"\n")
        if runner is not None:
            runner.end()
        return True


class _WorkerSandbox:
    """On the host: one worker sandbox for a set of options."""

    def __init__(self, config: pytest.Config, options: Dict[str, Any], files: List[str], template: pytest.Item) -> None:
        self.dir = tempfile.mkdtemp(prefix="cagette-pytest-")
        for name in ("req", "resp"):
            os.mkfifo(os.path.join(self.dir, name), 0o600)
        self.log = os.path.join(self.dir, "worker.log")
        spec = dict(options)
        spec.pop("timeout", None)
        mounts = _mounts(template, spec.pop("mounts", []))
        mounts.append(cagette.bind(self.dir, self.dir))
        env = dict(os.environ)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        rootdir = str(config.rootpath)
        argv = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", *_verbosity(config), "--no-header", "-rN", "--rootdir", rootdir, f"{_SERVE_OPT}={self.dir}"]
        if config.inipath is not None:
            argv += ["-c", str(config.inipath)]
        self.logf = open(self.log, "wb")
        self.req = self.resp = -1
        self.buf = b""
        out: Any = self.logf
        if config.getoption("capture") == "no":
            argv.append("-s")  # the tests' output goes where this pytest's does
            out = None
        self.proc = cagette.Process(argv, stdin=cagette.DEVNULL, stdout=out, stderr=cagette.STDOUT if out is not None else None, cwd=rootdir, env=env, mounts=mounts, **spec)
        try:
            self.req = self._open("req", os.O_WRONLY)
            self.resp = self._open("resp", os.O_RDONLY)
            if self._line(None) != b"ready":
                raise RuntimeError("the worker sandbox ended before it was ready:\n" + self.output())
        except BaseException:
            self.close()
            raise

    def _open(self, name: str, flags: int) -> int:
        import time

        path = os.path.join(self.dir, name)
        while True:
            try:
                return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:  # ENXIO: no reader yet
                if self.proc.poll() is not None:
                    raise RuntimeError("the worker sandbox ended before it was ready:\n" + self.output()) from e
                time.sleep(0.005)

    def _line(self, timeout: Optional[float]) -> Optional[bytes]:
        """The next line from the worker, or None when it ended or the time ran out."""
        import select
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            ready, _, _ = select.select([self.resp, self.proc._native.pidfd], [], [], 0.5 if left is None else min(left, 0.5))
            if self.resp in ready:
                try:
                    b = os.read(self.resp, 65536)
                except BlockingIOError:
                    continue
                if not b:
                    return None
                self.buf += b
            elif ready and self.proc.poll() is not None:
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def run(self, request: Dict[str, Any], timeout: Optional[float]) -> Tuple[Optional[Dict[str, Any]], str]:
        """Runs one test; returns (its response, the worker's verdict: "running" while it lives)."""
        try:
            os.write(self.req, json.dumps(request).encode() + b"\n")
        except OSError:
            pass
        import time

        started = time.monotonic()
        line = self._line(timeout)
        if line is not None:
            response = json.loads(line)
            if not response.get("sigkill"):
                return response, "running"
            # The test's process was SIGKILLed: by the OOM killer, most likely. With the default
            # oom_policy the whole job is being killed (by the kernel on cgroup v2, by the
            # sandbox's init on v1), which can lag behind this report: wait for that verdict.
            try:
                self.proc.wait(5)
            except cagette.TimeoutExpired:
                return response, "running"  # killed by something else: the worker goes on
            return None, str(self.proc.verdict)
        if timeout is None or time.monotonic() - started < timeout:
            # The worker closed its end: it is ending (killed for OOM, say); its verdict says why.
            try:
                self.proc.wait(30)
            except cagette.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            return None, "timed_out"
        return None, str(self.proc.verdict)

    def output(self) -> str:
        try:
            self.logf.flush()
            with open(self.log, errors="replace") as f:
                return f.read()[-20000:]
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        import shutil

        for fd in (self.req, self.resp):
            if fd >= 0:
                os.close(fd)
        self.req = self.resp = -1
        try:
            self.proc.wait(10)
        except cagette.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.close()
        self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_WORKERS = pytest.StashKey[Dict[str, _WorkerSandbox]]()


def _worker_key(options: Dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in options.items() if k not in ("timeout", "isolation")}, sort_keys=True, default=str)


def _group(item: pytest.Item, isolation: str) -> str:
    if isolation == "session":
        return "session"
    if isolation == "module":
        return "module:" + os.path.realpath(str(item.path))
    return "test:" + _key(item.path, item.nodeid)


def _run_in_worker(item: pytest.Item, nextitem: Optional[pytest.Item], options: Dict[str, Any]) -> Tuple[Dict[str, Any], str, str]:
    """isolation="test"/"module"/"session": (result, verdict, output) of `item` run by the worker
    of its options."""
    config = item.config
    workers = config.stash.setdefault(_WORKERS, {})
    key = _worker_key(options)
    isolation = options.get("isolation", "test")
    w = workers.get(key)
    if w is None:
        files = sorted({str(i.path) for i in item.session.items if _options(i) is not None})
        w = _WorkerSandbox(config, {k: v for k, v in options.items() if k != "isolation"}, files, item)
        workers[key] = w
    group = _group(item, isolation)
    following = None
    if nextitem is not None:
        next_options = _options(nextitem)
        if next_options is not None and _worker_key(next_options) == key and _group(nextitem, next_options.get("isolation", "test")) == group:
            following = _key(nextitem.path, nextitem.nodeid)
    request = {"test": _key(item.path, item.nodeid), "group": group, "next": following}
    response, verdict = w.run(request, options.get("timeout"))
    if response is None or verdict != "running":
        # The worker is gone (OOM kill, timeout): the next test starts a new one.
        output = w.output()
        w.close()
        del workers[key]
        return {"verdict": verdict}, verdict, output
    if "error" in response:
        return {"verdict": "error", "usage": response.get("usage")}, "error", str(response["error"]) + "\n" + w.output()
    return response, "exited", ""


def pytest_sessionfinish(session: pytest.Session) -> None:
    for w in session.config.stash.get(_WORKERS, {}).values():
        w.close()
    session.config.stash[_WORKERS] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_USAGE, [])
    if not config.getoption("cagette_report") or not rows:
        return
    terminalreporter.section("cagette: usage of sandboxed tests")
    for nodeid, p in rows:
        peak = p["memory_peak_bytes"]
        mem = "unknown" if peak is None else f"{peak / (1 << 20):.1f} MiB"
        terminalreporter.write_line(f"{nodeid}: {p['verdict']}, peak memory {mem}, CPU {p['cpu_s']:.3f}s, wall {p['wall_s']:.3f}s")
