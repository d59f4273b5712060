"""ImageStore.build: an image from a Dockerfile, built into a temporary store and run from it.
Run with the package installed (maturin develop)."""

import os
import signal
import threading
import time

import pytest

import cagette

DOCKERFILE = 'FROM busybox:1\nCOPY f /f\nRUN echo built > /g\nCMD ["cat", "/g"]\n'


@pytest.fixture(scope="module")
def busybox_oci(tmp_path_factory, busybox_rootfs, oci_layout_of):
    """An OCI layout of a busybox rootfs (made with umoci, as the image store test does)."""
    return oci_layout_of(busybox_rootfs, tmp_path_factory.mktemp("busybox"))


def store_with_base(tmp_path, lay, name="store"):
    """A store holding busybox:1 with its blobs kept, as a build's base must be."""
    store = cagette.ImageStore(tmp_path / name)
    store.import_image(lay, "busybox:1", keep_blobs=True)
    return store


def context(tmp_path, dockerfile):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f").write_text("from the context\n")
    return ctx


def leftovers():
    """Step directories of this process (each build removes its own)."""
    base = os.environ.get("TMPDIR", "/var/tmp")
    return [n for n in os.listdir(base) if n.startswith((f"cagette-build-run-{os.getpid()}-", f"cagette-build-copy-{os.getpid()}-"))]


def names(store):
    return sorted(i["name"] for i in store.list())


def test_build_runs_and_rebuilds_from_the_cache(tmp_path, busybox_oci):
    store = store_with_base(tmp_path, busybox_oci)
    ctx = context(tmp_path, DOCKERFILE)
    seen = []
    info = store.build(ctx, "app:1", network="none", memory="256M", pids=64, step_timeout=60, progress=seen.append)
    texts = ["FROM busybox:1", "COPY f /f", "RUN echo built > /g", 'CMD ["cat", "/g"]']
    assert seen == [{"kind": "step", "n": i + 1, "total": 4, "line": i + 1, "text": t} for i, t in enumerate(texts)] + [{"kind": "done", "manifest": info["manifest"]}]
    assert info["name"] == "app:1" and info["manifest"].startswith("sha256:")
    assert len(info["layers"]) == len(store.get("busybox:1")["layers"]) + 2
    assert info["config"]["Cmd"] == ["cat", "/g"]
    assert store.get("app:1")["manifest"] == info["manifest"]
    assert names(store) == ["app:1", "busybox:1"]  # the step records stay hidden

    # Run with the image's CMD, and with a command of our own.
    r = cagette.run([], image="app:1", image_store=store.path, capture_output=True)
    assert (r.returncode, r.stdout) == (0, b"built\n"), r
    r = cagette.run(["cat", "/f"], image="app:1", image_store=store.path, capture_output=True)
    assert r.stdout == b"from the context\n"

    # The same inputs again: COPY and RUN come from the cache, the same image.
    again = []
    info2 = store.build(ctx, "app:2", network="none", progress=again.append)
    assert [e["kind"] for e in again] == ["step", "step", "cached", "step", "cached", "step", "done"], again
    assert info2["manifest"] == info["manifest"]
    # Another network is another RUN: it runs again (the COPY is still cached).
    third = []
    store.build(ctx, "app:3", network="host", progress=third.append)
    assert [e["kind"] for e in third].count("cached") == 1, third
    # no_cache runs every step, and still gives the same digest.
    fourth = []
    assert store.build(ctx, "app:4", network="none", no_cache=True, progress=fourth.append)["manifest"] == info["manifest"]
    assert "cached" not in [e["kind"] for e in fourth]
    assert leftovers() == []


def test_build_options_reach_the_build(tmp_path, busybox_oci):
    store = store_with_base(tmp_path, busybox_oci)
    ctx = context(tmp_path, "")
    (tmp_path / "other.Dockerfile").write_text(
        "FROM busybox:1 AS first\nARG WHO=nobody\nRUN echo $WHO > /who\n"
        "FROM first\nRUN echo second > /second\n"
    )
    info = store.build(ctx, "opts:1", dockerfile=tmp_path / "other.Dockerfile", build_args={"WHO": "me"}, target="first", network="none")
    r = cagette.run(["sh", "-c", "cat /who; ls /second 2>&1"], image="opts:1", image_store=store.path, capture_output=True, text=True)
    assert r.stdout.startswith("me\n") and "No such file" in r.stdout, r
    assert info["name"] == "opts:1"
    # Bad values are ValueErrors before anything runs, wrong types TypeErrors.
    for kwargs in ({"network": "bridge"}, {"memory": "1K"}, {"memory": "lots"}, {"cpus": 0}, {"pids": 0}, {"step_timeout": -1}):
        with pytest.raises(ValueError):
            store.build(ctx, "bad:1", **kwargs)
    with pytest.raises(TypeError):
        store.build(ctx, 3)  # type: ignore[arg-type]
    assert names(store) == ["busybox:1", "opts:1"]


