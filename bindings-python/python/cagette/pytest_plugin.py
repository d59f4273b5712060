"""pytest plugin: run a test's body in a fresh cagette sandbox.

Loaded automatically when cagette is installed (entry point ``pytest11``), inert unless used::

    @pytest.mark.sandbox(memory="512M", network="none", timeout=30)
    def test_heavy():
        ...

A marked test runs again, alone, in a pytest worker inside a sandbox made from the marker's
options (those of :func:`cagette.run`); fixtures run inside too. Pass, failure (with the
traceback) and captured output come back to this pytest. Going over the memory limit fails the
test with "OOM-killed at 512M"; running out of time fails it with "timed out".

``--cagette-report`` adds each sandboxed test's usage (peak memory, CPU) to the terminal summary
and, as properties, to the JUnit XML. The ``sandbox`` fixture gives a :class:`cagette.Sandbox`
for running commands from a test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import cagette

_WORKER_OPT = "--cagette-worker"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cagette")
    group.addoption("--cagette-report", action="store_true", default=False, help="report the usage (peak memory, CPU) of sandboxed tests in the summary and the JUnit XML")
    group.addoption(_WORKER_OPT, default=None, help="(internal) run as a sandboxed worker writing its result to this file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(**options): run the test in a fresh cagette sandbox; options as for cagette.run (memory, network, timeout, mounts, ...)")
    config.stash[_USAGE] = []
    path = config.getoption("cagette_worker")
    if path:
        config.pluginmanager.register(_Worker(str(path)), "cagette-worker")


_USAGE = pytest.StashKey[List[Tuple[str, Dict[str, Any]]]]()


class _Worker:
    """In a sandboxed worker: records each phase's outcome and writes them for the parent."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reports: List[Dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            longrepr = None
            if report.longrepr is not None:
                longrepr = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.reports.append({"when": report.when, "outcome": report.outcome, "longrepr": longrepr})

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        with open(self.path, "w") as f:
            json.dump({"reports": self.reports}, f)


@pytest.fixture
def sandbox() -> Iterator[cagette.Sandbox]:
    """A :class:`cagette.Sandbox` (default options) for running commands; whatever it started
    is killed at the end of the test."""
    with cagette.Sandbox() as box:
        yield box


def _fail_message(item: pytest.Item, result: Dict[str, Any], options: Dict[str, Any]) -> Optional[str]:
    verdict = result.get("verdict")
    if verdict == "oom_killed":
        return f"OOM-killed at {options.get('memory', 'its memory limit')} (in the sandbox)"
    if verdict == "timed_out":
        return f"timed out after {options.get('timeout')}s (in the sandbox)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    marker = pyfuncitem.get_closest_marker("sandbox")
    config = pyfuncitem.config
    if marker is None or config.getoption("cagette_worker"):
        return None
    options: Dict[str, Any] = dict(marker.kwargs)
    rootdir = str(config.rootpath)
    with tempfile.TemporaryDirectory(prefix="cagette-pytest-") as d:
        report_file = os.path.join(d, "result.json")
        spec = dict(options)
        timeout = spec.pop("timeout", None)
        mounts = list(spec.pop("mounts", []))
        # Bring in, read-only at the same paths, the test files and the Python installation:
        # the sandbox has its own /tmp, /dev and /run, and (as root) its own unprivileged ids,
        # which may not enter where they live (a pyenv under /root, say).
        seen: List[str] = []
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(cagette.__file__)))
        candidates = [rootdir, str(pyfuncitem.path.parent), sys.prefix, sys.base_prefix, package_dir, os.path.dirname(os.path.realpath(sys.executable))]
        candidates += [p for p in sys.path if p and os.path.isdir(p)]
        for p in sorted({os.path.realpath(c) for c in candidates}, key=len):
            if p != "/" and not any(p == q or p.startswith(q + "/") for q in seen):
                seen.append(p)
                mounts.append(cagette.bind(p, p, read_only=True))
        mounts.append(cagette.bind(d, d))  # the worker writes its result here
        env = dict(os.environ)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        # The test by its file's absolute path: node ids are relative to a rootdir that
        # depends on how this pytest was invoked.
        rest = pyfuncitem.nodeid.split("::", 1)[1] if "::" in pyfuncitem.nodeid else pyfuncitem.name
        target = f"{pyfuncitem.path}::{rest}"
        argv = [
            sys.executable, "-m", "pytest", target,
            "-p", "no:cacheprovider", "-q", "--no-header", "-rN",
            "--rootdir", rootdir, f"{_WORKER_OPT}={report_file}",
        ]
        if config.inipath is not None:
            argv += ["-c", str(config.inipath)]
        usage: Optional[cagette.Usage] = None
        verdict = "exited"
        try:
            r = cagette.run(argv, capture_output=True, timeout=timeout, cwd=rootdir, env=env, mounts=mounts, **spec)
            out, err = r.stdout, r.stderr
            usage, verdict = r.usage, r.verdict
        except cagette.TimeoutExpired as e:
            out, err = e.output or b"", e.stderr or b""
            usage, verdict = e.usage, "timed_out"
        if config.getoption("cagette_report") and usage is not None:
            props = {"verdict": verdict, "memory_peak_bytes": usage.memory_peak_bytes, "cpu_s": round(usage.cpu_time, 3), "wall_s": round(usage.wall_time, 3)}
            config.stash[_USAGE].append((pyfuncitem.nodeid, props))
            for k, v in props.items():
                pyfuncitem.user_properties.append((f"cagette_{k}", v))
        result: Dict[str, Any] = {"verdict": verdict}
        if os.path.exists(report_file):
            with open(report_file) as f:
                result.update(json.load(f))
    # Show the worker's output as this test's captured output.
    if out:
        sys.stdout.write(out.decode(errors="replace"))
    if err:
        sys.stderr.write(err.decode(errors="replace"))
    msg = _fail_message(pyfuncitem, result, options)
    if msg:
        pytest.fail(msg, pytrace=False)
    reports = result.get("reports")
    if not reports:
        pytest.fail(f"the sandboxed worker ran no test (verdict {verdict}); its output is above", pytrace=False)
    for rep in reports:
        if rep["outcome"] == "failed":
            pytest.fail(f"failed in the sandbox ({rep['when']}):\n{rep['longrepr']}", pytrace=False)
        if rep["outcome"] == "skipped":
            pytest.skip(rep.get("longrepr") or "skipped in the sandbox")
    return True


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_USAGE, [])
    if not config.getoption("cagette_report") or not rows:
        return
    terminalreporter.section("cagette: usage of sandboxed tests")
    for nodeid, p in rows:
        peak = p["memory_peak_bytes"]
        mem = "unknown" if peak is None else f"{peak / (1 << 20):.1f} MiB"
        terminalreporter.write_line(f"{nodeid}: {p['verdict']}, peak memory {mem}, CPU {p['cpu_s']:.3f}s, wall {p['wall_s']:.3f}s")
