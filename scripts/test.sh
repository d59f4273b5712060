#!/usr/bin/env bash
# Runs every test of cagette against the real kernel. Installs what the tests need on a fresh
# Debian machine (as root). This is the command README.md shows and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
static_busybox() { command -v busybox >/dev/null && ! file -L "$(command -v busybox)" 2>/dev/null | grep -q dynamic; }
command -v file >/dev/null || need_apt+=(file)
static_busybox || need_apt+=(busybox-static)
command -v python3 >/dev/null || need_apt+=(python3)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v skopeo >/dev/null || need_apt+=(skopeo)
# Registry tests: Debian's docker-registry (the CNCF distribution registry), htpasswd, openssl.
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v podman >/dev/null || need_apt+=(podman)   # pulls what cagette pushed
command -v buildah >/dev/null || need_apt+=(buildah) # cagette build compared with buildah bud
command -v runc >/dev/null || need_apt+=(runc)       # podman runs a built image (crun refuses hybrid cgroups)
command -v containerd >/dev/null || need_apt+=(containerd)     # cagette-runtime under ctr
command -v script >/dev/null || need_apt+=(bsdutils)           # terminals in the engine tests
command -v slirp4netns >/dev/null || need_apt+=(slirp4netns)   # network "private"
command -v ip >/dev/null || need_apt+=(iproute2)     # the network tests' "remote" namespace
command -v nft >/dev/null || need_apt+=(nftables)    # network "bridge"
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_apt[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== build"
cargo build --workspace --all-targets --quiet
# The small C benchmarks (benches/README.md) are not run here, but they must keep building.
for c in benches/*.c; do cc -O2 -Wall -Werror -static -o /dev/null "$c"; done
# network "bridge" needs IPv4 forwarding on, and cagette never turns it on itself: as root, it
# is turned on for the tests (which check the refusal when it is off) and put back at the end.
fwd_was=""
if [ "$(id -u)" -eq 0 ] && [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 0 ]; then
  fwd_was=0
  sysctl -qw net.ipv4.ip_forward=1
fi
restore_fwd() { if [ -n "$fwd_was" ]; then sysctl -qw net.ipv4.ip_forward="$fwd_was"; fi; fwd_was=""; }
# Two things cagette keeps on a host by design, which the suite removes at the end when it made
# them: network "bridge"'s nftables table (shared by every job, so never removed with one) and
# the rootless run's runtime directory of uid 65534 (its named sandboxes' records live there
# when it has no XDG_RUNTIME_DIR, as /run/cagette does for root).
nft_was=""
rootless_dir_was=""
if [ "$(id -u)" -eq 0 ]; then
  if command -v nft >/dev/null && nft list table inet cagette >/dev/null 2>&1; then nft_was=1; fi
  if [ -e /tmp/cagette-65534 ]; then rootless_dir_was=1; fi
fi
tun_mode=""
on_exit() {
  restore_fwd
  if [ -n "$tun_mode" ]; then chmod "$tun_mode" /dev/net/tun; tun_mode=""; fi
  if [ "$(id -u)" -eq 0 ]; then
    if [ -z "$nft_was" ] && command -v nft >/dev/null; then nft delete table inet cagette 2>/dev/null || true; fi
    if [ -z "$rootless_dir_was" ]; then rm -rf /tmp/cagette-65534; fi
  fi
}
trap on_exit EXIT
echo "== tests (library, CLI, doc examples)"
cargo test --workspace

if [ "$(id -u)" -eq 0 ]; then
  echo "== escape suite again, as root with a rootfs of its own"
  CAGETTE_ESCAPE_ROOTFS=1 cargo test -q -p cagette --test escape
  echo "== escape suite, named sandboxes and private networks again, rootless (as nobody, through an unprivileged user namespace)"
  tmpbin=$(mktemp -d /tmp/cagette-rootless.XXXXXX)
  for t in escape named network; do
    bin=$(cargo test -q -p cagette --test "$t" --no-run --message-format=json 2>/dev/null \
          | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
    cp "$bin" "$tmpbin/$t"
  done
  chmod -R a+rX "$tmpbin" target/tmp
  # slirp4netns run by a user opens /dev/net/tun: most distributions ship it 0666, this kind of
  # VM 0600. Opened up for the rootless run only, and put back.
  tun_mode=$(stat -c %a /dev/net/tun 2>/dev/null || echo "")
  [ -n "$tun_mode" ] && chmod 0666 /dev/net/tun
  for t in escape named network; do
    (cd / && setpriv --reuid=65534 --regid=65534 --clear-groups "$tmpbin/$t" --test-threads=2)
  done
  if [ -n "$tun_mode" ]; then chmod "$tun_mode" /dev/net/tun; tun_mode=""; fi
  rm -rf "$tmpbin"
fi

echo "== cagette and cagette-runtime as static PIE binaries (scripts/build-static.sh, as README.md and docs/oci-runtime.md give)"
mapfile -t sbins < <(scripts/build-static.sh -q)
scli=${sbins[0]:-} srt=${sbins[1]:-}
[ -x "$scli" ] && [ -x "$srt" ] || { echo "scripts/build-static.sh failed (output above)" >&2; exit 1; }
for b in "$scli" "$srt"; do
  if readelf -l "$b" | grep -q "program interpreter"; then echo "$b is not static" >&2; exit 1; fi
  readelf -h "$b" | grep -q "DYN" || { echo "$b is not position-independent" >&2; exit 1; }
done
set +e
"$scli" run --rootfs target/tmp/busybox-rootfs --memory 64M -- sh -c 'exit 7'
code=$?
set -e
[ "$code" = 7 ] || { echo "static cagette run: exit $code, want 7" >&2; exit 1; }
sbundle=$(mktemp -d /tmp/cagette-rt-static.XXXXXX)
cp -a target/tmp/busybox-rootfs "$sbundle/rootfs"
"$srt" spec --bundle "$sbundle"
python3 - "$sbundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "exit 7"]
c["linux"]["cgroupsPath"] = "/cagette-test-static/run"
json.dump(c, open(sys.argv[1], "w"))
PY
set +e
"$srt" --root "$sbundle/state" run --bundle "$sbundle" static-smoke
code=$?
set -e
rmdir /sys/fs/cgroup/*/cagette-test-static /sys/fs/cgroup/cagette-test-static 2>/dev/null || true
rm -rf "$sbundle"
[ "$code" = 7 ] || { echo "static cagette-runtime run: exit $code, want 7" >&2; exit 1; }

echo "== Python bindings (fresh venv, maturin develop, pytest, mypy --strict)"
rm -rf .venv
python3 -m venv .venv
.venv/bin/pip install -q 'maturin==1.16.0' 'pytest==9.2.0' 'mypy>=1.10'
(cd bindings-python && ../.venv/bin/maturin develop --release --target-dir ../target/maturin --quiet 2>&1 | tail -n 3)
.venv/bin/python -m pytest -q bindings-python/tests examples/python/test_pytest_example.py
.venv/bin/python examples/python/example.py > /dev/null

echo "== Node bindings (npm ci, napi build, node --test, tsc --strict)"
# In the package's directory rather than with --prefix: npm resolves --prefix against its own
# config (an npmrc's prefix, npm_config_prefix), which is not always this directory.
(cd bindings-node && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent && npm test)

echo "== README examples (Python and Node as written; the Rust ones ran as doc tests)"
.venv/bin/python scripts/readme-examples.py

# cgroup v2: most users have it, this machine has v1. The cgroup tests run again inside a
# throwaway cgroup-v2-only VM (../shared/vm/run-in-cgroup2-vm, present in the project's
# workplace and CI; elsewhere set CAGETTE_CG2VM to its path, or the step is skipped).
vm=${CAGETTE_CG2VM:-../shared/vm/run-in-cgroup2-vm}
if [ -x "$vm" ]; then
  echo "== cgroup tests under cgroup v2 (VM)"
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(realpath "$vm") --mem 1G --timeout 1800 --env CAGETTE_TEST_JOBS=${CAGETTE_VM_JOBS:-1000} --env RUST_TEST_THREADS=1 --runner" \
    cargo test -p cagette --test cgroups
  echo "== cagette-runtime's lifecycle tests under cgroup v2 (VM)"
  cargo build -q -p cagette-runtime
  cargo test -q -p cagette-runtime --test lifecycle --no-run
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$(realpath "$vm") --mem 1G --timeout 1200 --copy $PWD/target/debug/cagette-runtime --copy $PWD/target/tmp/busybox-rootfs --env RUST_TEST_THREADS=1 --runner" \
    cargo test -p cagette-runtime --test lifecycle
else
  echo "== cgroup v2 VM not found at $vm: skipping the cgroup v2 run"
fi
