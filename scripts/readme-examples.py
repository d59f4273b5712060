#!/usr/bin/env python3
"""Runs, as written, every Python and JavaScript example of the READMEs (the Rust ones run as doc
tests of the core crate: `cargo test -p cagette --doc`).

    scripts/readme-examples.py [PYTHON] [README...]

PYTHON is the interpreter that has cagette installed (default: .venv/bin/python); the Node
examples import the package built in bindings-node/ (`npm run build` first). Each example runs
in a fresh directory holding a `src/` directory (examples bind `./src`) and a
`node_modules/cagette` link to bindings-node/, as in a project that depends on cagette. A
```python block with tests in it runs under pytest. A block right after a line
`<!-- not run: WHY -->` is skipped (shell sessions, output transcripts, sketches).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(path: str):
    """(line, language, code) of every fenced block that is to run."""
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        skipped = any(lines[k].startswith("<!-- not run") for k in range(max(0, start - 2), start))
        if not skipped:
            yield start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n"
        i = j + 1


def main() -> int:
    args = sys.argv[1:]
    python = args.pop(0) if args and not args[0].endswith(".md") else os.path.join(ROOT, ".venv/bin/python")
    readmes = args or [os.path.join(ROOT, p) for p in ("README.md", "bindings-python/README.md", "bindings-node/README.md")]
    failed = ran = 0
    for readme in readmes:
        for line, lang, code in blocks(readme):
            if lang == "python":
                name, cmd = "example.py", [python, "example.py"]
                if re.search(r"^def test_", code, re.M):
                    name, cmd = "test_example.py", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"]
            elif lang in ("js", "javascript", "mjs"):
                name, cmd = "example.mjs", ["node", "example.mjs"]
            else:
                continue
            where = f"{os.path.relpath(readme, ROOT)}:{line}"
            with tempfile.TemporaryDirectory(prefix="cagette-readme-") as d:
                os.mkdir(os.path.join(d, "src"))
                open(os.path.join(d, "src", "hello.txt"), "w").write("hello\n")
                os.makedirs(os.path.join(d, "node_modules"))
                os.symlink(os.path.join(ROOT, "bindings-node"), os.path.join(d, "node_modules", "cagette"))
                open(os.path.join(d, name), "w").write(code)
                r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=300)
            ran += 1
            if r.returncode != 0:
                failed += 1
                print(f"FAILED {where} ({lang}, exit {r.returncode}):\n{r.stdout}{r.stderr}", file=sys.stderr)
            else:
                print(f"ok     {where} ({lang})")
    print(f"{ran} README examples run, {failed} failed")
    return 1 if failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
