#!/usr/bin/env bash
# The CLI's own start, and `run` against the floor, for builds of the CLI side by side:
#
#   benches/cli-start.sh [RUNS] [NAME=CAGETTE_BINARY ...]   (as root; hyperfine, busybox-static, cc)
#
# Without binaries, target/release/cagette. In one hyperfine run each: `--version` of every build
# next to a static hello-world's exec, then `run --rootfs R -- /bin/true` of every build next to
# ../shared/bench/floor.c. Page faults per `--version` from `perf stat` where perf is installed.
# Build variants with cargo's profile variables and their own target dirs, e.g.:
#   CARGO_PROFILE_RELEASE_PANIC=abort CARGO_TARGET_DIR=target/v-abort cargo build --release -p cagette-cli
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
shift || true
builds=("$@")
if [ ${#builds[@]} -eq 0 ]; then
  cargo build --release -q -p cagette-cli
  builds=("current=$PWD/target/release/cagette")
fi
work=$(mktemp -d /tmp/cagette-cli-start.XXXXXX)
trap 'rm -rf "$work"' EXIT
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
printf '#include <stdio.h>\nint main(void){puts("cagette 0.1.0");return 0;}\n' > "$work/hello.c"
cc -O2 -static -o "$work/hello" "$work/hello.c"
floor_src=${CAGETTE_FLOOR_C:-../shared/bench/floor.c}
cc -O2 -static -o "$work/floor" "$floor_src"

version=(-n "static hello" "$work/hello")
run=(-n floor "$work/floor $work/rootfs /bin/true")
for b in "${builds[@]}"; do
  name=${b%%=*} bin=${b#*=}
  printf '%-24s %8s bytes\n' "$name" "$(stat -c %s "$bin")"
  version+=(-n "$name --version" "$bin --version")
  run+=(-n "$name run" "$bin run --rootfs $work/rootfs -- /bin/true")
  if command -v perf >/dev/null; then
    perf stat -x, -e page-faults -r 50 "$bin" --version 2>&1 >/dev/null | awk -F, -v n="$name" '/page-faults/ {printf "%-24s %8s page faults per --version\n", n, $1}'
  fi
done
hyperfine -N --warmup 30 --runs "$runs" --export-markdown "$work/version.md" "${version[@]}" >/dev/null
cat "$work/version.md"
echo
hyperfine -N --warmup 30 --runs "$runs" --export-markdown "$work/run.md" "${run[@]}" >/dev/null
cat "$work/run.md"
