"""The pytest plugin, run through pytester in a subprocess (where the entry point loads it)."""

import pytest


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(
        test_sb="""
        import os, pytest

        @pytest.mark.sandbox(network="none", memory="512M", timeout=30)
        def test_passes_inside():
            assert os.getpid() == 2  # under the sandbox's init
            assert open("/proc/net/dev").read().count(":") == 1  # only lo

        @pytest.mark.sandbox(memory="256M")
        def test_fails_inside():
            x = 41
            assert x == 42

        @pytest.mark.sandbox(memory="64M", timeout=60)
        def test_eats_memory():
            b = bytearray(400 << 20)

        @pytest.mark.sandbox(timeout=1)
        def test_hangs():
            import time
            time.sleep(30)

        def test_sandbox_fixture(sandbox):
            r = sandbox.run(["hostname"], hostname="fixture", capture_output=True)
            assert r.stdout == b"fixture\\n"
        """
    )
    return pytester


def test_marker_pass_fail_oom_timeout(suite):
    result = suite.runpytest_subprocess("-v", "--cagette-report", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=3)
    out = result.stdout.str()
    assert "test_passes_inside PASSED" in out
    assert "OOM-killed at 64M" in out
    assert "timed out after 1s" in out
    assert "assert 41 == 42" in out  # the traceback came back from the sandbox
    assert "cagette: usage of sandboxed tests" in out
    junit = (suite.path / "junit.xml").read_text()
    assert 'name="cagette_memory_peak_bytes"' in junit


def test_plugin_is_inert_without_marker(pytester):
    pytester.makepyfile("def test_plain():\n    import os\n    assert os.getpid() != 2\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
