"""The pytest plugin, run through pytester in a subprocess (where the entry point loads it)."""

import pytest


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(
        test_sb="""
        import os, socket, pytest

        @pytest.mark.sandbox(network="none", memory="512M", timeout=30)
        def test_passes_inside():
            assert socket.gethostname() == "cagette"  # in a sandbox
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
    pytester.makepyfile("def test_plain():\n    import socket\n    assert socket.gethostname() != 'cagette'\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_outcomes_are_those_of_an_unsandboxed_run(pytester):
    pytester.makepyfile(
        test_outcomes="""
        import os, socket, unittest, pytest

        @pytest.fixture
        def where():
            # Fixtures run in the sandbox too.
            return socket.gethostname()

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown broke")

        @pytest.fixture
        def broken_setup():
            raise RuntimeError("setup broke")

        pytestmark = pytest.mark.sandbox(memory="256M")

        def test_fixture_inside(where):
            assert where == "cagette"

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert False

        @pytest.mark.xfail(reason="fixed")
        def test_xpass():
            pass

        def test_skip():
            pytest.skip("not today")

        def test_setup_error(broken_setup):
            pass

        def test_teardown_error(broken_teardown):
            pass

        def test_output():
            print("hello from the sandbox")
            assert False

        def test_warns():
            import warnings
            warnings.warn("careful in the sandbox", UserWarning)

        class TestUnit(unittest.TestCase):
            def test_in_sandbox(self):
                self.assertEqual(socket.gethostname(), "cagette")

            def test_subtests(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertLess(i, 3)
        """
    )
    result = pytester.runpytest_subprocess("-rA")
    result.assert_outcomes(passed=5, failed=1, skipped=1, xfailed=1, xpassed=1, errors=2, warnings=1)
    out = result.stdout.str()
    assert "careful in the sandbox" in out
    assert "3 subtests passed" in pytester.runpytest_subprocess("-q", "-k", "subtests").stdout.str()
    assert "hello from the sandbox" in out
    assert "setup broke" in out and "teardown broke" in out
    # -x stops after the first failure, as without sandboxes.
    pytester.runpytest_subprocess("-x", "-p", "no:randomly").assert_outcomes(passed=1, xfailed=1, xpassed=1, skipped=1, errors=1)


def test_a_whole_suite_with_the_command_line_option_or_the_ini(pytester):
    pytester.makepyfile(test_suite="import socket\ndef test_a():\n    assert socket.gethostname() == 'cagette'\ndef test_b():\n    assert open('/proc/net/dev').read().count(':') == 1\n")
    pytester.runpytest_subprocess("--cagette", "--cagette-network=none", "--cagette-memory=256M").assert_outcomes(passed=2)
    pytester.runpytest_subprocess().assert_outcomes(failed=2)  # without: on the host
    pytester.makeini("[pytest]\ncagette = true\ncagette_options = network=none memory=256M\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_isolation_per_test_module_session_or_sandbox(pytester):
    pytester.makepyfile(
        test_iso="""
        import os, socket, subprocess, pytest

        STATE = []

        def test_first():
            STATE.append(1)
            # A process left behind: the next test must not see it (isolation="test").
            subprocess.Popen(["sleep", "300"], start_new_session=True)

        def test_second():
            leftovers = subprocess.run(["pgrep", "-x", "sleep"], capture_output=True).stdout.split()
            print("state", len(STATE), "leftovers", len(leftovers))
            assert socket.gethostname() == "cagette"
        """
    )
    for isolation, state, leftovers in (("test", 0, 0), ("module", 1, 1), ("session", 1, 1), ("sandbox", 0, 0)):
        result = pytester.runpytest_subprocess("--cagette", f"--cagette-isolation={isolation}", "-s", "-p", "no:randomly")
        result.assert_outcomes(passed=2)
        assert f"state {state} leftovers {leftovers}" in result.stdout.str(), isolation
    # A bad isolation is a usage error, before anything runs.
    result = pytester.runpytest_subprocess("--cagette", "--cagette-option", "isolation=thread")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "isolation 'thread'" in result.stderr.str()


def test_a_worker_killed_by_a_test_is_replaced(pytester):
    pytester.makepyfile(
        test_kill="""
        import os, signal, pytest

        pytestmark = pytest.mark.sandbox(memory="128M", timeout=20)

        def test_oom():
            b = bytearray(300 << 20)

        def test_after_the_oom():
            assert True

        def test_exits_the_process():
            os._exit(3)

        def test_after_the_exit():
            assert True
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-rA")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "OOM-killed at 128M" in out
    assert "ended (wait status 768) before it reported" in out


def test_a_module_the_sandbox_cannot_import_is_a_clear_failure(pytester, tmp_path):
    # A file on the host the sandbox does not see (the sandbox has its own /tmp).
    secret = tmp_path / "host_only.txt"
    secret.write_text("x")
    pytester.makepyfile(test_host_only=f"open({str(secret)!r}).read()\ndef test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("--cagette")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "could not collect" in out and "host_only.txt" in out
