#!/usr/bin/env bash
# Side by side: pulling the same multi-layer gzip image from a loopback registry (Debian's
# docker-registry, started here) with `cagette image pull`, `podman pull`, `ctr images pull`
# (containerd, started here with its own root) and `skopeo copy` to an OCI layout followed by
# `umoci raw unpack`; each into a fresh store on tmpfs, in one hyperfine run. Then a pull of an
# image whose layers are all in the store already.
#
#   benches/compare-pull.sh [RUNS] [LAYER-DIRS...]   (as root; needs docker-registry, skopeo,
#                                                    umoci, podman, containerd, hyperfine)
#
# The image is benches/make-bench-image.py's (the same as compare-unpack.sh's, cached in
# target/bench-image).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
layers=("$@")
[ ${#layers[@]} -gt 0 ] || layers=(/usr/bin /usr/include,/usr/sbin /usr/share)
for t in docker-registry skopeo umoci podman ctr containerd hyperfine python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install docker-registry skopeo umoci podman containerd hyperfine" >&2; exit 1; }
done
cargo build --release -q -p cagette-cli
cagette=$PWD/target/release/cagette
. benches/lib.sh
bench_image "${layers[@]}"
work=$(mktemp -d /dev/shm/cagette-pull.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # containerd runs detached (setsid, restarted by ctrd-restart.sh below): by its command line.
  pkill -f "containerd --config $work/containerd.toml" 2>/dev/null || true
  wait 2>/dev/null || true
  umount -R "$work/containerd/root" 2>/dev/null || true
  umount -R "$work/podman" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_registry "$work"
pids+=("$reg_pid")
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$image:bench" "docker://$reg/bench:1"

# containerd with its own root, state and socket; restarted empty before each of its runs.
ctrd="$work/containerd"
cat > "$work/containerd.toml" <<EOF
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctrd/sock"
EOF
cat > "$work/ctrd-restart.sh" <<EOF
#!/bin/sh
pkill -f "containerd --config $work/containerd.toml" 2>/dev/null
sleep 0.2
umount -R "$ctrd/root" 2>/dev/null
rm -rf "$ctrd"
mkdir -p "$ctrd"
setsid containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 < /dev/null &
for i in \$(seq 100); do [ -S "$ctrd/sock" ] && exit 0; sleep 0.05; done
exit 1
EOF
chmod +x "$work/ctrd-restart.sh"
"$work/ctrd-restart.sh"

raw_bytes=$(python3 - "$image" <<'PY'
import json, os, sys
lay = sys.argv[1]
idx = json.load(open(os.path.join(lay, "index.json")))
m = json.load(open(os.path.join(lay, "blobs/sha256", idx["manifests"][0]["digest"][7:])))
print(sum(l["size"] for l in m["layers"]))
PY
)
podman="podman --root $work/podman/root --runroot $work/podman/run --storage-driver overlay"
hyperfine --runs "$runs" --export-json "$work/result.json" \
  -n "cagette image pull" --prepare "rm -rf $work/store" "$cagette image pull --store $work/store -q $reg/bench:1" \
  -n "podman pull" --prepare "$podman rmi -a -f >/dev/null 2>&1 || true; rm -rf $work/podman/root/overlay-layers $work/podman/root/overlay-images" "$podman pull -q --tls-verify=false $reg/bench:1" \
  -n "ctr images pull" --prepare "$work/ctrd-restart.sh" "ctr -a $ctrd/sock -n bench images pull -q --plain-http $reg/bench:1" \
  -n "skopeo copy + umoci raw unpack" --prepare "rm -rf $work/oci $work/rootfs" "sh -c 'skopeo --insecure-policy copy -q --src-tls-verify=false docker://$reg/bench:1 oci:$work/oci:t && umoci raw unpack --image $work/oci:t $work/rootfs'" \
  -n "skopeo copy (download only)" --prepare "rm -rf $work/oci" "skopeo --insecure-policy copy -q --src-tls-verify=false docker://$reg/bench:1 oci:$work/oci:t" \
  >/dev/null
# Every layer already in the store: only the manifest and config are fetched.
"$cagette" image pull --store "$work/warm" -q "$reg/bench:1"
hyperfine -N --warmup 3 --runs 30 --export-json "$work/warm.json" -n "cagette image pull (all layers present)" "$cagette image pull --store $work/warm -q $reg/bench:1" >/dev/null
python3 - "$work/result.json" "$work/warm.json" "$raw_bytes" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"] + json.load(open(sys.argv[2]))["results"]
gz = int(sys.argv[3])
base = r[0]["median"]
print(f"image: {gz/1e6:.0f} MB of gzip layers; {len(r)} commands")
print("| command | median (s) | mean ± σ (s) | cagette is |")
print("|---|---:|---:|---:|")
for x in r:
    print(f"| {x['command']} | {x['median']:.3f} | {x['mean']:.3f} ± {x['stddev']:.3f} | {x['median']/base:.2f}× faster |")
PY
