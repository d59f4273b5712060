#!/usr/bin/env bash
# `cagette build` against `buildah bud`, side by side in one hyperfine run, on the same context:
# a Dockerfile of FROM (a busybox image), ENV, COPY of a source tree of FILES files, two RUN
# steps that write files, and CMD. Cold: a fresh store holding only the base image, every step
# runs (the store's reset is not timed). Cached: the same build again, nothing changed.
#
#   benches/compare-build.sh [RUNS] [FILES]   (as root; needs: apt-get install buildah hyperfine
#                                              busybox-static python3)
#
# buildah uses its overlay storage driver and its default runtime (crun on Debian 12), which
# refuses a "hybrid" cgroup host (v1 controllers plus an empty cgroup2 mount, like this one):
# everything runs in a private mount namespace without that empty cgroup2 mount.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
files=${2:-3000}
for t in buildah hyperfine python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install buildah hyperfine python3" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (cagette build needs it for now)" >&2; exit 1; }
cargo build --release -q -p cagette-cli
cg=$PWD/target/release/cagette
# (lowercase: buildah names an image pulled from oci:DIR after the path)
work=/var/tmp/cagette-compare-build-$$
mkdir "$work"
# On a tmpfs by default: a cold build makes thousands of files where the previous run's store was
# just removed, and ext4 then skips each recently deleted inode while allocating (seen here:
# 80 % of a cold build in ext4's recently_deleted()), which times the file system more than the
# tools. BENCH_ON_DISK=1 keeps everything on the disk instead.
if [ -z "${BENCH_ON_DISK:-}" ]; then mount -t tmpfs -o size=6g,mode=0700 cagette-bench "$work"; fi
B="buildah --root $work/buildah/root --runroot $work/buildah/run --storage-driver overlay"
cleanup() {
  $B rm -a >/dev/null 2>&1 || true
  $B rmi -a -f >/dev/null 2>&1 || true
  umount -R "$work/buildah/root/overlay" 2>/dev/null || true
  if mountpoint -q "$work"; then umount -R "$work"; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The base: the busybox rootfs as a one-layer OCI layout (with history, which buildah wants).
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
python3 scripts/make-busybox-image.py "$work/rootfs" "$work/base"

# The context: FILES files of 1-4 KiB in 50 directories, and the Dockerfile.
python3 - "$work/ctx" "$files" <<'PY'
import os, sys
ctx, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = f"{ctx}/src/pkg{i % 50:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/file{i:05d}.txt", "w") as f:
        f.write((f"line {i}\n" * (128 + (i * 37) % 384)))
PY
cat > "$work/ctx/Dockerfile" <<'EOF'
FROM localhost/busybox:1
ENV APP=/app
COPY src/ /app/src/
RUN mkdir -p /app/out && for i in $(seq 1 200); do echo "$i" > /app/out/$i.txt; done
RUN find /app/src -type f | wc -l > /app/count && rm -rf /app/src/pkg00
CMD ["cat", "/app/count"]
EOF

reset_cagette() {
  echo "rm -rf $work/store && $cg image --store $work/store import $work/base --name localhost/busybox:1 --keep-blobs -q >/dev/null"
}
reset_buildah() {
  echo "$B rmi -a -f >/dev/null 2>&1; $B pull -q oci:$work/base >/dev/null && $B tag \$($B images -q | head -1) localhost/busybox:1"
}
hybrid=""
if [ -d /sys/fs/cgroup/unified ] && mountpoint -q /sys/fs/cgroup/unified; then hybrid=1; fi
# One build of each first, so that the cached runs have a cache.
${hybrid:+unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh} \
  sh -c "$(reset_cagette) && $(reset_buildah) && $cg build --store $work/store -q -t app:1 $work/ctx >/dev/null && $B bud -q --layers -t app:1 $work/ctx >/dev/null"
${hybrid:+unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh} \
hyperfine --warmup 1 --runs "$runs" --export-json "$work/result.json" \
  --prepare "$(reset_cagette)" --prepare "$(reset_buildah)" --prepare true --prepare true \
  -n "cagette build, cold" "$cg build --store $work/store -q -t app:1 $work/ctx" \
  -n "buildah bud, cold" "$B bud -q --layers -t app:1 $work/ctx" \
  -n "cagette build, cached" "$cg build --store $work/store -q -t app:1 $work/ctx" \
  -n "buildah bud, cached" "$B bud -q --layers -t app:1 $work/ctx" \
  >/dev/null 2>"$work/hyperfine.err" || { cat "$work/hyperfine.err" >&2; exit 1; }
python3 - "$work/result.json" "$files" "${BENCH_ON_DISK:+on disk (ext4)}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
by = {x["command"]: x for x in r}
print(f"context: {sys.argv[2]} files; stores {sys.argv[3] or 'on a tmpfs'}")
print("| command | median (ms) | mean ± σ (ms) | buildah's / cagette's |")
print("|---|---:|---:|---:|")
for x in r:
    other = by[x["command"].replace("cagette build", "buildah bud")] if x["command"].startswith("cagette") else x
    print(f"| {x['command']} | {x['median']*1e3:.1f} | {x['mean']*1e3:.1f} ± {x['stddev']*1e3:.1f} | {other['median']/x['median']:.2f}× |")
PY
