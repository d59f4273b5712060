#!/usr/bin/env bash
# The pytest plugin's cost on real third-party suites (toolz, more-itertools), side by side in one
# hyperfine run per suite: plain pytest against `pytest --cagette` with each isolation (a fresh
# process per test, per module, per session) and, once, a fresh sandbox per test.
#
#   benches/pytest-plugin.sh [RUNS]     (as root; needs hyperfine and the project's .venv with
#                                        cagette installed: see scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
py=$PWD/.venv/bin/python
command -v hyperfine >/dev/null || { echo "missing hyperfine: apt-get install hyperfine" >&2; exit 1; }
"$py" -c 'import cagette' || { echo "cagette is not installed in .venv: run scripts/test.sh (or maturin develop)" >&2; exit 1; }
work=target/bench-pytest
mkdir -p "$work"
fetch() { # name version
  [ -d "$work/$1-$2" ] && return
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$work" "$1==$2"
  tar -xzf "$work/$1-$2.tar.gz" -C "$work"
}
fetch toolz 1.0.0
fetch more-itertools 10.5.0
bench() { # dir tests-path
  local dir=$1 tests=$2 n
  n=$(cd "$dir" && "$py" -m pytest -q -p no:cacheprovider --co "$tests" 2>/dev/null | grep -Eo '^[0-9]+ tests? collected' | grep -Eo '^[0-9]+')
  echo "== $dir: $n tests"
  (cd "$dir" && hyperfine -N --warmup 1 --runs "$runs" --export-json /tmp/cagette-bench-pytest.json \
    -n plain "$py -m pytest -q -p no:cacheprovider $tests" \
    -n "cagette, isolation=test" "$py -m pytest -q -p no:cacheprovider --cagette $tests" \
    -n "cagette, isolation=module" "$py -m pytest -q -p no:cacheprovider --cagette --cagette-isolation=module $tests" \
    -n "cagette, isolation=session" "$py -m pytest -q -p no:cacheprovider --cagette --cagette-isolation=session $tests" >/dev/null)
  "$py" - "$n" <<'PY'
import json, sys
n = int(sys.argv[1])
r = json.load(open("/tmp/cagette-bench-pytest.json"))["results"]
base = r[0]["median"]
print(f"| command | median | added per test |\n|---|---:|---:|")
for x in r:
    print(f"| {x['command']} | {x['median']:.2f} s | {(x['median'] - base) / n * 1000:+.1f} ms |")
PY
}
bench "$work/toolz-1.0.0" toolz
bench "$work/more-itertools-10.5.0" tests
# A fresh sandbox per test costs a new Python per test: measured once, on one module.
echo "== isolation=sandbox, once, on toolz/tests/test_functoolz.py"
(cd "$work/toolz-1.0.0" && hyperfine -N --runs 1 \
  -n plain "$py -m pytest -q -p no:cacheprovider toolz/tests/test_functoolz.py" \
  -n "cagette, isolation=sandbox" "$py -m pytest -q -p no:cacheprovider --cagette --cagette-isolation=sandbox toolz/tests/test_functoolz.py")