def test_build_a_failing_run_step_raises_with_its_output_and_tags_nothing(tmp_path, busybox_oci):
    store = store_with_base(tmp_path, busybox_oci)
    ctx = context(tmp_path, "FROM busybox:1\nCOPY f /f\nRUN echo to-stdout; echo to-stderr >&2; exit 3\nCMD [\"true\"]\n")
    with pytest.raises(cagette.BuildError) as e:
        store.build(ctx, "bad:1", network="none")
    err = e.value
    assert isinstance(err, cagette.Error)
    assert (err.reason, err.line, err.returncode, err.verdict) == ("step", 3, 3, "exited with status 3"), vars(err)
    assert err.file == str(ctx / "Dockerfile")
    assert "exit 3" in (err.command or "")
    assert "to-stdout" in (err.output or "") and "to-stderr" in (err.output or "")
    assert "exited with status 3" in str(err) and "to-stderr" in str(err)
    assert names(store) == ["busybox:1"]
    with pytest.raises(cagette.ImageError, match="no image named"):
        store.get("bad:1")
    # Killed by its time limit: no exit status.
    (ctx / "Dockerfile").write_text("FROM busybox:1\nRUN sleep 30\n")
    with pytest.raises(cagette.BuildError) as e:
        store.build(ctx, "slow:1", network="none", step_timeout=0.5)
    assert (e.value.reason, e.value.line, e.value.returncode) == ("step", 2, None), vars(e.value)
    assert "(step_timeout)" in str(e.value) and e.value.verdict == "ran out of time (step_timeout)"
    # A parse error names its line.
    (ctx / "Dockerfile").write_text("FROM busybox:1\nNOPE x\n")
    with pytest.raises(cagette.BuildError) as e:
        store.build(ctx, "nope:1")
    assert (e.value.reason, e.value.line, e.value.column) == ("parse", 2, 1), vars(e.value)
    assert names(store) == ["busybox:1"]
    assert leftovers() == []


def test_build_cancelled_from_the_progress_callback_tags_nothing(tmp_path, busybox_oci):
    store = store_with_base(tmp_path, busybox_oci)
    ctx = context(tmp_path, DOCKERFILE)

    # An exception in the callback cancels the build and propagates as itself.
    seen = []

    def boom(ev):
        seen.append(ev)
        if ev["kind"] == "step" and ev["n"] == 3:
            raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        store.build(ctx, "app:1", network="none", progress=boom)
    assert [e.get("n") for e in seen] == [1, 2, 3]  # the RUN step never ran
    assert names(store) == ["busybox:1"]
    with pytest.raises(cagette.ImageError):
        store.get("app:1")

    # Returning False cancels too: a BuildError (reason "cancelled").
    with pytest.raises(cagette.BuildError, match="cancelled") as e:
        store.build(ctx, "app:1", network="none", progress=lambda ev: False)
    assert e.value.reason == "cancelled"
    assert names(store) == ["busybox:1"]
    assert leftovers() == []

    # A build's base needs its blobs kept: refused clearly otherwise.
    plain = cagette.ImageStore(tmp_path / "plain")
    plain.import_image(busybox_oci, "busybox:1")
    with pytest.raises(cagette.BuildError) as e:
        plain.build(ctx, "app:1", network="none")
    assert (e.value.reason, e.value.line) == ("instruction", 1), vars(e.value)
    assert "keep_blobs=True" in str(e.value)
    assert names(plain) == ["busybox:1"]


def sleepers(tag):
    """Pids of processes whose command line is `sleep TAG`."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", tag.encode()]:
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_ctrl_c_cancels_a_running_run_step(tmp_path, busybox_oci):
    store = store_with_base(tmp_path, busybox_oci)
    ctx = context(tmp_path, "FROM busybox:1\nRUN sleep 4321\n")
    started = []

    def interrupt_soon(ev):
        # Once the RUN step starts: SIGINT to this process a second later, as Ctrl-C would send.
        if ev["kind"] == "step" and ev["n"] == 2:
            started.append(time.monotonic())
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        store.build(ctx, "app:1", network="none", progress=interrupt_soon)
    # Raised while the step ran (it would sleep for 72 minutes), its sandbox killed.
    assert started and time.monotonic() - started[0] < 60
    assert sleepers("4321") == []
    assert names(store) == ["busybox:1"]
    assert leftovers() == []


def test_build_pull_option_is_checked(tmp_path, busybox_oci):
    store = store_with_base(tmp_path, busybox_oci)
    ctx = context(tmp_path, DOCKERFILE)
    with pytest.raises(TypeError):
        store.build(ctx, "app:1", pull="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.build(ctx, "app:1", pull={"no_such_option": 1})
    with pytest.raises(ValueError, match="timeout"):
        store.build(ctx, "app:1", pull={"timeout": -1})
    assert names(store) == ["busybox:1"]
