#!/usr/bin/env bash
# Builds `cagette` and `cagette-runtime` as static PIE binaries (glibc linked in, still
# position-independent, so the kernel still places them at a random address): nothing for the
# dynamic loader to load or look up at each start. About 0.6 ms less per `cagette run` on the
# project's VM (benches/README.md, "CLI start levers").
#
#   scripts/build-static.sh [CARGO BUILD FLAGS...]
#
# Prints the two paths. Needs glibc's static libraries (Debian/Ubuntu: libc6-dev). The library
# and the bindings are not affected: a Python or Node extension cannot be linked statically.
# The same for `cargo install`:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo install --path cli --target "$(rustc -vV | sed -n 's/^host: //p')"
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
case "$target" in
  *-linux-gnu) ;;
  *) echo "build-static.sh: the host target is $target; this script is for *-linux-gnu" >&2; exit 2 ;;
esac
if ! echo 'int main(void){return 0;}' | ${CC:-cc} -x c -static -o /dev/null - 2>/dev/null; then
  echo "build-static.sh: cannot link a static C program: glibc's static libraries are missing (apt-get install libc6-dev)" >&2
  exit 2
fi
# An explicit --target keeps the flag off build scripts and proc macros, which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release -p cagette-cli -p cagette-runtime --target "$target" "$@"
echo "$PWD/target/$target/release/cagette"
echo "$PWD/target/$target/release/cagette-runtime"
