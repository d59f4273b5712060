#!/usr/bin/env bash
# Side by side, in one hyperfine run on the same busybox bundle running /bin/true:
# cagette-runtime, crun and runc through `run`, and through `create` + `start` + wait + `delete`;
# then `podman run --rm … true` with each runtime; and the bundle's floor (benches/runtime-floor.c:
# the least kernel work that runs this bundle, as floor.c is for `cagette run`), also built with
# musl when musl-gcc is there. Prints a table with ratios to crun, and the `run` lines' ratios
# to the floor(s).
#
#   benches/compare-runtime.sh [RUNS]     (as root; needs: apt-get install crun runc podman
#                                          hyperfine busybox-static gcc)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
for t in crun runc podman hyperfine python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install crun runc podman hyperfine" >&2; exit 1; }
done
cargo build --release -q -p cagette-runtime
rt=$PWD/target/release/cagette-runtime
# The static PIE build as well (scripts/build-static.sh; `BENCH_NO_STATIC=1` skips it).
static=()
if [ -z "${BENCH_NO_STATIC:-}" ]; then
  srt=$(scripts/build-static.sh -q | tail -n1)
fi
work=$(mktemp -d /tmp/cagette-compare-runtime.XXXXXX)
cc -O2 -static -o "$work/runtime-floor" benches/runtime-floor.c
# The same floor without glibc's start (its CPU probes, which a virtual machine traps), when
# musl-gcc is there (apt-get install musl-tools).
musl_floor=()
if command -v musl-gcc >/dev/null && musl-gcc -O2 -static -o "$work/runtime-floor-musl" benches/runtime-floor.c; then
  musl_floor=(-n "floor for this bundle (musl)" "$work/runtime-floor-musl $work/bundle/rootfs /bin/true")
fi
cleanup() {
  for r in "$rt" crun runc; do "$r" --root "$work/state-$(basename "$r")" delete --force bench >/dev/null 2>&1 || true; done
  podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs system reset -f >/dev/null 2>&1 || true
  for h in /sys/fs/cgroup/*/; do [ -d "${h}cagette-bench" ] && find "${h}cagette-bench" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  # The floor's cgroups, had a run of it been cut short.
  for d in /sys/fs/cgroup/*/cagette-floor-* /sys/fs/cgroup/cagette-floor-*; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
bundle=$work/bundle
if [ -n "${srt:-}" ]; then
  static=(-n "cagette-runtime (static-pie) run" "$srt --root $work/state-static run --bundle $bundle bench")
fi
scripts/make-busybox-rootfs.sh "$bundle/rootfs"
(cd "$bundle" && crun spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
# A cgroup path of our own: runc puts an empty one below its caller's cgroup.
c["linux"]["cgroupsPath"] = "/cagette-bench/bench"
json.dump(c, open(p, "w"), indent=1)
PY
tar -C "$bundle/rootfs" -cf "$work/rootfs.tar" .
P="podman --root $work/storage --runroot $work/run --storage-driver vfs --events-backend file --cgroup-manager cgroupfs"
$P import "$work/rootfs.tar" localhost/bench:latest >/dev/null
U="--ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --network none --cgroup-parent /cagette-bench"
# create + start + wait until stopped + delete, the same shell loop for every runtime.
lifecycle() {
  local r=$1 root=$work/state-$(basename "$1")
  echo "sh -c '$r --root $root create --bundle $bundle bench >/dev/null && $r --root $root start bench && until $r --root $root state bench | grep -q stopped; do :; done; $r --root $root delete bench'"
}
# crun refuses a "hybrid" host (cgroup v1 controllers plus an empty cgroup2 mount, like this
# one): everything runs in a private mount namespace without that empty cgroup2 mount.
hybrid=""
if [ -d /sys/fs/cgroup/unified ] && mountpoint -q /sys/fs/cgroup/unified; then hybrid=1; fi
${hybrid:+unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh} \
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/result.json" \
  -n "floor for this bundle" "$work/runtime-floor $bundle/rootfs /bin/true" \
  "${musl_floor[@]}" \
  -n "cagette-runtime run" "$rt --root $work/state-cagette-runtime run --bundle $bundle bench" \
  "${static[@]}" \
  -n "crun run" "crun --root $work/state-crun run --bundle $bundle bench" \
  -n "runc run" "runc --root $work/state-runc run --bundle $bundle bench" \
  -n "cagette-runtime create+start+delete" "$(lifecycle "$rt")" \
  -n "crun create+start+delete" "$(lifecycle crun)" \
  -n "runc create+start+delete" "$(lifecycle runc)" \
  -n "podman + cagette-runtime" "$P --runtime $rt run --rm $U localhost/bench true" \
  -n "podman + crun" "$P --runtime /usr/bin/crun run --rm $U localhost/bench true" \
  >/dev/null
python3 - "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
by = {x["command"]: x for x in r}
print("| command | median (ms) | mean ± σ (ms) | vs crun's |")
print("|---|---:|---:|---:|")
floor = by["floor for this bundle"]
musl = by.get("floor for this bundle (musl)")
for x in r:
    name = x["command"]
    if x is floor or x is musl:
        continue
    ref = by.get(name.replace("cagette-runtime", "crun").replace("runc", "crun"), by["crun run"])
    if name.startswith("podman"):
        ref = by["podman + crun"]
    print(f"| {name} | {x['median']*1e3:.2f} | {x['mean']*1e3:.2f} ± {x['stddev']*1e3:.2f} | {x['median']/ref['median']:.2f}× |")
print()
crun = by["crun run"]["median"]
print(f"Floor for this bundle (benches/runtime-floor.c): {floor['median']*1e3:.2f} ms, {floor['median']/crun:.2f}× crun's `run`.")
if musl:
    print(f"The same built with musl: {musl['median']*1e3:.2f} ms, {musl['median']/crun:.2f}× crun's `run`.")
print("| `run` | vs the floor |" + (" vs the musl floor |" if musl else ""))
print("|---|---:|" + ("---:|" if musl else ""))
for x in r:
    if x["command"].endswith(" run"):
        extra = f" {x['median']/musl['median']:.2f}× |" if musl else ""
        print(f"| {x['command']} | {x['median']/floor['median']:.2f}× |{extra}")
PY
