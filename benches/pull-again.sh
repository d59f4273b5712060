#!/usr/bin/env bash
# `cagette image pull` of an image whose layers are all in the store (the registry is asked for
# the manifest and config, nothing else): the CLI, a new process each time, as a user runs it.
#
#   benches/pull-again.sh [RUNS] [OTHER_CAGETTE]   (as root; needs docker-registry, skopeo, umoci,
#                                                   hyperfine, busybox-static)
# With OTHER_CAGETTE (another build of the CLI), both run side by side in one hyperfine run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-60}
other=${2:-}
for t in docker-registry skopeo umoci hyperfine python3; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install docker-registry skopeo umoci hyperfine" >&2; exit 1; }
done
cargo build --release -q -p cagette-cli
cagette=$PWD/target/release/cagette
work=$(mktemp -d /dev/shm/cagette-pull-again.XXXXXX)
reg_pid=""
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A one-layer busybox image, as an OCI layout (umoci), pushed to a loopback registry (skopeo).
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:bb" >/dev/null
umoci unpack --rootless --image "$work/oci:bb" "$work/bundle" >/dev/null
cp -a "$work/rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$work/oci:bb" "$work/bundle" >/dev/null
. benches/lib.sh
start_registry "$work"
port=${reg##*:}
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$work/oci:bb" "docker://$reg/bb:1"

ref=$reg/bb:1
"$cagette" image pull --store "$work/store" "$ref" >/dev/null 2>&1
cmds=(-n "cagette image pull (present)" "$cagette image pull --store $work/store $ref")
if [ -n "$other" ]; then
  "$other" image pull --store "$work/store-other" "$ref" >/dev/null 2>&1
  cmds+=(-n "other build" "$other image pull --store $work/store-other $ref")
fi
"$cagette" image pull --store "$work/store" "$ref"   # says what it pulled
# It does ask the registry (the tag may have moved): count its connections in one pull.
strace -f -e trace=connect -o "$work/strace" "$cagette" image pull --store "$work/store" "$ref" >/dev/null 2>&1
echo "connections to the registry in one pull: $(grep -c "htons($port)" "$work/strace")"
hyperfine -N --warmup 5 --runs "$runs" "${cmds[@]}"
