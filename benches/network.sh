#!/usr/bin/env bash
# `network: private`: what it adds to a start, and TCP throughput through it.
#
#   benches/network.sh [RUNS] [MIB]     (as root; needs hyperfine, slirp4netns, iproute2, python3,
#                                        busybox-static)
#
# 1. Start: `cagette run --net none -- true` against `--net private` and `--net bridge`, in one
#    hyperfine run.
# 2. Throughput: MIB MiB sent over TCP to a sink in a "remote" network namespace this script
#    makes (a veth pair, 10.214.0.0/24), from the host itself, from a private sandbox and from a
#    bridge sandbox, by the same Python sender; in one hyperfine run.
# `--net bridge` needs IPv4 forwarding on (sysctl net.ipv4.ip_forward=1); without it, its rows
# are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
mib=${2:-256}
for t in hyperfine slirp4netns ip nft python3 busybox; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install hyperfine slirp4netns iproute2 nftables python3 busybox-static" >&2; exit 1; }
done
bridge=""
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] && bridge=1
cargo build --release -q -p cagette-cli
cagette=$PWD/target/release/cagette
ns=cgtbench$$
work=$(mktemp -d /tmp/cagette-netbench.XXXXXX)
cleanup() {
  [ -n "${sink:-}" ] && kill "$sink" 2>/dev/null || true
  ip link del cgtbh$$ 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== start: --net none vs --net private${bridge:+ vs --net bridge} (/bin/true, host root)"
hyperfine -N --warmup 10 --runs "$runs" --export-markdown "$work/start.md" \
  -n "none" "$cagette run --net none -- true" \
  -n "private" "$cagette run --net private -- true" \
  ${bridge:+-n bridge "$cagette run --net bridge -- true"}
cat "$work/start.md"

echo "== throughput: $mib MiB over TCP to a remote namespace"
ip netns add "$ns"
ip link add cgtbh$$ type veth peer name cgtbr$$
ip link set cgtbr$$ netns "$ns"
ip addr add 10.214.0.1/24 dev cgtbh$$ && ip link set cgtbh$$ up
ip -n "$ns" addr add 10.214.0.2/24 dev cgtbr$$ && ip -n "$ns" link set cgtbr$$ up
# The sink: accepts forever; reads MIB MiB from each connection, then answers "got N" and closes,
# so a transfer is timed until every byte arrived (a user-mode stack acknowledges before it
# delivers).
ip netns exec "$ns" python3 -c '
import socket, sys, threading
want = int(sys.argv[1]) << 20
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.214.0.2", 9000)); s.listen(16)
def drain(c):
    n = 0
    while n < want:
        b = c.recv(1 << 20)
        if not b: break
        n += len(b)
    c.sendall(b"got %d\n" % n); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=drain, args=(c,), daemon=True).start()
' "$mib" &
sink=$!
sleep 0.5
# The sender writes 1 MiB at a time (busybox nc's small writes would be what is measured).
cat > "$work/send.py" <<'PY'
import socket, sys
c = socket.create_connection(("10.214.0.2", 9000)); b = bytes(1 << 20)
for _ in range(int(sys.argv[1])): c.sendall(b)
print(c.recv(100).decode().strip())
PY
chmod a+rx "$work" && chmod a+r "$work/send.py"
send="/usr/bin/python3 $work/send.py $mib"
# Every byte must arrive, from each side, before anything is timed.
want="got $((mib << 20))"
[ "$(sh -c "$send")" = "$want" ] || { echo "the host's transfer did not arrive whole" >&2; exit 1; }
[ "$("$cagette" run --net private -v "$work:$work:ro" -- sh -c "$send")" = "$want" ] || { echo "the sandbox's transfer did not arrive whole" >&2; exit 1; }
cmds=(-n host "sh -c '$send >/dev/null'" -n "cagette --net private" "$cagette run --net private -v $work:$work:ro -- sh -c '$send >/dev/null'")
if [ -n "$bridge" ]; then
  [ "$("$cagette" run --net bridge -v "$work:$work:ro" -- sh -c "$send")" = "$want" ] || { echo "the bridge sandbox's transfer did not arrive whole" >&2; exit 1; }
  cmds+=(-n "cagette --net bridge" "$cagette run --net bridge -v $work:$work:ro -- sh -c '$send >/dev/null'")
fi
hyperfine --warmup 2 --runs 10 --export-markdown "$work/tput.md" --export-json "$work/tput.json" "${cmds[@]}"
cat "$work/tput.md"
python3 - "$work/tput.json" "$mib" <<'PY'
import json, sys
mib = int(sys.argv[2])
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command']:28} {mib / r['mean']:8.0f} MiB/s")
PY
