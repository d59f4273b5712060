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
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
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
echo "== tests (library, CLI, doc examples)"
cargo test --workspace
