#!/usr/bin/env bash
# Side by side: `cagette run` against crun, runc, bwrap and unshare, on the same busybox rootfs
# and the same work (/bin/true), in one hyperfine run. Prints a table with ratios to cagette.
#
#   benches/compare.sh [RUNS]        (as root; needs: apt-get install crun runc bubblewrap
#                                     hyperfine busybox-static)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
for t in crun runc bwrap unshare hyperfine python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install crun runc bubblewrap hyperfine" >&2; exit 1; }
done
cargo build --release -q -p cagette-cli
# The static PIE build as well (scripts/build-static.sh; `BENCH_NO_STATIC=1` skips it).
static=()
if [ -z "${BENCH_NO_STATIC:-}" ]; then
  static_bin=$(scripts/build-static.sh -q | sed -n 1p)
fi
work=$(mktemp -d /tmp/cagette-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT
bundle=$work/bundle
scripts/make-busybox-rootfs.sh "$bundle/rootfs"
(cd "$bundle" && crun spec)
mkdir -p "$bundle/limits" && ln -s ../rootfs "$bundle/limits/rootfs"
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(p, "w"), indent=1)
# The same bundle with limits: 256 MiB memory, 64 pids, 1 CPU.
c["linux"].setdefault("resources", {}).update({"memory": {"limit": 268435456}, "pids": {"limit": 64}, "cpu": {"quota": 100000, "period": 100000}})
json.dump(c, open(p.replace("config.json", "limits/config.json"), "w"), indent=1)
PY
cagette=$PWD/target/release/cagette
root=$bundle/rootfs
if [ -n "${static_bin:-}" ]; then
  static=(-n "cagette (static-pie)" "$static_bin run --rootfs $root -- /bin/true")
fi
# The floor: the least a full-isolation start can do (../shared/bench/floor.c, static).
floor_src=${CAGETTE_FLOOR_C:-../shared/bench/floor.c}
floor=()
if [ -f "$floor_src" ] && cc -O2 -static -o "$work/floor" "$floor_src" 2>/dev/null; then
  floor=(-n floor "$work/floor $root /bin/true")
else
  echo "(no floor: $floor_src not found or not buildable; set CAGETTE_FLOOR_C)" >&2
fi
# crun refuses a "hybrid" host (cgroup v1 controllers plus an empty cgroup2 mount, like this one):
# run every tool in a private mount namespace without that empty cgroup2 mount.
hybrid=""
if [ -d /sys/fs/cgroup/unified ] && mountpoint -q /sys/fs/cgroup/unified; then hybrid=1; fi
${hybrid:+unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh} \
hyperfine -N --warmup 30 --runs "$runs" --export-json "$work/result.json" "${floor[@]}" \
  -n cagette "$cagette run --rootfs $root -- /bin/true" \
  "${static[@]}" \
  -n "cagette (limits)" "$cagette run --rootfs $root --memory 256M --pids 64 --cpus 1 -- /bin/true" \
  -n crun "crun run --bundle $bundle cagette-compare-crun" \
  -n "crun (limits)" "crun run --bundle $bundle/limits cagette-compare-crun-limits" \
  -n runc "runc run --bundle $bundle cagette-compare-runc" \
  -n bwrap "bwrap --unshare-all --bind $root / --proc /proc --dev /dev /bin/true" \
  -n unshare "unshare --user --map-root-user --pid --fork --mount --uts --ipc --net --root $root --mount-proc /bin/true" \
  >/dev/null
python3 - "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = next(x for x in r if x["command"] == "cagette")
floor = next((x for x in r if x["command"] == "floor"), None)
print(f"| tool | median (ms) | mean ± σ (ms) | vs cagette | vs floor |")
print(f"|---|---:|---:|---:|---:|")
for x in r:
    vs_floor = f"{x['median']/floor['median']:.2f}×" if floor else "-"
    print(f"| {x['command']} | {x['median']*1e3:.2f} | {x['mean']*1e3:.2f} ± {x['stddev']*1e3:.2f} | {x['median']/base['median']:.2f}× | {vs_floor} |")
PY
echo
echo "what each runs: cagette: user+pid+mount+uts+ipc+net+cgroup+time namespaces, pivot_root into the"
echo "rootfs, fresh /proc and sysfs, minimal /dev, tmpfs /tmp, masked paths, caps, no_new_privs;"
echo "crun/runc: \`crun spec\` defaults, no user namespace; bwrap: --unshare-all with /proc and /dev;"
echo "unshare: chroot (not pivot_root) with /proc. (limits): 256 MiB memory, 64 pids, 1 CPU, as cgroups."
