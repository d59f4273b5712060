"""The pytest plugin in use (cagette installed: the plugin loads by itself).

    python -m pytest examples/python/test_pytest_example.py --cagette-report
"""

import pytest


@pytest.mark.sandbox(network="none", memory="512M", timeout=30)
def test_runs_isolated() -> None:
    # This body runs in a fresh sandbox: no network but loopback, its own pid namespace.
    with open("/proc/net/dev") as f:
        assert f.read().count(":") == 1


def test_runs_a_command(sandbox) -> None:  # type: ignore[no-untyped-def]
    r = sandbox.run(["hostname"], hostname="ci", capture_output=True)
    assert r.stdout == b"ci\n"
