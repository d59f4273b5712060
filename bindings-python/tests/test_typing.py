"""The type stubs: the example using the whole API passes mypy --strict, and mypy really sees
cagette's types (a wrong use is caught)."""

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def mypy(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", path], capture_output=True, text=True)


def test_example_passes_mypy_strict():
    r = mypy(os.path.join(ROOT, "examples", "python", "example.py"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_a_wrong_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import cagette\nr = cagette.run(['true'])\nx: str = r.returncode\n")
    r = mypy(str(bad))
    assert r.returncode == 1 and "Incompatible types" in r.stdout, r.stdout


def test_the_package_itself_passes_mypy_strict():
    r = mypy(os.path.join(ROOT, "bindings-python", "python", "cagette"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_progress_is_typed(tmp_path):
    bad = tmp_path / "bad_progress.py"
    bad.write_text("import cagette\ncagette.ImageStore().import_image('x', 'y', progress=lambda p: p['nope'])\n")
    r = mypy(str(bad))
    assert r.returncode == 1 and "nope" in r.stdout, r.stdout


def test_build_events_are_typed(tmp_path):
    # The events are a union of TypedDicts told apart by "kind": a key of one kind is an error
    # until the kind is checked.
    good = tmp_path / "good_build.py"
    good.write_text(
        "import cagette\n"
        "def show(e: cagette.BuildEvent) -> None:\n"
        "    if e['kind'] == 'step':\n"
        "        print(e['n'], e['total'], e['line'], e['text'])\n"
        "    elif e['kind'] == 'done':\n"
        "        print(e['manifest'])\n"
        "info = cagette.ImageStore().build('ctx', 'app:1', build_args={'V': '2'}, network='none', memory='256M', step_timeout=60, progress=show)\n"
        "print(info['manifest'])\n"
    )
    r = mypy(str(good))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad_build.py"
    bad.write_text("import cagette\ncagette.ImageStore().build('ctx', progress=lambda e: print(e['n']))\n")
    r = mypy(str(bad))
    assert r.returncode == 1 and '"n"' in r.stdout, r.stdout
