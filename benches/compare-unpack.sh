#!/usr/bin/env bash
# Side by side: unpacking the same multi-layer gzip OCI image with `cagette image import` (into
# a fresh store: verify, decompress, apply every layer), `umoci raw unpack`, `umoci unpack`, and
# GNU `tar -xzf` of each layer blob in turn. Everything on tmpfs; one hyperfine run; a table of
# MB/s (uncompressed layer bytes per second) and of ratios to cagette.
#
#   benches/compare-unpack.sh [RUNS] [LAYER-DIRS...]     (as root; needs umoci, hyperfine, gzip)
#
# By default the image has three layers made from this host's /usr/bin, /usr/include+/usr/sbin
# and /usr/share, as GNU tar + gzip -6 blobs (benches/make-bench-image.py); it is cached in
# target/bench-image until the script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
layers=("$@")
[ ${#layers[@]} -gt 0 ] || layers=(/usr/bin /usr/include,/usr/sbin /usr/share)
for t in umoci hyperfine gzip python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install umoci hyperfine gzip python3" >&2; exit 1; }
done
cargo build --release -q -p cagette-cli
cagette=$PWD/target/release/cagette
. benches/lib.sh
bench_image "${layers[@]}"
work=$(mktemp -d /dev/shm/cagette-unpack.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The image itself on tmpfs too, so that no tool waits on the disk.
cp -r "$image" "$work/image"
img=$work/image
blobs=$(python3 - "$img" <<'PY'
import json, sys, os
lay = sys.argv[1]
idx = json.load(open(os.path.join(lay, "index.json")))
m = json.load(open(os.path.join(lay, "blobs/sha256", idx["manifests"][0]["digest"][7:])))
print(" ".join(os.path.join(lay, "blobs/sha256", l["digest"][7:]) for l in m["layers"]))
PY
)
raw_bytes=$(for b in $blobs; do gzip -dc "$b" | wc -c; done | paste -sd+ | bc)
gz_bytes=$(du -cb $blobs | tail -1 | cut -f1)
tarx="set -e; for b in $blobs; do tar --numeric-owner -xzf \$b -C $work/out; done"
hyperfine --warmup 1 --runs "$runs" --export-json "$work/result.json" \
  --prepare "rm -rf $work/out $work/store; mkdir -p $work/out; sync" \
  -n cagette "$cagette image import --store $work/store $img --name bench:1" \
  -n "umoci raw unpack" "umoci raw unpack --rootless=false --image $img:bench $work/out/rootfs" \
  -n "umoci unpack" "umoci unpack --image $img:bench $work/out/bundle" \
  -n "tar -xzf (each layer)" "sh -c '$tarx'" \
  >/dev/null
python3 - "$work/result.json" "$raw_bytes" "$gz_bytes" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
raw, gz = int(sys.argv[2]), int(sys.argv[3])
base = next(x for x in r if x["command"] == "cagette")
print(f"image: {raw/1e6:.0f} MB of layer tars, {gz/1e6:.0f} MB gzip; {len(r)} tools")
print("| tool | median (s) | mean ± σ (s) | MB/s (uncompressed) | cagette is |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print(f"| {x['command']} | {x['median']:.2f} | {x['mean']:.2f} ± {x['stddev']:.2f} | {raw/1e6/x['median']:.0f} | {x['median']/base['median']:.2f}× faster |")
PY
