#!/usr/bin/env bash
# Throughput: JOBS runs of /bin/true on the same busybox rootfs with PARALLEL in flight, for the
# floor, `cagette run`, the library from PARALLEL threads (core/examples/throughput.rs), bwrap and
# crun; ROUNDS rounds with the tools interleaved; prints jobs/s per round and the median.
#
#   benches/throughput.sh [JOBS] [PARALLEL] [ROUNDS]   (as root; crun, bubblewrap, busybox-static, cc)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-1000}
par=${2:-2}
rounds=${3:-3}
for t in crun bwrap python3 cc; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install crun bubblewrap" >&2; exit 1; }
done
cargo build --release -q -p cagette-cli
cargo build --release -q -p cagette --example throughput
static_bin=""
[ -n "${BENCH_NO_STATIC:-}" ] || static_bin=$(scripts/build-static.sh -q | sed -n 1p)
cagette=$PWD/target/release/cagette
lib=$PWD/target/release/examples/throughput
work=$(mktemp -d /tmp/cagette-throughput.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/bundle/rootfs
scripts/make-busybox-rootfs.sh "$root" >/dev/null
(cd "$work/bundle" && crun spec && python3 - config.json <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["process"]["args"] = ["/bin/true"]; c["process"]["terminal"] = False
json.dump(c, open(sys.argv[1], "w"))
PY
)
cc -O2 -static -o "$work/floor" "${CAGETTE_FLOOR_C:-../shared/bench/floor.c}"
hybrid=""
if [ -d /sys/fs/cgroup/unified ] && mountpoint -q /sys/fs/cgroup/unified; then hybrid=1; fi

# name|command run by xargs with {} = the job's number
tools=(
  "floor|$work/floor $root /bin/true"
  "cagette run|$cagette run --rootfs $root -- /bin/true"
  ${static_bin:+"cagette run (static-pie)|$static_bin run --rootfs $root -- /bin/true"}
  "bwrap|bwrap --unshare-all --bind $root / --proc /proc --dev /dev /bin/true"
  "crun|crun run --bundle $work/bundle tp-{}"
)
rate() { python3 -c "import sys; print(f'{$1 / ($3 - $2):.1f}')" ; }
declare -A results
for r in $(seq "$rounds"); do
  for t in "${tools[@]}"; do
    name=${t%%|*} cmd=${t#*|}
    s=$(date +%s.%N)
    if [ "$name" = crun ] && [ -n "$hybrid" ]; then
      # crun refuses a hybrid cgroup host: in a mount namespace without the empty cgroup2 mount.
      unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified && seq $jobs | xargs -P $par -I{} $cmd"
    else
      # shellcheck disable=SC2086 # the command's words
      seq "$jobs" | xargs -P "$par" -I{} $cmd >/dev/null
    fi
    e=$(date +%s.%N)
    results[$name]+="$(rate "$jobs" "$s" "$e") "
  done
  s=$(date +%s.%N)
  "$lib" "{\"argv\":[\"/bin/true\"],\"rootfs\":\"$root\"}" "$jobs" "$par" >/dev/null
  e=$(date +%s.%N)
  results["library ($par threads)"]+="$(rate "$jobs" "$s" "$e") "
done
echo "| tool | jobs/s per round | median |"
echo "|---|---|---:|"
for k in floor "cagette run" ${static_bin:+"cagette run (static-pie)"} "library ($par threads)" bwrap crun; do
  v=${results[$k]}
  med=$(python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $v)
  echo "| $k | $v | $med |"
done
