"""Uses the whole cagette Python API; CI checks it with `mypy --strict` and runs it.

    python examples/python/example.py
"""

from __future__ import annotations

import asyncio
import subprocess

import cagette


def main() -> None:
    # One command, captured, with limits: a CompletedProcess with a verdict and a usage report.
    r: cagette.CompletedProcess = cagette.run(
        ["python3", "-c", "print('hi')"], memory="256M", network="none", timeout=10, capture_output=True
    )
    usage: cagette.Usage = r.usage
    print(r.returncode, r.stdout, r.verdict, usage.memory_peak_bytes, usage.cpu_time)

    # A reusable sandbox: the host's /usr read-only at /src, a scratch tmpfs.
    with cagette.Sandbox(memory="1G", mounts=[cagette.bind("/usr", "/src", read_only=True), cagette.tmpfs("/scratch", size="64M")]) as box:
        p: cagette.Process = box.popen(["sh", "-c", "cat; exit 3"], stdin=cagette.PIPE, stdout=cagette.PIPE)
        out, _ = p.communicate(b"data", timeout=5)
        code: int | None = p.returncode
        print(out, code, p.verdict)
        box.run(["ls", "/src"], stdout=cagette.DEVNULL)

    # Exceptions: cagette's own, and subprocess-compatible ones.
    try:
        cagette.run(["tail", "/dev/zero"], memory="32M", check=True)
    except cagette.CalledProcessError as e:
        print("verdict:", e.verdict, "returncode:", e.returncode)
    try:
        cagette.run(["sleep", "10"], timeout=0.2)
    except subprocess.TimeoutExpired as e:
        print("timed out:", e.timeout)
    try:
        cagette.run(["/no/such/program"])
    except cagette.SetupError as e:
        print("setup failed at", e.step, e.errno, e.path, e.hint)

    # asyncio: never blocks the loop.
    async def in_loop() -> int:
        res = await cagette.run_async(["sh", "-c", "exit 4"], cpus=1)
        proc = cagette.Process(["true"])
        await proc.wait_async()
        return res.returncode

    print(asyncio.run(in_loop()))
    print(cagette.probe()["cgroup"], sorted(cagette.validate(memory="1G"))[:3])


if __name__ == "__main__":
    main()
