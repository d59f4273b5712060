import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

pytest_plugins = ["pytester"]

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs (built once by the Rust tests' script); tests only read it."""
    d = tmp_path_factory.mktemp("busybox-rootfs") / "rootfs"
    subprocess.run(["sh", os.path.join(ROOT, "scripts", "make-busybox-rootfs.sh"), str(d)], check=True)
    return d


@pytest.fixture(scope="session")
def oci_layout_of() -> Callable[[Path, Path], Path]:
    """Packs a directory tree into a new OCI layout `WORK/oci` (image `t`, one layer) with umoci:
    the tests' way to make an image without a registry. Returns the layout's path."""
    if shutil.which("umoci") is None:
        pytest.fail("umoci is needed (apt-get install umoci)")

    def make(tree: Path, work: Path) -> Path:
        lay = work / "oci"
        bundle = work / "bundle"
        subprocess.run(["umoci", "init", "--layout", str(lay)], check=True)
        subprocess.run(["umoci", "new", "--image", f"{lay}:t"], check=True)
        subprocess.run(["umoci", "unpack", "--image", f"{lay}:t", str(bundle)], check=True, capture_output=True)
        subprocess.run(["cp", "-a", f"{tree}/.", str(bundle / "rootfs")], check=True)
        subprocess.run(["umoci", "repack", "--image", f"{lay}:t", str(bundle)], check=True)
        return lay

    return make
