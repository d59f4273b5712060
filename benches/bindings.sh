#!/usr/bin/env bash
# Spawn-to-exit of /bin/true, same spec: the Rust library vs the Python binding (and the Node
# binding when built), medians of N runs each, interleaved in rounds to share the machine's noise.
#   benches/bindings.sh [N]  (N runs per round (50), ROUNDS rounds (20); needs .venv with cagette
#                            installed by maturin develop, and bindings-node built for Node)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
spec='{"argv":["/bin/true"],"stdin":"null","stdout":"null","stderr":"null"}'
cargo build -q --release -p cagette --example spawn_median
rust=() py=() node=()
for round in $(seq 1 ${ROUNDS:-20}); do
  rust+=("$(target/release/examples/spawn_median "$spec" "$n")")
  py+=("$(.venv/bin/python - "$spec" "$n" <<'PY'
import json, sys, time, cagette
spec, n = json.loads(sys.argv[1]), int(sys.argv[2])
argv = spec.pop("argv"); spec.pop("stdin"); spec.pop("stdout"); spec.pop("stderr")
for _ in range(20): cagette.run(argv, stdin=cagette.DEVNULL, stdout=cagette.DEVNULL, stderr=cagette.DEVNULL, **spec)
t = []
for _ in range(n):
    s = time.perf_counter(); cagette.run(argv, stdin=cagette.DEVNULL, stdout=cagette.DEVNULL, stderr=cagette.DEVNULL, **spec); t.append(time.perf_counter() - s)
t.sort(); print(f"{t[n // 2] * 1e3:.4f}")
PY
)")
  if [ -f bindings-node/native.js ] && ls bindings-node/*.node >/dev/null 2>&1; then
    node+=("$(node bindings-node/bench/spawn.mjs "$n")")
  fi
done
med() { printf "%s\n" "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
r=$(med "${rust[@]}"); p=$(med "${py[@]}")
echo "| front end | median spawn->exit (ms) | vs Rust |"
echo "|---|---:|---:|"
echo "| Rust library | $r | 1.00x |"
echo "| Python cagette.run | $p | $(python3 -c "print(f'{$p/$r:.2f}x')") |"
if [ ${#node[@]} -gt 0 ]; then
  m=$(med "${node[@]}"); echo "| Node await run() | $m | $(python3 -c "print(f'{$m/$r:.2f}x')") |"
fi
